"""The int8 ops of the FCM library (CPU) against extractor.integer, op by op, on random data.

Each op runs alone in ONNX Runtime with the library registered, on random int8 inputs, weights and
quantization (non-zero zero points, odd shapes, stride 2, ReLU6 clamps), for both requantization
schemes; its output must equal TFLite's integer arithmetic as ``extractor.integer`` computes it
(``accumulate`` + ``requantize`` per convolution, ``run_layer`` for ADD and MEAN) bit for bit. A
fused chain must equal its stages run one by one, each requantized to int8.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from extractor.dag import Dag, Layer
from extractor.integer import (FIXED_POINT, FP32, accumulate, activation_range, logistic_table, requantize,
                               run_layer)
from ort_custom_ops.ops.schema import Chain, ChainStage, Quant, Requant, add_node, conv_node, make_model, mean_node
from tests.support.specs import random_int8, random_quant, swish_table

SCHEMES = (FP32, FIXED_POINT)


# --- running one node ------------------------------------------------------------------------------

def run_node(node, arrays: dict, feeds: dict) -> np.ndarray:
    from ort_custom_ops.ops.library import make_session

    inputs = [helper.make_tensor_value_info(name, TensorProto.INT8, [None] * array.ndim) for name, array in feeds.items()]
    output = helper.make_tensor_value_info(node.output[0], TensorProto.INT8, None)
    graph = helper.make_graph([node], "one_node", inputs, [output],
                              [numpy_helper.from_array(a, name) for name, a in arrays.items()])
    return make_session(make_model(graph)).run(None, feeds)[0]


# --- random layers ---------------------------------------------------------------------------------

def random_requant(rng, acc: np.ndarray, x: Quant, channels: int) -> Requant:
    """Weight scales and an output quantization that spread ``acc`` over the int8 range, and a
    random activation clamp (none, ReLU, ReLU6)."""
    w_scales = rng.uniform(0.5, 1.5, channels).astype(np.float32) * np.float32(0.01)
    spread = float(np.std(acc.astype(np.float64))) or 1.0
    y_scale = float(np.float32(x.scale * 0.01 * spread / 40))
    y = Quant(y_scale, int(rng.integers(-60, 60)))
    activation = rng.choice(["NONE", "RELU", "RELU6"])
    clamp = activation_range(str(activation), None, y.scale, y.zero_point, "int8")
    return Requant(w_scales, y, clamp)


def expected_conv(x, xq: Quant, weights_for_accumulate, bias, kernel, strides, dilation, pads_tblr, depthwise,
                  requant: Requant, scheme):
    acc = accumulate(x, xq.zero_point, weights_for_accumulate, bias, kernel, strides, dilation, pads_tblr, depthwise)
    return requantize(acc, xq.scale, requant.w_scales, requant.y.scale, requant.y.zero_point, requant.clamp, "int8", scheme)


def _onnx_pads(tblr):
    top, bottom, left, right = tblr
    return (top, left, bottom, right)


# --- QConv -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("case", [
    dict(kernel=(3, 3), strides=(2, 2), dilation=(1, 1), pads=(0, 1, 0, 1), c=3, f=8),  # MobileNet's first layer
    dict(kernel=(3, 2), strides=(1, 2), dilation=(1, 1), pads=(1, 1, 0, 1), c=5, f=7),
    dict(kernel=(3, 3), strides=(1, 1), dilation=(2, 2), pads=(2, 2, 2, 2), c=4, f=3),
    dict(kernel=(1, 1), strides=(1, 1), dilation=(1, 1), pads=(0, 0, 0, 0), c=19, f=13),  # pointwise
])
def test_standard_conv(rng, scheme, case):
    x, xq = random_int8(rng, (2, 11, 9, case["c"])), random_quant(rng)
    w = random_int8(rng, (case["f"], case["c"]) + case["kernel"])  # [F, C, KH, KW] as the DAG keeps it
    w[w == -128] = -127  # TFLite's weights are symmetric
    bias = rng.integers(-3000, 3000, case["f"]).astype(np.int32)
    acc = accumulate(x, xq.zero_point, w, bias, case["kernel"], case["strides"], case["dilation"], case["pads"], False)
    requant = random_requant(rng, acc, xq, case["f"])
    want = expected_conv(x, xq, w, bias, case["kernel"], case["strides"], case["dilation"], case["pads"], False,
                         requant, scheme)
    onnx_w = w[:, :, 0, 0] if case["kernel"] == (1, 1) else w.transpose(0, 2, 3, 1)
    node, arrays = conv_node("conv", "x", "y", xq, onnx_w, bias, requant, strides=case["strides"],
                             dilations=case["dilation"], pads=_onnx_pads(case["pads"]), scheme=scheme)
    got = run_node(node, arrays, {"x": x})
    assert got.shape == want.shape
    assert np.array_equal(got, want), f"{np.count_nonzero(got != want)} of {want.size} differ"


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("factor", [0.5, 0.25, 0.75])
def test_requantization_ties(scheme, factor):
    """Rescale factors that put many accumulators exactly halfway: the schemes round those ties
    differently (half to even; upward), and each op must round as its scheme does."""
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 16, 16, 1)
    xq = Quant(1.0, 0)
    w = np.ones((2, 1), np.int8)
    bias = np.array([0, 1], np.int32)
    requant = Requant(np.array([factor, factor], np.float32), Quant(1.0, 3))
    acc = accumulate(x, 0, w, bias, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), False)
    want = requantize(acc, 1.0, requant.w_scales, 1.0, 3, (-128, 127), "int8", scheme)
    other = requantize(acc, 1.0, requant.w_scales, 1.0, 3, (-128, 127), "int8", FP32 if scheme == FIXED_POINT else FIXED_POINT)
    assert np.count_nonzero(want != other) > 10  # the ties are there
    node, arrays = conv_node("pw", "x", "y", xq, w, bias, requant, scheme=scheme)
    assert np.array_equal(run_node(node, arrays, {"x": x}), want)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kernel, stride, multiplier, pads", [
    (3, 1, 1, (1, 1, 1, 1)), (3, 2, 1, (0, 1, 0, 1)), (5, 2, 1, (2, 2, 2, 2)), (3, 1, 2, (1, 1, 1, 1))])
def test_depthwise_conv(rng, scheme, kernel, stride, multiplier, pads):
    c = 6
    x, xq = random_int8(rng, (2, 10, 7, c)), random_quant(rng)
    w = random_int8(rng, (c * multiplier, kernel, kernel))  # [C * M, KH, KW] as the DAG keeps it
    bias = rng.integers(-3000, 3000, c * multiplier).astype(np.int32)
    geometry = ((kernel, kernel), (stride, stride), (1, 1), pads)
    acc = accumulate(x, xq.zero_point, w, bias, *geometry, True)
    requant = random_requant(rng, acc, xq, c * multiplier)
    want = expected_conv(x, xq, w, bias, *geometry, True, requant, scheme)
    node, arrays = conv_node("dw", "x", "y", xq, w.transpose(1, 2, 0), bias, requant, depthwise=True,
                             strides=(stride, stride), pads=_onnx_pads(pads), scheme=scheme)
    got = run_node(node, arrays, {"x": x})
    assert np.array_equal(got, want), f"{np.count_nonzero(got != want)} of {want.size} differ"


# --- fused chains ----------------------------------------------------------------------------------

def random_chain(rng, kind: str, x: np.ndarray, xq: Quant, stride: int, residual: bool, scheme: str,
                 tables: bool = False):
    """A random chain of ``kind`` over ``x`` and what its stages give run one by one; ``tables``: each
    stage followed by swish (an activation table) or a sigmoid, at random."""
    chain = Chain(kind, xq)
    current, current_q = x, xq
    channels = x.shape[-1]
    stage_types = {"dwpw": ("dw", "pw"), "pwdw": ("pw", "dw"), "pwpw": ("pw", "pw"), "pwdwpw": ("pw", "dw", "pw")}[kind]
    for index, stage_type in enumerate(stage_types):
        last = index == len(stage_types) - 1
        if stage_type == "pw":
            out_c = x.shape[-1] if (last and residual) else int(rng.integers(3, 24))
            w = random_int8(rng, (out_c, channels))
            geometry = ((1, 1), (1, 1), (1, 1), (0, 0, 0, 0))
        else:
            out_c = channels
            w = random_int8(rng, (channels, 3, 3))
            pads = (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1)
            geometry = ((3, 3), (stride, stride), (1, 1), pads)
        bias = rng.integers(-3000, 3000, out_c).astype(np.int32)
        acc = accumulate(current, current_q.zero_point, w, bias, *geometry, stage_type == "dw")
        requant = random_requant(rng, acc, current_q, out_c)
        current = requantize(acc, current_q.scale, requant.w_scales, requant.y.scale, requant.y.zero_point,
                             requant.clamp, "int8", scheme)
        if tables:
            if rng.random() < 0.7:
                requant.table, requant.table_y = swish_table(rng, requant.y)
            else:
                requant.table_y = Quant(1 / 256, -128)
                requant.table = logistic_table(requant.y.pair(), requant.table_y.pair(), "int8", scheme)
            current = requant.table[current.astype(np.int64) + 128]
        onnx_w = w if stage_type == "pw" else w.transpose(1, 2, 0)
        chain.stages.append(ChainStage(stage_type, onnx_w, bias, requant, stride=geometry[1][0],
                                       pads=_onnx_pads(geometry[3])))
        current_q, channels = (requant.table_y if tables else requant.y), out_c
    if residual:
        yq = random_quant(rng)
        clamp = (-128, 127) if rng.random() < 0.5 else activation_range("RELU6", None, yq.scale, yq.zero_point, "int8")
        chain.residual = Requant(np.ones(1, np.float32), yq, clamp)
        current = integer_add(x, xq, current, current_q, yq, clamp)
    return chain, current


def integer_add(a, aq: Quant, b, bq: Quant, yq: Quant, clamp) -> np.ndarray:
    """TFLite's ADD as extractor.integer computes it, on a one-layer DAG; ``clamp`` picks the fused
    activation (none or ReLU6)."""
    activation = "NONE" if tuple(clamp) == (-128, 127) else "RELU6"

    def ref(q: Quant):
        return {"shape": list(a.shape), "dtype": "int8", "scale": q.scale, "zero_point": q.zero_point}

    layer = Layer("add", 0, activation=activation, inputs=[ref(aq), ref(bq)], outputs=[ref(yq)])
    got = run_layer(Dag([layer]), layer, [a, b], FP32)
    assert tuple(activation_range(activation, None, yq.scale, yq.zero_point, "int8")) == tuple(clamp)
    return got


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind, stride, residual", [
    ("pwdwpw", 1, True), ("pwdwpw", 2, False), ("pwdwpw", 1, False), ("dwpw", 1, True), ("dwpw", 2, False),
    ("pwdw", 2, False), ("pwdw", 1, False), ("pwpw", 1, True), ("pwpw", 1, False)])
def test_fused_chain_equals_its_layers_one_by_one(rng, scheme, kind, stride, residual):
    x, xq = random_int8(rng, (2, 13, 11, 8)), random_quant(rng)
    chain, want = random_chain(rng, kind, x, xq, stride, residual, scheme)
    node, arrays = chain.node("group", "x", "y", scheme)
    got = run_node(node, arrays, {"x": x})
    assert got.shape == want.shape
    assert np.array_equal(got, want), f"{np.count_nonzero(got != want)} of {want.size} differ"


@pytest.mark.parametrize("kind, stride, residual", [("pwdw", 2, False), ("pwdw", 1, False), ("pwpw", 1, True),
                                                    ("pwdwpw", 1, True), ("dwpw", 1, False)])
def test_fused_chain_with_activation_tables(rng, kind, stride, residual):
    """Swish or sigmoid after each stage as a table (``stage<i>_table``): equal to the stages run one
    by one with LOGISTIC and MUL as extractor.integer computes them."""
    x, xq = random_int8(rng, (2, 9, 10, 8)), random_quant(rng)
    chain, want = random_chain(rng, kind, x, xq, stride, residual, FP32, tables=True)
    node, arrays = chain.node("group", "x", "y", FP32)
    got = run_node(node, arrays, {"x": x})
    assert np.array_equal(got, want), f"{np.count_nonzero(got != want)} of {want.size} differ"


def test_fused_chain_on_tall_inputs_crosses_row_blocks(rng):
    """Enough rows and channels that the kernel works in several blocks of rows (halo rows at each
    block edge)."""
    x, xq = random_int8(rng, (1, 97, 31, 48)), random_quant(rng)
    chain, want = random_chain(rng, "pwdwpw", x, xq, 2, False, FP32)
    node, arrays = chain.node("group", "x", "y")
    assert np.array_equal(run_node(node, arrays, {"x": x}), want)


# --- ADD and MEAN ----------------------------------------------------------------------------------

def test_add(rng):
    a, b = random_int8(rng, (2, 5, 7, 9)), random_int8(rng, (2, 5, 7, 9))
    aq, bq, yq = random_quant(rng), random_quant(rng), random_quant(rng)
    for clamp in ((-128, 127), activation_range("RELU6", None, yq.scale, yq.zero_point, "int8")):
        want = integer_add(a, aq, b, bq, yq, clamp)
        got = run_node(add_node("add", "a", "b", "y", aq, bq, yq, clamp), {}, {"a": a, "b": b})
        assert np.array_equal(got, want)


@pytest.mark.parametrize("keepdims", [False, True])
def test_mean(rng, keepdims):
    x, xq, yq = random_int8(rng, (3, 7, 5, 11)), random_quant(rng), random_quant(rng)

    def ref(q: Quant, shape):
        return {"shape": list(shape), "dtype": "int8", "scale": q.scale, "zero_point": q.zero_point}

    out_shape = (3, 1, 1, 11) if keepdims else (3, 11)
    layer = Layer("mean", 0, inputs=[ref(xq, x.shape), {"const": "input1"}], outputs=[ref(yq, out_shape)],
                  options={"keep_dims": keepdims})
    want = run_layer(Dag([layer]), layer, [x, np.array([1, 2], np.int32)], FP32)
    got = run_node(mean_node("mean", "x", "y", xq, yq, keepdims), {}, {"x": x})
    assert got.shape == want.shape and np.array_equal(got, want)


# --- bad nodes are errors, not crashes -------------------------------------------------------------

def _pointwise(rng, **overrides):
    xq = Quant(0.1, 3)
    requant = Requant(np.full(4, 0.01, np.float32), Quant(0.2, -5))
    node, arrays = conv_node("pw", "x", "y", xq, random_int8(rng, (4, 6)), np.zeros(4, np.int32), requant)
    for key, value in overrides.items():
        for attribute in node.attribute:
            if attribute.name == key:
                node.attribute.remove(attribute)
                break
        if value is not None:
            node.attribute.append(helper.make_attribute(key, value))
    return node, arrays


@pytest.mark.parametrize("overrides, message", [
    (dict(scheme="nearest"), "scheme must be"),
    (dict(clamp=[10, -10]), "clamp must be"),
    (dict(y_zero_point=300), "y_zero_point must be"),
    (dict(x_scale=-1.0), "x_scale must be"),
    (dict(w_scales=[0.01, 0.01, 0.01]), "weights must be"),
    (dict(y_scale=None), "missing attribute y_scale"),
    (dict(table=list(range(-128, 127))), "table must hold 256 values"),
    (dict(table=list(range(-100, 156))), "table values must be int8"),
    (dict(table=list(range(-128, 128))), "missing attribute table_y_scale"),
])
def test_bad_attributes_are_reported(rng, overrides, message):
    node, arrays = _pointwise(rng, **overrides)
    with pytest.raises(Exception, match=message):
        run_node(node, arrays, {"x": random_int8(rng, (1, 3, 3, 6))})


def test_wrong_input_shapes_are_reported(rng):
    node, arrays = _pointwise(rng)
    with pytest.raises(Exception, match="input has 5 channels"):
        run_node(node, arrays, {"x": random_int8(rng, (1, 3, 3, 5))})
    with pytest.raises(Exception, match="must be 4-D"):
        run_node(node, arrays, {"x": random_int8(rng, (3, 6))})
    dw, arrays = conv_node("dw", "x", "y", Quant(0.1, 0), random_int8(rng, (3, 2, 6)), None,
                           Requant(np.full(6, 0.01, np.float32), Quant(0.2, 0)), depthwise=True, strides=(2, 2))
    with pytest.raises(Exception, match="smaller than the kernel"):
        run_node(dw, arrays, {"x": random_int8(rng, (1, 2, 1, 6))})
    add = add_node("add", "a", "b", "y", Quant(0.1, 0), Quant(0.1, 0), Quant(0.2, 0))
    with pytest.raises(Exception, match="one shape"):
        run_node(add, {}, {"a": random_int8(rng, (1, 2, 2, 3)), "b": random_int8(rng, (1, 2, 2, 4))})


def test_chain_with_inconsistent_weights_is_reported(rng):
    x, xq = random_int8(rng, (1, 6, 6, 8)), random_quant(rng)
    chain, _ = random_chain(rng, "pwdwpw", x, xq, 1, False, FP32)
    chain.stages[2].weights = chain.stages[2].weights[:, :-1]  # one channel short of the dw stage's
    node, arrays = chain.node("group", "x", "y")
    with pytest.raises(Exception, match="stage 3"):
        run_node(node, arrays, {"x": x})
    residual, _ = random_chain(rng, "pwdwpw", x, xq, 2, False, FP32)
    residual.residual = Requant(np.ones(1, np.float32), random_quant(rng))
    node, arrays = residual.node("group", "x", "y")
    with pytest.raises(Exception, match="residual needs"):
        run_node(node, arrays, {"x": x})
