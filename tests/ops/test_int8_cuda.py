"""The int8 ops of the FCM library on ONNX Runtime's CUDA provider against the same ops on its CPU
provider (GPU machine only).

In: random int8 inputs, weights and quantization built as in tests/ops/test_int8_ops.py (non-zero zero
points, ReLU/ReLU6 clamps, activation tables), each requantization fitted to its accumulators so
that every stage's output spreads over the int8 range, for ``QConv`` (standard, depthwise
with multiplier 1 and 2, pointwise with input channels 16/24/12/7), every fused chain kind with and
without residual (DW kernel 3/5/7, stride 1/2, odd H != W, channel counts from 3 to 960), ``QAdd``
and ``QMean``, both requantization schemes, batch 1 and 7. Out: the CUDA output must equal the CPU
provider's output of the same library bit for bit.

How: each op runs alone. The CUDA session has the CPU fallback disabled
(``session.disable_cpu_ep_fallback``), so a node without a CUDA kernel fails the session instead of
running on the CPU. Inputs and the output are bound to device buffers; the output buffer is filled
with -128 for one run and 127 for another, so an element the kernel never writes differs from the
CPU output in at least one of the two. Also: one session over several batch sizes, CUDA graph
capture and replay, a wrong-shape input (an ONNX Runtime error, and the session still works), and
four threads sharing one session. ``test_small_cases_of_every_int8_op`` is the set that
benchmarks/run_gpu.sh runs under compute-sanitizer.
"""

from __future__ import annotations


import numpy as np
import pytest
from onnx import ModelProto, TensorProto, helper, numpy_helper

from extractor.integer import FIXED_POINT, FP32, accumulate, activation_range, logistic_table, requantize
from ort_custom_ops.ops.schema import (KIND_STAGES, Chain, ChainStage, Quant, Requant, add_node, conv_node, make_model,
                                     mean_node)
from tests.support.gpu import cuda_providers, require_cuda, run_in_threads
from tests.support.specs import random_int8, random_quant, swish_table

pytestmark = pytest.mark.gpu

SCHEMES = (FP32, FIXED_POINT)
BATCHES = (1, 7)
POISONS = (-128, 127)
DEVICE = "cuda"  # where inputs and outputs are bound


@pytest.fixture(autouse=True)
def _cuda():
    require_cuda()


# --- models and sessions ---------------------------------------------------------------------------

def one_node_model(node, arrays: dict[str, np.ndarray], ranks: dict[str, int]) -> ModelProto:
    """``node`` alone, its data inputs of any size (``ranks``: name -> rank), int8 in and out."""
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT8, [None] * rank) for name, rank in ranks.items()]
    output = helper.make_tensor_value_info(node.output[0], TensorProto.INT8, None)
    graph = helper.make_graph([node], "one_node", inputs, [output],
                              [numpy_helper.from_array(a, name) for name, a in arrays.items()])
    return make_model(graph)


def cpu_session(model: ModelProto):
    from ort_custom_ops.ops.library import make_session

    return make_session(model)


def cuda_session(model: ModelProto, **provider_options):
    """A CUDA session where a node without a CUDA kernel is an error (CPU fallback disabled; the CPU
    provider then must not be listed either)."""
    import onnxruntime as ort

    from ort_custom_ops.ops.library import session_options

    options = session_options()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=cuda_providers(**provider_options)[:1])
    assert session.get_providers()[0] == "CUDAExecutionProvider"
    return session


def bind(session, feeds: dict[str, np.ndarray], output: np.ndarray):
    """An IO binding of device copies of ``feeds`` and of ``output`` (the output buffer's first
    contents); returns (binding, device inputs, device output)."""
    import onnxruntime as ort

    binding = session.io_binding()
    inputs = {}
    for name, array in feeds.items():
        inputs[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), DEVICE, 0)
        binding.bind_ortvalue_input(name, inputs[name])
    out = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(output), DEVICE, 0)
    binding.bind_ortvalue_output(session.get_outputs()[0].name, out)
    return binding, inputs, out


