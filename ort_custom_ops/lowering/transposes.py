"""The layout cleanup: Transposes cancelled, merged and moved through layout-free operators.

In: an ONNX graph (onnx-graphsurgeon IR) in which channels-last fused nodes sit between Transposes
(:mod:`.rules` puts each between a Transpose of its input to NHWC and one of its output back to
NCHW). Out: the same function with fewer elements moved by Transposes: chains of fused nodes and
the elementwise operators between them stay NHWC, and a Transpose remains where an operator needs
NCHW (a Conv not fused, a Pad, a Reshape, ...) or where a model input or output has its layout.

One rule per rewrite, each ``rule(graph) -> how many rewrites it made``, applied in turn until none
applies (:func:`optimize`):

- :func:`cancel_pairs`: ``Transpose(Transpose(x, p), q)`` becomes ``x`` where q undoes p, else one
  Transpose with the composed permutation;
- :func:`merge_siblings`: identical Transposes of one tensor become one;
- :func:`through_elementwise`: an elementwise operator (Relu, Clip, Sigmoid, HardSwish, Add, Mul,
  ...) computes in the layout its neighbours have: Transposes on its inputs cancel, constants are
  permuted (a per-channel [C, 1, 1] becomes [1, 1, 1, C]), other inputs are transposed, and its
  output is transposed back for the consumers that need the old layout;
- :func:`through_reduction`: a GlobalAveragePool, ReduceMean (Sum, Max, Min) or Squeeze of a
  transposed tensor reduces the source's axes instead, so that the Transpose moves to the small
  reduced tensor (where it may cancel: a squeeze-and-excitation branch reads the NHWC map and
  feeds a channels-last node), or goes where the kept axes stay in order;
- :func:`through_pointwise_conv`: a pointwise Conv (1x1, stride 1, one group) whose neighbours are
  NHWC computes there as ``MatMul`` with its [C, F] weights (and an ``Add`` of its bias): in a
  squeeze-and-excitation block the projection the planner leaves unfused sits between two
  channels-last fused nodes;
- :func:`fold_scale`: a channels-last fused node takes its channel scale as [N, 1, 1, C] instead of
  a Transpose of it to [N, C, 1, 1] (the same values in the same order);
- last (:data:`FINAL`), :func:`unit_transposes_to_reshapes`: a Transpose that only moves unit
  dimensions ([N, C, 1, 1] <-> [N, 1, 1, C]) becomes the Reshape it is;
- then, in a model planned for batch 2 or more (:func:`final_rules`; not where the rewrite makes
  the means ``Mean`` layers of the domain, its ``mean_layers`` option),
  :func:`spatial_means_to_products`: a ReduceMean over axes [1, 2] of an [N, H, W, C] tensor
  (:func:`spatial_mean`: the squeeze-and-excitation mean and the global pool of an NHWC map) becomes
  ``Reshape(MatMul(Transpose(Reshape(x, [-1, H*W, C]), [0, 2, 1]), r))`` with ``r`` a [H*W, 1]
  column of 1/(H*W): the same mean as a batched GEMM, where ONNX Runtime's CUDA reduction of the
  middle axes of a tensor is far slower than its bandwidth allows; at batch 1 the reduction is the
  faster of the two (``benchmarks/mean_forms.py``). ONNX Runtime folds the Transpose into the
  product (``FusedMatMul`` with ``transA``), a strided batched GEMM; a [1, H*W] row times the
  [N, H*W, C] map, the form before, broadcasts its left operand, which ONNX Runtime runs as a
  batched GEMM of pointer arrays copied from the host at every run (three copies and their gaps
  per mean). :func:`is_spatial_mean_product` recognises such a MatMul (the half-precision
  conversion keeps it and its Transpose in fp32, as it keeps the reductions);
- then :func:`unit_products_to_gemm`: a ``MatMul`` of pooled values [N, 1, 1, C] by constant [C, F]
  weights (a squeeze-and-excitation projection, a classifier head), and the bias ``Add`` that is its
  only reader, becomes ``Gemm(x as [N, C], W as [F, C], bias, transB=1)`` between two Reshapes (the
  first reads through a Reshape that makes x, such as the one a unit Transpose or a mean became):
  ONNX Runtime's CUDA provider runs that MatMul as a cuBLAS matrix-vector product slower than the
  source's Conv (``benchmarks/unit_projection.py``), a 2-D Gemm on cuBLAS's fast path.

A move is taken when it lowers the number of elements Transposes move (the batch counted as 1; a
Transpose of unit dimensions moves none), or keeps it equal and moves toward NHWC: so no rule undoes
another's work.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from fcm_core.vocabulary import DOMAIN, kind_of

from ..ops.schema import TO_NCHW, TO_NHWC, is_channels_last
from .patterns import UnusedNames, ids

Perm = tuple[int, ...]

#: Operators that compute each output element from the same element of their inputs.
UNARY = frozenset({"Relu", "Sigmoid", "HardSwish", "HardSigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Celu",
                   "Softplus", "Softsign", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Erf", "Gelu", "Mish",
                   "ThresholdedRelu", "Floor", "Ceil", "Round", "Sign", "Identity", "Cast", "Clip"})
BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"})
REDUCTIONS = frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"})
GLOBAL_POOLS = {"GlobalAveragePool": "ReduceMean", "GlobalMaxPool": "ReduceMax"}
AXES_AS_INPUT = {"Squeeze": 13, "ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18}


# --- permutations and tensors --------------------------------------------------------------------

def _standard(node) -> bool:
    """Whether ``node`` is an operator of the default ONNX domain."""
    return node.domain in (None, "", "ai.onnx")


def perm_of(node) -> Perm | None:
    """The permutation of a Transpose node (None for any other node, or for none)."""
    if node is None or node.op != "Transpose" or "perm" not in node.attrs or not node.outputs:
        return None
    return tuple(int(p) for p in node.attrs["perm"])


def compose(first: Perm, second: Perm) -> Perm:
    """``Transpose(Transpose(x, first), second) == Transpose(x, compose(first, second))``."""
    return tuple(first[i] for i in second)


def inverse(perm: Perm) -> Perm:
    out = [0] * len(perm)
    for index, value in enumerate(perm):
        out[value] = index
    return tuple(out)


def is_identity(perm: Perm) -> bool:
    return all(index == value for index, value in enumerate(perm))


def permuted(shape, perm) -> list | None:
    """``shape`` as ``Transpose(perm)`` permutes its tensor's (None for an unknown shape)."""
    return None if shape is None else [shape[i] for i in perm]


