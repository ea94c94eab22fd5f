"""The float spatial-mean layer op (Mean, Fp16Mean, Bf16Mean: the mean over H and W of a channels-last
map): its CPU reference kernel against the exact mean of the same values and against ONNX Runtime's
ReduceMean in the op's function body, its checks of attributes and shapes (an ONNX Runtime error, never
a crash), and on the GPU machine its CUDA kernel against the CPU reference kernel, outputs poisoned
first, split over CTAs or not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fcm_core.vocabulary import DOMAIN, DOMAIN_VERSION, PRECISIONS
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import IR_VERSION, NUMPY_TYPES, ONNX_TYPES, MeanLayer
from ort_custom_ops.ops.standalone import float_io
from tests.support.gpu import cuda_providers, require_cuda, run_poisoned
from tests.support.half import run_poisoned_half

# (N, H, W, C): single pixels and channels, odd sizes, a classifier's pool
SHAPES = [(1, 1, 1, 1), (3, 3, 7, 17), (1, 7, 7, 1280), (2, 17, 3, 3), (32, 3, 1, 7), (1, 1, 17, 8), (3, 5, 5, 24)]


def _mean_model(precision: str, keepdims: bool = True, opset: int = 17, x_shape=None, **attributes) -> onnx.ModelProto:
    """A model of one mean layer node X -> Y with its function body (what runs without the library);
    ``attributes`` replace the layer's own. X's shape is left open unless ``x_shape`` gives it."""
    layer = MeanLayer(keepdims, precision)
    node = helper.make_node(layer.op_type, ["X"], ["Y"], name="mean", domain=DOMAIN,
                            **{**layer.attributes(), **attributes})
    node.overload = "m0"
    element = ONNX_TYPES[precision]
    graph = helper.make_graph([node], "mean", [helper.make_tensor_value_info("X", element, x_shape)],
                              [helper.make_tensor_value_info("Y", element, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)])
    model.ir_version = IR_VERSION
    model.functions.append(layer.function("m0", opset))
    return model


def _map(rng, precision: str, shape) -> np.ndarray:
    """Random values of the precision (as float32), not centred on 0: the mean is not lost in its terms."""
    return (rng.normal(size=shape) + 0.5).astype(NUMPY_TYPES[precision]).astype(np.float32)


def _run(model, x: np.ndarray, precision: str, **session) -> np.ndarray:
    """The model on ``x`` (values of the precision, as float32): fp32 in and out, one Cast each side."""
    (y,) = make_session(float_io(model), **session).run(None, {"X": x})
    return y


def _sum_error(x: np.ndarray) -> np.ndarray:
    """How far an fp32 sum of each image's pixels (any order), divided by H * W, may be from the exact
    mean: (H * W) fp32 roundings of partial sums at most the sum of the absolute values, per channel."""
    pixels = x.shape[1] * x.shape[2]
    return pixels * PRECISIONS["fp32"].unit_roundoff * np.abs(x.astype(np.float64)).mean(axis=(1, 2))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("keepdims", [True, False])
def test_the_cpu_kernel_computes_the_mean(precision, keepdims, rng):
    """Against the exact mean of the same values: the fp32 sum's error, then (half) one rounding."""
    model = _mean_model(precision, keepdims)
    u = PRECISIONS[precision].unit_roundoff
    for shape in SHAPES:
        x = _map(rng, precision, shape)
        y = _run(model, x, precision)
        exact = x.astype(np.float64).mean(axis=(1, 2))
        assert y.shape == ((shape[0], 1, 1, shape[3]) if keepdims else (shape[0], shape[3])), shape
        y = y.reshape(exact.shape)
        bound = 1.01 * (_sum_error(x) * (1 + u) + (u if precision != "fp32" else 0) * np.abs(exact)) + 1e-30
        # (fp32: the division's own rounding is in the sum's bound, which counts one more rounding than there are)
        assert (np.abs(y - exact) <= bound + PRECISIONS["fp32"].unit_roundoff * np.abs(exact)).all(), shape


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("opset", [17, 18])
def test_the_cpu_kernel_computes_what_the_function_body_computes(precision, opset, rng):
    """The library's kernel against ONNX Runtime's ReduceMean in the node's function body (ReduceMean's
    axes an attribute before opset 18, an input from it): the fp32 sums in other orders, each rounded
    once in the half types (where the two sums lie either side of a rounding boundary, one unit apart)."""
    u = PRECISIONS[precision].unit_roundoff
    for keepdims in (True, False):
        model = _mean_model(precision, keepdims, opset)
        for shape in SHAPES:
            x = _map(rng, precision, shape)
            kernel, body = _run(model, x, precision), _run(model, x, precision, with_library=False)
            assert kernel.shape == body.shape, shape
            exact = x.astype(np.float64).mean(axis=(1, 2)).reshape(body.shape)
            bound = 2.02 * (_sum_error(x).reshape(body.shape) + (u if precision != "fp32" else 0) * np.abs(exact)) + 1e-30
            assert (np.abs(kernel - body) <= bound + 2 * PRECISIONS["fp32"].unit_roundoff * np.abs(exact)).all(), shape


