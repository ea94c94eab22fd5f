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
a kernel wider than 1x1 and few input values per output (C * KH * KW at most
:data:`MAX_STANDARD_INPUTS`: a network's stem; a wide standard convolution stays with cuDNN, and a
1x1 one is a matrix product for the tensor cores) or depthwise (group = C = F) with a square kernel the
kernels take (3, 5, 7), any stride. The Conv's output and the Transpose's must be read by the next
node alone (and be no graph output); the first Transpose stays where something else reads it. An
activation the kernels do not implement stays a node of its own after the layer, which then folds
none.

A model's input normalization before a layer (:func:`fold_input_affines`: Muls and Adds by
constants of the channels that nothing else reads, Keras' Rescaling and Normalization before its
stem) becomes the layer's input scale and shift: the kernel applies them as it reads the input.

Convs in an NCHW stretch (:func:`fold_nchw_layers`, before :func:`fold_layers`, while the layout
rules can still move Transposes): where the layout cleanup leaves a network's first Convs in NCHW
(``Transpose -> Conv -> activation -> Conv -> activation -> ...``: the stem and the first depthwise
convolution of EfficientNetB0 and MobileNetV3Small, whose readers the cleanup did not move to NHWC),
each Conv :func:`read_nchw_layer` reads (the same geometry; the activation that follows it folded)
becomes ``Transpose(to NHWC) -> layer -> Transpose(to NCHW)``, and the layout cleanup cancels the
pairs this puts between neighbouring layers and moves the rest toward the NCHW readers (a
squeeze-and-excitation mean takes its Transpose onto the reduced tensor). That is done only where it
does not add layout work: the Convs are folded together where the elements the graph's Transposes
move (:func:`.transposes.moved_elements`) do not grow, else the one whose leaving out lowers them
most is left out, and so on (a stem alone before an NCHW reader would trade the Transpose of the
image for a larger one of its output).

Spatial means (:func:`fold_spatial_means`, where the rewrite is asked for them: its ``mean_layers``
option): each ReduceMean over axes [1, 2] of an fp32 NHWC map whose H, W and C are known
(:func:`.transposes.spatial_mean`: a global average pool, a squeeze-and-excitation mean) becomes one
``Mean`` node of the domain (:class:`~ort_custom_ops.ops.schema.MeanLayer`: one deterministic
kernel, where ONNX Runtime's CUDA provider runs a reduction of three kernels, or the layout
cleanup's batched product, :func:`.transposes.spatial_means_to_products`, which it then leaves out).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from fcm_core.vocabulary import DOMAIN, DW_KERNELS

from ..ops.schema import TO_NCHW, TO_NHWC, Activation, ConvLayer, MeanLayer
from . import patterns, transposes
from .patterns import UnusedNames
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
    """One layer made: its node, its function, the names of the nodes it replaced, what it computes."""

    node: gs.Node
    function: onnx.FunctionProto
    replaced: list[str]
    layer: ConvLayer | MeanLayer


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
    # (a 1x1 convolution is a matrix product, which ONNX Runtime runs on the tensor cores)
    standard = group == 1 and kh * kw > 1 and channels * kh * kw <= MAX_STANDARD_INPUTS
    depthwise = group == channels == features and kh == kw and kh in DW_KERNELS
    if not (standard or depthwise):
        return None
    return ConvLayer((kh, kw), (strides[0], strides[1]), (pads[0], pads[1], pads[2], pads[3]), group)


def _constant_parts(conv: gs.Node) -> tuple[gs.Constant, gs.Constant | None] | None:
    """(weights, bias or None) of a default-domain Conv with a constant kernel and bias; None for any other node."""
    if conv.op != "Conv" or conv.domain not in (None, "", "ai.onnx") or len(conv.inputs) < 2 or len(conv.outputs) != 1:
        return None
    weights = conv.inputs[1]
    bias = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2].name else None
    if not isinstance(weights, gs.Constant):
        return None
    if bias is not None and (not isinstance(bias, gs.Constant) or bias.values.shape != (weights.shape[0],)):
        return None
    return weights, bias


def _known(shape, rank: int = 4) -> bool:
    """Whether ``shape`` has ``rank`` dimensions, all but the first (the batch) known."""
    return shape is not None and len(shape) == rank and all(isinstance(d, (int, np.integer)) and d > 0 for d in shape[1:])