def append_transpose(graph: gs.Graph, tensor, perm, name: str, out=None):
    """A new ``Transpose(tensor, perm)`` node named ``name`` in ``graph``, writing ``out`` (a new
    tensor named ``name`` if None); returns ``out``."""
    if out is None:
        out = gs.Variable(name, dtype=tensor.dtype, shape=permuted(tensor.shape, perm))
    graph.nodes.append(gs.Node("Transpose", name=name, attrs={"perm": list(perm)}, inputs=[tensor], outputs=[out]))
    return out


def producer(tensor):
    return tensor.inputs[0] if tensor.inputs else None


def size(tensor) -> int | None:
    """Elements of a tensor, symbolic dimensions (the batch) counted as 1; None for an unknown shape."""
    if tensor.shape is None:
        return None
    return int(np.prod([d for d in tensor.shape if isinstance(d, (int, np.integer)) and d >= 0], dtype=np.int64))


def _unit(dim) -> bool:
    return isinstance(dim, (int, np.integer)) and dim == 1


def moves_data(shape, perm: Perm) -> bool:
    """Whether ``Transpose(x, perm)`` of an ``x`` of this shape reorders its elements; one that only
    moves unit dimensions ([N, C, 1, 1] -> [N, 1, 1, C]) keeps them in place, like a Reshape."""
    kept = [axis for axis in perm if not _unit(shape[axis])]
    return kept != sorted(kept)


def cost(tensor, perm: Perm) -> int | None:
    """Elements ``Transpose(tensor, perm)`` moves: none where it only moves unit dimensions."""
    if tensor.shape is None:
        return None
    return size(tensor) if moves_data(tensor.shape, perm) else 0


def _rank(tensor) -> int | None:
    if isinstance(tensor, gs.Constant):
        return tensor.values.ndim
    return None if tensor.shape is None else len(tensor.shape)


