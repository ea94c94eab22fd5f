"""``fcm tune``: keep fused only the groups that are faster on this GPU.

In: a fused ONNX model (``fcm convert``), batch sizes. Out: ``<stem>.tuned.onnx`` (the model with
every fused group that is not faster than its original subgraph at each of those batch sizes
turned back into that subgraph) and ``<stem>.tune.json`` (per group and batch: both times, the
speedup, the decision; how the model was built).

The tuned model: for an fp32 conversion with its companions beside it (``<stem>.unfused.onnx``,
``.dag.json``, ``.weights.npz``, ``.plan.json``, the files the fused model recorded), the source
rewritten (``ort_custom_ops.lowering.rewrite``) with only the kept groups, each checked to come out
as in the fused model, with its launch plans. Otherwise, or where a kept group does not come out
the same, the fused model with the other groups replaced by their function bodies
(``ort_custom_ops.lowering.unfuse``), whose channels-last layout cleanup leaves Reshapes and
Constants the source does not have. Before writing, one CPU run against the source (or the fused
model): outputs beyond the fp32 verification's bound are an error.

How: the per-group micro-benchmark of ``fcm bench`` (the fused node and its subgraph as small
standalone models on ONNX Runtime's CUDA provider, the subgraph as the source runs it: NCHW,
without the Transposes a channels-last node's function body adds; the node in its better CUDA-graph
setting, the subgraph in its best of CUDA graphs and ``prefer_nhwc`` (ONNX Runtime's NHWC kernels,
with the layout Transposes it adds at the subgraph's edges: timed in NCHW only, a group could look
faster alone than against the source's NHWC run; Xception had 29 of 31 groups faster alone and was
slower with them fused); IO bound to device buffers, medians of ``runs`` runs). A group stays fused when its median is below
``margin`` times the subgraph's at every batch size. Then the whole tuned model is checked
against the source model as users run it, fcm convert's ``<stem>.unfused.onnx`` beside the fused
one (each in its best configuration, as ``fcm bench`` does; without that file, against the fused
model with every group unfused): a group
can win alone and still lose in the model (with ``prefer_nhwc`` ONNX Runtime puts layout
transposes around every op it cannot run in NHWC, ours included). While the tuned model is
slower at some batch size, the kept groups with the smallest leads are unfused too: the most of
the strongest with which the model (built as the one written is) is not slower, found in a few
measurements (1, 2, 4, ... fewer groups, then halving the interval). ``--unfuse`` applies a
decision without measuring, and ``--apply REPORT`` a whole earlier tune (its unfused groups and its plans), to reproduce one on
another machine or without a GPU.

Launch plans: before deciding, each group is also timed under the divisions of its work worth trying
(``ort_custom_ops.ops.launch_plan.node_plan_candidates``: for an NCHW node a grid of block size,
tile, output-channel tile and split of the intermediate channels; for a channels-last node the block
kernels' own candidates for this GPU with the best estimates: tile, output-channel slice, cluster
split, ring depth or resident weights), forced one at a time: each written into the node's own
``cuda_plans`` with ``cuda_plans_strict=1``, so that a plan the node cannot run is an error, recorded
as such, not a silent fall back to the kernels' own plan; and a plan whose output is not the
kernels' own plan's (beyond ``PLAN_AGREEMENT``) is recorded as an error too, however fast. Where one beats the kernels' own plan, the
group's time is the better one, and a kept group carries the winners in its ``cuda_plans`` attribute
("BATCH:plan;..."), which the CUDA kernels use at those batch sizes (and ignore on a GPU the plan
does not fit). Groups that pose the same problem (op, attributes, input shapes and types) share one
search: each is still timed with the kernels' own plan, and takes the best of the shared times.
``--no-plans`` skips this.

fp16 and bf16 models are tuned in their own precision: each group and its subgraph timed in it (bf16
through a Cast at each side's input and output, numpy holding no bf16), the launch plans tried
those the block kernels rank for the fp32 problem (the half kernels take the same plans; one that
does not fit is recorded as an error), the tuned model built by unfusing (their conversions are not
the fp32 rewrite alone), the whole-model check against the unfused model in the same precision, and
the outputs checked on the CPU against that model with ``fcm verify``'s bound for half models.

The convolution layers of the model (``Conv`` nodes of the domain, such as the stem: no groups) are
neither measured nor unfused: the tuned model has those the rewrite of the source makes.
"""