def run_poisoned(session, feeds: dict[str, np.ndarray], shape, poison: int) -> np.ndarray:
    binding, _, out = bind(session, feeds, np.full(shape, poison, np.int8))
    session.run_with_iobinding(binding)
    return out.numpy().copy()  # a host copy that outlives the buffer


def assert_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert (got.shape, got.dtype) == (want.shape, want.dtype), f"{what}: {got.shape} {got.dtype}, not {want.shape}"
    differ = int(np.count_nonzero(got != want))
    assert differ == 0, f"{what}: {differ} of {want.size} differ (largest {np.abs(got.astype(int) - want).max()})"


def check_on_gpu(model: ModelProto, feeds: dict[str, np.ndarray], session=None) -> np.ndarray:
    """The CUDA output, twice with differently poisoned output buffers, equals the CPU output."""
    (want,) = cpu_session(model).run(None, feeds)
    session = session or cuda_session(model)
    for poison in POISONS:
        assert_equal(run_poisoned(session, feeds, want.shape, poison), want, f"output poisoned with {poison}")
    return want


# --- random layers (as tests/ops/test_int8_ops.py builds them) ----------------------------------------

def same_pads(height: int, width: int, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TensorFlow's SAME padding, ONNX order (top, left, bottom, right)."""

    def split(size):
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2

    (top, bottom), (left, right) = split(height), split(width)
    return top, left, bottom, right


def tblr(pads) -> tuple[int, int, int, int]:
    """ONNX order (top, left, bottom, right) -> extractor.integer's (top, bottom, left, right)."""
    top, left, bottom, right = pads
    return top, bottom, left, right


def random_bias(rng, channels: int) -> np.ndarray:
    return rng.integers(-3000, 3000, channels).astype(np.int32)


def fitted_requant(rng, acc: np.ndarray, x: Quant, channels: int) -> Requant:
    """A random activation clamp (none, ReLU, ReLU6), an output scale of 0.02-0.08 (ReLU6 keeps
    75-300 levels), and weight scales that map the accumulators' spread to about 40 output steps.
    (test_int8_ops.random_requant's output scale grows stage by stage, so deep in a chain ReLU6
    leaves a handful of values; here every stage's output spreads over the int8 range.)"""
    spread = float(np.std(acc.astype(np.float64))) or 1.0
    y = Quant(float(np.float32(rng.uniform(0.02, 0.08))), int(rng.integers(-60, 60)))
    w_scales = (rng.uniform(0.5, 1.5, channels) * 40 * y.scale / (x.scale * spread)).astype(np.float32)
    clamp = activation_range(str(rng.choice(["NONE", "RELU", "RELU6"])), None, y.scale, y.zero_point, "int8")
    return Requant(w_scales, y, clamp)


def conv_case(rng, x, xq: Quant, out_c: int, kernel, *, strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0),
              depthwise=False, pointwise=False, scheme=FP32) -> ModelProto:
    """A QConv over ``x``: standard ([F, C, KH, KW]), depthwise ([C * M, KH, KW]) or pointwise ([F, C]),
    its requantization spread over the int8 range by the accumulators' spread."""
    c = x.shape[-1]
    if pointwise:
        w = random_int8(rng, (out_c, c))
    elif depthwise:
        w = random_int8(rng, (out_c,) + tuple(kernel))
    else:
        w = random_int8(rng, (out_c, c) + tuple(kernel))
    w[w == -128] = -127  # TFLite's weights are symmetric
    bias = random_bias(rng, out_c)
    acc = accumulate(x, xq.zero_point, w, bias, tuple(kernel), tuple(strides), tuple(dilations), tblr(pads), depthwise)
    requant = fitted_requant(rng, acc, xq, out_c)
    onnx_w = w if pointwise else (w.transpose(1, 2, 0) if depthwise else w.transpose(0, 2, 3, 1))
    node, arrays = conv_node("conv", "x", "y", xq, onnx_w, bias, requant, depthwise=depthwise, strides=strides,
                             dilations=dilations, pads=pads, scheme=scheme)
    return one_node_model(node, arrays, {"x": 4})


