"""Half-precision nodes in tests: how far two correct computations may differ, and running a half
node on the CUDA provider with half tensors bound to device buffers (poisoned outputs)."""

from __future__ import annotations

import numpy as np

from fcm_core.vocabulary import PRECISIONS
from ort_custom_ops.ops.schema import NUMPY_TYPES, FcmSpec
from tests.support.fcm_numpy import activate, depthwise, pointwise, round_to

_ONNX_TYPES = {"fp16": 10, "bf16": 16}  # TensorProto.FLOAT16, BFLOAT16


def rounding_bound(spec: FcmSpec, x: np.ndarray, scale) -> float:
    """How far two correct computations of the op may differ: each stage output is rounded once, and
    where the fp32 sums of the two sit on either side of a rounding boundary a stage output differs by
    one unit (2u of its size), which the later stages carry on (at most the largest row sum of their
    absolute weights, times a slope of at most 1.5 for the activations here). With a channel scale,
    one computation may round the scaled input (the GPU's tensor-core operand) and the other the
    scaled weights: each product of the first stage off by u of its size, so the first stage's sum
    of absolute products bounds that part before it is carried on."""
    u, dtype = PRECISIONS[spec.precision].unit_roundoff, NUMPY_TYPES[spec.precision]
    bound = 0.0
    current = round_to(x, dtype) * (round_to(scale, dtype) if spec.has_scale else 1)
    if spec.has_scale:
        first = spec.stages[0]
        weight, zero = np.abs(round_to(first.weight, dtype)), np.zeros(first.out_channels)
        products = (pointwise(np.abs(current), weight, zero) if first.type == "pw"
                    else depthwise(np.abs(current), weight, zero, first.stride, first.pads))
        bound += 2 * u * products.max() * 1.5 * _carried(spec.stages[1:])
    for index, stage in enumerate(spec.stages):
        weight, bias = round_to(stage.weight, dtype), round_to(stage.bias, dtype)
        current = (pointwise(current, weight, bias) if stage.type == "pw"
                   else depthwise(current, weight, bias, stage.stride, stage.pads))
        current = round_to(activate(current, stage.activation), dtype)
        bound += 2 * u * np.abs(current).max() * _carried(spec.stages[index + 1:])
    return bound


def _carried(stages) -> float:
    """How much the later stages may grow an error of their input: each stage's largest row sum of
    absolute weights times an activation slope of at most 1.5."""
    carried = 1.0
    for later in stages:
        carried *= 1.5 * np.abs(later.weight).reshape(later.weight.shape[0], -1).sum(axis=1).max()
    return carried


def half_bits(values: np.ndarray, precision: str) -> np.ndarray:
    """``values`` rounded to the element type, as its 16-bit patterns."""
    return np.ascontiguousarray(values.astype(NUMPY_TYPES[precision]).view(np.uint16))


def from_half_bits(bits: np.ndarray, precision: str) -> np.ndarray:
    return bits.view(NUMPY_TYPES[precision]).astype(np.float32)


def run_poisoned_half(session, feeds: dict[str, np.ndarray], output_shape, precision: str,
                      float_inputs: tuple[str, ...] = ()) -> np.ndarray:
    """A half model (inputs and output of ``precision``; those named in ``float_inputs`` fp32) run
    from float32 ``feeds`` (rounded to the type) with its tensors bound to device buffers, the
    output's filled with NaN (all ones, a NaN in both types) first, so that an element the kernel
    never writes shows; the output as float32."""
    import onnxruntime as ort

    element = _ONNX_TYPES[precision]
    binding = session.io_binding()
    kept = []
    for name, array in feeds.items():
        if name in float_inputs:
            value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array, np.float32), "cuda", 0)
            kept.append(value)
            binding.bind_ortvalue_input(name, value)
            continue
        value = ort.OrtValue.ortvalue_from_numpy(half_bits(array, precision), "cuda", 0)
        kept.append(value)
        binding.bind_input(name, "cuda", 0, element, list(array.shape), value.data_ptr())
    out = ort.OrtValue.ortvalue_from_numpy(np.full(output_shape, 0xFFFF, np.uint16), "cuda", 0)
    binding.bind_output(session.get_outputs()[0].name, "cuda", 0, element, list(output_shape), out.data_ptr())
    session.run_with_iobinding(binding)
    result = from_half_bits(out.numpy(), precision)
    assert not np.isnan(result).any(), f"{int(np.isnan(result).sum())} output elements were never written"
    return result