def test_the_function_body_sums_half_maps_in_fp32(rng):
    """With the library and without it (the function body), the fp16 and bf16 means of 4096 ones are 1:
    sums in fp16 would stop at 2048 (2048 + 1 rounds to 2048), in bf16 at 256."""
    x = np.ones((1, 64, 64, 8), np.float32)
    for precision in ("fp16", "bf16"):
        for with_library in (True, False):
            y = _run(_mean_model(precision), x, precision, with_library=with_library)
            assert np.array_equal(y, np.ones((1, 1, 1, 8), np.float32)), (precision, with_library)


def _run_expecting_error(model, x, words: str):
    with pytest.raises(Exception) as info:
        make_session(float_io(model)).run(None, {"X": x})
    assert type(info.value).__module__.startswith("onnxruntime"), type(info.value)
    assert words in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"keepdims": 2}, "keepdims must be 0 or 1, not 2"),
        ({"keepdims": -1}, "keepdims must be 0 or 1, not -1"),
        ({"channels_last": 0}, "channels_last must be 1"),
        ({"channels_last": 3}, "channels_last must be 0 or 1"),
    ],
)
def test_a_wrong_attribute_is_an_onnx_runtime_error(change, words, rng):
    _run_expecting_error(_mean_model("fp32", **change), _map(rng, "fp32", (1, 4, 4, 3)), words)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_inputs_that_do_not_fit_are_onnx_runtime_errors(precision, rng):
    model = _mean_model(precision)
    _run_expecting_error(model, np.ones((2, 4, 3), np.float32), "input must be 4-D [N, H, W, C], not [2, 4, 3]")
    _run_expecting_error(model, np.ones((1, 2, 3, 4, 5), np.float32), "input must be 4-D")
    _run_expecting_error(model, np.ones((1, 0, 5, 3), np.float32), "the input [1, 0, 5, 3] has no pixels to average")
    _run_expecting_error(model, np.ones((2, 5, 0, 3), np.float32), "has no pixels to average")
    # a rank the model states is refused when the session is made
    with pytest.raises(Exception) as info:
        make_session(_mean_model(precision, x_shape=[1, 4, 3]))
    assert "input must be 4-D [N, H, W, C], not [1, 4, 3]" in str(info.value)


def test_another_element_type_is_an_onnx_runtime_error():
    with pytest.raises(Exception) as info:
        make_session(_mean_model("fp32")).run(None, {"X": np.ones((1, 2, 2, 3), np.float16)})
    assert type(info.value).__module__.startswith("onnxruntime"), type(info.value)


def test_no_images_or_no_channels_make_an_empty_mean(rng):
    for shape in ((0, 3, 3, 4), (2, 3, 3, 0)):
        y = _run(_mean_model("fp32", keepdims=False), np.ones(shape, np.float32), "fp32")
        assert y.shape == (shape[0], shape[3])


# ---- the CUDA kernel (GPU machine) ------------------------------------------------------------------

# single kernel (7x7x1280 at batch 1: no split; at 32, enough CTAs), split over CTAs (112x112x32 at batch
# 32, 56x56x24, a single image's 28x28), odd channel counts (scalar loads), a single pixel
GPU_SHAPES = [(1, 7, 7, 1280), (32, 7, 7, 1280), (32, 112, 112, 32), (3, 56, 56, 24), (1, 28, 28, 3), (3, 9, 13, 17),
              (32, 14, 14, 17), (1, 1, 1, 8), (32, 1, 1, 3), (1, 112, 112, 16)]


def _gpu_mean(session, x: np.ndarray, precision: str, shape) -> np.ndarray:
    if precision == "fp32":
        return run_poisoned(session, {"X": x}, shape)
    return run_poisoned_half(session, {"X": x}, shape, precision)


@pytest.mark.gpu
@pytest.mark.parametrize("splits", ["workspace", "cluster"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_the_cuda_kernel_computes_what_the_cpu_kernel_computes(precision, splits, rng, monkeypatch):
    """Every output written (poisoned first), each within two sums' errors and (half) one unit of the CPU
    kernel's, and the same bits on a second run (no atomics: a fixed order of sums); a split's sums
    added by a second kernel from a workspace (the default) or, with FCM_CUDA_MEAN_SPLITS=cluster, by
    the first CTA of the split's cluster (sm_90; elsewhere the default)."""
    require_cuda()
    monkeypatch.setenv("FCM_CUDA_MEAN_SPLITS", splits)
    u = PRECISIONS[precision].unit_roundoff
    for index, shape in enumerate(GPU_SHAPES):
        keepdims = index % 2 == 0
        model = _mean_model(precision, keepdims)
        x = _map(rng, precision, shape)
        cpu = _run(model, x, precision)
        session = make_session(model, providers=cuda_providers())
        gpu = _gpu_mean(session, x, precision, cpu.shape)
        exact = x.astype(np.float64).mean(axis=(1, 2)).reshape(cpu.shape)
        bound = 2.02 * (_sum_error(x).reshape(cpu.shape) + (u if precision != "fp32" else 0) * np.abs(exact))
        bound += 2 * PRECISIONS["fp32"].unit_roundoff * np.abs(exact) + 1e-30
        error = np.abs(gpu - cpu)
        assert (error <= bound).all(), f"{shape}: {error.max():.3g}"
        assert np.array_equal(_gpu_mean(session, x, precision, cpu.shape), gpu), f"{shape}: another run, other bits"
