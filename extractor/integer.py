"""TFLite's integer arithmetic for int8 operators, bit for bit, in numpy.

In: a quantized DAG layer (``conv_2d``, ``depthwise_conv_2d``, ``fully_connected``, ``add``,
``pad``, ``quantize``; ``mean`` in the fp32 scheme), its integer weights and per-channel quantization parameters from
``weights.npz``, and its quantized input tensors. Out: its quantized output tensor, computed as
TFLite's integer kernels compute it: int32 accumulators over zero-point-shifted inputs, the real
rescale factor turned into a Q31 fixed-point multiplier and a power-of-two shift
(``quantize_multiplier``), the rounding high multiply and rounding shift
(``multiply_by_quantized_multiplier``), the output zero point and the fused activation's clamp.

``accumulate`` and ``requantize`` are the same arithmetic on plain arrays (for testing kernels
without a DAG); ``run_integer`` chains the layers of a whole model.

This is the reference the int8 fused kernels are held to; :mod:`extractor.executor` stays the
float-rounding model of the same network.
"""

from __future__ import annotations

import math

import numpy as np

from fcm_core.errors import FcmError

from .dag import Dag, Layer
from .executor import conv_geometry, output_size, pad_spatial, windows
from .ops import NO_ACTIVATION

RANGES = {"int8": (-128, 127), "uint8": (0, 255)}

# How a convolution's accumulators become output integers. FIXED_POINT: TFLite's builtin kernels
# (a Q31 multiplier and shift per channel). FP32: XNNPACK, the interpreter's default delegate (a
# float32 scale per channel, round half to even). Each was matched bit for bit on every
# convolution of a real int8 MobileNetV2.
FIXED_POINT, FP32 = "fixed_point", "fp32"
SCHEMES = (FIXED_POINT, FP32)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """``real`` as ``multiplier * 2**(shift - 31)`` with a Q31 multiplier in [2**30, 2**31)."""
    if real == 0.0:
        return 0, 0
    fraction, shift = math.frexp(real)
    fixed = int(math.floor(abs(fraction) * (1 << 31) + 0.5)) * (1 if fraction >= 0 else -1)  # round half away
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (1 << 31) - 1, 30
    return fixed, shift