def chain_model(rng, kind: str, x, xq: Quant, *, kernel=3, stride=1, pads=None, expand=None, out=None,
                residual=False, table_stage=None, scheme=FP32) -> ModelProto:
    """A fused chain of ``kind`` over ``x``: the pointwise stages output ``expand`` then ``out``
    channels (in their order); the depthwise stage ``kernel`` x ``kernel``, ``stride``, SAME pads
    unless ``pads`` (ONNX order); stage ``table_stage`` (0-based) followed by an activation table
    (swish or sigmoid); each stage's requantization fitted to its accumulators, computed from the
    int8 values the previous stage gives."""
    chain = Chain(kind, xq)
    current, current_q, channels = x, xq, x.shape[-1]
    widths = iter([w for w in (expand, out) if w is not None])
    for index, stage_type in enumerate(KIND_STAGES[kind]):
        if stage_type == "pw":
            out_c = next(widths)
            w = random_int8(rng, (out_c, channels))
            stage_pads = (0, 0, 0, 0)
            geometry = ((1, 1), (1, 1), (1, 1), (0, 0, 0, 0))
        else:
            out_c = channels
            w = random_int8(rng, (channels, kernel, kernel))
            stage_pads = same_pads(*current.shape[1:3], kernel, stride) if pads is None else tuple(pads)
            geometry = ((kernel, kernel), (stride, stride), (1, 1), tblr(stage_pads))
        bias = random_bias(rng, out_c)
        acc = accumulate(current, current_q.zero_point, w, bias, *geometry, stage_type == "dw")
        requant = fitted_requant(rng, acc, current_q, out_c)
        current = requantize(acc, current_q.scale, requant.w_scales, requant.y.scale, requant.y.zero_point,
                             requant.clamp, "int8", scheme)
        current_q = requant.y
        if index == table_stage:
            if rng.random() < 0.7:
                requant.table, requant.table_y = swish_table(rng, requant.y)
            else:
                requant.table_y = Quant(1 / 256, -128)
                requant.table = logistic_table(requant.y.pair(), requant.table_y.pair(), "int8", scheme)
            current, current_q = requant.table[current.astype(np.int64) + 128], requant.table_y
        chain.stages.append(ChainStage(stage_type, w if stage_type == "pw" else w.transpose(1, 2, 0), bias, requant,
                                       stride=stride if stage_type == "dw" else 1, pads=stage_pads))
        channels = out_c
    if residual:  # the sum's quantization fitted to its real values
        yq = fitted_quant(rng, real(xq, x) + real(current_q, current))
        clamp = activation_range("RELU6", None, yq.scale, yq.zero_point, "int8")
        if rng.random() < 0.5 or clamp[1] - clamp[0] < 64:  # none, or a ReLU6 that leaves enough levels
            clamp = (-128, 127)
        chain.residual = Requant(np.ones(1, np.float32), yq, clamp)
    node, arrays = chain.node("group", "x", "y", scheme)
    return one_node_model(node, arrays, {"x": 4})


def fitted_quant(rng, real: np.ndarray) -> Quant:
    """An output quantization that puts the real values ``real`` over about 40 steps around the
    middle of the int8 range (wider steps where their mean would not fit)."""
    center, spread = float(np.mean(real)), float(np.std(real)) or 1.0
    scale = float(np.float32(max(spread / 40, abs(center) / 80) * rng.uniform(0.8, 1.25)))
    return Quant(scale, int(np.clip(round(-center / scale), -90, 90)) + int(rng.integers(-20, 21)))


def real(q: Quant, values: np.ndarray) -> np.ndarray:
    return q.scale * (values.astype(np.float64) - q.zero_point)


def add_model(rng, a, b, clamp_relu6: bool) -> ModelProto:
    """QAdd of ``a`` and ``b`` (inputs' scales small enough that a ReLU6 clamp keeps many levels)."""
    aq, bq = (Quant(float(np.float32(rng.uniform(0.02, 0.08))), int(rng.integers(-100, 100))) for _ in range(2))
    yq = fitted_quant(rng, real(aq, a) + real(bq, b))
    clamp = activation_range("RELU6", None, yq.scale, yq.zero_point, "int8") if clamp_relu6 else (-128, 127)
    return one_node_model(add_node("add", "a", "b", "y", aq, bq, yq, clamp), {}, {"a": 4, "b": 4})