class _Context:
    """The graph being rewritten: its output tensors (they keep their names and layouts) and unique
    names for what the rules add."""

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.outputs = ids(graph.outputs)
        self.names = UnusedNames(graph)

    def name(self, base: str) -> str:
        return self.names.take(base)

    def unused(self, tensor) -> bool:
        return not tensor.outputs and id(tensor) not in self.outputs

    def drop_if_dead(self, node) -> None:
        """Disconnect a node nothing reads any more, so that consumer counts stay exact until the cleanup."""
        if node is not None and node.outputs and all(self.unused(t) for t in node.outputs):
            node.inputs.clear()
            node.outputs.clear()

    def replace_uses(self, old, new) -> None:
        """Every reader of ``old`` reads ``new`` instead (``old`` must not be a graph output)."""
        for reader in list(old.outputs):
            reader.inputs = [new if t is old else t for t in reader.inputs]

    def transpose(self, tensor, perm: Perm):
        """A tensor equal to ``Transpose(tensor, perm)``: ``tensor`` itself, the source of a Transpose
        this one undoes, an existing identical Transpose, or a new one."""
        if is_identity(perm):
            return tensor
        source = producer(tensor)
        first = perm_of(source)
        if first is not None:
            return self.transpose(source.inputs[0], compose(first, perm))
        for consumer in tensor.outputs:
            if perm_of(consumer) == perm:
                return consumer.outputs[0]
        return self.add_transpose(tensor, perm)

    def add_transpose(self, tensor, perm: Perm, out=None):
        """A new ``Transpose(tensor, perm)`` writing ``out`` (a new tensor if None); returns ``out``."""
        if out is None:
            out = gs.Variable(self.name(f"{tensor.name}_t"), dtype=tensor.dtype, shape=permuted(tensor.shape, perm))
        return append_transpose(self.graph, tensor, perm, self.name("Transpose"), out)

    def add_reshape(self, tensor, target: list[int], out=None, shape=None):
        """A new ``Reshape(tensor, target)`` to a constant shape, writing ``out`` (a new tensor of
        ``shape`` if None); returns ``out``."""
        if out is None:
            out = gs.Variable(self.name(f"{tensor.name}_r"), dtype=tensor.dtype, shape=shape)
        name = self.name("Reshape")
        target = gs.Constant(self.name(f"{name}_shape"), np.array(target, np.int64))
        self.graph.nodes.append(gs.Node("Reshape", name=name, inputs=[tensor, target], outputs=[out]))
        return out

    def transpose_cost(self, tensor, perm: Perm, reader) -> int | None:
        """Elements moved by Transposes, added minus removed, when ``reader`` reads
        ``self.transpose(tensor, perm)`` instead of ``tensor``."""
        if is_identity(perm):
            return 0
        elements = cost(tensor, perm)
        if elements is None:
            return None
        source = producer(tensor)
        first = perm_of(source)
        if first is not None:
            y = source.inputs[0]
            dies = all(c is reader for c in tensor.outputs) and id(tensor) not in self.outputs
            saved = (cost(y, first) or 0) if dies else 0
            combined = compose(first, perm)
            if is_identity(combined) or any(perm_of(c) == combined for c in y.outputs):
                return -saved
            return (cost(y, combined) or 0) - saved
        if any(perm_of(c) == perm for c in tensor.outputs):
            return 0
        return elements


def _permuted_constant(context: _Context, constant: gs.Constant, perm: Perm) -> gs.Constant:
    """A broadcast operand for tensors transposed by ``perm``: right-aligned to their rank, permuted."""
    values = constant.values
    if values.size == 1:
        return constant
    aligned = values.reshape((1,) * (len(perm) - values.ndim) + values.shape)
    return gs.Constant(context.name(constant.name), np.ascontiguousarray(aligned.transpose(perm)))


# --- the rules -----------------------------------------------------------------------------------

def cancel_pairs(graph: gs.Graph) -> int:
    """``Transpose(Transpose(x, p), q)``: ``x`` where q undoes p, else ``Transpose(x, p then q)``."""
    context = _Context(graph)
    count = 0
    for node in list(graph.nodes):
        second = perm_of(node)
        source = producer(node.inputs[0]) if second is not None else None
        first = perm_of(source)
        if first is None:
            continue
        combined, x, out = compose(first, second), source.inputs[0], node.outputs[0]
        if not is_identity(combined):
            node.inputs = [x]
            node.attrs["perm"] = list(combined)
        elif id(out) not in context.outputs:
            context.replace_uses(out, x)
            node.inputs.clear()
            node.outputs.clear()
        elif producer(x) is not None and id(x) not in context.outputs:  # x's producer writes the graph output
            node.inputs.clear()
            node.outputs.clear()
            context.replace_uses(x, out)
            maker = producer(x)
            maker.outputs = [out if t is x else t for t in maker.outputs]
        else:  # a graph input or output passed on as another graph output
            node.op, node.attrs, node.inputs = "Identity", {}, [x]
        context.drop_if_dead(source)
        count += 1
    return count


def merge_siblings(graph: gs.Graph) -> int:
    """Transposes of one tensor with the same permutation: one of them serves every reader."""
    context = _Context(graph)
    count = 0
    for tensor in list(graph.tensors().values()):
        kept: dict[Perm, object] = {}
        for consumer in list(tensor.outputs):
            perm = perm_of(consumer)
            if perm is None:
                continue
            out = consumer.outputs[0]
            if perm in kept and id(out) not in context.outputs:
                context.replace_uses(out, kept[perm])
                consumer.inputs.clear()
                consumer.outputs.clear()
                count += 1
            else:
                kept.setdefault(perm, out)
    return count


def _data_inputs(node) -> list[int]:
    """The inputs an elementwise operator broadcasts over its output (Clip's bounds are scalars)."""
    if node.op == "Clip":
        return [0]
    return [index for index, tensor in enumerate(node.inputs) if tensor.name]


