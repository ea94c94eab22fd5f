"""The convolution layer rule (``ort_custom_ops.lowering.layers``) on tiny NHWC models written as ONNX
text: ``Transpose -> Conv -> Transpose [-> activation]`` becomes one channels-last ``Conv`` node of
the domain where the kernels take the convolution, and nothing changes where they do not; either way
the model computes what it did (ONNX Runtime on the CPU, the node's function body). Then the Convs of
an NCHW stretch, folded where that adds no layout work, and the layer in half precision, and unfused."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcm_core.vocabulary import PRECISIONS
from ort_custom_ops.lowering import layers, transposes
from ort_custom_ops.lowering.half import to_half
from ort_custom_ops.lowering.rewrite import cleanup
from ort_custom_ops.lowering.unfuse import unfuse
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import DOMAIN, CONV_LAYER_INPUTS, ConvLayer, conv_layer_node
from ort_custom_ops.ops.standalone import fused_model
from tests.support.specs import random_spec

HEADER = '<ir_version: 10, opset_import: ["" : 17]>'
TO_NCHW, TO_NHWC = "perm = [0, 3, 1, 2]", "perm = [0, 2, 3, 1]"
STEM = "kernel_shape = [3, 3], strides = [2, 2], pads = [0, 0, 1, 1]"  # Keras' "same" at stride 2
DEPTHWISE = "group = 8, kernel_shape = [3, 3], pads = [1, 1, 1, 1]"


def sandwich(conv: str, after: str, channels: int = 3, weights: tuple = (8, 3, 3, 3), bias: bool = True,
             outputs: str = "float[N, A, B, F] y") -> tuple[str, tuple]:
    """(ONNX text, weight shape): ``x`` [N, 9, 10, channels] -> Transpose -> ``conv`` -> Transpose -> ``n``,
    then ``after``."""
    inputs = "t, W, B" if bias else "t, W"
    return f"""
        g (float[N, 9, 10, {channels}] x) => ({outputs}) {{
            t = Transpose <{TO_NCHW}> (x)
            c = Conv <{conv}> ({inputs})
            n = Transpose <{TO_NHWC}> (c)
            {after}
        }}""", weights


def parse(case: tuple[str, tuple], rng) -> onnx.ModelProto:
    """The model of ``case`` (:func:`sandwich`'s text and weight shape), random weights and the clip bounds as initializers."""
    text, shape = case
    model = onnx.parser.parse_model(HEADER + text)
    for index, node in enumerate(model.graph.node):
        node.name = f"{node.op_type}_{index}"
    arrays = {"W": rng.normal(0, 0.5, shape), "B": rng.normal(0, 0.5, shape[0]), "lo": np.array(0), "hi": np.array(6)}
    used = {name for node in model.graph.node for name in node.input}
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in arrays.items() if n in used)
    return model


def fold(model: onnx.ModelProto, rule=layers.fold_layers) -> tuple[onnx.ModelProto, list]:
    """``model`` with the rule applied, and its functions, overloads and domain added as the rewrite adds them."""
    graph = gs.import_onnx(model)
    folded = rule(graph, opset=17)
    out = cleanup(graph)
    overloads = {f.node.name: f.function.overload for f in folded}
    for node in out.graph.node:
        node.overload = overloads.get(node.name, "")
    out.functions.extend(f.function for f in folded)
    out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    out.ir_version = 10
    onnx.checker.check_model(out)
    return out, folded


def feeds(model: onnx.ModelProto, rng, batch: int = 2) -> dict[str, np.ndarray]:
    dims = [d.dim_value or batch for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {model.graph.input[0].name: rng.uniform(-2, 2, dims).astype(np.float32)}


def run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> np.ndarray:
    return make_session(model, with_library=False).run(None, inputs)[0]  # without the library: function bodies


def assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto, rng) -> None:
    inputs = feeds(before, rng)
    want = run(before, inputs)
    got = run(after, inputs)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(np.abs(want).max()))


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def layer_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN]


# --- what becomes a layer ------------------------------------------------------------------------

