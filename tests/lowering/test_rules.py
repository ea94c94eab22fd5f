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
}


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


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("kind", sorted(MODELS))
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