def mean_model(rng, x, keepdims: bool) -> ModelProto:
    xq = random_quant(rng)
    yq = fitted_quant(rng, real(xq, x).mean(axis=(1, 2)))
    return one_node_model(mean_node("mean", "x", "y", xq, yq, keepdims), {}, {"x": 4})


# --- QConv -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", [
    dict(c=3, f=13, kernel=(3, 3), strides=(2, 2), size=(15, 11), pads="same"),  # a first layer, odd H and W
    dict(c=5, f=16, kernel=(5, 5), strides=(1, 1), size=(13, 9), pads="same"),
    dict(c=4, f=7, kernel=(3, 3), strides=(1, 1), size=(12, 9), pads=(2, 0, 1, 2)),  # explicit, asymmetric
    dict(c=6, f=11, kernel=(3, 2), strides=(1, 2), size=(11, 10), pads=(1, 1, 0, 1)),
    dict(c=8, f=9, kernel=(3, 3), strides=(1, 1), size=(9, 13), pads=(2, 2, 2, 2), dilations=(2, 2)),
], ids=["3x3s2_c3", "5x5", "asymmetric_pads", "3x2_s1x2", "dilated"])
def test_standard_conv(rng, scheme, batch, case):
    height, width = case["size"]
    pads = case["pads"] if case["pads"] != "same" else same_pads(height, width, case["kernel"][0], case["strides"][0])
    x, xq = random_int8(rng, (batch, height, width, case["c"])), random_quant(rng)
    model = conv_case(rng, x, xq, case["f"], case["kernel"], strides=case["strides"],
                      dilations=case.get("dilations", (1, 1)), pads=pads, scheme=scheme)
    check_on_gpu(model, {"x": x})


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kernel, stride, multiplier, channels", [
    (3, 1, 1, 24), (3, 2, 1, 3), (5, 1, 1, 96), (5, 2, 1, 12), (7, 1, 1, 160), (7, 2, 1, 7),
    (3, 1, 2, 12), (3, 2, 2, 7), (5, 1, 2, 3), (5, 2, 2, 24), (7, 1, 2, 8), (7, 2, 2, 5)])
def test_depthwise_conv(rng, scheme, batch, kernel, stride, multiplier, channels):
    height, width = 13, 9
    x, xq = random_int8(rng, (batch, height, width, channels)), random_quant(rng)
    model = conv_case(rng, x, xq, channels * multiplier, (kernel, kernel), strides=(stride, stride),
                      pads=same_pads(height, width, kernel, stride), depthwise=True, scheme=scheme)
    check_on_gpu(model, {"x": x})


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("c, f", [(16, 13), (24, 37), (12, 20), (7, 5), (160, 962)])
def test_pointwise_conv(rng, scheme, batch, c, f):
    """Input channels that take each vector width (16, 8, 4, 1); output channels not a multiple of 8."""
    x, xq = random_int8(rng, (batch, 11, 9, c)), random_quant(rng)
    check_on_gpu(conv_case(rng, x, xq, f, (1, 1), pointwise=True, scheme=scheme), {"x": x})


# --- fused chains ----------------------------------------------------------------------------------