# name -> (the model, the layer's activation attributes, its geometry)
FOLDED = {
    "stem_relu6": (sandwich(STEM, "y = Clip (n, lo, hi)"), {"stage1_activation": b"clip", "stage1_clip": [0.0, 6.0]}),
    "stem_hard_swish": (sandwich(STEM, "y = HardSwish (n)"), {"stage1_activation": b"hard_swish"}),
    "stem_swish": (sandwich(STEM, "s = Sigmoid (n)\n y = Mul (n, s)"), {"stage1_activation": b"swish"}),
    "stem_alone": (sandwich(STEM, "y = Identity (n)"), {"stage1_activation": b"none"}),
    "depthwise_swish": (sandwich(DEPTHWISE, "s = Sigmoid (n)\n y = Mul (s, n)", 8, (8, 1, 3, 3)),
                        {"stage1_activation": b"swish", "group": 8, "strides": [1, 1], "pads": [1, 1, 1, 1]}),
    "stem_without_bias": (sandwich(STEM, "y = Relu (n)", bias=False), {"stage1_activation": b"relu"}),
}


@pytest.mark.parametrize("name", sorted(FOLDED))
def test_a_convolution_between_layout_changes_becomes_one_layer(name, rng):
    case, expected = FOLDED[name]
    model = parse(case, rng)
    after, folded = fold(model)
    (node,) = layer_nodes(after)
    ops = [n.op_type for n in after.graph.node]
    # the Identity of stem_alone reads the layer's output; every other node was replaced
    assert ops == (["Conv", "Identity"] if name == "stem_alone" else ["Conv"])
    assert node.input[0] == "x" and node.output[0] == ("n" if name == "stem_alone" else "y")
    assert node.overload == folded[0].function.overload
    values = attributes(node)
    want = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 0, 1, 1], "group": 1, "channels_last": 1, **expected}
    assert {k: values.get(k) for k in want} == want
    assert ("stage1_clip" in values) == (expected["stage1_activation"] == b"clip")
    weights = {t.name: numpy_helper.to_array(t) for t in after.graph.initializer}
    assert weights[node.input[1]].shape == tuple(model.graph.initializer[0].dims)  # ONNX's Conv layout, as it was
    if name == "stem_without_bias":
        assert not weights[node.input[2]].any()
    assert_same_outputs(model, after, rng)


def test_a_shared_first_transpose_stays_for_its_other_reader(rng):
    model = parse(sandwich(STEM, "y = Relu (n)\n m = ReduceMean <axes = [2, 3]> (t)",
                           outputs="float[N, A, B, F] y, float[N, 3, 1, 1] m"), rng)
    after, _ = fold(model)
    assert sorted((n.op_type, n.domain) for n in after.graph.node) == [("Conv", DOMAIN), ("ReduceMean", ""), ("Transpose", "")]
    assert layer_nodes(after)[0].input[0] == "x"
    inputs = feeds(model, rng)
    for want, got in zip(make_session(model, with_library=False).run(None, inputs),
                         make_session(after, with_library=False).run(None, inputs)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * float(np.abs(want).max()))


def test_an_activation_the_kernels_lack_stays_after_the_layer(rng):
    model = parse(sandwich(STEM, "y = LeakyRelu (n)"), rng)
    after, _ = fold(model)
    assert [n.op_type for n in after.graph.node] == ["Conv", "LeakyRelu"]
    assert attributes(layer_nodes(after)[0])["stage1_activation"] == b"none"
    assert_same_outputs(model, after, rng)


# --- what does not -------------------------------------------------------------------------------

LEFT = {
    "dilated": sandwich("kernel_shape = [3, 3], dilations = [2, 2], pads = [2, 2, 2, 2]", "y = Relu (n)"),
    "many_input_channels": sandwich(STEM, "y = Relu (n)", 8, (8, 8, 3, 3)),  # 8 * 3 * 3 = 72 values an output
    "conv_output_read_twice": sandwich(STEM, "y = Relu (n)\n z = Relu (c)",
                                       outputs="float[N, A, B, F] y, float[N, F, A, B] z"),
    "two_groups": sandwich("group = 2, kernel_shape = [3, 3], pads = [1, 1, 1, 1]", "y = Relu (n)", 4, (4, 2, 3, 3)),
    "depthwise_kernel_of_two": sandwich("group = 8, kernel_shape = [2, 2]", "y = Relu (n)", 8, (8, 1, 2, 2)),
    "pointwise": sandwich("kernel_shape = [1, 1]", "y = Relu (n)", 8, (8, 8, 1, 1)),  # a matrix product: 8 values
}


