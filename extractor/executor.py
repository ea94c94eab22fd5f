"""A numpy reference executor for extracted DAGs: what proves an extraction right.

In: a :class:`~extractor.dag.Dag` with its weights and the model inputs (NHWC, any batch).
Out: the model outputs, computed operator by operator from the DAG entries and ``weights.npz``
alone, in float64.

Quantized DAGs (int8/uint8 activations) run as TFLite's integer kernels would, up to rounding:
inputs and outputs are the quantized integers, weights are dequantized per channel, and every
operator's result is re-quantized to its output's scale and zero point (round, clamp) before the
next operator reads it. Bit-exact integer arithmetic, layer by layer, is :mod:`extractor.integer`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from fcm_core.errors import FcmError

from . import ops
from .dag import Dag, Layer

_QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "int32": (-(2**31), 2**31 - 1)}


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize(real: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    lo, hi = _QUANT_RANGES[dtype]
    return np.clip(_round_half_away(real / scale) + zero_point, lo, hi)


class Context:
    """What an operator implementation sees: its layer, resolved operands and weights."""

    def __init__(self, dag: Dag, layer: Layer, values: dict):
        self.dag, self.layer, self._values = dag, layer, values

    def operand(self, position: int) -> np.ndarray | None:
        inputs = self.layer.inputs or []
        if position >= len(inputs) or inputs[position] is None:
            return None
        ref = inputs[position]
        if "const" in ref:
            return self.const(ref["const"])
        if "op" in ref:
            return self._values[(ref["op"], ref.get("output", 0))]
        return self._values[("input", ref["graph_input"])]

    def data(self) -> list[np.ndarray]:
        """The computed (non-constant) operands, in order."""
        refs = self.layer.inputs or []
        return [self.operand(i) for i, ref in enumerate(refs) if ref is not None and "const" not in ref]

    def const(self, key: str) -> np.ndarray:
        value = self.dag.weight(self.layer.id, key)
        scales_key = f"{key}_scales"
        if np.issubdtype(value.dtype, np.integer) and self.dag.has_weight(self.layer.id, scales_key):
            scales = self.dag.weight(self.layer.id, scales_key).astype(np.float64)
            zero_points = self.dag.weight(self.layer.id, f"{key}_zero_points").astype(np.float64)
            shape = (-1,) + (1,) * (value.ndim - 1) if scales.size > 1 else ()
            return (value.astype(np.float64) - zero_points.reshape(shape)) * scales.reshape(shape)
        return value.astype(np.float64) if np.issubdtype(value.dtype, np.floating) else value

    def option(self, key: str, default=None):
        return (self.layer.options or {}).get(key, default)


# --- operator implementations ----------------------------------------------------------------

def pad_spatial(x: np.ndarray, pads: Sequence[int], value: float = 0.0) -> np.ndarray:
    top, bottom, left, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def windows(x: np.ndarray, kernel, strides, dilation, out_hw):
    """Yield ((kh, kw), strided view [N, Ho, Wo, C]) for each kernel tap."""
    (kh_n, kw_n), (sh, sw), (dh, dw), (ho, wo) = kernel, strides, dilation, out_hw
    for kh in range(kh_n):
        for kw in range(kw_n):
            h0, w0 = kh * dh, kw * dw
            yield (kh, kw), x[:, h0 : h0 + (ho - 1) * sh + 1 : sh, w0 : w0 + (wo - 1) * sw + 1 : sw, :]


def output_size(x_padded: np.ndarray, kernel, strides, dilation):
    return tuple((x_padded.shape[1 + i] - ((kernel[i] - 1) * dilation[i] + 1)) // strides[i] + 1 for i in range(2))


def conv_geometry(layer: Layer):
    kernel = tuple(layer.kernel_size or (1, 1))
    strides = tuple(layer.strides_hw or (layer.strides or 1,) * 2)
    dilation = tuple(layer.dilation or (1, 1))
    pads = list(layer.pads or [0, 0, 0, 0])
    return kernel, strides, dilation, pads


def _conv_2d(ctx: Context) -> np.ndarray:
    layer = ctx.layer
    x, w = ctx.operand(0), ctx.const("weights")
    bias = ctx.operand(2) if len(layer.inputs or []) > 2 else None
    kernel, strides, dilation, pads = conv_geometry(layer)
    if w.ndim == 2:  # pointwise [F, C]
        w = w[:, :, None, None]
    groups = layer.groups or 1
    xp = pad_spatial(x, pads)
    out_hw = output_size(xp, kernel, strides, dilation)
    filters, c_per_group = w.shape[0], w.shape[1]
    f_per_group = filters // groups
    out = np.zeros((x.shape[0],) + out_hw + (filters,), np.float64)
    for (kh, kw), window in windows(xp, kernel, strides, dilation, out_hw):
        for g in range(groups):
            xs = window[..., g * c_per_group : (g + 1) * c_per_group]
            ws = w[g * f_per_group : (g + 1) * f_per_group, :, kh, kw]
            out[..., g * f_per_group : (g + 1) * f_per_group] += xs @ ws.T
    return out if bias is None else out + bias


def _depthwise_conv_2d(ctx: Context) -> np.ndarray:
    layer = ctx.layer
    x, w = ctx.operand(0), ctx.const("weights")  # w: [C*M, KH, KW]
    bias = ctx.operand(2) if len(layer.inputs or []) > 2 else None
    kernel, strides, dilation, pads = conv_geometry(layer)
    multiplier = w.shape[0] // x.shape[-1]
    if multiplier * x.shape[-1] != w.shape[0]:
        raise FcmError(f"depthwise layer {layer.id}: {w.shape[0]} filters for {x.shape[-1]} channels")
    if multiplier > 1:
        x = np.repeat(x, multiplier, axis=-1)
    xp = pad_spatial(x, pads)
    out_hw = output_size(xp, kernel, strides, dilation)
    out = np.zeros((x.shape[0],) + out_hw + (w.shape[0],), np.float64)
    for (kh, kw), window in windows(xp, kernel, strides, dilation, out_hw):
        out += window * w[:, kh, kw]
    return out if bias is None else out + bias


def _fully_connected(ctx: Context) -> np.ndarray:
    x, w = ctx.operand(0), ctx.operand(1)
    bias = ctx.operand(2)
    flat = x.reshape(-1, w.shape[1])
    out = flat @ w.T
    if bias is not None:
        out = out + bias
    if ctx.option("keep_num_dims"):
        return out.reshape(x.shape[:-1] + (w.shape[0],))
    return out


def _binary(fn: Callable) -> Callable[[Context], np.ndarray]:
    return lambda ctx: fn(ctx.operand(0), ctx.operand(1))


def _pad(ctx: Context) -> np.ndarray:
    x, paddings = ctx.operand(0), np.asarray(ctx.operand(1)).astype(np.int64).reshape(-1, 2)
    value = 0.0
    if ctx.layer.name == "padv2" and ctx.operand(2) is not None:
        value = float(np.asarray(ctx.operand(2)).reshape(-1)[0])
    paddings = _batch_free_paddings(paddings, x.ndim)
    if ctx.layer.name == "mirror_pad":
        mode = "reflect" if ctx.option("mode", "REFLECT") == "REFLECT" else "symmetric"
        return np.pad(x, paddings, mode=mode)
    return np.pad(x, paddings, constant_values=value)


def _batch_free_paddings(paddings: np.ndarray, ndim: int):
    if paddings.shape[0] != ndim:
        raise FcmError(f"pad: {paddings.shape[0]}-D paddings for a {ndim}-D tensor")
    return [tuple(int(v) for v in row) for row in paddings]


def _reduce(fn: Callable) -> Callable[[Context], np.ndarray]:
    def run(ctx: Context) -> np.ndarray:
        x, axes = ctx.operand(0), np.asarray(ctx.operand(1)).astype(np.int64).reshape(-1)
        axes = tuple(int(a) % x.ndim for a in axes)
        return fn(x, axis=axes, keepdims=bool(ctx.option("keep_dims", False)))

    return run


def _pool(kind: str) -> Callable[[Context], np.ndarray]:
    def run(ctx: Context) -> np.ndarray:
        layer, x = ctx.layer, ctx.operand(0)
        kernel, strides = tuple(layer.kernel_size), tuple(layer.strides_hw)
        pads = layer.pads or [0, 0, 0, 0]
        if kind == "max":
            xp = pad_spatial(x, pads, -np.inf)
            out_hw = output_size(xp, kernel, strides, (1, 1))
            out = np.full((x.shape[0],) + out_hw + (x.shape[3],), -np.inf)
            for _, window in windows(xp, kernel, strides, (1, 1), out_hw):
                out = np.maximum(out, window)
            return out
        # average: padded positions do not count (TFLite / TensorFlow semantics)
        xp = pad_spatial(x, pads)
        ones = pad_spatial(np.ones(x.shape[:3] + (1,)), pads)
        out_hw = output_size(xp, kernel, strides, (1, 1))
        total = np.zeros((x.shape[0],) + out_hw + (x.shape[3],))
        count = np.zeros((x.shape[0],) + out_hw + (1,))
        for (_, window), (_, ones_window) in zip(
            windows(xp, kernel, strides, (1, 1), out_hw), windows(ones, kernel, strides, (1, 1), out_hw)
        ):
            total += window
            count += ones_window
        return total / count

    return run


def _activation(ctx: Context) -> np.ndarray:
    return ops.apply_activation(ctx.operand(0), ops.ACTIVATION_OPS[ctx.layer.name], ctx.layer.activation_params)


def _softmax(ctx: Context) -> np.ndarray:
    x = ctx.operand(0) * float(ctx.option("beta", 1.0))
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(ctx: Context) -> np.ndarray:
    x = ctx.operand(0)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _target_shape(ctx: Context, x: np.ndarray) -> list[int]:
    shape_operand = ctx.operand(1)
    if shape_operand is not None:
        shape = [int(v) for v in np.asarray(shape_operand).reshape(-1)]
    else:
        shape = [int(v) for v in ctx.option("new_shape", [])]
    # Shapes recorded at batch 1 run at any batch: a leading 1 that does not fit becomes -1.
    if shape and -1 not in shape and int(np.prod(shape)) != x.size and shape[0] == 1:
        shape[0] = -1
    return shape


def _reshape(ctx: Context) -> np.ndarray:
    x = ctx.operand(0)
    return x.reshape(_target_shape(ctx, x))


def _squeeze(ctx: Context) -> np.ndarray:
    dims = ctx.option("squeeze_dims") or None
    x = ctx.operand(0)
    return np.squeeze(x, axis=tuple(d % x.ndim for d in dims) if dims else None)


def _expand_dims(ctx: Context) -> np.ndarray:
    x = ctx.operand(0)
    return np.expand_dims(x, int(np.asarray(ctx.operand(1)).reshape(-1)[0]))


def _strided_slice(ctx: Context) -> np.ndarray:
    x = ctx.operand(0)
    begin, end, strides = (np.asarray(ctx.operand(i)).astype(np.int64).reshape(-1) for i in (1, 2, 3))
    if ctx.option("ellipsis_mask", 0) or ctx.option("new_axis_mask", 0):
        raise FcmError(f"strided_slice {ctx.layer.id}: ellipsis/new-axis masks are not supported")
    begin_mask, end_mask, shrink = (int(ctx.option(k, 0)) for k in ("begin_mask", "end_mask", "shrink_axis_mask"))
    index = []
    for axis in range(len(begin)):
        if shrink >> axis & 1:
            index.append(int(begin[axis]))
            continue
        start = None if begin_mask >> axis & 1 else int(begin[axis])
        stop = None if end_mask >> axis & 1 else int(end[axis])
        index.append(slice(start, stop, int(strides[axis])))
    return np.asarray(x[tuple(index)])


def _pack(ctx: Context) -> np.ndarray:
    values = [np.asarray(ctx.operand(i)) for i in range(len(ctx.layer.inputs or []))]
    # TFLite packs by element count: the converter emits [1]-shaped constants beside scalars
    shape = values[0].shape
    values = [v.reshape(shape) if v.size == values[0].size else v for v in values]
    return np.stack(values, axis=int(ctx.option("axis", 0)))


def _concatenation(ctx: Context) -> np.ndarray:
    values = [ctx.operand(i) for i in range(len(ctx.layer.inputs or []))]
    return np.concatenate(values, axis=int(ctx.option("axis", -1)))


def _transpose(ctx: Context) -> np.ndarray:
    return np.transpose(ctx.operand(0), [int(v) for v in np.asarray(ctx.operand(1)).reshape(-1)])


def _identity(ctx: Context) -> np.ndarray:
    return ctx.operand(0)


IMPLEMENTATIONS: dict[str, Callable[[Context], np.ndarray]] = {
    "conv_2d": _conv_2d,
    "depthwise_conv_2d": _depthwise_conv_2d,
    "fully_connected": _fully_connected,
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "div": _binary(np.divide),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    "squared_difference": _binary(lambda a, b: (a - b) ** 2),
    "pad": _pad,
    "padv2": _pad,
    "mirror_pad": _pad,
    "mean": _reduce(np.mean),
    "sum": _reduce(np.sum),
    "reduce_max": _reduce(np.max),
    "max_pool_2d": _pool("max"),
    "average_pool_2d": _pool("average"),
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "reshape": _reshape,
    "squeeze": _squeeze,
    "expand_dims": _expand_dims,
    "shape": lambda ctx: np.asarray(ctx.operand(0).shape, np.int32),
    "strided_slice": _strided_slice,
    "pack": _pack,
    "concatenation": _concatenation,
    "transpose": _transpose,
    "quantize": _identity,  # real values pass; the output's quantization is applied after
    "dequantize": _identity,
    **{name: _activation for name in ops.ACTIVATION_OPS},
}

#: Operators the executor runs (and the readers therefore understand).
SUPPORTED_OPS = frozenset(IMPLEMENTATIONS)

# Operators computing shapes and indices keep their integer values; the others are real-valued.
_INDEX_OPS = frozenset({"shape", "strided_slice", "pack"})


def is_quantized(dag: Dag) -> bool:
    return any(out.get("dtype") in ("int8", "uint8", "int16") and "scale" in out for layer in dag for out in layer.outputs or [])


def run_dag(dag: Dag, inputs: np.ndarray | Sequence[np.ndarray], *, keep: bool = False) -> list[np.ndarray]:
    """Run the DAG on ``inputs`` (one array per model input, NHWC); return the model outputs.

    Float models return float32 arrays. Quantized models take and return the quantized integers
    of their input/output tensors (as the TFLite interpreter does). With ``keep=True`` the
    result's attribute ``values`` maps (layer id, output index) to every intermediate (real values).
    """
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    values: dict = {}
    graph_input_quant = _graph_input_quant(dag)
    for k, array in enumerate(inputs):
        array = np.asarray(array)
        q = graph_input_quant.get(k)
        if q is not None:
            values[("input", k)] = (array.astype(np.float64) - q[1]) * q[0]
        else:
            values[("input", k)] = array.astype(np.float64) if np.issubdtype(array.dtype, np.floating) else array

    for layer in dag:
        impl = IMPLEMENTATIONS.get(layer.name)
        if impl is None or layer.opaque:
            raise FcmError(f"cannot execute layer {layer.id}: operator '{layer.name}' is not supported by the reference executor")
        ctx = Context(dag, layer, values)
        try:
            result = impl(ctx)
        except KeyError as exc:
            raise FcmError(f"layer {layer.id} ({layer.name}): missing input {exc}") from None
        if layer.name in ops.OPS_WITH_FUSED_ACTIVATION:
            result = ops.apply_activation(result, layer.activation, layer.activation_params)
        out = (layer.outputs or [{}])[0]
        if layer.name not in _INDEX_OPS:
            result = np.asarray(result, np.float64)
            if out.get("dtype") in _QUANT_RANGES and "scale" in out:
                result = (quantize(result, out["scale"], out["zero_point"], out["dtype"]) - out["zero_point"]) * out["scale"]
        values[(layer.id, 0)] = result

    results = []
    for layer_id, index in dag.model_outputs():
        value = values[(layer_id, index)]
        out = (dag[layer_id].outputs or [{}])[index] if dag[layer_id].outputs else {}
        if out.get("dtype") in _QUANT_RANGES and "scale" in out:
            q = quantize(value, out["scale"], out["zero_point"], out["dtype"])
            results.append(q.astype(np.dtype(out["dtype"])))
        else:
            results.append(np.asarray(value, np.float32))
    if keep:
        return _WithValues(results, values)
    return results


class _WithValues(list):
    def __init__(self, results, values):
        super().__init__(results)
        self.values = values


def _graph_input_quant(dag: Dag) -> dict[int, tuple[float, int]]:
    found = {}
    for layer in dag:
        for ref in layer.inputs or []:
            if ref and "graph_input" in ref and "scale" in ref and ref.get("dtype") in _QUANT_RANGES:
                found[ref["graph_input"]] = (ref["scale"], ref["zero_point"])
    return found