def _take_activation(layer: ConvLayer, tensor, graph_outputs: set[int]) -> tuple[list, object]:
    """The activation applied to ``tensor`` (the convolution's output) set as ``layer``'s: (the nodes
    applying it, the tensor the layer then writes). One the kernels do not implement stays a node of
    its own after the layer, which then takes none."""
    activation, act_nodes, result = patterns.read_activation(tensor, graph_outputs)
    if activation is None:
        activation, act_nodes, result = Activation(), [], tensor
    layer.activation = activation
    return act_nodes, result


def read_layer(conv: gs.Node, graph_outputs: set[int]) -> LayerMatch | None:
    """The layer ``conv`` and the nodes around it make (module docstring); None where they make none."""
    parts = _constant_parts(conv)
    if parts is None:
        return None
    weights, bias = parts
    first = producer(conv.inputs[0])
    if perm_of(first) != TO_NCHW:
        return None
    x = first.inputs[0]
    if not _known(x.shape):
        return None
    layer = _geometry(conv, int(x.shape[3]))
    out = conv.outputs[0]
    second = patterns.sole_consumer(out)
    if layer is None or second is None or perm_of(second) != TO_NHWC or not _only_read_by(out, second, graph_outputs):
        return None
    act_nodes, result = _take_activation(layer, second.outputs[0], graph_outputs)
    return LayerMatch(layer, x, weights, bias, result, [conv, second, *act_nodes])


def read_nchw_layer(conv: gs.Node, graph_outputs: set[int]) -> LayerMatch | None:
    """The layer a Conv of an NCHW stretch makes with the activation that follows it (module
    docstring), its ``x`` and ``output`` NCHW tensors (the Conv's input, the activation's output);
    None where it makes none, or where :func:`read_layer` reads it between layout changes."""
    parts = _constant_parts(conv)
    if parts is None or read_layer(conv, graph_outputs) is not None:
        return None
    weights, bias = parts
    x, out = conv.inputs[0], conv.outputs[0]
    if not _known(x.shape) or not _known(out.shape) or out.shape[1] != weights.shape[0]:
        return None
    layer = _geometry(conv, int(x.shape[1]))
    if layer is None:
        return None
    act_nodes, result = _take_activation(layer, out, graph_outputs)
    return LayerMatch(layer, x, weights, bias, result, [conv, *act_nodes])


def layer_node_name(index: int) -> str:
    """The name of the ``index``-th layer node of a model (``fcm_conv0``)."""
    return f"fcm_conv{index}"


def layer_overload(index: int) -> str:
    """The overload that ties a layer node to its function body (fused groups' are ``g<id>``)."""
    return f"c{index}"


def mean_node_name(index: int) -> str:
    """The name of the ``index``-th mean layer node of a model (``fcm_mean0``)."""
    return f"fcm_mean{index}"


def mean_overload(index: int) -> str:
    """The overload that ties a mean layer node to its function body."""
    return f"m{index}"


class _Names(UnusedNames):
    """Names for the layers of a graph: node names and overloads unused in it and in ``overloads``
    (those of the model's functions), and tensor names unused in it."""

    def __init__(self, graph: gs.Graph, overloads: set[str]):
        super().__init__(graph)
        self.overloads = set(overloads)
        self.index = 0

    def layer(self, node_name=layer_node_name, overload_of=layer_overload) -> tuple[str, str]:
        """The next unused (node name, overload) of the scheme ``node_name``, ``overload_of`` (index -> name)."""
        while node_name(self.index) in self.taken or overload_of(self.index) in self.overloads:
            self.index += 1
        name, overload = node_name(self.index), overload_of(self.index)
        self.taken.add(name)
        self.overloads.add(overload)
        return name, overload


def _make_layer(graph: gs.Graph, match: LayerMatch, names: _Names, opset: int) -> Folded:
    """The layer node of ``match`` (reading ``match.x``, writing ``match.output``, both NHWC) added to
    ``graph``, the nodes it replaces disconnected."""
    name, overload = names.layer()
    bias = match.bias
    if bias is None:
        bias = gs.Constant(names.take(f"{name}_B"), np.zeros(match.weights.shape[0], np.float32))
    replaced = [n.name for n in match.nodes]
    for node in match.nodes:
        node.inputs.clear()
        node.outputs.clear()
    node = gs.Node(match.layer.op_type, name=name, domain=DOMAIN, attrs=match.layer.attributes(),
                   inputs=[match.x, match.weights, bias], outputs=[match.output])
    graph.nodes.append(node)
    return Folded(node, match.layer.function(overload, opset), replaced, match.layer)


