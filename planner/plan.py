"""The planner: DAG + GPU -> fusion plan.

In: a :class:`~extractor.dag.Dag` (ours or the seed's), a GPU (:mod:`planner.gpus`), a batch size
and a dtype. Out: a :class:`Plan`: the fusion groups (member layers, FCM kind, stages with their
activations and padding, residual, tiling, predicted bytes and time fused vs unfused), every
convolution left unfused with the reason, and whole-model totals. ``Plan.to_json`` writes the
versioned schema of ``docs/plan_format.md``; ``format_report`` the readable summary.

Steps: cost every entry as the baseline runs it (:mod:`planner.costs`), build the fusion
candidates from the graph's edges (:mod:`planner.groups`), price each with its best tiling, and
keep the consistent set with the largest predicted saving (:mod:`planner.select`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extractor.dag import Dag, Layer
from extractor.summary import fm_elements
from fcm_core import vocabulary
from fcm_core.errors import FcmError

from . import costs, groups, select
from .gpus import GpuSpec

PLAN_FORMAT = "fcm-plan"
PLAN_VERSION = 1
DTYPES = ("fp32", "tf32", "fp16", "int8")

# Operators that run no GPU kernel in the baseline (metadata, shape arithmetic on the host).
_FREE_OPS = frozenset({"reshape", "squeeze", "expand_dims", "shape", "strided_slice", "pack"})


@dataclass
class Group:
    id: int
    candidate: groups.Candidate
    tiling: costs.Tiling
    fused: costs.KernelCost
    unfused: costs.KernelCost
    blocks: int
    smem_bytes: int
    recompute_ratio: float

    @property
    def saving(self) -> float:
        return self.unfused.time - self.fused.time


@dataclass
class Plan:
    dag: Dag
    gpu: GpuSpec
    batch: int
    dtype: str
    constants: costs.CostConstants
    groups: list[Group]
    unfused_reasons: dict[int, str]  # conv id -> why it is not in a group
    entry_costs: dict[int, costs.KernelCost]
    dag_path: str | None = None
    notes: list[str] = field(default_factory=list)
    #: every priced candidate, per chain: (chain of conv ids, [(start, Group)]) - for reports and tests
    candidates: list[tuple[list[int], list[tuple[int, Group]]]] = field(default_factory=list)

    # --- derived -------------------------------------------------------------------------------
    def absorbed(self) -> set[int]:
        return {i for g in self.groups for i in g.candidate.entries}

    def totals(self) -> dict[str, Any]:
        unfused = sum(self.entry_costs.values(), costs.ZERO)
        absorbed = self.absorbed()
        fused = sum((c for i, c in self.entry_costs.items() if i not in absorbed), costs.ZERO)
        fused = sum((g.fused for g in self.groups), fused)
        dw = [layer.id for layer in self.dag if layer.type == "dw"]
        convs = self.dag.convs()
        in_groups = {c for g in self.groups for c in g.candidate.convs}
        return {
            "unfused": unfused.to_json(),
            "fused": fused.to_json(),
            "predicted_speedup": round(unfused.time / fused.time, 3) if fused.time else None,
            "groups": len(self.groups),
            "convs": len(convs),
            "convs_fused": len(in_groups),
            "dw_convs": len(dw),
            "dw_fused": len([i for i in dw if i in in_groups]),
        }

    # --- output ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        dag = self.dag
        out: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "version": PLAN_VERSION,
            "dag": {"path": self.dag_path, "layers": len(dag), "sha256": dag_digest(dag)},
            "gpu": self.gpu.to_json(),
            "batch": self.batch,
            "dtype": self.dtype,
            "cost_constants": self.constants.to_json(),
            "groups": [_group_json(dag, g) for g in self.groups],
            "unfused": [
                {"layer": i, "name": dag[i].name, "type": dag[i].type, "reason": reason,
                 "predicted": self.entry_costs[i].to_json()}
                for i, reason in sorted(self.unfused_reasons.items())
            ],
            "totals": self.totals(),
        }
        if self.notes:
            out["notes"] = self.notes
        return out

    def save(self, path: str | Path) -> None:
        from fcm_core.fileio import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json(), indent=1) + "\n")


def dag_digest(dag: Dag) -> str:
    return hashlib.sha256(json.dumps(dag.to_json(), sort_keys=True).encode()).hexdigest()


def _tensor_json(tensor: groups.Tensor) -> dict:
    return {"layer": tensor[1]} if tensor[0] == "op" else {"model_input": tensor[1]}


def _group_json(dag: Dag, group: Group) -> dict[str, Any]:
    cand = group.candidate
    stages = []
    for stage in cand.stages:
        conv = dag[stage.conv]
        entry = {"layer": stage.conv, "type": stage.type, "activation": stage.activation,
                 "prologue": stage.prologue, "epilogue": stage.epilogue}
        if stage.type == "dw":
            entry.update(kernel=(conv.kernel_size or conv.weights_shape[1:])[0],
                         stride=(conv.strides_hw or [conv.strides or 1])[0], pads=stage.pads)
        if stage.se_scale is not None:
            entry["se_scale"] = _tensor_json(stage.se_scale)
        stages.append(entry)
    out = {
        "id": group.id,
        "kind": cand.kind,
        "layers": cand.convs,
        "names": [_layer_label(dag[i]) for i in cand.convs],
        "entries": cand.entries,
        "input": _tensor_json(cand.input),
        "output": cand.output,
        "stages": stages,
        "residual": None if cand.residual_add is None else {"add": cand.residual_add, "epilogue": cand.residual_epilogue,
                                                            "activation": cand.final_activation},
        "tiling": group.tiling.to_json(),
        "blocks": group.blocks,
        "smem_bytes": group.smem_bytes,
        "recompute_ratio": round(group.recompute_ratio, 4),
        "predicted": {"fused": group.fused.to_json(), "unfused": group.unfused.to_json(),
                      "saved_time_us": round(group.saving * 1e6, 3)},
    }
    return out


def _layer_label(layer: Layer) -> str:
    names = (layer.source or {}).get("layers")
    return names[0] if names else f"{layer.name}_{layer.id}"


# --- the baseline: what each entry costs when run on its own -----------------------------------

def _elements(shape) -> int:
    return fm_elements(shape) if shape else 0


def _conv_flops(layer: Layer) -> float:
    if not layer.weights_shape or not layer.ofms_shape:
        return 0.0
    return 2.0 * layer.ofms_shape[1] * layer.ofms_shape[2] * math.prod(layer.weights_shape)


def _input_elements(layer: Layer) -> list[int]:
    if layer.inputs:
        return [_elements(o.get("shape")) for o in layer.inputs if o is not None and "const" not in o]
    return [_elements(layer.ifms_shape)]


def entry_cost(device: costs.Device, dag: Dag, graph: groups.Graph, layer: Layer) -> costs.KernelCost:
    """One DAG entry as the layer-by-layer baseline (ONNX Runtime's CUDA provider) runs it."""
    name = layer.name
    out = _elements(layer.ofms_shape)
    if name in _FREE_OPS or layer.opaque and not out:
        return costs.ZERO
    if layer.is_conv:
        tensor_cores = device.dtype != "fp32" and layer.type != "dw"
        cost = costs.library_kernel(device, layer.type, [_elements(layer.ifms_shape)], [out],
                                    weights=math.prod(layer.weights_shape), flops=_conv_flops(layer), tensor_cores=tensor_cores)
        if layer.activation not in ("0", *device.constants.baseline_fused_activations):
            cost = cost + costs.library_kernel(device, "elementwise", [out], [out])
        return cost
    if name == "pad":
        consumer = graph.sole_consumer(layer.id)
        if consumer is not None and dag[consumer].is_conv:
            return costs.ZERO  # folded into the convolution's padding by the runtime
    if name == "fully_connected":
        weights = math.prod(layer.weights_shape) if layer.weights_shape else 0
        return costs.library_kernel(device, "fc", _input_elements(layer), [out], weights=weights, flops=2.0 * weights)
    if name in groups.STANDALONE_ACTIVATIONS and graph.data_inputs(layer):
        source = graph.data_inputs(layer)[0]
        if (groups.STANDALONE_ACTIVATIONS[name] in device.constants.baseline_fused_activations and source[0] == "op"
                and dag[source[1]].is_conv and graph.sole_consumer(source[1]) == layer.id):
            return costs.ZERO  # fused into the convolution by the runtime
    cost = costs.library_kernel(device, "elementwise" if name not in ("mean", "max_pool_2d", "average_pool_2d") else "other",
                                _input_elements(layer), [out])
    if layer.activation not in ("0", *device.constants.baseline_fused_activations) and name in ("add", "sub", "mul", "div"):
        cost = cost + costs.library_kernel(device, "elementwise", [out], [out])
    return cost


# --- the plan ----------------------------------------------------------------------------------

def stage_shapes(dag: Dag, candidate: groups.Candidate) -> list[costs.StageShape]:
    shapes = []
    for stage in candidate.stages:
        conv = dag[stage.conv]
        c_in, h_in, w_in = conv.ifms_shape
        c_out, h_out, w_out = conv.ofms_shape
        if stage.prologue and dag[stage.prologue[0]].name == "pad":  # the unpadded input
            pad = dag[stage.prologue[0]]
            h_in -= pad.padding_top + pad.padding_bottom
            w_in -= pad.padding_left + pad.padding_right
        kernel = (conv.kernel_size or (conv.weights_shape[1:] if conv.type == "dw" else [1]))[0]
        stride = (conv.strides_hw or [conv.strides or 1])[0]
        shapes.append(costs.StageShape(stage.type, c_in, c_out, (h_in, w_in), (h_out, w_out), kernel, stride))
    return shapes


def make_device(dag: Dag, gpu: GpuSpec, batch: int, dtype: str, constants: costs.CostConstants) -> costs.Device:
    """The GPU with ``constants`` applied, for this DAG: its weights count as L2-resident when they
    fit there beside the two largest feature maps."""
    weight_bytes = sum(math.prod(l.weights_shape) for l in dag if l.weights_shape) * costs.DTYPE_BYTES[dtype]
    largest_fm = max((_elements(l.ofms_shape) for l in dag), default=0) * costs.DTYPE_BYTES[dtype] * batch
    device = costs.Device(gpu, constants, dtype, batch)
    device.weights_resident = device.resident(weight_bytes + 2 * largest_fm)
    return device


def make_plan(dag: Dag, gpu: GpuSpec, batch: int = 1, dtype: str = "fp32",
              constants: costs.CostConstants | None = None, dag_path: str | None = None) -> Plan:
    if batch < 1:
        raise FcmError(f"batch must be at least 1, not {batch}")
    if dtype not in DTYPES:
        raise FcmError(f"unknown dtype '{dtype}' (one of {', '.join(DTYPES)})")
    _require_shapes(dag)
    device = make_device(dag, gpu, batch, dtype, constants or costs.CostConstants())

    graph, stages = groups.build_stages(dag)
    entry_costs = {layer.id: entry_cost(device, dag, graph, layer) for layer in dag}
    links = groups.link(graph, stages)

    chosen: list[Group] = []
    all_candidates = []
    best_rejected: dict[int, tuple[float, groups.Candidate]] = {}
    blocked: dict[int, str] = {}
    for chain in groups.chains(stages, links):
        windows, priced = [], []
        for start, found in groups.windows(graph, stages, chain):
            if not isinstance(found, str) and not has_op(found.kind, dtype):
                continue
            if isinstance(found, str):
                for conv in chain[start:start + 2]:
                    blocked.setdefault(conv, found)
                continue
            group = price(device, dag, found, entry_costs)
            if group is None:
                for conv in found.convs:
                    blocked.setdefault(conv, f"no tiling of a {found.kind} group fits the GPU's shared memory and registers")
                continue
            windows.append((start, len(found.stages), group.saving))
            priced.append(group)
            all_candidates.append((chain, start, group))
            for conv in found.convs:
                if conv not in best_rejected or group.saving > best_rejected[conv][0]:
                    best_rejected[conv] = (group.saving, found)
        picked = [priced[index] for index in select.select_optimal(len(chain), windows)]
        chosen += picked
        # then a lone pointwise stage the selection left, with an activation to fold (one pass less),
        # as a one-stage group: never in competition with a longer one
        held = {conv for group in picked for conv in group.candidate.convs}
        for candidate in groups.lone_pointwise(graph, stages, chain, held, device.constants.baseline_fused_activations):
            if not has_op(candidate.kind, dtype):
                continue
            group = price(device, dag, candidate, entry_costs)
            if group is not None and group.saving > 0:
                chosen.append(group)

    chosen.sort(key=lambda g: g.candidate.convs[0])
    for number, group in enumerate(chosen):
        group.id = number
    reasons = _unfused_reasons(dag, graph, stages, chosen, best_rejected, blocked)
    by_chain: dict[tuple, list] = {}
    for chain, start, group in all_candidates:
        by_chain.setdefault(tuple(chain), []).append((start, group))
    return Plan(dag, gpu, batch, dtype, device.constants, chosen, reasons, entry_costs, dag_path,
                candidates=[(list(c), found) for c, found in by_chain.items()])


def has_op(kind: str, dtype: str) -> bool:
    """Whether the kind has an op for the planned element type (the pw kind has no int8 op)."""
    return dtype != "int8" or "int8" in vocabulary.KINDS[kind].precisions


def price(device: costs.Device, dag: Dag, candidate: groups.Candidate, entry_costs: dict[int, costs.KernelCost]) -> Group | None:
    shapes = stage_shapes(dag, candidate)
    side = 0.0
    if candidate.stages[0].se_scale is not None:
        side = shapes[0].in_channels
    estimate = costs.best_tiling(device, shapes, side_inputs=side, residual=candidate.residual_add is not None)
    if estimate is None:
        return None
    unfused = sum((entry_costs[i] for i in candidate.entries), costs.ZERO)
    return Group(-1, candidate, estimate.tiling, estimate.cost, unfused, estimate.blocks, estimate.smem_bytes,
                 estimate.recompute_ratio)


def _unfused_reasons(dag, graph, stages, chosen, best_rejected, blocked) -> dict[int, str]:
    in_group = {c: g for g in chosen for c in g.candidate.convs}
    reasons = {}
    for layer in dag.convs():
        if layer.id in in_group:
            continue
        if layer.type == "s":
            reasons[layer.id] = "standard convolution: no FCM kind takes it"
        elif layer.id in best_rejected:
            saving, cand = best_rejected[layer.id]
            others = [c for c in cand.convs if c in in_group]
            if saving <= 0:
                reasons[layer.id] = (f"not profitable: the best group with it ({cand.kind} {cand.convs}) would take "
                                     f"{-saving * 1e6:.2f} us longer than the layers apart")
            elif others:
                reasons[layer.id] = f"its neighbour {others[0]} is in group {in_group[others[0]].id}, which saves more"
            else:
                reasons[layer.id] = "a better-paying choice along its chain left it alone"
        elif layer.id in blocked:
            reasons[layer.id] = f"unsupported: {blocked[layer.id]}"
        elif stages.get(layer.id) is not None and stages[layer.id].unsupported:
            reasons[layer.id] = f"unsupported: {stages[layer.id].unsupported}"
        else:
            reasons[layer.id] = _isolation_reason(dag, graph, stages, layer)
    return reasons


def _isolation_reason(dag: Dag, graph: groups.Graph, stages: dict, layer: Layer) -> str:
    stage = stages[layer.id]
    consumers = graph.consumers[stage.output]
    if stage.output in graph.is_output:
        return "its output is a model output"
    if len(consumers) > 1:
        return f"its output has {len(consumers)} consumers (a branch: {', '.join(dag[c].name + ' ' + str(c) for c in consumers)})"
    before = stage.input
    neighbours = []
    if consumers:
        neighbours.append(f"it feeds {dag[consumers[0]].name} {consumers[0]}")
    if before[0] == "op":
        neighbours.append(f"it reads {dag[before[1]].name} {before[1]}")
    return "no depthwise/pointwise neighbour to fuse with (" + "; ".join(neighbours) + ")"


def _require_shapes(dag: Dag) -> None:
    for layer in dag.convs():
        if len(layer.ifms_shape) != 3 or len(layer.ofms_shape) != 3:
            raise FcmError(f"{layer.type} layer {layer.id} has shapes {layer.ifms_shape} -> {layer.ofms_shape}; expected [C, H, W]")


# --- the report ----------------------------------------------------------------------------------

def format_report(plan: Plan) -> str:
    dag = plan.dag
    t = plan.totals()
    lines = [
        f"fusion plan: {plan.dag_path or 'DAG'} on {plan.gpu.name} ({plan.gpu.source}), batch {plan.batch}, {plan.dtype}",
    ]
    if plan.gpu.defaulted:
        lines.append(f"  (the GPU description gives no {', '.join(plan.gpu.defaulted)}: generic values used; bytes are exact, times are not)")
    lines.append("")
    header = ("group", "kind", "layers", "tiling (h x w x f)", "unfused us", "fused us", "saved us", "DRAM MB unfused -> fused")
    rows = [header]
    for g in plan.groups:
        cand = g.candidate
        label = ",".join(map(str, cand.convs)) + (f" +add {cand.residual_add}" if cand.residual_add is not None else "")
        rows.append((str(g.id), cand.kind, label, f"{g.tiling.tile_h}x{g.tiling.tile_w}x{g.tiling.tile_f}",
                     f"{g.unfused.time * 1e6:.2f}", f"{g.fused.time * 1e6:.2f}", f"{g.saving * 1e6:.2f}",
                     f"{g.unfused.dram_bytes / 1e6:.2f} -> {g.fused.dram_bytes / 1e6:.2f}"))
    lines += _table(rows)
    lines.append("")
    if plan.unfused_reasons:
        lines.append("convolutions left unfused:")
        for layer_id, reason in sorted(plan.unfused_reasons.items()):
            lines.append(f"  {layer_id:>4} {dag[layer_id].type:<3} {reason}")
        lines.append("")
    u, f = t["unfused"], t["fused"]
    lines += [
        f"convolutions fused: {t['convs_fused']} of {t['convs']} (depthwise: {t['dw_fused']} of {t['dw_convs']}) in {t['groups']} groups",
        f"predicted DRAM bytes: {u['dram_bytes'] / 1e6:,.1f} MB unfused -> {f['dram_bytes'] / 1e6:,.1f} MB fused",
        f"kernel launches: {u['launches']} unfused -> {f['launches']} fused",
        f"predicted time: {u['time_us'] / 1e3:.3f} ms unfused -> {f['time_us'] / 1e3:.3f} ms fused "
        f"(x{t['predicted_speedup']})",
    ]
    return "\n".join(lines)


def _table(rows) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return out