@pytest.mark.parametrize("name", sorted(LEFT))
def test_a_convolution_the_kernels_do_not_take_is_left_as_it_is(name, rng):
    model = parse(LEFT[name], rng)
    after, folded = fold(model)
    assert not folded and not layer_nodes(after)
    assert [n.op_type for n in after.graph.node] == [n.op_type for n in model.graph.node]
    assert_same_outputs(model, after, rng)


# --- NCHW stretches -------------------------------------------------------------------------------

SWISH = "s{n} = Sigmoid (c{n})\n a{n} = Mul (c{n}, s{n})"


def stretch(body: str, weights: dict[str, tuple], rng, output: str = "float[N, A, B, F] y") -> onnx.ModelProto:
    """A model of ``x`` [N, 9, 10, 3] -> ``t`` = Transpose to NCHW -> ``body`` (ending in ``y``), its
    initializers ``weights`` (name -> shape) random and the clip bounds ``lo`` and ``hi``, shapes
    inferred (the layout rules read them)."""
    text = f"g (float[N, 9, 10, 3] x) => ({output}) {{\n t = Transpose <{TO_NCHW}> (x)\n {body}\n}}"
    model = onnx.parser.parse_model(HEADER + text)
    for index, node in enumerate(model.graph.node):
        node.name = f"{node.op_type}_{index}"
    arrays = {name: rng.normal(0, 0.5, shape) for name, shape in weights.items()} | {"lo": np.array(0), "hi": np.array(6)}
    used = {name for node in model.graph.node for name in node.input}
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in arrays.items() if n in used)
    return onnx.shape_inference.infer_shapes(model)


def moved(model: onnx.ModelProto) -> int:
    return transposes.moved_elements(gs.import_onnx(onnx.shape_inference.infer_shapes(model)))