def _elementwise_cost(context: _Context, node, perm: Perm) -> tuple[int, bool] | None:
    """(elements moved by Transposes, added minus removed; whether a Transpose cancels) when ``node``
    computes on its tensors transposed by ``perm``; None where it cannot."""
    out = node.outputs[0]
    if _rank(out) != len(perm) or size(out) is None:
        return None
    total, cancels = 0, False
    for index in _data_inputs(node):
        tensor = node.inputs[index]
        if isinstance(tensor, gs.Constant):
            if tensor.values.ndim > len(perm):
                return None
            continue
        if _rank(tensor) != len(perm):
            return None
        added = context.transpose_cost(tensor, perm, node)
        if added is None:
            return None
        total += added
        first = perm_of(producer(tensor))
        cancels |= first is not None and is_identity(compose(first, perm))
    undone = [c for c in out.outputs if perm_of(c) == perm and id(c.outputs[0]) not in context.outputs]
    total -= cost(out, perm) * len(undone)
    if len(undone) < len(out.outputs) or id(out) in context.outputs:
        total += cost(out, perm)
    return total, cancels or bool(undone)


def _move_elementwise(context: _Context, node, perm: Perm) -> None:
    out = node.outputs[0]
    inputs = list(node.inputs)
    for index in _data_inputs(node):
        tensor = inputs[index]
        inputs[index] = (_permuted_constant(context, tensor, perm) if isinstance(tensor, gs.Constant)
                         else context.transpose(tensor, perm))
    old_sources = [producer(node.inputs[index]) for index in _data_inputs(node)]
    moved = gs.Variable(context.name(out.name), dtype=out.dtype, shape=permuted(out.shape, perm))
    node.inputs = inputs
    node.outputs = [moved]
    _hand_over(context, out, moved, perm)
    for source in old_sources:
        if perm_of(source) is not None:
            context.drop_if_dead(source)


def _hand_over(context: _Context, out, moved, perm: Perm) -> None:
    """``moved`` (``out`` transposed by ``perm``) now written: the Transposes that undid the move read
    it directly, and the readers that need the old layout get one Transpose back."""
    for consumer in list(out.outputs):
        if perm_of(consumer) == perm and id(consumer.outputs[0]) not in context.outputs:
            context.replace_uses(consumer.outputs[0], moved)
            consumer.inputs.clear()
            consumer.outputs.clear()
    if out.outputs or id(out) in context.outputs:
        context.add_transpose(moved, inverse(perm), out)


def through_elementwise(graph: gs.Graph) -> int:
    """An elementwise operator computes on its tensors transposed as its neighbours are, where that
    lowers the elements moved by Transposes, or keeps them equal and moves toward NHWC."""
    context = _Context(graph)
    count = 0
    for node in list(graph.nodes):
        if node.op not in UNARY | BROADCASTING or not node.outputs or not _standard(node):
            continue
        perms = {inverse(perm_of(producer(node.inputs[i]))) for i in _data_inputs(node) if perm_of(producer(node.inputs[i]))}
        perms |= {perm_of(c) for c in node.outputs[0].outputs if perm_of(c)}
        best = None
        for perm in sorted(perms):
            found = _elementwise_cost(context, node, perm)
            if found is None:
                continue
            moved, cancels = found
            if cancels and (moved < 0 or (moved == 0 and perm == TO_NHWC)) and (best is None or moved < best[0]):
                best = (moved, perm)
        if best is not None:
            _move_elementwise(context, node, best[1])
            count += 1
    return count


def _pointwise_weights(node) -> tuple[np.ndarray, gs.Constant | None] | None:
    """The [F, C] weights and the bias (or None) of a Conv that is a plain pointwise convolution
    (1x1 kernel, stride 1, no padding, one group, a constant kernel and bias); None for any other node."""
    if node.op != "Conv" or not _standard(node) or len(node.inputs) < 2 or not node.outputs:
        return None
    weights, attrs = node.inputs[1], node.attrs
    bias = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    if not isinstance(weights, gs.Constant) or weights.values.ndim != 4 or weights.values.shape[2:] != (1, 1):
        return None
    if bias is not None and not isinstance(bias, gs.Constant):
        return None
    if int(attrs.get("group", 1)) != 1 or any(int(s) != 1 for s in attrs.get("strides", [])):
        return None
    if any(int(p) != 0 for p in attrs.get("pads", [])) or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    if _rank(node.inputs[0]) != 4:
        return None
    return weights.values.reshape(weights.values.shape[:2]), bias