from __future__ import annotations

import gc
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import helper

from extractor.dag import Dag
from fcm.measure import (Progress, bench_groups, bench_pair, cuda_session, device_info, group_models, numpy_io,
                         providers, time_session, timing_feeds, value_shapes)
from fcm.pipeline.convert import output_files
from fcm.pipeline.inputs import random_inputs
from fcm.pipeline.verify import (FP32_TOLERANCE, TF32_TOLERANCE, Check, UnfusedHalfReference, check_companion, load_model,
                                 model_precision, recorded_input_range)
from fcm_core.errors import FcmError, one_line
from fcm_core.fileio import atomic_write_bytes, atomic_write_text
from fcm_core.vocabulary import layer_of
from ort_custom_ops.lowering.rewrite import rewrite
from ort_custom_ops.lowering.rules import fused_node_name
from ort_custom_ops.lowering.unfuse import check_fused_names, unfuse
from ort_custom_ops.ops.launch_plan import (PLAN_OVERRIDE, PLANS_ATTRIBUTE, cuda_plans_text, node_plan_candidates,
                                            with_forced_plan)
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import DOMAIN, is_channels_last, is_fused_group
from ort_custom_ops.ops.standalone import float_io


#: How far a candidate plan's output may be from the kernels' own plan's, times the larger of 1 and
#: the largest output: both on the GPU, each within its precision's bound of the reference (TF32:
#: TF32_TOLERANCE each way; the half types' outputs and stage results rounded in other orders). A
#: check against a plan that computes something else, not a precision claim.
PLAN_AGREEMENT = {onnx.TensorProto.FLOAT: 2 * TF32_TOLERANCE, onnx.TensorProto.FLOAT16: 1e-2, onnx.TensorProto.BFLOAT16: 5e-2}


def search_plans(model: onnx.ModelProto, node_name: str, batch: int, runs: int, warmup: int,
                 progress: Progress, shapes: dict[str, list[int]] | None = None) -> dict[str, float | str]:
    """The fused node alone (CUDA graph, IO bound) under each of its candidate plans: plan -> median
    ms, or the error of a plan it cannot run or whose output disagrees with the kernels' own plan's
    (PLAN_AGREEMENT). ``shapes``: the model's at ``batch``, where the caller has them (shape
    inference over the whole model is not repeated per group)."""
    shapes = shapes if shapes is not None else value_shapes(model, batch)
    initializers = {i.name: i for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.name == node_name)
    alone, _, data_inputs = group_models(model, node, shapes)
    element = alone.graph.input[0].type.tensor_type.elem_type
    alone, feeds, dtype = timing_feeds(alone, data_inputs, shapes, np.random.default_rng(0))
    out_shapes = [shapes[node.output[0]]]
    # every plan's output must agree with the kernels' own plan's: a plan that computes something
    # else is never kept, however fast
    _, (reference,) = time_session(cuda_session(alone, True, providers(True, False)), feeds, out_shapes, 1, 1, [dtype])
    reference = np.asarray(reference, np.float32)
    bound = PLAN_AGREEMENT[element] * max(1.0, float(np.abs(reference).max()))
    times: dict[str, float | str] = {}
    candidates = node_plan_candidates(node, shapes, initializers)
    progress(f"batch {batch} group {node_name}: {len(candidates)} launch plans")
    n = shapes[node.input[0]][0]  # the node's batch size, in either layout
    for plan in candidates:
        try:
            session = cuda_session(with_forced_plan(alone, plan, n), True, providers(True, False))
            timing, (output,) = time_session(session, feeds, out_shapes, runs, warmup, [dtype])
        except Exception as exc:  # a plan this node cannot run on this GPU
            times[plan] = str(exc).strip().splitlines()[0][:160]
            continue
        error = float(np.abs(np.asarray(output, np.float32) - reference).max())
        if not error <= bound:  # (NaN too)
            times[plan] = f"output differs from the kernels' own plan's by {error:.3g} (bound {bound:.3g})"
            continue
        times[plan] = round(timing.median_ms, 4)
    gc.collect()  # thousands of sessions in a tune: let each one's device memory go before the next group
    return times


