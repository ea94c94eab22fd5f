"""The graph rewrite: each planned fusion group becomes one node of the ``ai.fcm`` domain.

In: a normalized ONNX model (:mod:`ort_custom_ops.normalize`), the DAG of the same model and the
fusion plan made on it. Out: the fused model: every group's operators replaced by one FCM node
(weights in the layout the kernels take, attributes from the plan), each node carrying a
model-local function (same domain and op type, told apart by ``overload``) whose body is the
original subgraph, so the model runs with or without the custom-op library. Everything else is
untouched.

DAG layers are found in the ONNX graph by their weights (and shapes and order), never by name.
One rule per FCM kind reads the operators around the matched convolutions (padding, channel
scale, activations, residual add) and checks them against the plan; a group whose ONNX subgraph
does not read as planned, or whose intermediates are used outside it, is left unfused and
reported with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from extractor.dag import Dag

from . import patterns
from .schema import (DOMAIN, DOMAIN_VERSION, FROM_PLAN_ACTIVATION, KIND_STAGES, PLAN_CLIP_BOUNDS, TILING_KEYS,
                     Activation, FcmSpec, StageSpec, make_function)

IR_VERSION = 10  # FunctionProto/NodeProto overloads


class NotFusable(Exception):
    """The ONNX subgraph of a planned group does not read as the plan says."""


@dataclass
class Match:
    group: dict
    spec: FcmSpec
    input: object  # gs.Tensor
    output: object
    scale: object | None
    nodes: list  # every gs.Node the fused node replaces, in graph order
    conv_params: list[tuple[str, str | None]]  # per stage: (weight initializer name, bias initializer name)


@dataclass
class RewriteResult:
    model: onnx.ModelProto
    fused: list[dict] = field(default_factory=list)  # {"group", "kind", "node", "replaced": [node names]}
    skipped: list[dict] = field(default_factory=list)  # {"group", "kind", "layers", "reason"}
    unmapped: list[int] = field(default_factory=list)  # DAG convs not found in the ONNX graph


# --- finding DAG convolutions in the ONNX graph -------------------------------------------------

def _onnx_layout(dag_weights: np.ndarray, conv_type: str) -> np.ndarray:
    if conv_type == "pw":
        return dag_weights[:, :, None, None]
    if conv_type == "dw":
        return dag_weights[:, None, :, :]
    return dag_weights


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


# --- reading one group ------------------------------------------------------------------------

def _plan_activation(name: str) -> Activation:
    attribute = FROM_PLAN_ACTIVATION.get(name)
    if attribute is None:
        raise NotFusable(f"activation {name} has no kernel epilogue")
    if attribute == "clip":
        return Activation("clip", PLAN_CLIP_BOUNDS[name])
    return Activation(attribute)


def _same(a: Activation, b: Activation) -> bool:
    return a.name == b.name and (a.name != "clip" or np.allclose(a.clip, b.clip))


def _conv_stage(node: gs.Node, stage_type: str) -> tuple[StageSpec, str, str | None]:
    """A Conv node as a stage (weights in kernel layout); raise NotFusable if it is not one."""
    attrs = node.attrs
    weights = node.inputs[1].values.astype(np.float32)
    out_c, in_per_group, kh, kw = weights.shape
    group = int(attrs.get("group", 1))
    strides = list(attrs.get("strides", [1, 1]))
    dilations = list(attrs.get("dilations", [1, 1]))
    if dilations != [1, 1]:
        raise NotFusable(f"{node.name} is dilated")
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise NotFusable(f"{node.name} uses auto_pad")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    bias_name = None
    if len(node.inputs) > 2 and node.inputs[2].name:
        if not isinstance(node.inputs[2], gs.Constant):
            raise NotFusable(f"{node.name} has a computed bias")
        bias = node.inputs[2].values.astype(np.float32)
        bias_name = node.inputs[2].name
    else:
        bias = np.zeros(out_c, np.float32)
    if stage_type == "pw":
        if (kh, kw) != (1, 1) or group != 1 or strides != [1, 1] or any(pads):
            raise NotFusable(f"{node.name} is not a stride-1 pointwise convolution")
        return StageSpec("pw", weights[:, :, 0, 0], bias), node.inputs[1].name, bias_name
    if in_per_group != 1 or group != out_c or kh != kw or strides[0] != strides[1]:
        raise NotFusable(f"{node.name} is not a square depthwise convolution")
    stage = StageSpec("dw", weights[:, 0], bias, stride=int(strides[0]), pads=(pads[0], pads[1], pads[2], pads[3]))
    return stage, node.inputs[1].name, bias_name


def _only_feeds(tensor, node: gs.Node, graph_outputs: set[int]) -> bool:
    return id(tensor) not in graph_outputs and len(tensor.outputs) == 1 and tensor.outputs[0] is node


def read_group(graph: gs.Graph, group: dict, convs: list[gs.Node], graph_outputs: set[int], plan_batch: int = 0) -> Match:
    """The rule of ``group['kind']``: y = act_n(conv_n(... act_1(conv_1(x)) ...)) [+ x, act_r],
    with a Pad before a depthwise conv and a channel scale before the first pointwise one."""
    kind = group["kind"]
    stage_types = KIND_STAGES[kind]
    plan_stages = group["stages"]
    nodes: list[gs.Node] = []
    conv_params = []
    specs: list[StageSpec] = []

    # the input, through the first stage's prologue
    x = convs[0].inputs[0]
    scale = None
    producer = x.inputs[0] if x.inputs else None
    if plan_stages[0].get("se_scale") is not None:
        read = patterns.read_channel_scale(producer) if producer is not None else None
        if read is None or not _only_feeds(x, convs[0], graph_outputs):
            raise NotFusable("the planned channel scale is not a Mul(x, s[N, C, 1, 1]) feeding the first convolution")
        nodes.append(producer)
        x, scale = read
    current = x
    for index, (stage_type, conv) in enumerate(zip(stage_types, convs)):
        data = conv.inputs[0]
        extra = (0, 0, 0, 0)
        if stage_type == "dw" and data is not current:
            pad = data.inputs[0] if data.inputs else None
            read = patterns.read_spatial_pad(pad) if pad is not None else None
            if read is None or pad.inputs[0] is not current or not _only_feeds(data, conv, graph_outputs):
                raise NotFusable(f"{conv.name} does not read the previous stage's output (or a zero Pad of it)")
            if index > 0 and not _only_feeds(current, pad, graph_outputs):
                raise NotFusable(f"the output before {pad.name} is used elsewhere too")
            nodes.append(pad)
            extra = read
        elif data is not current:
            raise NotFusable(f"{conv.name} does not read the previous stage's output")
        elif index > 0 and not _only_feeds(current, conv, graph_outputs):
            raise NotFusable(f"the output before {conv.name} is used elsewhere too")
        stage, weight_name, bias_name = _conv_stage(conv, stage_type)
        if stage_type == "dw":
            stage.pads = tuple(int(a + b) for a, b in zip(stage.pads, extra))
            if max(stage.pads) >= stage.kernel:
                raise NotFusable(f"{conv.name}: padding {stage.pads} as wide as its kernel")
        nodes.append(conv)
        activation, act_nodes, current = patterns.read_activation(conv.outputs[0], graph_outputs)
        if activation is None:
            raise NotFusable(f"{conv.name} is followed by {act_nodes[0].op}, which the kernels do not implement")
        planned = _plan_activation(plan_stages[index]["activation"])
        if not _same(activation, planned):
            raise NotFusable(f"{conv.name}: the graph applies {activation.name}, the plan says {planned.name}")
        stage.activation = activation
        nodes += act_nodes
        specs.append(stage)
        conv_params.append((weight_name, bias_name))

    residual, residual_activation = False, Activation()
    if group.get("residual"):
        add = patterns.sole_consumer(current)
        if add is None or add.op != "Add" or id(current) in graph_outputs or patterns.ids(add.inputs) != patterns.ids([current, x]):
            raise NotFusable("the planned residual Add(output, input) is not there")
        nodes.append(add)
        residual = True
        residual_activation, act_nodes, current = patterns.read_activation(add.outputs[0], graph_outputs)
        if residual_activation is None:
            raise NotFusable("the residual add is followed by an activation the kernels do not implement")
        if not _same(residual_activation, _plan_activation(group["residual"]["activation"])):
            raise NotFusable("the activation after the residual add differs from the plan's")
        nodes += act_nodes

    inside = set(map(id, nodes))
    for node in nodes:
        for tensor in node.outputs:
            if tensor is current:
                continue
            if id(tensor) in graph_outputs or any(id(consumer) not in inside for consumer in tensor.outputs):
                raise NotFusable(f"{tensor.name} is used outside the group")
    tiling = {k: v for k, v in group.get("tiling", {}).items() if k in TILING_KEYS}
    if tiling and plan_batch:
        tiling["plan_batch"] = plan_batch
    spec = FcmSpec(kind, specs, residual=residual, residual_activation=residual_activation, has_scale=scale is not None,
                   tiling=tiling)
    return Match(group, spec, x, current, scale, nodes, conv_params)


# --- the replacement --------------------------------------------------------------------------

def _function_body(match: Match, originals: dict[str, onnx.NodeProto], initializers: dict[str, onnx.TensorProto],
                   formal_weights: list[str]) -> list[onnx.NodeProto]:
    """The original subgraph, with the group's tensors renamed to the function's formal inputs:
    conv weights come from the kernel-layout inputs through a Reshape, other constants become
    Constant nodes."""
    rename = {match.input.name: "X", match.output.name: "Y"}
    if match.scale is not None:
        rename[match.scale.name] = "S"
    body: list[onnx.NodeProto] = []
    for index, (stage, (weight, bias)) in enumerate(zip(match.spec.stages, match.conv_params)):
        shape = list(initializers[weight].dims)
        body.append(helper.make_node("Constant", [], [f"fcm_shape{index + 1}"], value_ints=shape))
        body.append(helper.make_node("Reshape", [formal_weights[2 * index], f"fcm_shape{index + 1}"], [f"fcm_w{index + 1}"]))
        rename[weight] = f"fcm_w{index + 1}"
        if bias is not None:
            rename[bias] = formal_weights[2 * index + 1]
    constants_made: set[str] = set()
    for node in match.nodes:
        proto = onnx.NodeProto()
        proto.CopyFrom(originals[node.name])
        for position, name in enumerate(proto.input):
            if name in rename:
                proto.input[position] = rename[name]
            elif name in initializers and name not in constants_made:
                body.append(helper.make_node("Constant", [], [name], value=initializers[name]))
                constants_made.add(name)
        for position, name in enumerate(proto.output):
            proto.output[position] = rename.get(name, name)
        body.append(proto)
    return body


def rewrite(model: onnx.ModelProto, dag: Dag, plan: dict) -> RewriteResult:
    """Replace every planned group that reads as planned by one FCM node (see module docstring)."""
    model = _with_unique_node_names(model)
    originals = {node.name: node for node in model.graph.node}
    initializers = {t.name: t for t in model.graph.initializer}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    graph = gs.import_onnx(model)
    graph_outputs = patterns.ids(graph.outputs)
    mapping = map_convs(dag, graph)
    result = RewriteResult(model=model, unmapped=[layer.id for layer in dag.convs() if layer.id not in mapping])

    matches: list[Match] = []
    claimed: set[int] = set()
    for group in plan.get("groups", []):
        missing = [layer for layer in group["layers"] if layer not in mapping]
        reason = None
        if missing:
            reason = f"layers {missing} have no Conv with their weights in the ONNX graph"
        else:
            try:
                match = read_group(graph, group, [mapping[layer] for layer in group["layers"]], graph_outputs,
                                   int(plan.get("batch", 0)))
                if claimed & set(map(id, match.nodes)):
                    raise NotFusable("overlaps another group")
                claimed |= set(map(id, match.nodes))
                matches.append(match)
            except NotFusable as exc:
                reason = str(exc)
        if reason:
            result.skipped.append({"group": group["id"], "kind": group["kind"], "layers": group["layers"], "reason": reason})

    functions = []
    for match in matches:
        gid = match.group["id"]
        prefix = f"fcm{gid}_"
        weights = match.spec.weights(prefix)
        constants = {name: gs.Constant(name, values) for name, values in weights.items()}
        inputs = [match.input] + list(constants.values()) + ([match.scale] if match.scale is not None else [])
        name = f"fcm{gid}_{match.spec.kind}"
        formal = ["X"] + list(weights) + (["S"] if match.scale is not None else [])
        body = _function_body(match, originals, initializers, list(weights))
        functions.append(make_function(match.spec, body, formal, "Y", overload=f"g{gid}", opset=opset))
        replaced = [n.name for n in match.nodes]
        for node in match.nodes:
            node.outputs.clear()
        graph.nodes.append(gs.Node(match.spec.op_type, name=name, domain=DOMAIN, attrs=match.spec.attributes(),
                                   inputs=inputs, outputs=[match.output]))
        result.fused.append({"group": gid, "kind": match.spec.kind, "node": name, "replaced": replaced})

    graph.cleanup().toposort()
    fused = gs.export_onnx(graph)
    for node in fused.graph.node:
        if node.domain == DOMAIN:
            node.overload = f"g{node.name[3:].split('_')[0]}"
    fused.functions.extend(functions)
    if functions and not any(o.domain == DOMAIN for o in fused.opset_import):
        fused.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    fused.ir_version = max(IR_VERSION, model.ir_version)
    for prop in model.metadata_props:
        fused.metadata_props.append(prop)
    onnx.checker.check_model(fused)
    result.model = fused
    return result


def _with_unique_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    seen: set[str] = set()
    for index, node in enumerate(copy.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)
    return copy