def through_pointwise_conv(graph: gs.Graph) -> int:
    """A pointwise Conv between channels-last neighbours computes in NHWC as the matrix product it is:
    ``MatMul(x [N, H, W, C], W^T [C, F])`` plus the bias, where that lowers the elements moved by
    Transposes (a squeeze-and-excitation block's projection between two channels-last fused nodes)."""
    context = _Context(graph)
    count = 0
    for node in list(graph.nodes):
        found = _pointwise_weights(node)
        if found is None:
            continue
        weights, bias = found
        moves = _elementwise_cost(context, node, TO_NHWC)  # the kernel and bias are constants: x and y count
        if moves is None or not moves[1] or moves[0] > 0:
            continue
        x, out = node.inputs[0], node.outputs[0]
        source = producer(x)
        moved = gs.Variable(context.name(out.name), dtype=out.dtype, shape=permuted(out.shape, TO_NHWC))
        matrix = gs.Constant(context.name(f"{node.name}_matrix"), np.ascontiguousarray(weights.T))
        product = moved if bias is None else gs.Variable(context.name(f"{node.name}_product"), dtype=out.dtype,
                                                         shape=moved.shape)
        node.op, node.attrs = "MatMul", {}
        node.inputs, node.outputs = [context.transpose(x, TO_NHWC), matrix], [product]
        if bias is not None:  # [F] broadcasts over the last axis
            graph.nodes.append(gs.Node("Add", name=context.name(f"{node.name}_bias"), inputs=[product, bias],
                                       outputs=[moved]))
        _hand_over(context, out, moved, TO_NHWC)
        if perm_of(source) is not None:
            context.drop_if_dead(source)
        count += 1
    return count


def _constant_ints(tensor) -> list[int] | None:
    return [int(v) for v in tensor.values.reshape(-1)] if isinstance(tensor, gs.Constant) else None


def _reduction(node, rank: int) -> tuple[list[int], bool] | None:
    """(reduced axes, keepdims) of a reducing node, None where they are not known constants."""
    if node.op in GLOBAL_POOLS:
        return list(range(2, rank)), True
    if node.op not in REDUCTIONS and node.op != "Squeeze":
        return None
    if "axes" in node.attrs:
        axes = [int(a) for a in node.attrs["axes"]]
    elif len(node.inputs) > 1 and node.inputs[1].name:
        axes = _constant_ints(node.inputs[1])
    else:
        return None  # every axis (or, for Squeeze, every unit one): nothing to move
    if axes is None or not axes:
        return None
    keep = node.op != "Squeeze" and int(node.attrs.get("keepdims", 1)) == 1
    return sorted(a % rank for a in axes), keep


def through_reduction(graph: gs.Graph) -> int:
    """``R(Transpose(y, p))`` for R reducing axes A: R over y's axes p[A], and the Transpose (if the
    kept axes change order) on the reduced tensor, where that moves fewer elements."""
    context = _Context(graph)
    count = 0
    for node in list(graph.nodes):
        if not node.outputs or not node.inputs:
            continue
        x = node.inputs[0]
        source = producer(x)
        perm = perm_of(source)
        found = _reduction(node, len(perm)) if perm is not None else None
        if found is None:
            continue
        axes, keep = found
        y, out = source.inputs[0], node.outputs[0]
        if y.shape is None or x.shape is None:
            continue
        new_axes = sorted(perm[a] for a in axes)
        if keep:
            back = perm
            shape = [1 if i in new_axes else d for i, d in enumerate(y.shape)]
        else:
            kept = [perm[a] for a in range(len(perm)) if a not in axes]  # y's axes, in the output's order
            back = tuple(sorted(kept).index(k) for k in kept)
            shape = [d for i, d in enumerate(y.shape) if i not in new_axes]
        # where the kept axes stay in order the result is the output itself
        reduced = out if is_identity(back) else gs.Variable(context.name(out.name), dtype=out.dtype, shape=shape)
        dies = all(c is node for c in x.outputs) and id(x) not in context.outputs
        undone = [] if reduced is out else [c for c in out.outputs if perm_of(c) == inverse(back)
                                             and id(c.outputs[0]) not in context.outputs]
        needed = reduced is not out and (len(undone) < len(out.outputs) or id(out) in context.outputs)
        small = 0 if reduced is out else cost(reduced, back)
        if small is None:
            continue
        moved = (small if needed else 0) - small * len(undone) - (cost(y, perm) if dies else 0)
        if moved > 0 or (moved == 0 and perm != TO_NCHW):
            continue  # equal: it reads the NHWC source all the same, so that the Transpose may go later
        op = GLOBAL_POOLS.get(node.op, node.op)
        attrs = {k: v for k, v in node.attrs.items() if k != "axes"}
        if op != "Squeeze":
            attrs["keepdims"] = int(keep)
        inputs = [y]
        if graph.opset >= AXES_AS_INPUT[op]:
            inputs.append(gs.Constant(context.name(f"{node.name}_axes"), np.array(new_axes, np.int64)))
        else:
            attrs["axes"] = new_axes
        node.op, node.attrs, node.inputs = op, attrs, inputs
        if reduced is not out:
            node.outputs = [reduced]
            context.add_transpose(reduced, back, out)
        context.drop_if_dead(source)
        count += 1
    return count


