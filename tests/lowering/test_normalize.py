"""The normalization passes, each on a tiny model written as ONNX text: what it folds or drops, what
it leaves alone, and that the model computes the same afterwards."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from ort_custom_ops.lowering.normalize import fold_bias_adds, fold_hard_swish, normalize, remove_identity_reshapes
from ort_custom_ops.ops.library import make_session

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'


def parse(text: str, **constants: np.ndarray) -> onnx.ModelProto:
    model = onnx.parser.parse_model(HEADER + text)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(a), n) for n, a in constants.items())
    return model


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = make_session(model, with_library=False)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def passed(model: onnx.ModelProto, step) -> tuple[int, onnx.ModelProto]:
    graph = gs.import_onnx(model)
    count = step(graph)
    return count, gs.export_onnx(graph)


def hard_swish(clip_high: float) -> onnx.ModelProto:
    """x * Clip(x + 3, 0, clip_high) / 6: hard-swish when clip_high is 6."""
    return parse("""
        g (float[N, 4] x) => (float[N, 4] y) {
            a = Add (x, three)
            c = Clip (a, zero, high)
            d = Div (c, six)
            y = Mul (x, d)
        }""", three=np.float32(3), zero=np.float32(0), high=np.float32(clip_high), six=np.float32(6))


def test_hard_swish_is_folded_into_one_operator(rng):
    model = hard_swish(6.0)
    count, folded = passed(model, fold_hard_swish)
    assert count == 1 and [n.op_type for n in folded.graph.node] == ["HardSwish"]
    x = rng.uniform(-5, 5, (2, 4)).astype(np.float32)
    np.testing.assert_allclose(run(folded, x), run(model, x), rtol=1e-6, atol=1e-6)


def test_a_clip_that_is_not_relu6_is_no_hard_swish():
    count, folded = passed(hard_swish(5.0), fold_hard_swish)
    assert count == 0 and len(folded.graph.node) == 4


def test_a_constant_added_to_a_conv_goes_into_its_bias(rng):
    model = parse("""
        g (float[N, 3, 5, 5] x) => (float[N, 2, 5, 5] y) {
            c = Conv (x, W, B)
            y = Add (c, shift)
        }""", W=rng.normal(size=(2, 3, 1, 1)).astype(np.float32), B=np.ones(2, np.float32),
        shift=rng.normal(size=(1, 2, 1, 1)).astype(np.float32))
    count, folded = passed(model, fold_bias_adds)
    assert count == 1 and [n.op_type for n in folded.graph.node] == ["Conv"]
    x = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(run(folded, x), run(model, x), rtol=1e-5, atol=1e-6)


def test_a_reshape_to_the_same_shape_is_dropped(rng):
    model = parse("""
        g (float[N, 6, 1, 1] x) => (float[N, 6] y) {
            r = Reshape (x, same)
            y = Flatten (r)
        }""", same=np.array([-1, 6, 1, 1], np.int64))
    count, folded = passed(model, remove_identity_reshapes)
    assert count == 1 and [n.op_type for n in folded.graph.node] == ["Flatten"]


def test_normalize_folds_batch_norm_and_keeps_the_function(rng):
    c = 3
    model = parse("""
        g (float[N, 3, 6, 6] x) => (float[N, 3, 6, 6] y) {
            d = Conv <group = 3, kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (x, W)
            b = BatchNormalization (d, scale, bias, mean, var)
            y = Relu (b)
        }""", W=rng.normal(size=(c, 1, 3, 3)).astype(np.float32), scale=rng.uniform(0.5, 2, c).astype(np.float32),
        bias=rng.normal(size=c).astype(np.float32), mean=rng.normal(size=c).astype(np.float32),
        var=rng.uniform(0.5, 2, c).astype(np.float32))
    normalized = normalize(model)
    assert [n.op_type for n in normalized.graph.node] == ["Conv", "Relu"]
    x = rng.normal(size=(2, c, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(normalized, x), run(model, x), rtol=1e-4, atol=1e-5)


def test_erfc_from_tf2onnx_becomes_one_minus_erf(rng):
    """tf2onnx writes Keras' exact GELU, 0.5 x erfc(-x / sqrt(2)), with an Erfc node that ONNX does
    not have (ONNX Runtime refuses the model); normalize computes it as 1 - Erf."""
    import math

    model = parse("""
        g (float[N, 5] x) => (float[N, 5] y) {
            n = Mul (x, minus_root_half)
            e = Erfc (n)
            h = Mul (x, e)
            y = Mul (h, half)
        }""", minus_root_half=np.float32(-1 / math.sqrt(2)), half=np.float32(0.5))
    normalized = normalize(model)
    assert "Erfc" not in {n.op_type for n in normalized.graph.node}
    x = rng.uniform(-8, 8, (3, 5)).astype(np.float32)
    gelu = 0.5 * x.astype(np.float64) * np.vectorize(math.erfc)(-x.astype(np.float64) / math.sqrt(2))
    np.testing.assert_allclose(run(normalized, x), gelu, rtol=1e-6, atol=1e-6)
