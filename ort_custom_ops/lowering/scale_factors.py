"""A constant factor of a channel scale, folded into the weights the scale multiplies.

In: a graph (onnx-graphsurgeon IR) whose planned groups have been replaced by fused nodes. Out: the
same graph where a fused node's channel scale S is ``Mul(s, c)``, c a constant scalar and the
product read by nothing else: the node reads s, and its first stage's weights are c times theirs
(``W (x * s c) = (c W) (x * s)``). MobileNetV3's hard sigmoid ends in such a product (``/ 6``)
between its squeeze-and-excitation branch and the scale: one elementwise kernel less per block.
The fused node's function body computes the same on the new inputs; the Mul, disconnected, goes
with the graph cleanup.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from fcm_core.vocabulary import kind_of

from ..ops.schema import DOMAIN
from . import patterns


def _scalar_factor(mul: gs.Node) -> tuple[float, object] | None:
    """(c, s) when ``mul`` is Mul(s, c) or Mul(c, s) with c a constant holding one value."""
    if mul.op != "Mul" or len(mul.inputs) != 2:
        return None
    for factor, other in ((mul.inputs[1], mul.inputs[0]), (mul.inputs[0], mul.inputs[1])):
        value = patterns.constant(factor)
        if value is not None and value.size == 1 and patterns.constant(other) is None:
            return float(value.reshape(-1)[0]), other
    return None


def fold_scale_factors(graph: gs.Graph) -> int:
    """Fold every such factor (module docstring); returns how many were folded."""
    graph_outputs = patterns.ids(graph.outputs)
    folded = 0
    for node in list(graph.nodes):
        found = kind_of(node.op) if node.domain == DOMAIN else None
        if found is None or len(node.inputs) != found[0].scale_input + 1:  # no channel scale
            continue
        scale, weights = node.inputs[-1], node.inputs[1]
        mul = scale.inputs[0] if len(scale.inputs) == 1 else None
        readers = [n for n in scale.outputs if n.outputs]  # (the nodes a replacement disconnected still list it)
        if mul is None or len(readers) != 1 or readers[0] is not node or id(scale) in graph_outputs:
            continue
        if not isinstance(weights, gs.Constant):
            continue
        read = _scalar_factor(mul)
        if read is None or not np.isfinite(read[0]):
            continue
        factor, unscaled = read
        node.inputs[1] = gs.Constant(f"{weights.name}_times_{node.name}_scale_factor",
                                     (weights.values * np.float32(factor)).astype(weights.values.dtype))
        node.inputs[-1] = unscaled
        folded += 1
    return folded