def fold_scale(graph: gs.Graph) -> int:
    """A channels-last fused node's scale S = Transpose(s [N, 1, 1, C]) reads s itself."""
    context = _Context(graph)
    count = 0
    for node in graph.nodes:
        found = kind_of(node.op) if node.domain == DOMAIN else None
        if found is None or found[1] != "fp32" or not is_channels_last(node):
            continue
        if len(node.inputs) != found[0].scale_input + 1:
            continue  # no scale input
        scale = node.inputs[-1]
        source = producer(scale)
        if perm_of(source) is None:
            continue
        s = source.inputs[0]
        if s.shape is None or len(s.shape) != 4 or tuple(s.shape[1:3]) != (1, 1):
            continue
        node.inputs[-1] = s
        context.drop_if_dead(source)
        count += 1
    return count


def unit_transposes_to_reshapes(graph: gs.Graph) -> int:
    """A Transpose that only moves unit dimensions ([N, C, 1, 1] -> [N, 1, 1, C]) is a Reshape."""
    context = _Context(graph)
    count = 0
    for node in graph.nodes:
        perm = perm_of(node)
        x = node.inputs[0] if perm is not None else None
        if x is None or x.shape is None or moves_data(x.shape, perm):
            continue
        # 1 for a unit dimension, 0 (copy) for one that stays where it is, -1 for the one that moves
        target = [1 if _unit(x.shape[axis]) else 0 if axis == index else -1 for index, axis in enumerate(perm)]
        if target.count(-1) > 1:
            continue
        node.op, node.attrs = "Reshape", {}
        node.inputs = [x, gs.Constant(context.name(f"{node.name}_shape"), np.array(target, np.int64))]
        count += 1
    return count


def _unit_product(node) -> tuple[np.ndarray, object] | None:
    """(the [C, F] weights, x) of ``MatMul(x [N, 1, 1, C], W [C, F])`` with W a constant and C known;
    None for any other node."""
    if node.op != "MatMul" or not _standard(node) or len(node.inputs) != 2 or not node.outputs:
        return None
    x, weights = node.inputs
    if not isinstance(weights, gs.Constant) or weights.values.ndim != 2 or x.shape is None or len(x.shape) != 4:
        return None
    channels = x.shape[3]
    if not (_unit(x.shape[1]) and _unit(x.shape[2]) and isinstance(channels, (int, np.integer))):
        return None
    return (weights.values, x) if channels == weights.values.shape[0] else None


def _row_bias(context: _Context, product, features: int) -> tuple[gs.Node, np.ndarray] | None:
    """(the Add, its bias as [F] values) where the only reader of ``product`` adds a constant of F
    elements broadcast over its last axis; None otherwise."""
    if len(product.outputs) != 1 or id(product) in context.outputs:
        return None
    add = product.outputs[0]
    if add.op != "Add" or not _standard(add) or len(add.inputs) != 2 or len(add.outputs) != 1:
        return None
    bias = add.inputs[1] if add.inputs[0] is product else add.inputs[0]
    if not isinstance(bias, gs.Constant):
        return None
    if bias.values.ndim > 4 or bias.values.size != features or any(d != 1 for d in bias.values.shape[:-1]):
        return None
    return add, bias.values.reshape(features)


def unit_products_to_gemm(graph: gs.Graph) -> int:
    """``MatMul(x [N, 1, 1, C], W [C, F])``, and the bias ``Add`` that is its only reader, is ``Gemm``
    of x's rows [N, C] with W stored as [F, C] (transB=1), between two Reshapes (the first one reads
    through a Reshape that makes x): the form cuBLAS runs fastest, where ONNX Runtime runs the 4-D
    MatMul as a matrix-vector product."""
    if graph.opset < 11:  # Gemm's C (the bias) is optional from opset 11
        return 0
    context = _Context(graph)
    products = [(node, found) for node in graph.nodes if (found := _unit_product(node)) is not None]
    for node, (weights, x) in products:
        channels, features = weights.shape
        product = node.outputs[0]
        folded = _row_bias(context, product, features)
        out = folded[0].outputs[0] if folded else product
        batch = x.shape[0]
        # x made by a Reshape: the rows are its input's, whatever shape it made (the cleanup removes
        # that Reshape where the product was its only reader)
        source = producer(x)
        if source is not None and source.op == "Reshape" and _standard(source):
            x = source.inputs[0]
        rows = context.add_reshape(x, [-1, channels], shape=[batch, channels])
        inputs = [rows, gs.Constant(context.name(f"{node.name}_weights"), np.ascontiguousarray(weights.T))]
        if folded:
            add, bias = folded
            inputs.append(gs.Constant(context.name(f"{node.name}_bias"), np.ascontiguousarray(bias)))
            add.inputs.clear()
            add.outputs.clear()
        result = gs.Variable(context.name(f"{node.name}_gemm"), dtype=out.dtype or x.dtype, shape=[batch, features])
        node.op, node.attrs, node.inputs, node.outputs = "Gemm", {"transB": 1}, inputs, [result]
        context.add_reshape(result, [-1, 1, 1, features], out)
    return len(products)