def fold_layers(graph: gs.Graph, opset: int, overloads: set[str] = frozenset()) -> list[Folded]:
    """Every Conv of ``graph`` that :func:`read_layer` reads as a layer replaced by its node; the
    nodes' names and ``overloads`` unused in the graph and in ``overloads`` (those of the model's
    functions). The replaced nodes are left without inputs and outputs for the cleanup."""
    graph_outputs = patterns.ids(graph.outputs)
    names = _Names(graph, overloads)
    folded = []
    for conv in list(graph.nodes):
        match = read_layer(conv, graph_outputs)
        if match is not None:
            folded.append(_make_layer(graph, match, names, opset))
    return folded


def _wrap_nchw(graph: gs.Graph, positions: set[int], overloads: set[str], opset: int) -> list[Folded]:
    """The Convs at ``positions`` of ``graph.nodes`` that :func:`read_nchw_layer` reads, each with its
    activation, as ``Transpose(to NHWC) -> layer -> Transpose(to NCHW)`` (the Transposes for the
    layout cleanup to cancel or move)."""
    graph_outputs = patterns.ids(graph.outputs)
    names = _Names(graph, overloads)
    # all read before any is wrapped: a wrapped Conv's Transposes must not change how the next one reads
    matches = [(conv, read_nchw_layer(conv, graph_outputs)) for index, conv in enumerate(graph.nodes) if index in positions]
    folded = []
    for conv, match in matches:
        if match is None:
            continue
        x, result, shape = match.x, match.output, conv.outputs[0].shape  # the activation keeps the Conv's shape
        match.x = transposes.append_transpose(graph, x, TO_NHWC, names.take(f"{conv.name}_x_nhwc"))
        match.output = gs.Variable(names.take(f"{conv.name}_y_nhwc"), dtype=result.dtype,
                                   shape=transposes.permuted(shape, TO_NHWC))
        made = _make_layer(graph, match, names, opset)
        transposes.append_transpose(graph, match.output, TO_NCHW, names.take(f"{made.node.name}_y_nchw"), out=result)
        folded.append(made)
    return folded


def fold_nchw_layers(graph: gs.Graph, opset: int, overloads: set[str] = frozenset()) -> list[Folded]:
    """The Convs of ``graph``'s NCHW stretches that :func:`read_nchw_layer` reads made layers where
    that does not add layout work (module docstring), and the layout cleanup (:func:`.transposes.optimize`
    without its final rules) run on the result; names as :func:`fold_layers` gives them. Trials run
    on copies of the graph; ``graph`` changes only where a set of Convs is folded."""
    graph_outputs = patterns.ids(graph.outputs)
    candidates = [index for index, node in enumerate(graph.nodes) if read_nchw_layer(node, graph_outputs) is not None]
    before = transposes.moved_elements(graph) if candidates else None
    if before is None:
        return []

    def moved(chosen: list[int]) -> int | None:
        trial = graph.copy()  # its nodes in the same order
        _wrap_nchw(trial, set(chosen), overloads, opset)
        transposes.optimize(trial, final=())
        return transposes.moved_elements(trial)

    chosen = list(candidates)
    found = moved(chosen)
    while chosen and (found is None or found > before):
        trials = [(moved(rest), rest) for rest in ([c for c in chosen if c != left] for left in chosen)]
        trials = [(m, rest) for m, rest in trials if m is not None]
        if not trials:
            return []
        found, chosen = min(trials, key=lambda t: t[0])
    if not chosen:
        return []
    folded = _wrap_nchw(graph, set(chosen), overloads, opset)
    transposes.optimize(graph, final=())
    return folded


def _channel_constant(tensor, channels: int) -> np.ndarray | None:
    """A constant's values as [channels] where it broadcasts along the last axis of an NHWC map
    alone (one value, or one per channel); None for anything else."""
    value = patterns.constant(tensor)
    if value is None or value.dtype != np.float32 or any(d != 1 for d in value.shape[:-1]):
        return None
    if value.size == 1:
        return np.full(channels, value.reshape(-1)[0], np.float32)
    return value.reshape(-1).astype(np.float32) if value.size == channels else None


