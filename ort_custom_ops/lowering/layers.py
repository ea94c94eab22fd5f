"""The convolution layers: a Conv no group takes, between channels-last neighbours, as one node.

In: an fp32 ONNX graph (onnx-graphsurgeon IR) after the layout cleanup (:mod:`.transposes`), in
which the Convs left to ONNX Runtime sit between layout changes:
``Transpose(x, [0, 3, 1, 2]) -> Conv -> Transpose([0, 2, 3, 1])``, maybe followed by an activation
(:func:`.patterns.read_activation`). Out: in their place, one channels-last ``Conv`` node of the
``ai.fcm`` domain on ``x`` each (:class:`~ort_custom_ops.ops.schema.ConvLayer`: the convolution, its
bias and the activation in one kernel, where ONNX Runtime runs a layout change, the convolution, a
bias add and the activation), with its model-local function (the same in standard ONNX), and the
replaced nodes disconnected for the cleanup.

Which Convs (:func:`read_layer`): 2-D, constant weights and bias (no bias: zeros), dilations 1, no
``auto_pad``, padding narrower than the kernel, the input's H, W and C known; either one group with
few input values per output (C * KH * KW at most :data:`MAX_STANDARD_INPUTS`: a network's stem;
a wide standard convolution stays with cuDNN) or depthwise (group = C = F) with a square kernel the
kernels take (3, 5, 7), any stride. The Conv's output and the Transpose's must be read by the next
node alone (and be no graph output); the first Transpose stays where something else reads it. An
activation the kernels do not implement stays a node of its own after the layer, which then folds
none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from fcm_core.vocabulary import DOMAIN, DW_KERNELS

from ..ops.schema import TO_NCHW, TO_NHWC, Activation, ConvLayer
from . import patterns
from .transposes import perm_of, producer

#: The most input values (C * KH * KW) per output of a standard convolution made a layer: an RGB
#: stem's 3 * 3 * 3 = 27, up to 7 x 7 kernels on one channel.
MAX_STANDARD_INPUTS = 64


@dataclass
class LayerMatch:
    layer: ConvLayer
    x: object  # gs.Tensor, NHWC
    weights: gs.Constant  # [F, C / group, KH, KW]
    bias: gs.Constant | None
    output: object  # the tensor the layer writes (NHWC): the activation's, or the second Transpose's
    nodes: list  # the nodes the layer replaces: the Conv, the Transpose after it, the activation's


@dataclass
class Folded:
    """One layer made: its node, its function, the names of the nodes it replaced."""

    node: gs.Node
    function: onnx.FunctionProto
    replaced: list[str]


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def _only_read_by(tensor, node, graph_outputs: set[int]) -> bool:
    return id(tensor) not in graph_outputs and len(tensor.outputs) == 1 and tensor.outputs[0] is node


def _geometry(conv: gs.Node, channels: int) -> ConvLayer | None:
    """The layer a Conv of a [N, C, H, W] input with ``channels`` C is, without its activation;
    None where the kernels do not take it (module docstring)."""
    attrs = conv.attrs
    weights = conv.inputs[1].values
    if weights.ndim != 4 or weights.dtype != np.float32:
        return None
    features, per_group, kh, kw = weights.shape
    group = int(attrs.get("group", 1))
    if per_group * group != channels or _ints(attrs.get("kernel_shape", [kh, kw])) != [kh, kw]:
        return None
    if any(d != 1 for d in _ints(attrs.get("dilations", [1, 1]))):
        return None
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    strides, pads = _ints(attrs.get("strides", [1, 1])), _ints(attrs.get("pads", [0, 0, 0, 0]))
    if len(strides) != 2 or len(pads) != 4 or min(strides) < 1 or min(pads) < 0:
        return None
    if max(pads[0], pads[2]) >= kh or max(pads[1], pads[3]) >= kw:
        return None
    standard = group == 1 and channels * kh * kw <= MAX_STANDARD_INPUTS
    depthwise = group == channels == features and kh == kw and kh in DW_KERNELS
    if not (standard or depthwise):
        return None
    return ConvLayer((kh, kw), (strides[0], strides[1]), (pads[0], pads[1], pads[2], pads[3]), group)


def read_layer(conv: gs.Node, graph_outputs: set[int]) -> LayerMatch | None:
    """The layer ``conv`` and the nodes around it make (module docstring); None where they make none."""
    if conv.op != "Conv" or conv.domain not in (None, "", "ai.onnx") or len(conv.inputs) < 2 or len(conv.outputs) != 1:
        return None
    first = producer(conv.inputs[0])
    weights = conv.inputs[1]
    bias = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2].name else None
    if perm_of(first) != TO_NCHW or not isinstance(weights, gs.Constant):
        return None
    if bias is not None and (not isinstance(bias, gs.Constant) or bias.values.shape != (weights.shape[0],)):
        return None
    x = first.inputs[0]
    if x.shape is None or len(x.shape) != 4 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in x.shape[1:]):
        return None
    layer = _geometry(conv, int(x.shape[3]))
    out = conv.outputs[0]
    second = patterns.sole_consumer(out)
    if layer is None or second is None or perm_of(second) != TO_NHWC or not _only_read_by(out, second, graph_outputs):
        return None
    activation, act_nodes, result = patterns.read_activation(second.outputs[0], graph_outputs)
    if activation is None:  # the kernels do not implement it: it stays after the layer
        activation, act_nodes, result = Activation(), [], second.outputs[0]
    layer.activation = activation
    return LayerMatch(layer, x, weights, bias, result, [conv, second, *act_nodes])


def layer_node_name(index: int) -> str:
    """The name of the ``index``-th layer node of a model (``fcm_conv0``)."""
    return f"fcm_conv{index}"


def layer_overload(index: int) -> str:
    """The overload that ties a layer node to its function body (fused groups' are ``g<id>``)."""
    return f"c{index}"


def fold_layers(graph: gs.Graph, opset: int, overloads: set[str] = frozenset()) -> list[Folded]:
    """Every Conv of ``graph`` that :func:`read_layer` reads as a layer replaced by its node; the
    nodes' names and ``overloads`` unused in the graph and in ``overloads`` (those of the model's
    functions). The replaced nodes are left without inputs and outputs for the cleanup."""
    graph_outputs = patterns.ids(graph.outputs)
    taken_names = {n.name for n in graph.nodes} | set(graph.tensors())
    taken_overloads = set(overloads)
    index = 0
    folded = []
    for conv in list(graph.nodes):
        match = read_layer(conv, graph_outputs)
        if match is None:
            continue
        while layer_node_name(index) in taken_names or layer_overload(index) in taken_overloads:
            index += 1
        name, overload = layer_node_name(index), layer_overload(index)
        taken_names.add(name)
        taken_overloads.add(overload)
        bias = match.bias
        if bias is None:
            bias = gs.Constant(f"{name}_B", np.zeros(match.weights.shape[0], np.float32))
            taken_names.add(bias.name)
        replaced = [n.name for n in match.nodes]
        for node in match.nodes:
            node.inputs.clear()
            node.outputs.clear()
        node = gs.Node(match.layer.op_type, name=name, domain=DOMAIN, attrs=match.layer.attributes(),
                       inputs=[match.x, match.weights, bias], outputs=[match.output])
        graph.nodes.append(node)
        folded.append(Folded(node, match.layer.function(overload, opset), replaced))
    return folded
