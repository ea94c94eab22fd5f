"""The rewrite rules: one pattern -> replacement rule per FCM kind.

In: a normalized ONNX graph (onnx-graphsurgeon IR), a planned group (its kind, stages, activations,
residual; ``planner.plan``'s JSON) and the graph's Conv nodes of its layers. Out: a :class:`Match`
(the nodes the group covers, its input, output and :class:`~ort_custom_ops.ops.schema.FcmSpec`),
or :class:`NotFusable` with the reason; then the replacement: one FCM node whose function body is
the matched subgraph.

Each kind's pattern, read from its convolutions outwards (``pad?`` a zero Pad folded into the
depthwise padding, ``scale?`` a channel scale ``Mul(x, s[N, C, 1, 1])`` before a first pointwise
stage, ``act`` an activation of the vocabulary in its ONNX form, ``[+ x, act]`` a residual Add of
the group's input and the activation after it):

- ``dwpw``:   act2(pw(act1(dw(pad?(x))))) [+ x, act]
- ``pwdw``:   act2(dw(pad?(act1(pw(scale?(x)))))) [+ x, act]
- ``pwpw``:   act2(pw(act1(pw(scale?(x))))) [+ x, act]
- ``pwdwpw``: act3(pw(act2(dw(pad?(act1(pw(scale?(x)))))))) [+ x, act]
- ``pw``:     act1(pw(scale?(x))) [+ x, act]   (channels-last only)

Every rule checks what it reads against the plan (activations, residual, channel scale) and that
no intermediate tensor is used outside the group. The rewrite (:mod:`.rewrite`) finds the groups'
convolutions, applies the rules, and cleans the graph up afterwards.

A channels-last replacement (``spec.channels_last``) is the fused node between a Transpose of the
group's input to NHWC and one of its output back to NCHW, so that the graph around it is unchanged;
its function body is the matched subgraph between the same layout changes. The layout cleanup
(:mod:`.transposes`) then cancels the Transposes between neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from fcm_core.vocabulary import KINDS

from ..ops.schema import (DOMAIN, FROM_PLAN_ACTIVATION, KIND_STAGES, PLAN_CLIP_BOUNDS, TILING_KEYS, TO_NCHW, TO_NHWC,
                          Activation, FcmSpec, StageSpec, channels_last_body, make_function)
from . import patterns
from .transposes import append_transpose, permuted


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


# --- the patterns --------------------------------------------------------------------------------

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
    """The pattern of ``group['kind']`` read around its planned convolutions (see :class:`Rule`)."""
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
    current = convs[0].inputs[0] if scale is not None else x  # the first convolution reads the scaled x
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


# --- the replacement -----------------------------------------------------------------------------

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


@dataclass(frozen=True)
class Rule:
    """The rule of one FCM kind: :meth:`match` reads the kind's pattern (module docstring) around
    a planned group's convolutions; :meth:`replace` puts one fused node in the matched nodes' place
    (they are left without outputs for the cleanup to remove) and returns its function."""

    kind: str

    def match(self, graph: gs.Graph, group: dict, convs: list[gs.Node], graph_outputs: set[int],
              plan_batch: int = 0) -> Match:
        if group["kind"] != self.kind:
            raise NotFusable(f"a {group['kind']} group is not a {self.kind}")
        return read_group(graph, group, convs, graph_outputs, plan_batch)

    def replace(self, graph: gs.Graph, match: Match, originals: dict[str, onnx.NodeProto],
                initializers: dict[str, onnx.TensorProto], opset: int) -> tuple[gs.Node, onnx.FunctionProto]:
        gid = match.group["id"]
        prefix = f"fcm{gid}_"
        node_name = fused_node_name(gid, self.kind)
        weights = match.spec.weights(prefix)
        constants = {name: gs.Constant(name, values) for name, values in weights.items()}
        formal = ["X"] + list(weights) + (["S"] if match.scale is not None else [])
        body = _function_body(match, originals, initializers, list(weights))
        if match.spec.channels_last:
            body = channels_last_body(body, "X", "Y", "S" if match.scale is not None else None)
        function = make_function(match.spec, body, formal, "Y", overload=overload_of(gid), opset=opset)
        for node in match.nodes:
            node.outputs.clear()
        x, y = match.input, match.output
        if match.spec.channels_last:  # NCHW around it, as before
            x = append_transpose(graph, match.input, TO_NHWC, f"{node_name}/x_nhwc")
            y = gs.Variable(f"{node_name}/y_nhwc", dtype=match.output.dtype, shape=permuted(match.output.shape, TO_NHWC))
            graph.nodes.append(gs.Node("Transpose", name=f"{node_name}/y_nchw", attrs={"perm": list(TO_NCHW)}, inputs=[y],
                                       outputs=[match.output]))
        inputs = [x] + list(constants.values()) + ([match.scale] if match.scale is not None else [])
        node = gs.Node(match.spec.op_type, name=node_name, domain=DOMAIN, attrs=match.spec.attributes(),
                       inputs=inputs, outputs=[y])
        graph.nodes.append(node)
        return node, function


def fused_node_name(group_id: int, kind: str) -> str:
    """The name of a planned group's fused node (``fcm3_pwdwpw``)."""
    return f"fcm{group_id}_{kind}"


def overload_of(group_id: int) -> str:
    """The overload that ties a fused node to its function body: one per group."""
    return f"g{group_id}"


RULES = {kind: Rule(kind) for kind in KINDS}