def float_dtype(tensor) -> np.dtype | None:
    """The tensor's numpy float type; None where it is unknown or not a float."""
    if tensor.dtype is None:
        return None
    try:
        dtype = np.dtype(tensor.dtype)
    except TypeError:
        return None
    return dtype if dtype.kind == "f" else None


def spatial_mean(node) -> tuple[int, int, int, bool] | None:
    """(H, W, C, keepdims) of a ReduceMean over axes [1, 2] of a float [N, H, W, C] tensor whose
    H, W and C are known; None for any other node."""
    if node.op != "ReduceMean" or not _standard(node) or not node.inputs or len(node.outputs) != 1:
        return None
    x = node.inputs[0]
    if x.shape is None or len(x.shape) != 4 or float_dtype(x) is None:
        return None
    found = _reduction(node, 4)
    if found is None or found[0] != [1, 2]:
        return None
    dims = x.shape[1:]
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in dims):
        return None
    return int(dims[0]), int(dims[1]), int(dims[2]), found[1]


def spatial_means_to_products(graph: gs.Graph) -> int:
    """``ReduceMean(x [N, H, W, C], axes [1, 2])``: ``Reshape(x, [-1, H*W, C])``, its Transpose to
    [N, C, H*W], a MatMul of that with a [H*W, 1] column of 1/(H*W) ([N, C, 1]), and a Reshape to
    the mean's shape ([-1, 1, 1, C], or [-1, C] without keepdims) writing the mean's output tensor."""
    context = _Context(graph)
    means = [(node, found) for node in list(graph.nodes) if (found := spatial_mean(node)) is not None]
    for node, (h, w, c, keep) in means:
        x, out = node.inputs[0], node.outputs[0]
        dtype, pixels, batch = float_dtype(x), h * w, x.shape[0]
        rows = context.add_reshape(x, [-1, pixels, c], shape=[batch, pixels, c])
        columns = gs.Variable(context.name(f"{out.name}_columns"), dtype=dtype, shape=[batch, c, pixels])
        graph.nodes.append(gs.Node("Transpose", name=context.name(f"{node.name}_columns"), attrs={"perm": [0, 2, 1]},
                                   inputs=[rows], outputs=[columns]))
        product = gs.Variable(context.name(f"{out.name}_product"), dtype=dtype, shape=[batch, c, 1])
        column = gs.Constant(context.name(f"{node.name}_column"), np.full((pixels, 1), 1 / pixels, dtype))
        graph.nodes.append(gs.Node("MatMul", name=context.name(f"{node.name}_product"), inputs=[columns, column],
                                   outputs=[product]))
        node.op, node.attrs = "Reshape", {}  # the mean's node writes its tensor, reshaped from the product
        node.inputs = [product, gs.Constant(context.name(f"{node.name}_shape"),
                                            np.array([-1, 1, 1, c] if keep else [-1, c], np.int64))]
    return len(means)