CHAINS = [  # kind, input channels, expand, out, DW kernel, stride, H, W, residual, table stage
    ("dwpw", 3, None, 16, 3, 2, 15, 11, False, None),
    ("dwpw", 12, None, 12, 5, 1, 13, 9, True, 1),
    ("dwpw", 24, None, 37, 7, 2, 17, 11, False, 0),
    ("dwpw", 96, None, 96, 3, 1, 9, 7, True, None),
    ("pwdw", 3, 24, None, 3, 2, 15, 13, False, 0),
    ("pwdw", 24, 96, None, 5, 2, 11, 9, False, 1),
    ("pwdw", 12, 12, None, 7, 1, 13, 9, True, None),
    ("pwpw", 24, 96, 24, None, None, 13, 9, True, 0),
    ("pwpw", 12, 40, 7, None, None, 9, 11, False, 1),
    ("pwpw", 160, 960, 160, None, None, 7, 9, True, None),
    ("pwdwpw", 24, 96, 24, 3, 1, 13, 9, True, 1),
    ("pwdwpw", 16, 96, 24, 3, 2, 15, 13, False, None),
    ("pwdwpw", 3, 12, 12, 7, 2, 17, 13, False, 2),
    ("pwdwpw", 32, 192, 32, 7, 1, 11, 15, True, None),
    ("pwdwpw", 96, 576, 160, 5, 2, 13, 11, False, 0),
    ("pwdwpw", 160, 960, 160, 3, 1, 7, 9, True, 1),
]


def _chain_id(case) -> str:
    kind, c, e, f, k, s, h, w, residual, table = case
    return (f"{kind}_{c}-{e or c}-{f or e}" + (f"_k{k}s{s}" if k else "") + f"_{h}x{w}" + ("_res" if residual else "")
            + (f"_table{table}" if table is not None else ""))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CHAINS, ids=[_chain_id(c) for c in CHAINS])
def test_fused_chain(rng, scheme, batch, case):
    kind, c, expand, out, kernel, stride, height, width, residual, table = case
    x, xq = random_int8(rng, (batch, height, width, c)), random_quant(rng)
    model = chain_model(rng, kind, x, xq, kernel=kernel or 3, stride=stride or 1, expand=expand, out=out,
                        residual=residual, table_stage=table, scheme=scheme)
    check_on_gpu(model, {"x": x})


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("pads", [(2, 1, 0, 2), (0, 0, 1, 1), (0, 0, 0, 0)])
def test_fused_chain_explicit_dw_pads(rng, scheme, pads):
    x, xq = random_int8(rng, (3, 23, 17, 13)), random_quant(rng)
    model = chain_model(rng, "pwdwpw", x, xq, stride=2, pads=pads, expand=37, out=29, table_stage=1, scheme=scheme)
    check_on_gpu(model, {"x": x})


