"""The rewrite rules, one test per FCM kind on a tiny model written as ONNX text: the rule matches
the planned group, its replacement is one fused node of that kind (NCHW, or channels last between
Transposes), and the rewritten model computes what the original does, with the FCM library and
without it (its function body). Plus the cleanup and a rule's refusal."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest
from onnx import numpy_helper

from ort_custom_ops.lowering import patterns
from ort_custom_ops.lowering.rewrite import cleanup
from ort_custom_ops.lowering.rules import RULES, NotFusable
from ort_custom_ops.lowering.scale_factors import fold_scale_factors
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import DOMAIN, is_channels_last

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
CLIP6 = "lo = {0.0}, hi = {6.0}"  # Clip(x, 0, 6): ReLU6

# name -> (ONNX text, weight shapes, the plan's group)
MODELS = {
    "dwpw": ("""
        g (float[N, 8, 9, 7] x) => (float[N, F, H, W] y) {
            d = Conv <group = 8, kernel_shape = [3, 3], strides = [2, 2], pads = [1, 0, 1, 1]> (x, W1, B1)
            a = Relu (d)
            c = Conv (a, W2, B2)
            y = HardSwish (c)
        }""", {"W1": (8, 1, 3, 3), "B1": (8,), "W2": (12, 8, 1, 1), "B2": (12,)},
        {"stages": [{"activation": "RELU"}, {"activation": "HARD_SWISH"}]}),
    "pwdw": ("""
        g (float[N, 6, 7, 7] x, float[N, 6, 1, 1] s) => (float[N, F, H, W] y) {
            m = Mul (x, s)
            c = Conv (m, W1, B1)
            g1 = Sigmoid (c)
            a = Mul (c, g1)
            p = Pad (a, pads)
            d = Conv <group = 10, kernel_shape = [5, 5], pads = [1, 1, 1, 1]> (p, W2, B2)
            y = Sigmoid (d)
        }""", {"W1": (10, 6, 1, 1), "B1": (10,), "W2": (10, 1, 5, 5), "B2": (10,)},
        {"stages": [{"activation": "SWISH", "se_scale": {"layer": 0}}, {"activation": "SIGMOID"}]}),
    "pwpw": ("""
        g (float[N, 5, 4, 6] x) => (float[N, F, H, W] y) {
            c = Conv (x, W1, B1)
            a = Relu (c)
            y = Conv (a, W2, B2)
        }""", {"W1": (7, 5, 1, 1), "B1": (7,), "W2": (3, 7, 1, 1), "B2": (3,)},
        {"stages": [{"activation": "RELU"}, {"activation": "0"}]}),
    "pwdwpw": ("""
        g (float[N, 8, 6, 6] x) => (float[N, F, H, W] y) {
            c = Conv (x, W1, B1)
            a = Clip (c, lo, hi)
            d = Conv <group = 16, kernel_shape = [3, 3], pads = [1, 1, 1, 1]> (a, W2, B2)
            b = Clip (d, lo, hi)
            e = Conv (b, W3, B3)
            y = Add (e, x)
        }""", {"W1": (16, 8, 1, 1), "B1": (16,), "W2": (16, 1, 3, 3), "B2": (16,), "W3": (8, 16, 1, 1), "B3": (8,)},
        {"stages": [{"activation": "RELU6"}, {"activation": "RELU6"}, {"activation": "0"}], "residual": {"activation": "0"}}),
    "pw": ("""
        g (float[N, 12, 5, 6] x, float[N, 12, 1, 1] s) => (float[N, F, H, W] y) {
            m = Mul (x, s)
            y = Conv (m, W1, B1)
        }""", {"W1": (8, 12, 1, 1), "B1": (8,)},
        {"stages": [{"activation": "0", "se_scale": {"layer": 0}}]}),
}
#: The kinds whose ops are channels-last only.
CHANNELS_LAST_ONLY = {"pw"}


def tiny_model(kind: str, rng) -> tuple[onnx.ModelProto, dict]:
    """The kind's model from its text, with random weights (and the pad and clip constants) as
    initializers; a zero Pad before a depthwise stage (pwdw) is folded into its padding."""
    text, shapes, group = MODELS[kind]
    model = onnx.parser.parse_model(HEADER + text)
    for index, node in enumerate(model.graph.node):  # the rules find a node's original by its name
        node.name = f"{node.op_type}_{index}"
    arrays = {name: rng.normal(0, 0.5, shape).astype(np.float32) for name, shape in shapes.items()}
    arrays.update(pads=np.array([0, 0, 1, 0, 0, 0, 2, 1], np.int64), lo=np.array(0, np.float32), hi=np.array(6, np.float32))
    used = {name for node in model.graph.node for name in node.input}
    model.graph.initializer.extend(numpy_helper.from_array(a, n) for n, a in arrays.items() if n in used)
    return model, {"id": 3, "kind": kind, "layers": list(range(len(group["stages"]))), "residual": None, **group}


def apply_rule(model: onnx.ModelProto, group: dict, channels_last: bool = False):
    graph = gs.import_onnx(model)
    convs = [n for n in graph.nodes if n.op == "Conv"]
    match = RULES[group["kind"]].match(graph, group, convs, patterns.ids(graph.outputs))
    match.spec.channels_last = channels_last
    originals = {n.name: n for n in model.graph.node}
    initializers = {t.name: t for t in model.graph.initializer}
    node, function = RULES[group["kind"]].replace(graph, match, originals, initializers, opset=17)
    fused = cleanup(graph)
    fused.graph.node[[n.name for n in fused.graph.node].index(node.name)].overload = function.overload
    fused.functions.append(function)
    fused.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    fused.ir_version = 10
    onnx.checker.check_model(fused)
    return match, fused


def _feeds(model: onnx.ModelProto, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for graph_input in model.graph.input:
        dims = [d.dim_value or 2 for d in graph_input.type.tensor_type.shape.dim]
        feeds[graph_input.name] = rng.uniform(-1, 1, dims).astype(np.float32)
    return feeds


@pytest.mark.parametrize("kind, channels_last", [pytest.param(kind, layout == "nhwc", id=f"{kind}-{layout}")
                                                  for kind in sorted(MODELS) for layout in ("nchw", "nhwc")
                                                  if layout == "nhwc" or kind not in CHANNELS_LAST_ONLY])
def test_each_kinds_rule_replaces_its_pattern_by_one_node(kind, channels_last, rng):
    model, group = tiny_model(kind, rng)
    match, fused = apply_rule(model, group, channels_last)
    assert [n.op for n in match.nodes] == [n.op_type for n in model.graph.node]  # the whole pattern, nothing else
    node = next(n for n in fused.graph.node if n.domain == DOMAIN)
    if channels_last:  # NCHW around it: the graph's layout is unchanged
        assert [n.op_type for n in fused.graph.node] == ["Transpose", match.spec.op_type, "Transpose"]
        assert is_channels_last(node)
    else:
        assert [n.op_type for n in fused.graph.node] == [match.spec.op_type]
        assert not any(a.name == "channels_last" for a in node.attribute)
    assert node.op_type == match.spec.op_type and match.spec.kind == kind
    feeds = _feeds(model, rng)
    (expected,) = make_session(model, with_library=False).run(None, feeds)
    for with_library in (True, False):  # the kernel, and the function body
        (got,) = make_session(fused, with_library=with_library).run(None, feeds)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_a_channels_last_only_kind_in_nchw_is_refused_by_the_op_and_runs_as_its_function(rng):
    """A ``pw`` node in NCHW (which the rewrite never makes) is an ONNX Runtime error naming why;
    without the library its function body still computes the group."""
    model, group = tiny_model("pw", rng)
    _, fused = apply_rule(model, group, channels_last=False)
    with pytest.raises(Exception, match="channels-last only: channels_last must be 1"):
        make_session(fused, with_library=True)
    feeds = _feeds(model, rng)
    (expected,) = make_session(model, with_library=False).run(None, feeds)
    (got,) = make_session(fused, with_library=False).run(None, feeds)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_constant_factor_of_the_channel_scale_goes_into_the_weights(rng):
    """MobileNetV3's hard sigmoid ends in x / 6 before the scale: folded into the fused node's first
    weights, the Mul goes; the model computes the same, with the library and without it."""
    text = """
        g (float[N, 12, 5, 6] x, float[N, 12, 1, 1] t) => (float[N, F, H, W] y) {
            s = Mul (t, sixth)
            m = Mul (x, s)
            y = Conv (m, W1, B1)
        }"""
    model = onnx.parser.parse_model(HEADER + text)
    for index, node in enumerate(model.graph.node):
        node.name = f"{node.op_type}_{index}"
    model.graph.initializer.extend([numpy_helper.from_array(np.array(1 / 6, np.float32), "sixth"),
                                    numpy_helper.from_array(rng.normal(0, 0.5, (8, 12, 1, 1)).astype(np.float32), "W1"),
                                    numpy_helper.from_array(rng.normal(0, 0.5, 8).astype(np.float32), "B1")])
    model = onnx.shape_inference.infer_shapes(model)  # (the rule reads the scale's shape, as normalize gives it)
    group = {"id": 0, "kind": "pw", "layers": [0], "residual": None,
             "stages": [{"activation": "0", "se_scale": {"layer": 0}}]}
    graph = gs.import_onnx(model)
    conv = next(n for n in graph.nodes if n.op == "Conv")
    match = RULES["pw"].match(graph, group, [conv], patterns.ids(graph.outputs))
    match.spec.channels_last = True
    node, function = RULES["pw"].replace(graph, match, {n.name: n for n in model.graph.node},
                                         {t.name: t for t in model.graph.initializer}, opset=17)
    assert fold_scale_factors(graph) == 1 and node.inputs[-1].name == "t"
    fused = cleanup(graph)
    assert [n.op_type for n in fused.graph.node] == ["Transpose", "FusedPw", "Transpose"]
    fused.graph.node[1].overload = function.overload
    fused.functions.append(function)
    fused.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    fused.ir_version = 10
    feeds = _feeds(model, rng)
    (expected,) = make_session(model, with_library=False).run(None, feeds)
    for with_library in (True, False):
        (got,) = make_session(fused, with_library=with_library).run(None, feeds)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    assert fold_scale_factors(gs.import_onnx(fused)) == 0  # nothing left to fold


def test_a_rule_refuses_a_group_that_does_not_read_as_planned(rng):
    model, group = tiny_model("pwpw", rng)
    group["stages"][0]["activation"] = "RELU6"  # the graph applies Relu
    with pytest.raises(NotFusable, match="the graph applies relu, the plan says clip"):
        apply_rule(model, group)
    model, group = tiny_model("pwpw", rng)
    with pytest.raises(NotFusable, match="not a dwpw"):
        RULES["dwpw"].match(gs.import_onnx(model), group, [], set())


def test_the_cleanup_drops_what_the_replacement_disconnected(rng):
    model, group = tiny_model("pwdwpw", rng)
    graph = gs.import_onnx(model)
    convs = [n for n in graph.nodes if n.op == "Conv"]
    match = RULES["pwdwpw"].match(graph, group, convs, patterns.ids(graph.outputs))
    RULES["pwdwpw"].replace(graph, match, {n.name: n for n in model.graph.node},
                            {t.name: t for t in model.graph.initializer}, opset=17)
    assert len(graph.nodes) == len(model.graph.node) + 1  # the replacement leaves the old nodes in place
    assert [n.op_type for n in cleanup(graph).graph.node] == ["FusedPwDwPw"]