def is_spatial_mean_product(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    """Whether ``node`` is a MatMul :func:`spatial_means_to_products` made: its second input one of
    ``constants`` (name -> values), a [K, 1] column of K equal values 1/K."""
    if node.op_type != "MatMul" or not _standard(node) or len(node.input) != 2:
        return False
    column = constants.get(node.input[1])
    if column is None or column.ndim != 2 or column.shape[1] != 1 or column.dtype.kind != "f" or not column.size:
        return False
    first = column.flat[0]
    return bool(np.all(column == first)) and abs(float(first) * column.size - 1) <= 4 * float(np.finfo(column.dtype).eps)


def spatial_mean_products(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The MatMuls of an ``onnx.ModelProto`` that :func:`spatial_means_to_products` made
    (:func:`is_spatial_mean_product`, their columns fp32 initializers)."""
    columns = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2 and t.dims[1] == 1}
    return [node for node in model.graph.node if is_spatial_mean_product(node, columns)]


def spatial_mean_transposes(model: onnx.ModelProto, products: list[onnx.NodeProto] | None = None) -> list[onnx.NodeProto]:
    """The Transposes that the spatial means' products (:func:`spatial_mean_products`, or
    ``products``) read: ONNX Runtime folds each into its product."""
    read = {node.input[0] for node in (spatial_mean_products(model) if products is None else products)}
    return [node for node in model.graph.node if node.op_type == "Transpose" and node.output[0] in read]


RULES = (cancel_pairs, merge_siblings, fold_scale, through_elementwise, through_reduction, through_pointwise_conv)
# after the others: a Reshape stops them, and the bias Adds the Gemms take have had their moves.
# unit_products_to_gemm last: a unit Transpose before a product (the pooled map to NHWC) is a
# Reshape by then, and so is a mean, which the Gemm's own Reshape of the rows reads through.
FINAL = (unit_transposes_to_reshapes, spatial_means_to_products, unit_products_to_gemm)
#: The smallest batch for which the spatial mean is computed as a product: on an H200 the batched
#: product took 13-47 us a mean at batch 1 against the reduction's 5-7, and was as fast or faster
#: from batch 2 on (2-5x at 32): ``benchmarks/2026-12-04-h200-layout-rules``.
MEAN_PRODUCT_MIN_BATCH = 2


#: A fused model's metadata key: the batch its plan was for, so that a later cleanup of it
#: (:func:`ort_custom_ops.lowering.unfuse.unfuse`) takes the same final rules.
PLANNED_BATCH = "fcm.planned_batch"


def planned_batch(model: onnx.ModelProto) -> int:
    """The batch ``model`` was planned for (:data:`PLANNED_BATCH`); 0 where it does not say."""
    value = next((p.value for p in model.metadata_props if p.key == PLANNED_BATCH), "0")
    return int(value) if value.isdigit() else 0


def final_rules(batch: int, mean_layers: bool = False) -> tuple:
    """:data:`FINAL` for a model planned for ``batch`` (0: not known, as for the default batch of 32).
    ``mean_layers``: the spatial means are left as they are, for the ``Mean`` layers of the domain to
    take (:func:`ort_custom_ops.lowering.layers.fold_spatial_means`) in place of the products."""
    if mean_layers or 0 < batch < MEAN_PRODUCT_MIN_BATCH:
        return tuple(rule for rule in FINAL if rule is not spatial_means_to_products)
    return FINAL


def optimize(graph: gs.Graph, rules=RULES, final=FINAL) -> dict[str, int]:
    """Apply ``rules`` in turn until none rewrites anything, then ``final`` once; the graph is cleaned
    up and sorted. Returns how many rewrites each rule made."""
    counts = {rule.__name__: 0 for rule in rules}
    graph.cleanup()  # nodes that replacements disconnected must not count as readers
    for _ in range(4 * len(graph.nodes) + 8):  # each round lowers the cost or moves toward NHWC
        made = 0
        for rule in rules:
            done = rule(graph)
            counts[rule.__name__] += done
            made += done
            graph.cleanup()
        if not made:
            break
    for rule in final:
        counts[rule.__name__] = rule(graph)
    graph.cleanup().toposort()
    return counts


def optimize_model(model: onnx.ModelProto, batch: int = 0) -> onnx.ModelProto:
    """:func:`optimize` on a whole model (a fused one: its shapes inferred through the fused nodes'
    functions first) planned for ``batch`` (:func:`final_rules`); every node keeps its overload, the
    model its functions."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shapes only steer the moves: without them fewer are taken
        inferred = model
    bare = onnx.ModelProto()
    bare.CopyFrom(inferred)
    bare.ClearField("functions")  # the IR tells functions apart by name only, not by overload
    graph = gs.import_onnx(bare)
    optimize(graph, final=final_rules(batch))
    out = gs.export_onnx(graph)
    overloads = {node.name: node.overload for node in model.graph.node if node.overload}
    for node in out.graph.node:
        if node.name in overloads:
            node.overload = overloads[node.name]
    out.functions.extend(model.functions)
    out.ir_version = model.ir_version
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.metadata_props.extend(model.metadata_props)
    return out


def moved_elements(graph: gs.Graph) -> int | None:
    """Elements the Transposes of ``graph`` move (:func:`cost`: the batch counted as 1, none for a
    Transpose of unit dimensions), the measure the rules lower; None where a shape is unknown."""
    total = 0
    for node in graph.nodes:
        perm = perm_of(node)
        if perm is None or not node.inputs:
            continue
        elements = cost(node.inputs[0], perm)
        if elements is None:
            return None
        total += elements
    return total


def transpose_count(model) -> int:
    """Layout Transpose nodes in an ``onnx.ModelProto``'s graph: not those a spatial mean's product
    reads (:func:`spatial_means_to_products`), which ONNX Runtime folds into the product."""
    folded = len(spatial_mean_transposes(model))
    return sum(1 for node in model.graph.node if node.op_type == "Transpose") - folded