def problem_key(node: onnx.NodeProto, shapes: dict[str, list[int]], initializers: dict) -> tuple:
    """What a fused node's launch plans are timed on: its op and attributes (not its plans) and the
    shapes and element types of its inputs, not their values. Groups alike in these (Xception's
    middle flow: 24 of them) share one plan search."""
    inputs = tuple((tuple(initializers[name].dims), initializers[name].data_type) if name in initializers
                   else tuple(shapes.get(name) or ()) for name in node.input)
    domain, op_type, _, count, attributes = node_signature(node)  # (the overload names the group's own function body)
    return domain, op_type, count, tuple(attributes), inputs


def with_plans(model: onnx.ModelProto, result: dict) -> onnx.ModelProto:
    """A copy of ``model`` whose fused nodes carry the plans that won at each batch size (the
    ``cuda_plans`` attribute), none where the kernels' own plan was best."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        group = result["groups"].get(node.name)
        if node.domain != DOMAIN or group is None:
            continue
        kept = [a for a in node.attribute if a.name != PLANS_ATTRIBUTE]
        del node.attribute[:]
        node.attribute.extend(kept)
        plans = {int(batch): entry["plan"] for batch, entry in group["batches"].items() if entry.get("plan")}
        if plans:
            node.attribute.append(helper.make_attribute(PLANS_ATTRIBUTE, cuda_plans_text(plans)))
    return out


def measure(model: onnx.ModelProto, batches: list[int], runs: int, warmup: int, margin: float,
            progress: Progress, plans: bool = True) -> dict:
    """Times of every fused group at each batch size (with ``plans``: also under each candidate
    launch plan, keeping the best) and the groups to unfuse."""
    from ort_custom_ops.ops.library import library_kernels

    if os.environ.get(PLAN_OVERRIDE):
        raise FcmError(f"{PLAN_OVERRIDE} is set: this debugging override forces its plan on every fused node, "
                       "so nothing else would be measured (unset it)")
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        raise FcmError("fcm tune needs onnxruntime-gpu") from None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise FcmError("fcm tune measures on the GPU: this onnxruntime has no CUDA execution provider "
                       "(install onnxruntime-gpu), or give the decision with --unfuse")
    if "cuda" not in library_kernels():
        raise FcmError("the FCM library has no CUDA kernels (built without nvcc): nothing to tune")
    groups: dict[str, dict] = {n.name: {"op": n.op_type, "batches": {}} for n in model.graph.node if is_fused_group(n)}
    nodes = {n.name: n for n in model.graph.node if n.name in groups}
    initializers = {i.name: i for i in model.graph.initializer}
    for batch in batches:
        shapes = value_shapes(model, batch) if plans else {}
        searched: dict[tuple, tuple[str, dict]] = {}  # problem -> the group whose plans were timed, and their times
        for row in bench_groups(model, None, batch, runs, warmup, progress):
            entry = groups[row["node"]]["batches"][str(batch)] = {
                k: row[k] for k in ("fused_ms", "unfused_ms", "speedup", "error") if k in row}
            if plans and "error" not in row:
                entry["own_plan_ms"] = row["fused_ms"]
                key = problem_key(nodes[row["node"]], shapes, initializers)
                if key in searched:
                    entry["plans_of"], entry["plans"] = searched[key]
                    progress(f"batch {batch} group {row['node']}: the plans of {entry['plans_of']} (the same problem)")
                else:
                    entry["plans"] = search_plans(model, row["node"], batch, runs, warmup, progress, shapes)
                    searched[key] = (row["node"], entry["plans"])
                timed = {plan: ms for plan, ms in entry["plans"].items() if isinstance(ms, float)}
                best = min(timed, key=timed.get) if timed else None
                if best is not None and timed[best] < row["fused_ms"]:
                    entry.update(plan=best, fused_ms=timed[best], speedup=round(row["unfused_ms"] / timed[best], 3))
            entry["faster"] = "error" not in row and entry["fused_ms"] < margin * row["unfused_ms"]
    for name, group in groups.items():
        group["keep_fused"] = bool(group["batches"]) and all(b["faster"] for b in group["batches"].values())
    return {"device": device_info(), "batches": batches, "runs": runs, "margin": margin, "plans_searched": plans,
            "groups": groups, "unfuse": sorted(name for name, group in groups.items() if not group["keep_fused"])}


@dataclass
class Conversion:
    """What ``fcm convert`` rewrote into a fused model, read from its companions."""
    source_path: Path  # <stem>.unfused.onnx
    source: onnx.ModelProto
    dag: Dag
    plan: dict
    layout: str  # the fused nodes' layout, as rewrite takes it
    mean_layers: bool = False  # the spatial means made Mean layers (rewrite's option), as the fused model has them


def load_conversion(model: onnx.ModelProto, model_path: Path) -> tuple[Conversion | None, str]:
    """The conversion of the fused ``model`` (at ``model_path``) from the companions beside it, or
    None and why it cannot be rewritten again."""
    precision = model_precision(model)
    if precision != "fp32":  # the half and int8 lowerings are not the fp32 rewrite alone
        return None, f"the fused nodes are {precision}: only fp32 conversions are rewritten from the source"
    files = output_files(model_path)
    companions = [files[key] for key in ("unfused", "dag", "weights", "plan")]
    missing = [path.name for path in companions if not path.is_file()]
    if missing:
        return None, f"no {', '.join(missing)} beside the model"
    try:
        for path in companions:
            check_companion(model, model_path, path)
        plan = json.loads(files["plan"].read_text())
        if not all(isinstance(group["id"], int) and isinstance(group["kind"], str) for group in plan["groups"]):
            raise ValueError(f"{files['plan'].name} is not a fusion plan")
        dag = Dag.load(files["dag"], files["weights"])  # the weights are <stem>.weights.npz, not weights.npz
        source = load_model(files["unfused"])
    except (FcmError, OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"the companions cannot be read: {one_line(str(exc))}"
    channels_last = any(is_channels_last(n) for n in model.graph.node if is_fused_group(n))
    mean_layers = any(n.domain == DOMAIN and layer_of(n.op_type) == ("Mean", "fp32") for n in model.graph.node)
    return Conversion(files["unfused"], source, dag, plan, "nhwc" if channels_last else "nchw", mean_layers), ""


class NotReproduced(Exception):
    """The rewrite of the source did not give a kept group as the fused model has it."""


def node_signature(node: onnx.NodeProto) -> tuple:
    """What a fused node computes (its op, inputs and attributes), apart from its launch plans."""
    attributes = sorted((a.name, a.SerializeToString()) for a in node.attribute if a.name != PLANS_ATTRIBUTE)
    return node.domain, node.op_type, node.overload, len(node.input), attributes


def rewritten_source(model: onnx.ModelProto, conversion: Conversion, kept: set[str]) -> onnx.ModelProto:
    """The conversion's source with only the groups of ``model``'s fused nodes named in ``kept``
    rewritten, each node carrying its launch plans from ``model``; NotReproduced where one does not
    come out as ``model`` has it."""
    groups = [g for g in conversion.plan["groups"] if fused_node_name(g["id"], g["kind"]) in kept]
    try:
        result = rewrite(conversion.source, conversion.dag, {**conversion.plan, "groups": groups}, conversion.layout,
                         mean_layers=conversion.mean_layers)
    except Exception as exc:  # whatever stops the rewrite, unfusing the fused model is still correct
        raise NotReproduced(f"the rewrite failed ({type(exc).__name__}: {one_line(str(exc), 160)})") from None
    if result.skipped:
        skipped = result.skipped[0]
        raise NotReproduced(f"the rewrite left group {skipped['group']} unfused ({skipped['reason']})")
    tuned = result.model
    fused = {n.name: n for n in model.graph.node if n.name in kept}
    # the groups only: the convolution layers are what the rewrite makes of the Convs it leaves
    rewritten = {n.name: n for n in tuned.graph.node if is_fused_group(n)}
    differing = sorted(rewritten.keys() ^ fused.keys()) or sorted(
        name for name, node in rewritten.items() if node_signature(node) != node_signature(fused[name]))
    if differing:
        raise NotReproduced(f"the rewrite's fused nodes differ from the fused model's: {', '.join(differing[:5])}")
    for name, node in rewritten.items():
        node.attribute.extend(a for a in fused[name].attribute if a.name == PLANS_ATTRIBUTE)
    del tuned.metadata_props[:]
    tuned.metadata_props.extend(model.metadata_props)  # its record of the companions holds for the tuned model too
    return tuned


class TunedModels:
    """Builds the tuned models of one fused model, each with some of its groups unfused: from the
    source while ``conversion`` is there and reproduces the kept groups, else by unfusing (from the
    first group it does not reproduce on, so that every later model is built the same way)."""

    def __init__(self, model: onnx.ModelProto, conversion: Conversion | None = None, why_not: str = ""):
        self.model = model
        self.conversion = conversion
        self.why_not = why_not  # why not from the source

    def build(self, unfused: Iterable[str]) -> onnx.ModelProto:
        unfused = sorted(unfused)
        check_fused_names(self.model, unfused)
        if self.conversion is not None:
            kept = {n.name for n in self.model.graph.node if is_fused_group(n)} - set(unfused)
            try:
                return rewritten_source(self.model, self.conversion, kept)
            except NotReproduced as exc:
                self.conversion, self.why_not = None, str(exc)
        return unfuse(self.model, unfused)

    def record(self, result: dict) -> None:
        """How the last model was built, in the tune's result."""
        result["built_from"] = "source" if self.conversion is not None else "unfused fused model"
        if self.why_not:
            result["fallback_reason"] = self.why_not