def _affine_step(node: gs.Node, channels: int) -> tuple[object, str, np.ndarray] | None:
    """(the operand it computes on, "Mul" or "Add", the constant per channel) where ``node`` multiplies
    a tensor by a constant of the channels or adds one to it; None otherwise."""
    if node.op not in ("Mul", "Add") or node.domain not in (None, "", "ai.onnx") or len(node.inputs) != 2:
        return None
    for data, other in ((0, 1), (1, 0)):
        constant = _channel_constant(node.inputs[other], channels)
        if constant is not None and patterns.constant(node.inputs[data]) is None:
            return node.inputs[data], node.op, constant
    return None


def _readers(tensor, graph_outputs: set[int]) -> list:
    """The nodes reading ``tensor`` whose results are used: not those a replacement disconnected (no
    outputs), nor a first Transpose whose reader a layer replaced (its output read by nothing)."""
    return [n for n in tensor.outputs if any(id(out) in graph_outputs or out.outputs for out in n.outputs)]


def _only_reader(tensor, node: gs.Node, graph_outputs: set[int]) -> bool:
    readers = _readers(tensor, graph_outputs)
    return len(readers) == 1 and readers[0] is node


def fold_input_affines(graph: gs.Graph, folded: list[Folded], opset: int) -> int:
    """Each layer of ``folded`` whose input is ``x * a + b`` per channel, computed by Mul and Add nodes
    with constant operands (a model's input normalization: Keras' Rescaling and Normalization before
    its stem) that nothing else reads, given the affine as its input scale and shift (XS, XB: one
    input pass or more less), and named among the nodes it replaced; the Muls and Adds are left for
    the cleanup. Returns how many layers took one."""
    graph_outputs = patterns.ids(graph.outputs)
    count = 0
    for made in folded:
        node = made.node
        if len(node.inputs) != 3 or made.layer.input_affine:
            continue
        x = node.inputs[0]
        if x.shape is None or len(x.shape) != 4 or not isinstance(x.shape[3], (int, np.integer)):
            continue
        channels = int(x.shape[3])
        scale, shift = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        steps, reader, absorbed = 0, node, []
        # walking back from the layer: its input is scale * x + shift, x the tensor reached so far
        while len(x.inputs) == 1 and id(x) not in graph_outputs and _only_reader(x, reader, graph_outputs):
            step = _affine_step(x.inputs[0], channels)
            if step is None:
                break
            source, op, constant = step
            if source.shape is None or list(source.shape) != list(x.shape):  # (not a broadcast of a smaller tensor)
                break
            if op == "Mul":  # x = source * k
                scale = scale * constant
            else:  # x = source + k
                shift = shift + scale * constant
            absorbed.append(x.inputs[0].name)
            x, reader, steps = source, x.inputs[0], steps + 1
        if steps == 0:
            continue
        taken = set(graph.tensors())
        node.inputs[0] = x
        for part, values in (("scale", scale), ("shift", shift)):
            name, index = f"{node.name}_input_{part}", 0
            while name in taken:
                name, index = f"{node.name}_input_{part}_{index}", index + 1
            node.inputs.append(gs.Constant(name, values))
        made.replaced += absorbed
        made.layer = dataclasses.replace(made.layer, input_affine=True)
        made.function = made.layer.function(made.function.overload, opset)
        count += 1
    return count


def fold_spatial_means(graph: gs.Graph, opset: int, overloads: set[str] = frozenset()) -> list[Folded]:
    """Every spatial mean of an fp32 map in ``graph`` (:func:`.transposes.spatial_mean`) replaced by a
    ``Mean`` layer node reading the same map and writing the mean's tensor (its ``keepdims``); names
    as :func:`fold_layers` gives them (``fcm_mean<i>``, overloads ``m<i>``). The ReduceMeans are left
    without inputs and outputs for the cleanup."""
    names = _Names(graph, overloads)
    folded = []
    for mean in list(graph.nodes):
        found = transposes.spatial_mean(mean)
        if found is None or transposes.float_dtype(mean.inputs[0]) != np.float32:
            continue
        layer = MeanLayer(keepdims=found[3])
        name, overload = names.layer(mean_node_name, mean_overload)
        x, out = mean.inputs[0], mean.outputs[0]
        mean.inputs.clear()
        mean.outputs.clear()
        node = gs.Node(layer.op_type, name=name, domain=DOMAIN, attrs=layer.attributes(), inputs=[x], outputs=[out])
        graph.nodes.append(node)
        folded.append(Folded(node, layer.function(overload, opset), [mean.name], layer))
    return folded
