"""The float convolution layer op (Conv, Fp16Conv, Bf16Conv: one KxK convolution, standard or depthwise,
channels-last, bias and activation fused): its CPU reference kernel against ONNX Runtime's own Conv and
activation operators on the same values, its checks of attributes and shapes (an ONNX Runtime error,
never a crash), and on the GPU machine its CUDA kernel against the CPU reference kernel, outputs
poisoned first."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcm_core.vocabulary import DOMAIN, PRECISIONS, layer_op_type
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.standalone import float_io
from ort_custom_ops.ops.schema import IR_VERSION, NUMPY_TYPES, ONNX_TYPES, Activation, make_model
from tests.support.gpu import cuda_providers, require_cuda, run_poisoned
from tests.support.half import run_poisoned_half

ACTIVATIONS = [Activation("none"), Activation("relu"), Activation("relu6"), Activation("hard_swish"),
               Activation("swish"), Activation("sigmoid"), Activation("clip", (-0.5, 0.75))]


def _layer_model(precision: str, x_shape, weights: np.ndarray, bias: np.ndarray, strides, pads, group: int,
                 activation: Activation, affine: tuple[np.ndarray, np.ndarray] | None = None, **extra) -> onnx.ModelProto:
    """A model of one layer node: X (NHWC) -> Y, the weights and bias (and ``affine``'s input scale
    and shift) as initializers."""
    dtype, element = NUMPY_TYPES[precision], ONNX_TYPES[precision]
    attributes = {"kernel_shape": list(weights.shape[2:]), "strides": list(strides), "pads": list(pads),
                  "group": group, "channels_last": 1, **activation.attributes("stage1"), **extra}
    inputs = ["X", "W", "B"] + (["XS", "XB"] if affine is not None else [])
    node = helper.make_node(layer_op_type("Conv", precision), inputs, ["Y"], name="layer", domain=DOMAIN, **attributes)
    initializers = [numpy_helper.from_array(weights.astype(dtype), "W"), numpy_helper.from_array(bias.astype(dtype), "B")]
    if affine is not None:
        initializers += [numpy_helper.from_array(affine[0].astype(dtype), "XS"), numpy_helper.from_array(affine[1].astype(dtype), "XB")]
    # (X's shape left open: the shape tests feed what does not fit)
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("X", element, None)],
                              [helper.make_tensor_value_info("Y", element, None)], initializers)
    return make_model(graph)


def _standard_model(x_shape, weights, bias, strides, pads, group, activation: Activation) -> onnx.ModelProto:
    """The same layer in standard ONNX operators (fp32): Transpose, Conv, Transpose, the activation."""
    nodes = [helper.make_node("Transpose", ["X"], ["x_nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["x_nchw", "W", "B"], ["y_nchw"], kernel_shape=list(weights.shape[2:]),
                              strides=list(strides), pads=list(pads), group=group),
             helper.make_node("Transpose", ["y_nchw"], ["z"], perm=[0, 2, 3, 1])]
    name = activation.name
    if name == "none":
        nodes.append(helper.make_node("Identity", ["z"], ["Y"]))
    elif name == "clip":
        lo, hi = activation.clip
        nodes += [helper.make_node("Constant", [], ["lo"], value=numpy_helper.from_array(np.array(lo, np.float32))),
                  helper.make_node("Constant", [], ["hi"], value=numpy_helper.from_array(np.array(hi, np.float32))),
                  helper.make_node("Clip", ["z", "lo", "hi"], ["Y"])]
    elif name == "swish":
        nodes += [helper.make_node("Sigmoid", ["z"], ["s"]), helper.make_node("Mul", ["z", "s"], ["Y"])]
    else:
        nodes.append(helper.make_node({"relu": "Relu", "hard_swish": "HardSwish", "sigmoid": "Sigmoid"}[name], ["z"], ["Y"]))
    graph = helper.make_graph(nodes, "standard", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, *x_shape[1:]])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    return model


def _case(rng, precision: str, batch: int, height: int, width: int, channels: int, filters: int, kernel: int,
          depthwise: bool):
    """Random values (already rounded to the precision, so both sides see the same ones)."""
    dtype = NUMPY_TYPES[precision]
    per_filter = 1 if depthwise else channels
    x = rng.normal(size=(batch, height, width, channels)).astype(dtype).astype(np.float32)
    w = (rng.normal(size=(filters, per_filter, kernel, kernel)) / np.sqrt(per_filter * kernel * kernel)).astype(dtype)
    b = rng.normal(size=filters).astype(dtype)
    return x, w.astype(np.float32), b.astype(np.float32)


# (channels, filters, kernel, stride, pads, depthwise)
GEOMETRIES = [
    (3, 32, 3, 2, (0, 0, 1, 1), False),   # the stems of MobileNetV2 and EfficientNet (Keras 'same', stride 2)
    (3, 16, 3, 2, (1, 1, 1, 1), False),
    (5, 12, 5, 1, (2, 2, 2, 2), False),   # 12 filters: 4 per thread on the GPU
    (2, 7, 3, 1, (1, 0, 1, 2), False),    # 7 filters: one per thread; uneven pads
    (16, 16, 3, 1, (1, 1, 1, 1), True),   # depthwise
    (24, 24, 5, 2, (1, 1, 2, 2), True),
    (12, 12, 7, 1, (3, 3, 3, 3), True),
    (6, 6, 3, 2, (0, 0, 1, 1), True),
    (32, 32, 3, 2, (0, 0, 1, 1), True),   # 8 channels a thread: the half types' 9 taps loaded at once
]


def _expected(x, w, b, strides, pads, group, activation) -> np.ndarray:
    (y,) = make_session(_standard_model(x.shape, w, b, strides, pads, group, activation), with_library=False).run(None, {"X": x})
    return y


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_the_cpu_kernel_computes_what_onnx_runtime_computes(precision, geometry, rng):
    channels, filters, kernel, stride, pads, depthwise = geometry
    group = channels if depthwise else 1
    for activation in ACTIVATIONS:
        x, w, b = _case(rng, precision, 2, int(rng.integers(kernel, 14)), int(rng.integers(kernel, 14)), channels, filters,
                        kernel, depthwise)
        model = _layer_model(precision, x.shape, w, b, (stride, stride), pads, group, activation)
        (y,) = make_session(float_io(model)).run(None, {"X": x})  # (fp32 in and out, one Cast each side)
        expected = _expected(x, w, b, (stride, stride), pads, group, activation)
        assert y.shape == expected.shape
        # fp32: the sums in another order; half: the sum rounded to the element type before the
        # activation (moved by the activation's largest slope, 1.5, at most) and the output after it
        u = PRECISIONS[precision].unit_roundoff
        if precision == "fp32":
            bound = 1e-5 * np.abs(expected) + 1e-5
        else:
            before = _expected(x, w, b, (stride, stride), pads, group, Activation("none"))
            bound = 1.01 * u * (np.abs(expected) + 1.5 * np.abs(before)) + 1e-5
        error = np.abs(y.astype(np.float32) - expected)
        assert (error <= bound).all(), f"{activation.name}: {error.max():.3g}"


def _run_expecting_error(model, x, words: str):
    with pytest.raises(Exception) as info:
        make_session(model).run(None, {"X": x})
    assert type(info.value).__module__.startswith("onnxruntime"), type(info.value)
    assert words in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"channels_last": 0}, "channels_last must be 1"),
        ({"strides": [0, 1]}, "strides must hold 2 integers of at least 1"),
        ({"pads": [1, 1, 1]}, "pads must hold 4 integers"),
        ({"pads": [-1, 0, 0, 0]}, "pads must hold 4 integers of at least 0"),
        ({"group": 2}, "the op takes group 1, or a depthwise convolution"),
        ({"stage1_activation": "gelu"}, "unknown stage1_activation 'gelu'"),
        ({"stage1_activation": "clip"}, "needs stage1_clip"),
        ({"kernel_shape": [5, 5]}, "do not match kernel_shape"),
        ({"dilations": [2, 2]}, "attribute dilations is not in the op vocabulary"),
        ({"auto_pad": "SAME_UPPER"}, "attribute auto_pad is not in the op vocabulary"),
    ],
)
def test_a_wrong_attribute_is_an_onnx_runtime_error(change, words, rng):
    x, w, b = _case(rng, "fp32", 1, 8, 8, 4, 8, 3, False)
    attributes = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "group": 1, "channels_last": 1,
                  "stage1_activation": "relu"}
    attributes.update(change)
    node = helper.make_node("Conv", ["X", "W", "B"], ["Y"], name="layer", domain=DOMAIN, **attributes)
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 8, 8, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    _run_expecting_error(make_model(graph), x, words)


def test_shapes_that_do_not_fit_are_onnx_runtime_errors(rng):
    x, w, b = _case(rng, "fp32", 1, 8, 8, 4, 8, 3, False)
    model = _layer_model("fp32", x.shape, w, b, (1, 1), (1, 1, 1, 1), 1, Activation("relu"))
    _run_expecting_error(model, np.ones((1, 8, 8, 5), np.float32), "weights take 4 input channels, the input has 5")
    _run_expecting_error(model, np.ones((1, 8, 8), np.float32), "input must be 4-D")
    _run_expecting_error(model, np.ones((1, 1, 0, 4), np.float32), "is smaller than the kernel")
    wrong_bias = _layer_model("fp32", x.shape, w, b[:5], (1, 1), (1, 1, 1, 1), 1, Activation("relu"))
    _run_expecting_error(wrong_bias, x, "bias must be [8]")
    # a depthwise layer whose weights are not [C, 1, K, K]
    depthwise = _layer_model("fp32", x.shape, w[:4], b[:4], (1, 1), (1, 1, 1, 1), 4, Activation("relu"))
    _run_expecting_error(depthwise, x, "the op takes group 1, or a depthwise convolution")


def _with_fp32_x(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its input X declared fp32 (a half layer's folded input Cast)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    return copy


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_a_half_layer_rounds_an_fp32_input_as_a_cast_before_it(precision, rng):
    """A half layer of group 1 fed an fp32 X (a model's input Cast folded into its stem) computes
    exactly what it computes on X cast to its type, with an input affine too; a depthwise one refuses
    an fp32 X with an ONNX Runtime error."""
    for affine in (None, _affine(rng, precision, 3, True)):
        _, w, b = _case(rng, precision, 2, 11, 9, 3, 16, 3, False)
        x = (3 * rng.normal(size=(2, 11, 9, 3))).astype(np.float32)  # (not rounded: the layer rounds it)
        model = _layer_model(precision, x.shape, w, b, (2, 2), (0, 0, 1, 1), 1, Activation("relu6"), affine=affine)
        (want,) = make_session(float_io(model)).run(None, {"X": x})  # (float_io: a Cast to the precision first)
        (got,) = make_session(float_io(_with_fp32_x(model))).run(None, {"X": x})
        assert np.array_equal(got, want)
    _, w, b = _case(rng, precision, 1, 8, 8, 4, 4, 3, True)
    depthwise = _layer_model(precision, (1, 8, 8, 4), w, b, (1, 1), (1, 1, 1, 1), 4, Activation("relu"))
    _run_expecting_error(float_io(_with_fp32_x(depthwise)), np.ones((1, 8, 8, 4), np.float32),
                         "the input must be of the layer's element type")


def _affine(rng, precision: str, channels: int, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """An input scale and shift (one value each, or one per channel), rounded to the precision."""
    count = channels if per_channel else 1
    dtype = NUMPY_TYPES[precision]
    scale = rng.uniform(0.5, 2.0, count).astype(dtype).astype(np.float32)
    shift = rng.normal(size=count).astype(dtype).astype(np.float32)
    return scale, shift


def _affine_input(x: np.ndarray, scale: np.ndarray, shift: np.ndarray, precision: str) -> np.ndarray:
    """X * XS + XB as the op defines it: rounded to the precision after the product and after the sum."""
    dtype = NUMPY_TYPES[precision]
    return ((x * scale).astype(dtype).astype(np.float32) + shift).astype(dtype).astype(np.float32)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("geometry", [GEOMETRIES[0], GEOMETRIES[3], GEOMETRIES[4]])
def test_an_input_scale_and_shift_compute_the_layer_of_the_affine_input(precision, geometry, rng):
    """Inputs XS and XB (a model's input normalization folded in): the layer computes what it computes
    without them on X * XS + XB, per channel or one value for all, zero padding outside the image
    (the padding is of the affine input, as before a Conv)."""
    channels, filters, kernel, stride, pads, depthwise = geometry
    group = channels if depthwise else 1
    for per_channel in (True, False):
        x, w, b = _case(rng, precision, 2, 11, 9, channels, filters, kernel, depthwise)
        scale, shift = _affine(rng, precision, channels, per_channel)
        folded = _layer_model(precision, x.shape, w, b, (stride, stride), pads, group, Activation("relu6"), affine=(scale, shift))
        plain = _layer_model(precision, x.shape, w, b, (stride, stride), pads, group, Activation("relu6"))
        (got,) = make_session(float_io(folded)).run(None, {"X": x})
        (want,) = make_session(float_io(plain)).run(None, {"X": _affine_input(x, scale, shift, precision)})
        # (fp32: the product and the sum may be one fused multiply-add)
        tolerance = 1e-6 * (np.abs(want).max() + 1) if precision == "fp32" else 0.0
        assert np.abs(got - want).max() <= tolerance, (per_channel, np.abs(got - want).max())


def test_an_input_scale_of_the_wrong_size_is_an_onnx_runtime_error(rng):
    x, w, b = _case(rng, "fp32", 1, 8, 8, 4, 8, 3, False)
    model = _layer_model("fp32", x.shape, w, b, (1, 1), (1, 1, 1, 1), 1, Activation("relu"),
                         affine=(np.ones(3, np.float32), np.zeros(4, np.float32)))
    _run_expecting_error(model, x, "the input scale must be [4] or [1], not [3]")


# ---- the CUDA kernel (GPU machine) ------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("geometry", GEOMETRIES + [(64, 32, 3, 1, (1, 1, 1, 1), False),  # weights too large to stage
                                                   (1152, 1152, 5, 1, (2, 2, 2, 2), True)])
def test_the_cuda_kernel_computes_what_the_cpu_kernel_computes(precision, geometry, rng):
    require_cuda()
    channels, filters, kernel, stride, pads, depthwise = geometry
    for batch, activation in ((1, ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]), (3, Activation("relu6")),
                              (32, ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))])):
        height = int(rng.integers(kernel, 20)) if channels < 1000 else 9
        width = int(rng.integers(kernel, 20)) if channels < 1000 else 11
        # batch 1: no input scale and shift; 3: one value each; 32: one per channel
        affine_kind = None if batch == 1 else batch != 3
        _check_on_gpu(rng, precision, geometry, batch, height, width, activation, affine_kind)


# RGB stems: (channels, filters, kernel, stride, pads, depthwise)
STEM_GEOMETRIES = [(3, 16, 3, 2, (1, 1, 1, 1), False), (3, 32, 3, 2, (0, 0, 1, 1), False),
                   (3, 24, 3, 1, (1, 1, 1, 1), False), (3, 8, 3, 2, (1, 0, 1, 1), False),
                   (3, 64, 3, 1, (1, 1, 1, 1), False), (3, 128, 3, 2, (0, 0, 1, 1), False)]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("geometry", STEM_GEOMETRIES)
def test_the_stem_tiles_cover_the_image(precision, geometry, rng):
    """RGB stems on images of several tiles each way, the last ones partial, per-channel input
    affine. FP32 (its stems of 8 and 24 filters: the direct kernel), and the half types' stems of
    more than 32 filters: the FMA tiles (32 output columns, 1 to 16 rows a tile, one to eight slices
    of 16 filters); the half types' stems of 8 to 32 filters: the tensor-core tiles (16 output
    columns, 8 or 16 rows, one to four MMAs of 8 filters a row). At batch 8 on 224x224 images the
    larger tiles (enough of them for every SM), on the smaller cases the smaller ones."""
    require_cuda()
    _check_stem_tiles(rng, precision, geometry)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("geometry", [g for g in STEM_GEOMETRIES if g[1] <= 32])
def test_the_half_stems_on_the_fma_tiles(precision, geometry, rng, monkeypatch):
    """The half types' small stems on the FMA tiles as FCM_CUDA_STEM=tiles picks them (the tensor-core
    tiles take them by default)."""
    require_cuda()
    monkeypatch.setenv("FCM_CUDA_STEM", "tiles")
    _check_stem_tiles(rng, precision, geometry)


DEPTHWISE_3X3 = [(16, 16, 3, 1, (1, 1, 1, 1), True), (32, 32, 3, 2, (0, 0, 1, 1), True),
                 (40, 40, 3, 1, (1, 0, 1, 2), True), (24, 24, 3, 2, (1, 1, 1, 1), True)]


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("kernel", ["rows", "taps", "serial"])
@pytest.mark.parametrize("geometry", DEPTHWISE_3X3)
def test_the_half_depthwise_kernels_cover_the_image(precision, kernel, geometry, rng, monkeypatch):
    """The half types' 3x3 depthwise layers of 8 channels a thread, each kernel FCM_CUDA_DEPTHWISE
    picks: by rows of 4 output pixels a thread (the default), one pixel a thread with its 9 loads at
    once, and with its taps loaded one by one; strides 1 and 2, even and uneven pads, images whose
    rows end in a partial group of pixels."""
    require_cuda()
    monkeypatch.setenv("FCM_CUDA_DEPTHWISE", kernel)
    _check_on_gpu(rng, precision, geometry, 2, 57, 61, Activation("swish"), True)
    _check_on_gpu(rng, precision, geometry, 3, 40, 37, Activation("relu6"), None)
    _check_on_gpu(rng, precision, geometry, 1, 3, 5, Activation("none"), False)


def _check_stem_tiles(rng, precision, geometry):
    _check_on_gpu(rng, precision, geometry, 8, 224, 224, Activation("relu6"), True)
    _check_on_gpu(rng, precision, geometry, 2, 71, 67, Activation("relu6"), True)
    _check_on_gpu(rng, precision, geometry, 1, 40, 97, Activation("none"), None)


def _check_on_gpu(rng, precision, geometry, batch, height, width, activation, affine_kind):
    """The layer on random values on the GPU, its outputs poisoned first, against the CPU kernel;
    affine_kind: None (no input scale and shift), False (one value each), True (one per channel)."""
    channels, filters, kernel, stride, pads, depthwise = geometry
    group = channels if depthwise else 1
    x, w, b = _case(rng, precision, batch, height, width, channels, filters, kernel, depthwise)
    affine = None if affine_kind is None else _affine(rng, precision, channels, affine_kind)
    model = _layer_model(precision, x.shape, w, b, (stride, stride), pads, group, activation, affine=affine)
    (cpu,) = make_session(float_io(model)).run(None, {"X": x})
    session = make_session(model, providers=cuda_providers())
    if precision == "fp32":
        gpu = run_poisoned(session, {"X": x}, cpu.shape)
        bound = 1e-5 * np.abs(cpu) + 1e-5  # the sums in another order
    else:
        gpu = run_poisoned_half(session, {"X": x}, cpu.shape, precision)
        # each side rounds its fp32 sum before the activation and the result after it: either
        # rounding may go the other way on the other side (the sums differ in their last bits)
        x_in = x if affine is None else _affine_input(x, *affine, precision)
        before = _expected(x_in, w, b, (stride, stride), pads, group, Activation("none"))
        u = PRECISIONS[precision].unit_roundoff
        bound = 2.02 * u * (np.abs(cpu) + 1.5 * np.abs(before)) + 1e-5
    error = np.abs(gpu - cpu)
    assert (error <= bound).all(), f"batch {batch} {height}x{width} {activation.name}: {error.max():.3g}"


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("geometry", [(3, 32, 3, 2, (0, 0, 1, 1), False), (3, 12, 5, 1, (2, 2, 2, 2), False)])
def test_the_cuda_kernel_rounds_an_fp32_input_as_a_cast_before_it(precision, geometry, rng):
    """An fp32 X on the GPU (the stem's tiles; 12 filters: the general kernel): exactly what the
    kernel computes on X cast to the layer's type, per-channel input affine, outputs poisoned."""
    require_cuda()
    channels, filters, kernel, stride, pads, _ = geometry
    _, w, b = _case(rng, precision, 3, 37, 41, channels, filters, kernel, False)
    x = (3 * rng.normal(size=(3, 37, 41, channels))).astype(np.float32)
    affine = _affine(rng, precision, channels, True)
    model = _layer_model(precision, x.shape, w, b, (stride, stride), pads, 1, Activation("hard_swish"), affine=affine)
    shape = (3, (37 + pads[0] + pads[2] - kernel) // stride + 1, (41 + pads[1] + pads[3] - kernel) // stride + 1, filters)
    # (run_poisoned_half rounds X to the type to nearest even, as a Cast does)
    cast_first = run_poisoned_half(make_session(model, providers=cuda_providers()), {"X": x}, shape, precision)
    fp32_x = run_poisoned_half(make_session(_with_fp32_x(model), providers=cuda_providers()), {"X": x}, shape, precision,
                               float_inputs=("X",))
    assert np.array_equal(fp32_x, cast_first)
