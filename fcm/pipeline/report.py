"""The conversion report (``<stem>.report.md``): one layout for every precision.

In: what a conversion made (the DAG, the plan, the lowering's fused and skipped groups, the
verification records, notes, the files written). Out: markdown: a title and what it was planned
for, a summary (fused nodes, files, time taken), the notes, the fused groups, and the
verification; :func:`fp32_report` and :func:`int8_report` fill it with their precision's figures.
"""

from __future__ import annotations

from pathlib import Path

from extractor.dag import Dag

from .verify import Agreement, Check


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
                seconds: float, files: dict[str, Path]) -> str:
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
    if checks:
        sections.append(["## Verification", "",
                         f"Fresh random inputs (uniform in [-1, 1]); bound: max |error| <= {tolerance:g} x max |reference|.", "",
                         "| compared with the source model | batch | max abs error | max abs reference | relative |",
                         "|---|---|---|---|---|"]
                        + [f"| {c.name} | {c.batch} | {c.max_abs_error:.3g} | {c.max_abs_reference:.3g} | {c.relative:.3g} |"
                           for c in checks])
    return assemble(f"# Conversion report: {where}",
                    f"Planned for **{plan.gpu.name}** ({plan.gpu.source}), batch {plan.batch}, {plan.dtype}.",
                    summary, files, seconds, notes, sections)


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
