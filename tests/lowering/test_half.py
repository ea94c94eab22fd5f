"""The half-precision conversion of the operators between fused nodes (``ort_custom_ops.lowering.half``),
on small ONNX graphs against numpy: the bf16 form (every computing operator between Casts, bf16
tensors between them), the fp16 converter's two bugs worked around, the rounding depth the bounds
count, and the widened (fp32) form of a half model."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcm_core.vocabulary import PRECISIONS
from ort_custom_ops.lowering.half import (BF16_DIRECT, fp32_mean_nodes, rounded_model, rounding_depth, spatial_mean_nodes,
                                          to_half, widened, with_half_reductions)
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.standalone import float_io
from tests.support.means import fp16_mean_reference, spatial_mean_model

BF16 = ml_dtypes.bfloat16


def _model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in initializers])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def _floats(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _run(model, **feeds) -> np.ndarray:
    (y,) = make_session(model, with_library=False).run(None, feeds)
    return y


def _chain(rng):
    """x -> Mul(w) -> Transpose -> Add(b) -> Sigmoid -> y: two computing operators in a row around a reshape."""
    w = rng.normal(size=(1, 4, 1, 5)).astype(np.float32)
    b = rng.normal(size=(1, 5, 1, 4)).astype(np.float32)
    nodes = [helper.make_node("Mul", ["x", "w"], ["m"]), helper.make_node("Transpose", ["m"], ["t"], perm=[0, 3, 2, 1]),
             helper.make_node("Add", ["t", "b"], ["a"]), helper.make_node("Sigmoid", ["a"], ["y"])]
    return _model(nodes, [_floats("x", [2, 4, 3, 5])], [_floats("y", [2, 5, 3, 4])], [("w", w), ("b", b)]), w, b


def _bf16(values):
    return np.asarray(values, np.float32).astype(BF16).astype(np.float32)


def test_bf16_rounds_every_operator_s_output_and_computes_in_fp32(rng):
    model, w, b = _chain(rng)
    x = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
    # numpy: the input and the weights rounded, each operator in fp32 with its output rounded
    m = _bf16(_bf16(x) * _bf16(w))
    a = _bf16(m.transpose(0, 3, 2, 1) + _bf16(b))
    want = _bf16(1 / (1 + np.exp(-a.astype(np.float64))))
    half = to_half(model, "bf16")
    assert [v.type.tensor_type.elem_type for v in list(half.graph.input) + list(half.graph.output)] == [TensorProto.FLOAT] * 2
    assert all(t.data_type == TensorProto.BFLOAT16 for t in half.graph.initializer)
    computing = [n for n in half.graph.node if n.op_type not in ("Cast",) + BF16_DIRECT]
    assert [n.op_type for n in computing] == ["Mul", "Add", "Sigmoid"]
    transpose = next(n for n in half.graph.node if n.op_type == "Transpose")
    producers = {o: n for n in half.graph.node for o in n.output}
    assert producers[transpose.input[0]].op_type == "Cast"  # the Transpose moves bf16 values
    got = _run(half, x=x)
    u = PRECISIONS["bf16"].unit_roundoff
    # the same roundings in the same places: equal but where an fp32 result sits on a rounding boundary
    np.testing.assert_allclose(got, want, rtol=0, atol=2 * u * np.abs(want).max())
    exact = 1 / (1 + np.exp(-((x * w).transpose(0, 3, 2, 1) + b)))
    assert np.abs(got - exact).max() > u / 8  # it is rounded: not the fp32 model


def test_io_half_makes_the_edges_bf16(rng):
    model, _, _ = _chain(rng)
    half = to_half(model, "bf16", io_half=True)
    assert [v.type.tensor_type.elem_type for v in list(half.graph.input) + list(half.graph.output)] == \
        [TensorProto.BFLOAT16] * 2
    x = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
    np.testing.assert_array_equal(_run(float_io(half), x=_bf16(x)), _run(to_half(model, "bf16"), x=x))


def test_fp16_keeps_the_reductions_in_fp32(rng):
    """(Its nodes are unnamed: onnxconverter-common 1.16 names the Casts it adds after their node, and
    would give two the same name.)"""
    x = rng.normal(size=(2, 3, 4, 4)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Softmax", ["p"], ["y"], axis=1)]
    model = _model(nodes, [_floats("x", [2, 3, 4, 4])], [_floats("y", [2, 3, 1, 1])])
    half = to_half(model, "fp16")
    kept = {n.op_type: n for n in half.graph.node}
    values = {v.name: v.type.tensor_type.elem_type for v in half.graph.value_info}
    assert values[kept["Relu"].output[0]] == TensorProto.FLOAT16
    assert values.get(kept["GlobalAveragePool"].output[0], TensorProto.FLOAT) == TensorProto.FLOAT
    r = np.maximum(x.astype(np.float16), 0).astype(np.float32)
    p = r.mean(axis=(2, 3), keepdims=True)
    want = np.exp(p) / np.exp(p).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_run(half, x=x), want, rtol=0, atol=4 * PRECISIONS["fp16"].unit_roundoff)


def test_fp16_an_initializer_shared_by_a_kept_and_a_converted_operator(rng):
    """onnxconverter-common 1.16 leaves such an initializer fp32 for both (issue 304): the Mul would
    get an fp32 operand beside an fp16 one, and ONNX Runtime would refuse the model."""
    w = np.abs(rng.normal(size=(3,))).astype(np.float32)
    nodes = [helper.make_node("Mul", ["x", "w"], ["m"]), helper.make_node("Max", ["m", "w"], ["y"])]  # Max is kept
    model = _model(nodes, [_floats("x", [2, 3])], [_floats("y", [2, 3])], [("w", w)])
    x = rng.normal(size=(2, 3)).astype(np.float32)
    got = _run(to_half(model, "fp16"), x=x)
    want = np.maximum((x.astype(np.float16) * w.astype(np.float16)).astype(np.float32), w)
    np.testing.assert_allclose(got, want, rtol=0, atol=2 * PRECISIONS["fp16"].unit_roundoff * np.abs(want).max())


def test_fp16_a_cast_to_float_in_the_source_casts_to_fp16(rng):
    """onnxconverter-common 1.16 keeps such a Cast's ``to=float`` while it types its output fp16
    (issue 320): ONNX Runtime would refuse the model."""
    nodes = [helper.make_node("Cast", ["i"], ["c"], to=TensorProto.FLOAT), helper.make_node("Add", ["x", "c"], ["y"])]
    model = _model(nodes, [_floats("x", [2, 3]), helper.make_tensor_value_info("i", TensorProto.INT64, [2, 3])],
                   [_floats("y", [2, 3])])
    half = to_half(model, "fp16")
    cast = next(n for n in half.graph.node if n.op_type == "Cast" and n.input[0] == "i")
    assert cast.attribute[0].i == TensorProto.FLOAT16
    x, i = rng.normal(size=(2, 3)).astype(np.float32), rng.integers(-5, 5, (2, 3))
    want = x.astype(np.float16).astype(np.float32) + i
    np.testing.assert_allclose(_run(half, x=x, i=i), want, rtol=0, atol=2 * PRECISIONS["fp16"].unit_roundoff * np.abs(want).max())


def _producers(model) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def test_fp16_computes_a_spatial_mean_product_in_fp16_with_fp32_sums(rng):
    model = spatial_mean_model()
    names = spatial_mean_nodes(model)
    assert fp32_mean_nodes(model, "fp16") == [] and fp32_mean_nodes(model, "bf16") == names
    half = to_half(model, "fp16")
    product = next(n for n in half.graph.node if n.op_type == "MatMul")
    transpose = _producers(half)[product.input[0]]
    assert [transpose.name, product.name] == names and transpose.op_type == "Transpose"
    # the map is read in fp16: the only Casts are the model's input's and output's; the column is
    # fp16's 1/30
    casts = [n for n in half.graph.node if n.op_type == "Cast"]
    assert [c.input[0] for c in casts if c.output[0] != "y"] == ["x"] and len(casts) == 2
    column = next(t for t in half.graph.initializer if t.name == product.input[1])
    assert column.data_type == TensorProto.FLOAT16
    np.testing.assert_array_equal(numpy_helper.to_array(column), np.full((30, 1), 1 / 30, np.float16))
    x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(half, x=x), fp16_mean_reference(x), rtol=0, atol=2 * PRECISIONS["fp16"].unit_roundoff)


def test_fp16_keeps_a_mean_over_more_than_2_14_pixels_in_fp32(rng):
    # 1/16900 is an fp16 subnormal: the column stays fp32, the map reaches the Transpose (which ONNX
    # Runtime folds into the product) through a Cast to fp32, the result leaves through a Cast to fp16
    model = spatial_mean_model(130, 130)
    names = spatial_mean_nodes(model)
    assert fp32_mean_nodes(model, "fp16") == names
    half = to_half(model, "fp16")
    product = next(n for n in half.graph.node if n.op_type == "MatMul")
    transpose = _producers(half)[product.input[0]]
    column = next(t for t in half.graph.initializer if t.name == product.input[1])
    assert column.data_type == TensorProto.FLOAT
    np.testing.assert_array_equal(numpy_helper.to_array(column), np.full((16900, 1), 1 / 16900, np.float32))
    cast = _producers(half)[transpose.input[0]]
    assert cast.op_type == "Cast" and cast.attribute[0].i == TensorProto.FLOAT
    (reader,) = [n for n in half.graph.node if product.output[0] in n.input]
    assert reader.op_type == "Cast" and reader.attribute[0].i == TensorProto.FLOAT16
    x = rng.normal(size=(2, 130, 130, 3)).astype(np.float32)
    m = np.maximum(x.astype(np.float16), 0).astype(np.float64).mean(axis=(1, 2))
    want = 1 / (1 + np.exp(-m.astype(np.float16).astype(np.float64)))
    np.testing.assert_allclose(_run(half, x=x), want, rtol=0, atol=2 * PRECISIONS["fp16"].unit_roundoff)


def test_the_rounded_reference_rounds_a_spatial_mean_as_its_precision_computes_it(rng):
    # fp16: the column and the product's output rounded like any operator's, so the reference is
    # what the fp16 model computes
    model = spatial_mean_model()
    rounded = rounded_model(model, "fp16")
    product = next(n for n in rounded.graph.node if n.op_type == "MatMul")
    assert any(product.output[0] in n.input for n in rounded.graph.node if n.op_type == "Cast")
    x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(rounded, x=x), _run(to_half(model, "fp16"), x=x), rtol=0,
                               atol=2 * PRECISIONS["fp16"].unit_roundoff)
    # a mean the precision computes in fp32 is left exact, its column too
    for model, precision, pixels in ((spatial_mean_model(130, 130), "fp16", 16900), (model, "bf16", 30)):
        rounded = rounded_model(model, precision)
        product = next(n for n in rounded.graph.node if n.op_type == "MatMul")
        assert not any(product.output[0] in n.input for n in rounded.graph.node if n.op_type == "Cast")
        column = next(t for t in rounded.graph.initializer if t.name == product.input[1])
        np.testing.assert_array_equal(numpy_helper.to_array(column), np.full((pixels, 1), 1 / pixels, np.float32))
        relu = next(n for n in rounded.graph.node if n.op_type == "Relu")
        assert any(relu.output[0] in n.input for n in rounded.graph.node if n.op_type == "Cast")  # others are rounded


def test_bf16_reads_a_spatial_mean_s_column_in_fp32(rng):
    """1/30 is no bf16 value: the column stays fp32, and the mean is the fp32 one rounded once."""
    model = spatial_mean_model()
    half = to_half(model, "bf16")
    product = next(n for n in half.graph.node if n.op_type == "MatMul")
    column = next(t for t in half.graph.initializer if t.name == product.input[1])
    assert column.data_type == TensorProto.FLOAT
    np.testing.assert_array_equal(numpy_helper.to_array(column), np.full((30, 1), 1 / 30, np.float32))
    # the bf16 map widened before the Transpose, so that nothing stands between it and the product
    transpose = _producers(half)[product.input[0]]
    assert transpose.op_type == "Transpose" and _producers(half)[transpose.input[0]].op_type == "Cast"
    x = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
    m = _bf16(np.maximum(_bf16(x), 0).astype(np.float64).mean(axis=(1, 2)))
    want = _bf16(1 / (1 + np.exp(-m.astype(np.float64))))
    np.testing.assert_allclose(_run(half, x=x), want, rtol=0, atol=2 * PRECISIONS["bf16"].unit_roundoff)


def test_rounding_depth_counts_the_longest_path(rng):
    model, _, _ = _chain(rng)
    # input 1, Mul 1 + its weight 1, Transpose 0, Add 1 + its weight 1, Sigmoid 1
    assert rounding_depth(model) == 6
    assert rounding_depth(model, shared=False) == 3  # the operators' outputs only
    side = helper.make_node("Relu", ["x"], ["s"])
    model.graph.node.insert(0, side)  # a shorter branch changes nothing
    assert rounding_depth(model) == 6


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_the_widened_model_is_the_half_model_without_its_roundings(precision, rng):
    model, w, b = _chain(rng)
    half = to_half(model, precision)
    wide = widened(half)
    assert not any(v.type.tensor_type.elem_type in (TensorProto.FLOAT16, TensorProto.BFLOAT16)
                   for v in list(wide.graph.value_info) + list(wide.graph.input) + list(wide.graph.output))
    x = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
    dtype = {"fp16": np.float16, "bf16": BF16}[precision]
    r = lambda a: np.asarray(a, np.float32).astype(dtype).astype(np.float64)  # noqa: E731
    want = 1 / (1 + np.exp(-((r(x) * r(w)).transpose(0, 3, 2, 1) + r(b))))
    np.testing.assert_allclose(_run(wide, x=x), want, rtol=1e-5, atol=1e-6)


def test_half_reductions_variant_reads_the_fp16_map(rng):
    """ONNX Runtime's anchor with its reductions in fp16 (fcm bench's extra configuration of the
    unfused side): the GlobalAveragePool, the ReduceMean and the Softmax of a squeeze-and-excitation
    branch and head read the fp16 values, the Casts around them gone (the last one's output, the
    model's, now an Identity of the Softmax's); the outputs those of an fp16 computation."""
    x = rng.normal(size=(2, 8, 6, 6)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Sigmoid", ["p"], ["s"]), helper.make_node("Mul", ["r", "s"], ["g"]),
             helper.make_node("ReduceMean", ["g"], ["q"], axes=[2, 3], keepdims=0), helper.make_node("Relu", ["q"], ["z"]),
             helper.make_node("Softmax", ["z"], ["y"], axis=1)]
    model = _model(nodes, [_floats("x", [2, 8, 6, 6])], [_floats("y", [2, 8])])
    half = to_half(model, "fp16")
    variant = with_half_reductions(half)
    producers = _producers(variant)
    for op_type, reads in (("GlobalAveragePool", "Relu"), ("ReduceMean", "Mul"), ("Softmax", "Relu")):
        (node,) = [n for n in variant.graph.node if n.op_type == op_type]
        assert producers[node.input[0]].op_type == reads, op_type
    assert sum(n.op_type == "Cast" for n in variant.graph.node) == sum(n.op_type == "Cast" for n in half.graph.node) - 6
    assert producers["y"].op_type == "Identity"

    def fp16(values):
        return np.asarray(values, np.float32).astype(np.float16).astype(np.float32)

    r = fp16(np.maximum(x, 0))
    g = fp16(r * fp16(1 / (1 + np.exp(-fp16(r.mean(axis=(2, 3), keepdims=True))))))
    z = np.maximum(fp16(g.mean(axis=(2, 3))), 0)
    want = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_run(variant, x=x), want, rtol=0, atol=8 * PRECISIONS["fp16"].unit_roundoff)
    assert with_half_reductions(variant) is None
    assert with_half_reductions(to_half(_chain(rng)[0], "fp16")) is None


def _stem_model(rng, depthwise: bool = False):
    """x (fp32, NHWC) -> a float convolution layer (its node and function, as the rewrite makes them)
    -> Relu6 -> y: a network's stem (3x3 stride 2, 3 -> 16 channels), or a depthwise layer."""
    from fcm_core.vocabulary import DOMAIN, DOMAIN_VERSION
    from ort_custom_ops.ops.schema import Activation, ConvLayer

    channels, filters = (8, 8) if depthwise else (3, 16)
    layer = ConvLayer(kernel_shape=(3, 3), strides=(2, 2), pads=(0, 0, 1, 1), group=channels if depthwise else 1,
                      activation=Activation("relu6"))
    w = (rng.normal(size=(filters, 1 if depthwise else channels, 3, 3)) / 3).astype(np.float32)
    b = rng.normal(size=filters).astype(np.float32)
    node = layer.node(["x", "w", "b"], "y", "stem", overload="stem")
    model = _model([node], [_floats("x", [None, 17, 15, channels])], [_floats("y", None)], [("w", w), ("b", b)])
    model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    model.functions.append(layer.function("stem", 17))
    return model


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_the_input_cast_folds_into_the_stem(precision, rng):
    """The Cast of the fp32 input that only a half stem reads goes: the stem reads the fp32 input
    and rounds it as the Cast did, with the library (the same values as with the Cast) and without
    it (its function body rounds X first); a depthwise layer keeps its Cast."""
    half = to_half(_stem_model(rng), precision)
    (stem,) = [n for n in half.graph.node if n.op_type.endswith("Conv")]
    assert stem.input[0] == "x" and not any(n.op_type == "Cast" and n.input[0] == "x" for n in half.graph.node)
    x = (3 * rng.normal(size=(2, 17, 15, 3))).astype(np.float32)  # (not rounded: the stem rounds it)
    # the same model with the Cast in front of the stem again
    cast = onnx.ModelProto()
    cast.CopyFrom(half)
    (with_cast,) = [n for n in cast.graph.node if n.op_type.endswith("Conv")]
    with_cast.input[0] = "x_half"
    element = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}[precision]
    cast.graph.node.insert(0, helper.make_node("Cast", ["x"], ["x_half"], to=element))
    (folded,) = make_session(half).run(None, {"x": x})
    (reference,) = make_session(cast).run(None, {"x": x})
    assert np.array_equal(folded, reference)
    (body,) = make_session(half, with_library=False).run(None, {"x": x})
    u = PRECISIONS[precision].unit_roundoff
    assert np.abs(body - reference).max() <= 4 * u * (np.abs(reference).max() + 1)
    depthwise = to_half(_stem_model(rng, depthwise=True), precision)
    assert any(n.op_type == "Cast" and n.input[0] == "x" for n in depthwise.graph.node)
