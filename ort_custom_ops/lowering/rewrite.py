"""The graph rewrite: each planned fusion group becomes one node of the ``ai.fcm`` domain.

In: a normalized ONNX model (:mod:`ort_custom_ops.lowering.normalize`), the DAG of the same model and the
fusion plan made on it. Out: the fused model: every group's operators replaced by one FCM node
(weights in the layout the kernels take, attributes from the plan), each node carrying a
model-local function (same domain and op type, told apart by ``overload``) whose body is the
original subgraph, so the model runs with or without the custom-op library. Everything else is
untouched.

Steps: DAG layers are found in the ONNX graph by their weights (and shapes and order), never by
name (:func:`map_convs`); each planned group goes to the rule of its kind (:mod:`.rules`), which
reads the operators around its convolutions and checks them against the plan; a group whose ONNX
subgraph does not read as planned, whose intermediates are used outside it, or which overlaps
another is left unfused and reported with the reason; the matched groups are replaced; a constant
factor of a channel scale is folded into the weights it scales (:mod:`.scale_factors`); then the
graph is cleaned up (:func:`cleanup`: the disconnected nodes removed, sorted) as a separate step.

Layout (``layout``): ``"nhwc"`` (the default) makes channels-last fused nodes, each first put
between Transposes to and from NCHW, then the layout cleanup (:mod:`.transposes`) cancels and moves
those Transposes so that chains of fused nodes and the elementwise operators between them stay
NHWC; the model's inputs and outputs keep their layouts. Then the Convs no group took become
channels-last convolution layers of the domain (:mod:`.layers`, in ``RewriteResult.layers``, not
groups): first those of NCHW stretches, where that does not add layout work (the layout cleanup then
cancels and moves the Transposes around them), then those left between Transposes to and from NCHW,
such as the stem, each taking the Muls and Adds by constants before it as its input scale and shift
(a model's input normalization), in every precision. ``"nchw"`` makes NCHW fused nodes and adds no
Transpose, nor any layer; it leaves the ``pw`` groups unfused (their ops are channels-last only).

``mean_layers`` (off by default): with ``"nhwc"``, the spatial means of NHWC maps become ``Mean``
layers of the domain (:func:`.layers.fold_spatial_means`, in ``RewriteResult.layers``) instead of
the layout cleanup's batched products.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from extractor.dag import Dag
from fcm_core.vocabulary import SINGLE_STAGE_KINDS

from ..ops.schema import DOMAIN, DOMAIN_VERSION
from . import layers, patterns, scale_factors, transposes
from .rules import RULES, Match, NotFusable, overload_of

IR_VERSION = 10  # FunctionProto/NodeProto overloads
LAYOUTS = ("nhwc", "nchw")  # of the fused nodes' feature maps; the first is the default


@dataclass
class RewriteResult:
    model: onnx.ModelProto
    fused: list[dict] = field(default_factory=list)  # {"group", "kind", "node", "replaced": [node names]}
    layers: list[dict] = field(default_factory=list)  # {"node", "op", "replaced": [node names]}: convolution layers
    skipped: list[dict] = field(default_factory=list)  # {"group", "kind", "layers", "reason"}
    unmapped: list[int] = field(default_factory=list)  # DAG convs not found in the ONNX graph
    layout: str = LAYOUTS[0]
    transposes: tuple[int, int] = (0, 0)  # Transpose nodes in the model before the rewrite, and after


# --- finding DAG convolutions in the ONNX graph -------------------------------------------------

def _onnx_layout(dag_weights: np.ndarray, conv_type: str) -> np.ndarray:
    if conv_type == "pw":
        return dag_weights[:, :, None, None]
    if conv_type == "dw":
        return dag_weights[:, None, :, :]
    return dag_weights


def dag_layout(onnx_weights: np.ndarray, conv_type: str) -> np.ndarray:
    """A Conv's weights in the DAG's layout for its layer type (the inverse of ``_onnx_layout``)."""
    if conv_type == "pw":
        return onnx_weights[:, :, 0, 0]
    if conv_type == "dw":
        return onnx_weights[:, 0, :, :]
    return onnx_weights


def map_convs(dag: Dag, graph: gs.Graph) -> dict[int, gs.Node]:
    """DAG conv id -> the ONNX Conv with the same weights (equal up to float rounding of the
    folded batch norms); where several match, the one in the same order wins."""
    candidates = [n for n in graph.nodes if n.op == "Conv" and isinstance(n.inputs[1], gs.Constant)]
    used: set[int] = set()
    mapping: dict[int, gs.Node] = {}
    for layer in dag.convs():
        if not dag.has_weight(layer.id, "weights"):
            continue
        expected = _onnx_layout(dag.weight(layer.id, "weights").astype(np.float32), layer.type)
        tolerance = 1e-3 * float(np.abs(expected).max() or 1.0)
        for index, node in enumerate(candidates):
            if index in used:
                continue
            weights = node.inputs[1].values
            if weights.shape == expected.shape and np.abs(weights.astype(np.float32) - expected).max() <= tolerance:
                mapping[layer.id] = node
                used.add(index)
                break
    return mapping


def rewrite(model: onnx.ModelProto, dag: Dag, plan: dict, layout: str = LAYOUTS[0],
            mean_layers: bool = False) -> RewriteResult:
    """Replace every planned group that reads as planned by one FCM node (see module docstring)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    model = _with_unique_node_names(model)
    originals = {node.name: node for node in model.graph.node}
    initializers = {t.name: t for t in model.graph.initializer}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    graph = gs.import_onnx(model)
    graph_outputs = patterns.ids(graph.outputs)
    mapping = map_convs(dag, graph)
    result = RewriteResult(model=model, unmapped=[layer.id for layer in dag.convs() if layer.id not in mapping],
                           layout=layout)

    batch = int(plan.get("batch", 0))
    matches: list[Match] = []
    claimed: set[int] = set()
    for group in plan.get("groups", []):
        missing = [layer for layer in group["layers"] if layer not in mapping]
        reason = None
        if missing:
            reason = f"layers {missing} have no Conv with their weights in the ONNX graph"
        elif layout != "nhwc" and group["kind"] in SINGLE_STAGE_KINDS:
            reason = f"the {group['kind']} kind is channels-last only (layout {layout})"
        else:
            try:
                match = RULES[group["kind"]].match(graph, group, [mapping[layer] for layer in group["layers"]],
                                                   graph_outputs, batch)
                if claimed & set(map(id, match.nodes)):
                    raise NotFusable("overlaps another group")
                claimed |= set(map(id, match.nodes))
                matches.append(match)
            except NotFusable as exc:
                reason = str(exc)
        if reason:
            result.skipped.append({"group": group["id"], "kind": group["kind"], "layers": group["layers"], "reason": reason})

    functions = []
    overloads: dict[str, str] = {}  # node name -> the overload of its function
    for match in matches:
        match.spec.channels_last = layout == "nhwc"
        node, function = RULES[match.spec.kind].replace(graph, match, originals, initializers, opset)
        functions.append(function)
        overloads[node.name] = overload_of(match.group["id"])
        result.fused.append({"group": match.group["id"], "kind": match.spec.kind, "node": node.name,
                             "replaced": [n.name for n in match.nodes]})
    scale_factors.fold_scale_factors(graph)

    if matches and layout == "nhwc":
        # the final rules (unit Transposes as Reshapes, ...) once the NCHW stretches' layers have had their moves
        transposes.optimize(graph, final=())
        made = layers.fold_nchw_layers(graph, opset, set(overloads.values()))
        transposes.optimize(graph, rules=(), final=transposes.final_rules(batch, mean_layers))
        made += layers.fold_layers(graph, opset, set(overloads.values()) | {f.function.overload for f in made})
        layers.fold_input_affines(graph, made, opset)
        if mean_layers:
            made += layers.fold_spatial_means(graph, opset, set(overloads.values()) | {f.function.overload for f in made})
        for folded in made:
            functions.append(folded.function)
            overloads[folded.node.name] = folded.function.overload
            result.layers.append({"node": folded.node.name, "op": folded.node.op, "replaced": folded.replaced})
    fused = cleanup(graph)
    for node in fused.graph.node:
        if node.name in overloads:
            node.overload = overloads[node.name]
    fused.functions.extend(functions)
    if functions and not any(o.domain == DOMAIN for o in fused.opset_import):
        fused.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    fused.ir_version = max(IR_VERSION, model.ir_version)
    for prop in model.metadata_props:
        if prop.key != transposes.PLANNED_BATCH:
            fused.metadata_props.append(prop)
    if batch:
        fused.metadata_props.append(onnx.StringStringEntryProto(key=transposes.PLANNED_BATCH, value=str(batch)))
    onnx.checker.check_model(fused)
    result.model = fused
    result.transposes = (transposes.transpose_count(model), transposes.transpose_count(fused))
    return result


def cleanup(graph: gs.Graph) -> onnx.ModelProto:
    """The graph without the nodes the replacements disconnected, in topological order, as ONNX."""
    graph.cleanup().toposort()
    return gs.export_onnx(graph)


def _with_unique_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    seen: set[str] = set()
    for index, node in enumerate(copy.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    return copy