def _rounding_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int64 arrays holding int32 values."""
    product = a * b
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    total = product + nudge
    result = np.where(total >= 0, total >> 31, -((-total) >> 31))  # C++ division truncates toward zero
    overflow = (a == -(1 << 31)) & (b == -(1 << 31))
    return np.where(overflow, (1 << 31) - 1, result)


def _rounding_shift_right(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: x / 2**exponent, ties away from zero."""
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(acc: np.ndarray, multiplier, shift) -> np.ndarray:
    """round(acc * multiplier * 2**(shift - 31)) as TFLite's int8 kernels compute it: a rounding
    doubling high multiply, then a right shift rounding ties upward (the builtin kernels of the
    interpreter do this, matched on every layer of a real model; TFLite's reference kernels round
    ties away from zero instead, which differs on negative ties)."""
    acc = np.asarray(acc, np.int64)
    multiplier = np.asarray(multiplier, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    high = _rounding_high_mul(np.clip(acc * (np.int64(1) << left), -(1 << 31), (1 << 31) - 1), multiplier)
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    return (high + half) >> right


def activation_range(activation: str, params: dict | None, scale: float, zero_point: int, dtype: str) -> tuple[int, int]:
    """The output clamp of a fused activation, in the output's integers (TFLite's rounding)."""
    lo, hi = RANGES[dtype]

    def q(value: float) -> int:  # TFLite: zero point + round(value / scale) in float32, ties away
        ratio = float(np.float32(value) / np.float32(scale))
        return zero_point + int(math.copysign(math.floor(abs(ratio) + 0.5), ratio))

    params = params or {}
    if activation in (NO_ACTIVATION, "NONE", "LINEAR", None):
        return lo, hi
    if activation == "RELU":
        return max(lo, q(0.0)), hi
    if activation == "RELU6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    if activation == "RELU_0_TO_1":
        return max(lo, q(0.0)), min(hi, q(1.0))
    if activation == "CLIP" and "min" in params:
        return max(lo, q(float(params["min"]))), min(hi, q(float(params["max"])))
    raise FcmError(f"activation {activation} has no integer form")


class IntegerLayer:
    """One quantized layer with its integer weights and the quantization of its tensors."""

    def __init__(self, dag: Dag, layer: Layer, scheme: str):
        if scheme not in SCHEMES:
            raise FcmError(f"unknown requantization scheme {scheme!r} (one of {', '.join(SCHEMES)})")
        self.dag, self.layer, self.scheme = dag, layer, scheme
        self.out = (layer.outputs or [{}])[0]
        if self.out.get("dtype") not in RANGES or "scale" not in self.out:
            raise FcmError(f"layer {layer.id} ({layer.name}): output is not int8/uint8 quantized")

    def input_quant(self, position: int) -> tuple[float, int]:
        ref = (self.layer.inputs or [])[position]
        return float(ref["scale"]), int(ref["zero_point"])

    def weight(self, key: str) -> np.ndarray:
        return self.dag.weight(self.layer.id, key)

    def requantize(self, acc: np.ndarray) -> np.ndarray:
        """A convolution's accumulators -> its output integers (see ``requantize``)."""
        in_scale, _ = self.input_quant(0)
        zero_point = int(self.out["zero_point"])
        lo, hi = activation_range(self.layer.activation, self.layer.activation_params,
                                  float(self.out["scale"]), zero_point, self.out["dtype"])
        return requantize(acc, in_scale, self.weight("weights_scales"), float(self.out["scale"]), zero_point,
                          (lo, hi), self.out["dtype"], self.scheme)


def requantize(acc: np.ndarray, input_scale: float, weight_scales: np.ndarray, output_scale: float,
               output_zero_point: int, clamp: tuple[int, int], dtype: str, scheme: str) -> np.ndarray:
    """int32 accumulators (channels last) -> output integers: rescale per channel by input scale x
    weight scale / output scale, add the output zero point, clamp to ``clamp`` (the activation's
    range in output integers), as ``scheme`` computes it."""
    lo, hi = clamp
    if scheme == FP32:  # in float32: scale, clamp, round half to even
        scale = np.float32(input_scale) * np.asarray(weight_scales, np.float32) / np.float32(output_scale)
        scaled = np.clip(acc.astype(np.float32) * scale, np.float32(lo - output_zero_point), np.float32(hi - output_zero_point))
        return (np.rint(scaled).astype(np.int64) + output_zero_point).astype(np.dtype(dtype))
    real = np.float64(input_scale) * np.asarray(weight_scales, np.float64) / np.float64(output_scale)
    pairs = [quantize_multiplier(float(r)) for r in np.atleast_1d(real)]
    multiplier = np.array([p[0] for p in pairs], np.int64)
    shift = np.array([p[1] for p in pairs], np.int64)
    scaled = multiply_by_quantized_multiplier(acc, multiplier, shift) + output_zero_point
    return np.clip(scaled, lo, hi).astype(np.dtype(dtype))


def accumulate(x: np.ndarray, x_zero_point: int, weights: np.ndarray, bias: np.ndarray | None, kernel, strides,
               dilation, pads, depthwise: bool) -> np.ndarray:
    """A convolution's int32 accumulators: sum((x - x_zero_point) * w) + bias over NHWC ``x``;
    ``weights`` [F, C, KH, KW] or [F, C] (standard), [C * M, KH, KW] (depthwise); ``pads`` top,
    bottom, left, right. Padding reads as the zero point, i.e. contributes nothing."""
    xs = x.astype(np.float64) - x_zero_point  # sums of int8 products are exact in float64
    w = np.asarray(weights, np.float64)
    if depthwise:
        multiplier = w.shape[0] // xs.shape[-1]
        if multiplier > 1:
            xs = np.repeat(xs, multiplier, axis=-1)
    elif w.ndim == 2:
        w = w[:, :, None, None]
    xp = pad_spatial(xs, pads)
    out_hw = output_size(xp, kernel, strides, dilation)
    acc = np.zeros((xs.shape[0],) + out_hw + (w.shape[0],), np.float64)
    for (kh, kw), window in windows(xp, kernel, strides, dilation, out_hw):
        acc += window * w[:, kh, kw] if depthwise else window @ w[:, :, kh, kw].T
    acc = acc.astype(np.int64)
    return acc if bias is None else acc + np.asarray(bias, np.int64)


def _conv(il: IntegerLayer, x: np.ndarray, depthwise: bool) -> np.ndarray:
    layer = il.layer
    _, x_zp = il.input_quant(0)
    if np.any(il.weight("weights_zero_points")):
        raise FcmError(f"layer {layer.id}: weights with non-zero zero points are not TFLite int8")
    bias = il.weight("bias") if il.dag.has_weight(layer.id, "bias") else None
    kernel, strides, dilation, pads = conv_geometry(layer)
    return il.requantize(accumulate(x, x_zp, il.weight("weights"), bias, kernel, strides, dilation, pads, depthwise))


def _fully_connected(il: IntegerLayer, x: np.ndarray) -> np.ndarray:
    _, x_zp = il.input_quant(0)
    w = il.weight("weights").astype(np.float64)
    acc = ((x.reshape(-1, w.shape[1]).astype(np.float64) - x_zp) @ w.T).astype(np.int64)
    if il.dag.has_weight(il.layer.id, "bias"):
        acc += il.weight("bias").astype(np.int64)
    return il.requantize(acc)


def _add(il: IntegerLayer, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """TFLite's int8 ADD: both inputs to a common scale with 20 bits of headroom, summed, rescaled."""
    (sa, za), (sb, zb) = il.input_quant(0), il.input_quant(1)
    left_shift = 20
    twice_max = 2.0 * max(sa, sb)
    ma, ea = quantize_multiplier(sa / twice_max)
    mb, eb = quantize_multiplier(sb / twice_max)
    mo, eo = quantize_multiplier(twice_max / ((1 << left_shift) * float(il.out["scale"])))

    def scaled(x, zp, m, e):
        shifted = (x.astype(np.int64) - zp) * (1 << left_shift)
        return _rounding_shift_right(_rounding_high_mul(shifted, np.int64(m)), np.int64(-e))

    total = scaled(a, za, ma, ea) + scaled(b, zb, mb, eb)
    out = _rounding_shift_right(_rounding_high_mul(total, np.int64(mo)), np.int64(-eo)) + int(il.out["zero_point"])
    lo, hi = activation_range(il.layer.activation, il.layer.activation_params,
                              float(il.out["scale"]), int(il.out["zero_point"]), il.out["dtype"])
    return np.clip(out, lo, hi).astype(np.dtype(il.out["dtype"]))


def _requantize(il: IntegerLayer, x: np.ndarray) -> np.ndarray:
    """QUANTIZE between integer types: subtract the zero point, rescale, add the new one."""
    scale, zp = il.input_quant(0)
    acc = x.astype(np.int64) - zp
    if np.float32(scale) == np.float32(il.out["scale"]):
        lo, hi = RANGES[il.out["dtype"]]
        return np.clip(acc + int(il.out["zero_point"]), lo, hi).astype(np.dtype(il.out["dtype"]))
    m, e = quantize_multiplier(np.float64(scale) / np.float64(il.out["scale"]))
    lo, hi = RANGES[il.out["dtype"]]
    out = multiply_by_quantized_multiplier(acc, m, e) + int(il.out["zero_point"])
    return np.clip(out, lo, hi).astype(np.dtype(il.out["dtype"]))


def _pad(il: IntegerLayer, x: np.ndarray, paddings: np.ndarray) -> np.ndarray:
    paddings = np.asarray(paddings, np.int64).reshape(-1, 2)
    if paddings.shape[0] == x.ndim + 1:  # a batch-free paddings tensor
        paddings = paddings[1:]
    return np.pad(x, [tuple(p) for p in paddings], constant_values=int(il.out["zero_point"]))


def _mean(il: IntegerLayer, x: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """MEAN over axes, as XNNPACK computes it: the zero-point-shifted sum times the float32
    factor input_scale / output_scale / count, rounded half to even. (TFLite's builtin kernel
    rounds differently and is not reproduced.)"""
    if il.scheme != FP32:
        raise FcmError(f"layer {il.layer.id}: MEAN is reproduced for the fp32 (XNNPACK) scheme only")
    scale, zp = il.input_quant(0)
    axes = tuple(int(a) % x.ndim for a in np.atleast_1d(axes))
    count = int(np.prod([x.shape[a] for a in axes]))
    acc = x.astype(np.int64).sum(axis=axes, keepdims=bool((il.layer.options or {}).get("keep_dims"))) - count * zp
    factor = np.float32(scale) / np.float32(il.out["scale"]) / np.float32(count)
    lo, hi = RANGES[il.out["dtype"]]
    out = np.rint(acc.astype(np.float32) * factor).astype(np.int64) + int(il.out["zero_point"])
    return np.clip(out, lo, hi).astype(np.dtype(il.out["dtype"]))


def mul(a: np.ndarray, b: np.ndarray, a_quant: tuple[float, int], b_quant: tuple[float, int], y_scale: float,
        y_zero_point: int, clamp: tuple[int, int], dtype: str, scheme: str) -> np.ndarray:
    """TFLite's integer MUL (broadcasting as numpy does): the product of the zero-point-shifted
    inputs, rescaled by a_scale x b_scale / y_scale exactly as a convolution's accumulator is
    (``requantize``). With ``fp32`` it is XNNPACK's (*verified* bit-exact on the 65 MULs of an
    int8 EfficientNetB0); the builtin kernel's differs by 1 on some outputs (not reproduced)."""
    acc = (a.astype(np.int64) - a_quant[1]) * (b.astype(np.int64) - b_quant[1])
    return requantize(acc, a_quant[0], np.array([b_quant[0]], np.float32), y_scale, y_zero_point, clamp, dtype, scheme)


def logistic_table(x_quant: tuple[float, int], y_quant: tuple[float, int], dtype: str, scheme: str) -> np.ndarray:
    """TFLite's integer LOGISTIC as a lookup table: entry ``i`` is the output for the input
    integer ``i + lo`` (``lo`` the smallest of ``dtype``). Both kernel libraries tabulate it in
    float32: x = x_scale * (i - x_zp); XNNPACK (``fp32``) rounds sigmoid(x) / y_scale half to
    even, the builtin kernels (``fixed_point``) half away from zero; then + y_zp, clamped."""
    lo, hi = RANGES[dtype]
    codes = np.arange(lo, hi + 1, dtype=np.int32)
    x = np.float32(x_quant[0]) * (codes - np.int32(x_quant[1])).astype(np.float32)
    with np.errstate(over="ignore"):
        sigmoid = (np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)
    scaled = sigmoid * (np.float32(1) / np.float32(y_quant[0]))
    rounded = np.rint(scaled) if scheme == FP32 else np.sign(scaled) * np.floor(np.abs(scaled) + np.float32(0.5))
    return np.clip(rounded.astype(np.int64) + int(y_quant[1]), lo, hi).astype(np.dtype(dtype))


def _mul(il: IntegerLayer, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if il.scheme != FP32:  # the builtin kernel differs by 1 on some outputs: its rounding is not reproduced
        raise FcmError(f"layer {il.layer.id}: MUL is reproduced for the fp32 (XNNPACK) scheme only")
    zp, scale = int(il.out["zero_point"]), float(il.out["scale"])
    clamp = activation_range(il.layer.activation, il.layer.activation_params, scale, zp, il.out["dtype"])
    return mul(a, b, il.input_quant(0), il.input_quant(1), scale, zp, clamp, il.out["dtype"], il.scheme)


#: The activation operators whose integer form is one lookup table, by DAG operator: each builds
#: its table from (x_quant, y_quant, dtype, scheme). The int8 lowering takes them from here, fused
#: into a convolution (``x * table(x)`` too, swish's form) or alone.
ACTIVATION_TABLES = {"logistic": logistic_table}


def _lookup(il: IntegerLayer, x: np.ndarray) -> np.ndarray:
    table = ACTIVATION_TABLES[il.layer.name](il.input_quant(0), (float(il.out["scale"]), int(il.out["zero_point"])),
                                             il.out["dtype"], il.scheme)
    return table[x.astype(np.int64) - RANGES[il.out["dtype"]][0]]


SUPPORTED = ("conv_2d", "depthwise_conv_2d", "fully_connected", "add", "pad", "quantize", "mean", "mul",
             *ACTIVATION_TABLES)


def run_layer(dag: Dag, layer: Layer, inputs: list[np.ndarray], scheme: str = FIXED_POINT) -> np.ndarray:
    """The layer's quantized output from its quantized data inputs (in the layer's input order;
    ``pad`` also takes its paddings, ``mean`` its axes), with the requantization ``scheme``."""
    il = IntegerLayer(dag, layer, scheme)
    if layer.name in ("conv_2d", "depthwise_conv_2d"):
        return _conv(il, inputs[0], layer.name == "depthwise_conv_2d")
    if layer.name == "fully_connected":
        return _fully_connected(il, inputs[0])
    if layer.name == "add":
        return _add(il, inputs[0], inputs[1])
    if layer.name == "quantize":
        return _requantize(il, inputs[0])
    if layer.name == "mul":
        return _mul(il, inputs[0], inputs[1])
    if layer.name in ACTIVATION_TABLES:
        return _lookup(il, inputs[0])
    if layer.name == "pad":
        return _pad(il, inputs[0], inputs[1])
    if layer.name == "mean":
        return _mean(il, inputs[0], inputs[1])
    raise FcmError(f"layer {layer.id}: no integer implementation of '{layer.name}' (supported: {', '.join(SUPPORTED)})")


def run_integer(dag: Dag, inputs: np.ndarray | list[np.ndarray], scheme: str = FP32) -> list[np.ndarray]:
    """The whole quantized model in integers: every layer with an integer form (``SUPPORTED``)
    exactly as TFLite computes it under ``scheme``; any other operator (SOFTMAX, reshapes) in
    float64 on its dequantized inputs, its result quantized to its output (rounding half away
    from zero): the only places the result may differ from the interpreter's."""
    from . import ops
    from .executor import IMPLEMENTATIONS, Context, quantize

    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    values: dict = {("input", k): np.asarray(array) for k, array in enumerate(inputs)}

    def key(ref: dict):
        return (ref["op"], ref.get("output", 0)) if "op" in ref else ("input", ref["graph_input"])

    for layer in dag:
        refs = layer.inputs or []
        try:
            if layer.name in SUPPORTED and not (layer.name in ("mean", "mul") and scheme != FP32):
                data = [dag.weight(layer.id, ref["const"]) if "const" in ref else values[key(ref)]
                        for ref in refs if ref is not None and ("const" not in ref or layer.name in ("pad", "mean"))]
                values[(layer.id, 0)] = run_layer(dag, layer, data, scheme)
                continue
            real = {}
            for ref in refs:
                if ref is None or "const" in ref:
                    continue
                q = values[key(ref)]
                real[key(ref)] = (q.astype(np.float64) - ref["zero_point"]) * ref["scale"] if "scale" in ref else q
        except KeyError as exc:
            raise FcmError(f"layer {layer.id} ({layer.name}): missing input {exc}") from None
        impl = IMPLEMENTATIONS.get(layer.name)
        if impl is None or layer.opaque:
            raise FcmError(f"cannot execute layer {layer.id}: operator '{layer.name}' has no integer or float form here")
        result = np.asarray(impl(Context(dag, layer, real)), np.float64)
        if layer.name in ops.OPS_WITH_FUSED_ACTIVATION:
            result = ops.apply_activation(result, layer.activation, layer.activation_params)
        out = (layer.outputs or [{}])[0]
        if out.get("dtype") in RANGES and "scale" in out:
            result = quantize(result, out["scale"], out["zero_point"], out["dtype"]).astype(np.dtype(out["dtype"]))
        values[(layer.id, 0)] = result
    return [values[(layer_id, index)] for layer_id, index in dag.model_outputs()]