def assert_same_with_and_without_library(before: onnx.ModelProto, after: onnx.ModelProto, rng) -> None:
    """``after`` computes what ``before`` did, by its function bodies and by the library's CPU kernels."""
    inputs = feeds(before, rng)
    want = run(before, inputs)
    for with_library in (False, True):
        got = make_session(after, with_library=with_library).run(None, inputs)[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_a_stem_and_depthwise_convolution_in_an_nchw_stretch_become_layers_without_transposes(rng):
    # EfficientNetB0's first block as the layout cleanup leaves it: the image to NCHW, the stem, its
    # swish, the depthwise convolution, its activation, the squeeze-and-excitation mean and scale,
    # and the scaled map back to NHWC for the next channels-last node
    model = stretch(f"""c1 = Conv <{STEM}> (t, W1, B1)
        {SWISH.format(n=1)}
        c2 = Conv <{DEPTHWISE}> (a1, W2, B2)
        a2 = HardSwish (c2)
        m = ReduceMean <axes = [2, 3]> (a2)
        g = Sigmoid (m)
        p = Mul (a2, g)
        y = Transpose <{TO_NHWC}> (p)""", {"W1": (8, 3, 3, 3), "B1": (8,), "W2": (8, 1, 3, 3), "B2": (8,)}, rng)
    assert moved(model) == 9 * 10 * 3 + 4 * 5 * 8
    after, folded = fold(model, layers.fold_nchw_layers)
    assert [f.replaced for f in folded] == [["Conv_1", "Sigmoid_2", "Mul_3"], ["Conv_4", "HardSwish_5"]]
    stem, depthwise = layer_nodes(after)
    assert stem.input[0] == "x" and depthwise.input[0] == stem.output[0]
    assert attributes(stem)["stage1_activation"] == b"swish" and attributes(stem)["strides"] == [2, 2]
    assert attributes(depthwise)["stage1_activation"] == b"hard_swish" and attributes(depthwise)["group"] == 8
    # the mean and the scale read the depthwise layer's NHWC output; no Transpose moves data any more
    assert moved(after) == 0
    assert sorted(n.op_type for n in after.graph.node if n.domain != DOMAIN) == ["Mul", "ReduceMean", "Sigmoid"]
    assert_same_with_and_without_library(model, after, rng)


def test_a_stretch_is_folded_where_it_adds_no_layout_work(rng):
    # a wide convolution (8 * 3 * 3 inputs an output) stays NCHW between the stem and the depthwise
    # one: the stem made a layer would trade the Transpose of the image (270 elements) for one of its
    # output (720); the depthwise layer's Transposes cancel with the one after it and move before it
    model = stretch(f"""c1 = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (t, W1, B1)
        a1 = Relu (c1)
        c2 = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (a1, W2, B2)
        a2 = Relu (c2)
        c3 = Conv <group = 16, kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (a2, W3, B3)
        a3 = Clip (c3, lo, hi)
        y = Transpose <{TO_NHWC}> (a3)""",
                    {"W1": (8, 3, 3, 3), "B1": (8,), "W2": (16, 8, 3, 3), "B2": (16,), "W3": (16, 1, 3, 3), "B3": (16,)},
                    rng)
    before = moved(model)
    after, folded = fold(model, layers.fold_nchw_layers)
    assert [f.replaced for f in folded] == [["Conv_5", "Clip_6"]]
    (node,) = layer_nodes(after)
    assert attributes(node)["stage1_activation"] == b"clip" and attributes(node)["group"] == 16
    assert [n.op_type for n in after.graph.node if n.op_type == "Conv" and n.domain != DOMAIN] == ["Conv", "Conv"]
    assert moved(after) == before == 9 * 10 * 3 + 9 * 10 * 16
    assert_same_with_and_without_library(model, after, rng)


def test_a_convolution_whose_layer_would_add_layout_work_is_left_as_it_is(rng):
    # the stem's output read by a wide convolution that stays NCHW: a layer would need its output
    # transposed back (720 elements) where the image's Transpose moves 270
    model = stretch(f"""c1 = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (t, W1, B1)
        a1 = Relu (c1)
        c2 = Conv <kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (a1, W2, B2)
        y = Transpose <{TO_NHWC}> (c2)""", {"W1": (8, 3, 3, 3), "B1": (8,), "W2": (16, 8, 3, 3), "B2": (16,)}, rng)
    graph = gs.import_onnx(model)
    assert [n.name for n in graph.nodes if layers.read_nchw_layer(n, set()) is not None] == ["Conv_1"]
    after, folded = fold(model, layers.fold_nchw_layers)
    assert not folded and not layer_nodes(after)
    assert [n.op_type for n in after.graph.node] == [n.op_type for n in model.graph.node]
    assert moved(after) == moved(model)


def test_the_nchw_rule_leaves_sandwiches_to_the_layer_rule(rng):
    model = parse(sandwich(STEM, "y = Relu (n)"), rng)
    graph = gs.import_onnx(model)
    assert not [n for n in graph.nodes if layers.read_nchw_layer(n, set()) is not None]
    assert not layers.fold_nchw_layers(graph, opset=17)


# --- the op --------------------------------------------------------------------------------------

def _normalized_stem(rng, shared: bool = False) -> onnx.ModelProto:
    """EfficientNet's head in small: x * (1/255), minus a mean and divided by a deviation per channel
    ([1, 1, 1, 3] constants), then the stem between layout changes; ``shared``: the scaled image ``r``
    is a model output too."""
    outputs = "float[N, A, B, F] y, float[N, 9, 10, 3] r" if shared else "float[N, A, B, F] y"
    text = f"""
        g (float[N, 9, 10, 3] x) => ({outputs}) {{
            r = Mul (x, k)
            m = Add (r, minus_mean)
            u = Mul (m, inverse_deviation)
            t = Transpose <{TO_NCHW}> (u)
            c = Conv <{STEM}> (t, W, B)
            n = Transpose <{TO_NHWC}> (c)
            y = Clip (n, lo, hi)
        }}"""
    model = parse((text, (8, 3, 3, 3)), rng)
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array(1 / 255, np.float32), "k"),
        numpy_helper.from_array(-rng.uniform(0.3, 0.6, (1, 1, 1, 3)).astype(np.float32), "minus_mean"),
        numpy_helper.from_array(1 / rng.uniform(0.2, 0.3, (1, 1, 1, 3)).astype(np.float32), "inverse_deviation")])
    return onnx.shape_inference.infer_shapes(model)  # (the rules read shapes, as the normalized source has them)