def verify_whole_model(model: onnx.ModelProto, result: dict, batches: list[int], runs: int, warmup: int,
                       progress: Progress, baseline: onnx.ModelProto | None = None,
                       tuned_models: TunedModels | None = None) -> None:
    """Keeps fused the most of the kept groups, strongest first (by their smallest per-group lead),
    with which the whole tuned model (built by ``tuned_models``, as the one written) is not slower
    than the baseline at any batch size; records each measurement in result["whole_model"], the one
    taken with ``"chosen": True``. The baseline is what users compare against, the source model as
    ONNX Runtime runs it (fcm convert's ``<stem>.unfused.onnx``); without one, the tuned model with
    every group unfused.

    The search: every kept group first; while slower, unfuse the 1, 2, 4, ... weakest (so that a
    model that loses with a few groups finds out in a few measurements), then halve the interval
    between the most groups measured not slower (none: the baseline itself) and the fewest measured
    slower. A few measurements where unfusing one group at a time took one per group (15 for
    MobileNetV3-Small, which ended with none)."""
    tuned_models = tuned_models or TunedModels(model)
    groups = result["groups"]
    everything = sorted(groups)
    reference = baseline if baseline is not None else tuned_models.build(everything)
    reference_io = numpy_io(reference)[0]  # (one copy for every step: it does not change)
    strongest = sorted((name for name, group in groups.items() if group["keep_fused"]),
                       key=lambda name: -min(b.get("speedup", 0.0) for b in groups[name]["batches"].values()))
    steps = []
    baseline_sides: dict[int, dict] = {}  # the reference's timings per batch size, taken once

    def not_slower(count: int) -> bool:
        fused = strongest[:count]
        tuned = tuned_models.build(name for name in everything if name not in fused)
        speedups = {}
        for batch in batches:
            progress(f"whole model, {count} groups fused, batch {batch}")
            pair = bench_pair(reference_io, numpy_io(tuned)[0], batch, runs, warmup, progress,
                              unfused_side=baseline_sides.get(batch))
            baseline_sides.setdefault(batch, pair["unfused"])
            speedups[str(batch)] = pair["best"]["tf32"]["speedup"]
        steps.append({"fused_groups": list(fused), "speedup": speedups})
        return all(value >= 1.0 for value in speedups.values())

    good, bad = 0, len(strongest)  # the most groups known not slower (0: the baseline), the fewest known slower
    if strongest and not_slower(bad):
        good = bad
    else:
        drop = 1
        while bad - drop > good:  # gallop: 1, 2, 4, ... groups fewer
            if not_slower(bad - drop):
                good = bad - drop
                break
            bad -= drop
            drop *= 2
        while bad - good > 1:  # then halve the interval
            middle = (good + bad) // 2
            if not_slower(middle):
                good = middle
            else:
                bad = middle
    for step in steps:
        if len(step["fused_groups"]) == good:
            step["chosen"] = True
    for name in strongest[good:]:
        groups[name]["keep_fused"] = False
        groups[name]["unfused_by"] = "whole-model check"
    result["whole_model"] = steps
    result["unfuse"] = sorted(name for name, group in groups.items() if not group["keep_fused"])