# --- ADD and MEAN ----------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("channels", [24, 7])
@pytest.mark.parametrize("relu6", [False, True])
def test_add(rng, batch, channels, relu6):
    a, b = random_int8(rng, (batch, 13, 9, channels)), random_int8(rng, (batch, 13, 9, channels))
    check_on_gpu(add_model(rng, a, b, relu6), {"a": a, "b": b})


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("size, channels", [((7, 9), 160), ((13, 11), 7), ((1, 1), 12)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_mean(rng, batch, size, channels, keepdims):
    x = random_int8(rng, (batch, *size, channels))
    check_on_gpu(mean_model(rng, x, keepdims), {"x": x})


# --- small cases for compute-sanitizer -------------------------------------------------------------

def test_small_cases_of_every_int8_op(rng):
    """Every op once per scheme on tiny inputs (run under compute-sanitizer memcheck and racecheck)."""
    for scheme in SCHEMES:
        x, xq = random_int8(rng, (2, 7, 5, 9)), random_quant(rng)
        models = [
            conv_case(rng, x, xq, 6, (3, 3), strides=(2, 2), pads=same_pads(7, 5, 3, 2), scheme=scheme),
            conv_case(rng, x, xq, 18, (3, 3), pads=(1, 1, 1, 1), depthwise=True, scheme=scheme),
            conv_case(rng, x, xq, 5, (1, 1), pointwise=True, scheme=scheme),
            chain_model(rng, "dwpw", x, xq, stride=2, out=7, table_stage=0, scheme=scheme),
            chain_model(rng, "pwdw", x, xq, kernel=5, expand=12, table_stage=1, scheme=scheme),
            chain_model(rng, "pwpw", x, xq, expand=20, out=9, residual=True, scheme=scheme),
            chain_model(rng, "pwdwpw", x, xq, expand=24, out=9, residual=True, table_stage=2, scheme=scheme),
            chain_model(rng, "pwdwpw", x, xq, kernel=7, stride=2, expand=16, out=5, scheme=scheme),
        ]
        for model in models:
            check_on_gpu(model, {"x": x})
    b = random_int8(rng, x.shape)
    check_on_gpu(add_model(rng, x, b, True), {"a": x, "b": b})
    for keepdims in (False, True):
        check_on_gpu(mean_model(rng, x, keepdims), {"x": x})


# --- one session, many runs ------------------------------------------------------------------------

def _block(rng, scheme=FP32) -> ModelProto:
    """An inverted-residual block (24 -> 96 -> 24, an activation table after the depthwise stage),
    fitted to a sample input of 14 x 14 pixels."""
    return chain_model(rng, "pwdwpw", random_int8(rng, (2, 14, 14, 24)), random_quant(rng), expand=96, out=24,
                       residual=True, table_stage=1, scheme=scheme)


def test_dynamic_batch(rng):
    model = _block(rng)
    session = cuda_session(model)
    for batch in (1, 5, 2):
        check_on_gpu(model, {"x": random_int8(rng, (batch, 14, 14, 24))}, session)


def test_cuda_graph_capture_and_replay(rng):
    """Four runs of one binding: the runtime captures the graph in the first one or two, the rest
    replay it, each with new input values copied into the bound input buffer and the output buffer
    poisoned again."""
    model = _block(rng)
    cpu = cpu_session(model)
    session = cuda_session(model, enable_cuda_graph=1)
    shape = (4, 14, 14, 24)
    binding, inputs, out = bind(session, {"x": random_int8(rng, shape)}, np.zeros(shape, np.int8))
    for attempt, poison in enumerate(POISONS * 2):
        x = random_int8(rng, shape)
        inputs["x"].update_inplace(x)
        out.update_inplace(np.full(shape, poison, np.int8))
        session.run_with_iobinding(binding)
        (want,) = cpu.run(None, {"x": x})
        assert_equal(out.numpy(), want, f"run {attempt}")


def test_wrong_input_shapes_are_errors_not_crashes(rng):
    """Inputs the kernels cannot take are ONNX Runtime errors; the session keeps working after them."""
    model = _block(rng)
    session = cuda_session(model)
    for bad in ((1, 14, 14, 23), (2, 14, 14, 25)):  # channels the weights do not take
        with pytest.raises(Exception) as raised:
            session.run(None, {"x": random_int8(rng, bad)})
        assert type(raised.value).__module__.startswith("onnxruntime"), repr(raised.value)
    x, xq = random_int8(rng, (1, 7, 7, 6)), random_quant(rng)
    dw = conv_case(rng, x, xq, 6, (3, 3), strides=(2, 2), depthwise=True)
    with pytest.raises(Exception) as raised:
        cuda_session(dw).run(None, {"x": random_int8(rng, (1, 2, 1, 6))})  # smaller than the kernel
    assert type(raised.value).__module__.startswith("onnxruntime"), repr(raised.value)
    a, b = random_int8(rng, (1, 2, 2, 3)), random_int8(rng, (1, 2, 2, 4))
    with pytest.raises(Exception) as raised:
        cuda_session(add_model(rng, a, a, False)).run(None, {"a": a, "b": b})  # shapes that differ
    assert type(raised.value).__module__.startswith("onnxruntime"), repr(raised.value)
    check_on_gpu(model, {"x": random_int8(rng, (2, 14, 14, 24))}, session)


def test_four_threads_share_one_session(rng):
    model = _block(rng, FIXED_POINT)
    session = cuda_session(model)
    cpu = cpu_session(model)
    inputs = [random_int8(rng, (int(rng.integers(1, 6)), 14, 14, 24)) for _ in range(8)]
    expected = [cpu.run(None, {"x": x})[0] for x in inputs]
    errors = run_in_threads(session, "x", inputs, lambda i, got: np.array_equal(got, expected[i]))
    assert not errors, errors[:5]