def test_an_input_normalization_before_a_layer_becomes_its_input_scale_and_shift(rng):
    """The Muls and Adds by constants of the channels before a stem become the layer's XS and XB (one
    pass over the image each less), computing what they did, with the library and without it."""
    model = _normalized_stem(rng)
    graph = gs.import_onnx(model)
    folded = layers.fold_layers(graph, opset=17)
    assert layers.fold_input_affines(graph, folded, opset=17) == 1
    out = cleanup(graph)
    out.graph.node[0].overload = folded[0].function.overload
    out.functions.append(folded[0].function)
    out.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    out.ir_version = 10
    onnx.checker.check_model(out)
    (node,) = out.graph.node
    assert node.domain == DOMAIN and list(node.input)[0] == "x" and len(node.input) == 5
    assert list(folded[0].function.input) == ["X", "W", "B", "XS", "XB"]
    assert {"Mul_0", "Add_1", "Mul_2"} <= set(folded[0].replaced)
    inputs = {"x": rng.uniform(0, 255, (2, 9, 10, 3)).astype(np.float32)}
    want = run(model, inputs)
    for with_library in (True, False):
        (got,) = make_session(out, with_library=with_library).run(None, inputs)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
    # the scaled image a model output too: the steps after it fold, it stays (and is the layer's input)
    model = _normalized_stem(rng, shared=True)
    graph = gs.import_onnx(model)
    folded = layers.fold_layers(graph, opset=17)
    assert layers.fold_input_affines(graph, folded, opset=17) == 1
    assert folded[0].node.inputs[0].name == "r" and len(folded[0].node.inputs) == 5


def test_the_node_builder_refuses_attributes_the_op_does_not_declare():
    layer = ConvLayer((3, 3), (2, 2))
    node = layer.node(CONV_LAYER_INPUTS, "Y", "l0", overload="c0")
    assert (node.op_type, node.domain, node.overload) == ("Conv", DOMAIN, "c0")
    assert conv_layer_node("bf16", CONV_LAYER_INPUTS, "Y", "l0", layer.attributes()).op_type == "Bf16Conv"
    with pytest.raises(ValueError, match="dilations"):
        conv_layer_node("fp32", CONV_LAYER_INPUTS, "Y", "l0", {**layer.attributes(), "dilations": [1, 1]})
    with pytest.raises(ValueError, match="int8"):
        conv_layer_node("int8", CONV_LAYER_INPUTS, "Y", "l0", layer.attributes())


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_a_layer_in_half_precision_is_typed_and_runs_its_half_body(precision, rng):
    model = parse(FOLDED["stem_swish"][0], rng)
    after, _ = fold(model)
    half = to_half(after, precision)
    (node,) = layer_nodes(half)
    assert node.op_type == {"fp16": "Fp16Conv", "bf16": "Bf16Conv"}[precision]
    element = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}[precision]
    weights = {t.name: t.data_type for t in half.graph.initializer}
    assert weights[node.input[1]] == weights[node.input[2]] == element
    (function,) = half.functions
    assert (function.name, function.overload) == (node.op_type, node.overload)
    inputs = feeds(model, rng)
    want, got = run(model, inputs), run(half, inputs)
    # the input, the weights and a few operators' outputs rounded to the precision
    bound = 16 * PRECISIONS[precision].unit_roundoff * float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=bound)


def _layer_then_fused_node(rng) -> onnx.ModelProto:
    """A stem layer (3 -> 8 channels) feeding a channels-last fused dw -> pw node, as the rewrite leaves them."""
    spec = random_spec(rng, "dwpw", 8, channels_last=True)
    fused = fused_model(spec)
    model = parse(sandwich("kernel_shape = [3, 3], pads = [1, 1, 1, 1]", "r = Relu (n)"), rng)
    node = fused.graph.node[0]
    node.input[0], node.output[0] = "r", "y"
    model.graph.node.append(node)
    model.graph.initializer.extend(fused.graph.initializer)
    model.functions.extend(fused.functions)
    model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return fold(model)[0]


@pytest.mark.parametrize("names", [["fcm0"], ["fcm_conv0"], ["fcm0", "fcm_conv0"]])
def test_unfusing_keeps_the_layers_it_is_not_asked_to_unfuse(names, rng):
    model = _layer_then_fused_node(rng)
    assert [n.name for n in layer_nodes(model)] == ["fcm_conv0", "fcm0"]
    plain = unfuse(model, names)
    kept = [n.name for n in layer_nodes(plain)]
    assert kept == [n for n in ["fcm_conv0", "fcm0"] if n not in names]
    assert sorted(f.overload for f in plain.functions) == sorted(n.overload for n in layer_nodes(plain))
    onnx.checker.check_model(plain)
    assert_same_outputs(model, plain, rng)