def check_outputs(tuned: onnx.ModelProto, reference: onnx.ModelProto, reference_path: Path, precision: str = "fp32") -> dict:
    """The tuned model against ``reference`` on the CPU (the FCM library's CPU kernels), at batch 1
    or the model's fixed batch size; an FcmError when the outputs are further apart than the
    verification's bound. fp32: on one random input, the fp32 bound (the CPU kernels come within
    about 5e-6). fp16, bf16: ``reference`` is the unfused model in that precision, on random images,
    with the bound of ``fcm verify`` (the roundings the two do not share: an unfused group's
    operators round where its fused node does not)."""
    first = reference.graph.input[0].type.tensor_type.shape.dim
    batch = first[0].dim_value if first and first[0].HasField("dim_value") else 1

    def outputs_of(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
        session = make_session(model, with_library=any(n.domain == DOMAIN for n in model.graph.node))
        return session.run(None, {i.name: a for i, a in zip(session.get_inputs(), inputs)})

    if precision == "fp32":
        inputs = random_inputs(reference, batch, np.random.default_rng(0), recorded_input_range(reference))
        expected, bound, rule = outputs_of(reference, inputs), FP32_TOLERANCE, "the fp32 bound"
    else:
        half = UnfusedHalfReference.of(precision, reference, batch, np.random.default_rng(0), recorded_input_range(reference),
                                       outputs_of)
        inputs, expected, bound, rule = half.inputs, half.expected, half.bound, half.rule
        tuned = float_io(tuned)
    check = Check.of("tuned model", batch, outputs_of(tuned, inputs), expected)
    if not check.passed(bound):
        raise FcmError(f"the tuned model's outputs differ from {reference_path.name}'s by {check.max_abs_error:.3g} "
                       f"({check.relative:.3g} of the largest, bound {bound:.3g}, {rule}): nothing written")
    return {"against": str(reference_path), "batch": batch, "relative_error": check.relative, "bound": bound}


def _applied(model: onnx.ModelProto, report_path: Path) -> dict:
    """An earlier tune's decisions (unfused groups, plans per batch size) from its report, checked
    against the model's fused nodes."""
    try:
        report = json.loads(Path(report_path).read_text())
        groups, unfused = report["groups"], report["unfuse"]
        if not isinstance(groups, dict) or not isinstance(unfused, list):
            raise TypeError
        for group in groups.values():
            for entry in group.get("batches", {}).values():
                if not isinstance(entry.get("plan", ""), str):
                    raise TypeError
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise FcmError("not a tune report (a .tune.json from fcm tune)", report_path) from None
    fused = {n.name for n in model.graph.node if is_fused_group(n)}
    unknown = sorted((set(groups) | set(unfused)) - fused)
    if unknown:
        raise FcmError(f"the report names groups this model does not have ({', '.join(unknown[:5])}): "
                       "it is from another model", report_path)
    return {"unfuse": sorted(unfused), "groups": groups, "measured": False, "applied_from": str(report_path)}


def unfused_companion(model_path: Path) -> Path | None:
    """fcm convert's unfused model beside a fused one (``<stem>.unfused.onnx``), if it is there."""
    candidate = output_files(model_path)["unfused"]
    return candidate if candidate.is_file() and candidate != model_path else None


def tune(model_path: Path, output: Path, batches: list[int], runs: int, warmup: int, margin: float,
         unfuse_names: list[str] | None, progress: Progress, verify: bool = True, plans: bool = True,
         apply_report: Path | None = None) -> dict:
    try:
        model = onnx.load(model_path)
    except Exception as exc:
        raise FcmError(f"not a readable ONNX model ({str(exc).splitlines()[0][:120]})", model_path) from None
    if not any(is_fused_group(n) for n in model.graph.node):
        raise FcmError("no fused nodes (not a model from fcm convert?)", model_path)
    conversion, why_not = load_conversion(model, model_path)
    precision = model_precision(model)
    half_reference = None  # a half model's: the unfused model in its precision, which it verified against
    if precision in ("fp16", "bf16"):
        reference_path = unfused_companion(model_path)
        if reference_path is None:
            raise FcmError(f"a {precision} model is checked against its unfused {precision} model: no "
                           f"{output_files(model_path)['unfused'].name} beside it", model_path)
        check_companion(model, model_path, reference_path)
        half_reference = onnx.load(reference_path)
    if apply_report is not None:
        result = _applied(model, apply_report)
        model = with_plans(model, result)
    elif unfuse_names is None:
        result = measure(model, batches, runs, warmup, margin, progress, plans)
        model = with_plans(model, result)
    else:
        result = {"unfuse": sorted(set(unfuse_names)), "groups": {}, "measured": False}
    tuned_models = TunedModels(model, conversion, why_not)
    if apply_report is None and unfuse_names is None and verify:
        baseline_path = unfused_companion(model_path)
        if baseline_path is not None:
            result["baseline"] = str(baseline_path)
        baseline = None
        if baseline_path is not None:  # (the file the conversion's source or the half reference came from)
            baseline = conversion.source if conversion is not None else half_reference
            if baseline is None:
                baseline = onnx.load(baseline_path)
        verify_whole_model(model, result, batches, runs, warmup, progress, baseline, tuned_models)
    tuned = tuned_models.build(result["unfuse"])
    tuned_models.record(result)
    onnx.checker.check_model(tuned)
    progress("checking the tuned model's outputs on the CPU")
    if half_reference is not None:
        reference = half_reference
    else:
        reference, reference_path = (conversion.source, conversion.source_path) if conversion else (model, model_path)
    result["output_check"] = check_outputs(tuned, reference, reference_path, precision)
    report_path = output.with_name(output.name.removesuffix(".onnx") + ".tune.json")
    result["model"] = str(model_path)
    result["output"] = str(output)
    result["fused_groups"] = sum(1 for n in tuned.graph.node if is_fused_group(n))
    atomic_write_bytes(output, tuned.SerializeToString())
    atomic_write_text(report_path, json.dumps(result, indent=1) + "\n")
    result["report"] = str(report_path)
    return result
