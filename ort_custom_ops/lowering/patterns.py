"""Reading small patterns of a normalized ONNX graph (onnx-graphsurgeon IR).

In: tensors and nodes of a ``gs.Graph``. Out: what they compute, in FCM terms: the activation a
chain of nodes applies (:func:`read_activation`), the zero padding a ``Pad`` adds
(:func:`read_spatial_pad`), a channel scale ``Mul(x, s)`` (:func:`read_channel_scale`); and names
a rewrite may add to it (:class:`UnusedNames`).
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from fcm_core.vocabulary import ACTIVATIONS

from ..ops.schema import Activation

#: The activations' standard ONNX forms (the vocabulary's): one unary operator, or x * op(x).
UNARY = {a.onnx: a.name for a in ACTIVATIONS.values() if a.onnx and a.onnx != "Clip" and not a.onnx.startswith("x*")}
GATED = {a.onnx[2:]: a.name for a in ACTIVATIONS.values() if a.onnx.startswith("x*")}
#: ONNX activations the kernels do not implement: a group they follow is not fused.
UNSUPPORTED = ("LeakyRelu", "Elu", "Selu", "Gelu", "Tanh", "Softplus", "PRelu", "HardSigmoid")


def constant(tensor) -> np.ndarray | None:
    return tensor.values if isinstance(tensor, gs.Constant) else None


def sole_consumer(tensor) -> gs.Node | None:
    return tensor.outputs[0] if len(tensor.outputs) == 1 else None


def _clip(node: gs.Node) -> tuple[float, float] | None:
    lo, hi = -np.inf, np.inf
    if len(node.inputs) > 1 and node.inputs[1].name:
        value = constant(node.inputs[1])
        if value is None:
            return None
        lo = float(value.reshape(-1)[0])
    if len(node.inputs) > 2 and node.inputs[2].name:
        value = constant(node.inputs[2])
        if value is None:
            return None
        hi = float(value.reshape(-1)[0])
    return lo, hi


class UnusedNames:
    """Names not yet taken in a graph (by its tensors and nodes), each handed out once: ``base``
    itself where it is free, else ``base_0``, ``base_1``, ..."""

    def __init__(self, graph: gs.Graph):
        self.taken = {n.name for n in graph.nodes} | set(graph.tensors())

    def take(self, base: str) -> str:
        name, index = base, 0
        while name in self.taken:
            name, index = f"{base}_{index}", index + 1
        self.taken.add(name)
        return name


def ids(tensors) -> set[int]:
    """Identities of IR tensors (which compare by name and are not hashable)."""
    return {id(t) for t in tensors}


def read_activation(tensor, graph_outputs: set[int]) -> tuple[Activation | None, list[gs.Node], object]:
    """The activation applied to ``tensor`` by the nodes that follow it alone:
    ``(activation, nodes, result tensor)``; ``(Activation(), [], tensor)`` when none follows;
    ``activation`` is None for an activation the kernels do not implement. ``graph_outputs``:
    ids of the model's output tensors (they must stay)."""
    if id(tensor) in graph_outputs:
        return Activation(), [], tensor
    consumers = list(tensor.outputs)
    if len(consumers) == 2:  # a gated activation: x * op(x)
        for gate_op, name in GATED.items():
            by_op = {n.op: n for n in consumers}
            gate, mul = by_op.get(gate_op), by_op.get("Mul")
            if gate is not None and mul is not None and sole_consumer(gate.outputs[0]) is mul \
                    and ids(mul.inputs) == ids([tensor, gate.outputs[0]]) and id(gate.outputs[0]) not in graph_outputs:
                return Activation(name), [gate, mul], mul.outputs[0]
        return Activation(), [], tensor
    if len(consumers) != 1:
        return Activation(), [], tensor
    node = consumers[0]
    if node.op == "Clip":
        bounds = _clip(node)
        if bounds is None or not all(np.isfinite(bounds)):
            return None, [node], node.outputs[0]
        return Activation("clip", bounds), [node], node.outputs[0]
    if node.op in UNARY:
        return Activation(UNARY[node.op]), [node], node.outputs[0]
    if node.op in UNSUPPORTED:
        return None, [node], node.outputs[0]
    return Activation(), [], tensor


def read_spatial_pad(node: gs.Node) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of a constant-zero ``Pad`` of an NCHW tensor's H and W; None
    for any other pad."""
    if node.op != "Pad":
        return None
    if node.attrs.get("mode", "constant") not in ("constant", b"constant"):
        return None
    pads = constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if pads is None or pads.size != 8:
        return None
    if len(node.inputs) > 2 and node.inputs[2].name:
        value = constant(node.inputs[2])
        if value is None or np.any(value != 0):
            return None
    if len(node.inputs) > 3 and node.inputs[3].name:
        return None  # axes
    begin, end = pads[:4], pads[4:]
    if begin[0] or begin[1] or end[0] or end[1] or np.any(pads < 0):
        return None
    return int(begin[2]), int(begin[3]), int(end[2]), int(end[3])


def read_channel_scale(node: gs.Node) -> tuple[object, object] | None:
    """(feature map, scale) if ``node`` is ``Mul(x, s)`` with s of shape [N, C, 1, 1]."""
    if node.op != "Mul" or len(node.inputs) != 2:
        return None
    shapes = [t.shape for t in node.inputs]
    if any(s is None or len(s) != 4 for s in shapes):
        return None
    for fm, sc in ((0, 1), (1, 0)):
        if tuple(shapes[sc][2:]) == (1, 1) and shapes[fm][1] == shapes[sc][1] and not isinstance(node.inputs[sc], gs.Constant):
            spatial = shapes[fm][2:]
            if any(isinstance(d, int) and d > 1 for d in spatial):
                return node.inputs[fm], node.inputs[sc]
    return None
