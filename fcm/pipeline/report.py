"""The conversion report (``<stem>.report.md``): one layout for every precision.

In: what a conversion made (the DAG, the plan, the lowering's fused and skipped groups, the
verification records, notes, the files written). Out: markdown: a title and what it was planned
for, a summary (fused nodes, files, time taken), the notes, the fused groups, and the
verification; :func:`fp32_report`, :func:`half_report` and :func:`int8_report` fill it with their
precision's figures.
"""

from __future__ import annotations

from pathlib import Path

from extractor.dag import Dag

from fcm_core.vocabulary import PRECISIONS

from .verify import (AGREEMENT_MARGIN, CONFIDENCE, FUSED_WITH_LIBRARY, PRECISION_REFERENCE, Agreement, Check,
                     HalfVerification)


def assemble(title: str, intro: str, summary: list[str], files: dict[str, Path], seconds: float, notes: list[str],
             sections: list[list[str]]) -> str:
    lines = [title, "", intro, "", "## Summary", ""] + [f"- {line}" for line in summary]
    lines += ["- files: " + ", ".join(f"`{p.name}`" for p in files.values()), f"- conversion took {seconds:.1f} s", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    for section in sections:
        lines += section + [""]
    return "\n".join(lines)


def fp32_report(where: str, dag: Dag, plan, result, checks: list[Check], notes: list[str], tolerance: float,
                seconds: float, files: dict[str, Path], input_range: tuple[float, float]) -> str:
    summary, sections = _float_sections(dag, plan, result)
    if checks:
        lo, hi = input_range
        sections.append(["## Verification", "",
                         f"Fresh random inputs (uniform in [{lo:g}, {hi:g}]); bound: max |error| <= {tolerance:g} x max |reference|.", "",
                         "| compared with the source model | batch | max abs error | max abs reference | relative |",
                         "|---|---|---|---|---|"]
                        + [f"| {c.name} | {c.batch} | {c.max_abs_error:.3g} | {c.max_abs_reference:.3g} | {c.relative:.3g} |"
                           for c in checks])
    return assemble(f"# Conversion report: {where}",
                    f"Planned for **{plan.gpu.name}** ({plan.gpu.source}), batch {plan.batch}, {plan.dtype}.",
                    summary, files, seconds, notes, sections)


#: Below this top-1 agreement of the precision's own computation the report warns.
LOW_AGREEMENT = 0.9


def half_summary(check: HalfVerification) -> str:
    fused = next(c for c in check.checks if c.name == FUSED_WITH_LIBRARY)
    return (f"{check.precision}; verified against the source model on {fused.samples} random images: "
            f"largest relative error {fused.relative:.2g} (bound {check.bound:.2g})"
            + ("" if fused.top1 is None else f", top-1 agreement {fused.top1:.1%}, top-5 {fused.top5:.1%}"))


def half_report(where: str, dag: Dag, plan, result, checks: list[HalfVerification], notes: list[str], precision: str,
                io_half: bool, seconds: float, files: dict[str, Path]) -> str:
    summary, sections = _float_sections(dag, plan, result)
    summary.append(f"precision: {precision} (fp32 accumulation); inputs and outputs "
                   + (f"{precision}" if io_half else "fp32, one Cast at each"))
    for check in checks:
        lo, hi = check.value_range
        u = PRECISIONS[precision].unit_roundoff
        lines = ["## Verification", "",
                 f"{check.checks[0].samples} random images (natural-image statistics: a 1/f spectrum, correlated "
                 f"colours; values in [{lo:g}, {hi:g}]), against the fp32 source model.", "",
                 f"Bound: max |error| <= {check.bound:.3g} x max |reference| ({check.rule}). The derived bound is "
                 f"{CONFIDENCE:g} x sqrt(R) x u: u = {u:.3g} is {precision}'s unit roundoff, R = {check.depth} the "
                 "most roundings on one path through the model (the input, each layer's weights, each operator's "
                 "output); independent rounding errors carried through layers of gain about 1 add up to a standard "
                 f"deviation of sqrt(R) x u, and {CONFIDENCE:g} of those cover the largest output. Where the "
                 f"precision's own computation of the model ({PRECISION_REFERENCE}) errs by more than half of that, "
                 "its conditioning sets the bound: twice that error. "
                 f"Top-1 and top-5 agreement: at most {AGREEMENT_MARGIN:.0%} (or four standard errors) below the "
                 "precision's own. Top-1: the share of inputs whose largest output is the source model's; top-5: "
                 "the share whose source top-1 is among the five largest outputs.", "",
                 "| model | relative error | top-1 | top-5 |", "|---|---|---|---|"]
        for c in check.checks:
            top = "| | " if c.top1 is None else f"| {c.top1:.1%} | {c.top5:.1%} "
            lines.append(f"| {c.name} | {c.relative:.3g} {top}|")
        own = next(c for c in check.checks if c.name == PRECISION_REFERENCE)
        if own.top1 is not None and own.top1 < LOW_AGREEMENT:
            lines += ["", f"**Warning**: {precision}'s own computation of this model keeps the top-1 class on only "
                      f"{own.top1:.0%} of the inputs: its logits lie too close together for {precision}'s "
                      f"{u:.1g} rounding (random weights do this; a trained model's margins are wider). Check the "
                      "accuracy on real data before deploying it" + (", or use fp16." if precision == "bf16" else ".")]
        worst = check.worst_node()
        if worst is not None:
            lines += ["", f"Against ONNX Runtime's own operators in {precision} on the same provider, tight: each fused "
                      "node's kernel on the inputs it gets in the model against its definition (its function body's "
                      f"operators on the same {precision} inputs and weights, each operator's output rounded), relative "
                      f"to the largest value of its output, within {CONFIDENCE:g} x sqrt(r) x u with r the roundings "
                      "on the longest path of its body (the two sides differ only in where they round). Worst of "
                      f"{len(check.nodes)} nodes (nearest its bound): {worst.name} ({worst.op_type}), "
                      f"{worst.difference:.3g} (bound {worst.bound(precision):.3g}); largest difference "
                      f"{max(n.difference for n in check.nodes):.3g}."]
        lines += ["", f"The whole fused model against ONNX Runtime's unfused model in {precision} on the same inputs, "
                  "tight: the two share their weights and inputs and differ only in where they round operators' "
                  f"outputs, at most {check.pair_depth} on one path: bound {check.pair_bound:.3g} of the largest "
                  f"output ({check.pair_rule}; the unfused model's own spread is measured against it computed in "
                  "fp32 on the same weights, the precision's own computation against the source: ONNX Runtime may "
                  "compute much of its half model in fp32).", ""]
        lines += [f"- {what}: {value:.3g}" for what, value in check.model_pairs]
        sections.append(lines)
    return assemble(f"# Conversion report ({precision}): {where}",
                    f"Planned for **{plan.gpu.name}** ({plan.gpu.source}), batch {plan.batch}, {plan.dtype}.",
                    summary, files, seconds, notes, sections)


def _float_sections(dag: Dag, plan, result) -> tuple[list[str], list[list[str]]]:
    """The summary lines and sections a float conversion's report shares: fused nodes, layout, groups."""
    totals = plan.totals()
    fused_groups = {f["group"]: f for f in result.fused}
    summary = [
        f"fused nodes: {len(result.fused)} (of {len(plan.groups)} planned groups)",
        f"convolutions in fused nodes: {sum(len(g.candidate.convs) for g in plan.groups if g.id in fused_groups)} of "
        f"{totals['convs']}; depthwise: "
        f"{sum(1 for g in plan.groups if g.id in fused_groups for c in g.candidate.convs if dag[c].type == 'dw')} of {totals['dw_convs']}",
        f"predicted: {totals['unfused']['time_us'] / 1e3:.3f} ms unfused -> {totals['fused']['time_us'] / 1e3:.3f} ms fused, "
        f"{totals['unfused']['dram_bytes'] / 1e6:.1f} MB -> {totals['fused']['dram_bytes'] / 1e6:.1f} MB of DRAM traffic, "
        f"{totals['unfused']['launches']} -> {totals['fused']['launches']} kernel launches",
    ]
    if result.layers:
        summary.append(f"convolution layers: {len(result.layers)} (Convs no group takes, each one channels-last FCM "
                       f"node with its bias and activation: {', '.join(f['node'] for f in result.layers)})")
    if result.fused:
        before, after = result.transposes
        summary.append(f"layout: {'NHWC (channels last)' if result.layout == 'nhwc' else 'NCHW'} fused nodes; "
                       f"Transpose nodes: {before} in the unfused model, {after} in the fused one")
    groups = ["## Fused groups", "",
              "| group | kind | DAG layers | source layers | ONNX nodes replaced | tiling | predicted unfused -> fused (us) |",
              "|---|---|---|---|---|---|---|"]
    for group in plan.groups:
        if group.id not in fused_groups:
            continue
        layers = group.candidate.convs
        names = ", ".join((dag[i].source or {}).get("layers", [str(i)])[0] for i in layers)
        t = group.tiling
        tiling = f"{t.tile_h}x{t.tile_w}x{t.tile_f}" + (f" split {t.split}" if t.split > 1 else "")
        kind = group.candidate.kind + (" + residual" if group.candidate.residual_add is not None else "")
        groups.append(f"| {group.id} | {kind} | {', '.join(map(str, layers))} | {names} | "
                      f"{len(fused_groups[group.id]['replaced'])} | {tiling} | "
                      f"{group.unfused.time * 1e6:.1f} -> {group.fused.time * 1e6:.1f} |")
    sections = [groups]
    if plan.unfused_reasons:
        sections.append(["## Convolutions left unfused", "", "| layer | type | reason |", "|---|---|---|"]
                        + [f"| {i} | {dag[i].type} | {reason} |" for i, reason in sorted(plan.unfused_reasons.items())])
    return summary, sections


def int8_report(where: str, dag: Dag, plan, result, checks: list[Agreement], notes: list[str], scheme: str,
                seconds: float, files: dict[str, Path]) -> str:
    fused_convs = [c for f in result.fused for c in f["layers"]]
    summary = [f"fused int8 nodes: {len(result.fused)} (of {len(plan.groups)} planned groups), holding "
               f"{len(fused_convs)} of {len(dag.convs())} convolutions"]
    groups = ["## Fused groups", "", "| group | kind | DAG layers replaced | node |", "|---|---|---|---|"]
    groups += [f"| {f['group']} | {f['kind']}{' + residual' if f['residual'] else ''} | "
               f"{', '.join(map(str, f['replaced']))} | `{f['node']}` |" for f in result.fused]
    sections = [groups]
    if checks:
        sections.append(["## Verification", "", "Fresh random inputs; the fused model equals the unfused one bit for bit.", ""]
                        + [f"- {c.line()}" for c in checks])
    return assemble(f"# Conversion report (int8): {where}",
                    f"Full-integer model; int8 ops of the ai.fcm domain with **{scheme}** requantization; planned for "
                    f"**{plan.gpu.name}**, batch {plan.batch}.", summary, files, seconds, notes, sections)
