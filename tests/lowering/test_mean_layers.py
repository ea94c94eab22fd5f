"""The spatial-mean layer rule (``ort_custom_ops.lowering.layers.fold_spatial_means``, the rewrite's
``mean_layers`` option) on tiny NHWC models written as ONNX text: a ReduceMean over H and W of a known
fp32 NHWC map becomes one ``Mean`` node of the domain, other reductions stay, and the model computes
what it did (ONNX Runtime on the CPU: the library's reference kernel, and the node's function body).
The layout cleanup's final rules leave the means to the layers only when asked; the layer in half
precision is its half op (not a reduction between Casts), and unfused it is a ReduceMean again."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import TensorProto, helper

from fcm_core.vocabulary import DOMAIN, DOMAIN_VERSION, PRECISIONS
from ort_custom_ops.lowering import layers, transposes
from ort_custom_ops.lowering.half import to_half
from ort_custom_ops.lowering.rewrite import cleanup
from ort_custom_ops.lowering.unfuse import unfuse
from ort_custom_ops.ops.library import make_session
from tests.support.means import reduction_model


def _model(opset: int = 18, axes=(1, 2), keepdims: int = 1, **options) -> onnx.ModelProto:
    """x [2, 7, 5, 3] (or ``shape``) -> ReduceMean (or ``op``) over ``axes`` -> Sigmoid -> y."""
    return reduction_model(opset, list(axes), keepdims, **{"shape": "2, 7, 5, 3", **options})


def _folded(model: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto, list]:
    """``model`` with its spatial means made layers, each with its function, as the rewrite adds them."""
    graph = gs.import_onnx(model)
    folded = layers.fold_spatial_means(graph, opset)
    out = cleanup(graph)
    overloads = {made.node.name: made.function.overload for made in folded}
    for node in out.graph.node:
        if node.name in overloads:
            node.overload = overloads[node.name]
    out.functions.extend(made.function for made in folded)
    out.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    out.ir_version = 10
    onnx.checker.check_model(out)
    return out, folded


def _run(model: onnx.ModelProto, x: np.ndarray, with_library: bool = True) -> np.ndarray:
    (y,) = make_session(model, with_library=with_library).run(None, {"x": x})
    return y


@pytest.mark.parametrize("opset, axes", [(13, (1, 2)), (17, (-3, -2)), (18, (1, 2)), (18, (2, -3))])
@pytest.mark.parametrize("keepdims", [1, 0])
def test_a_spatial_mean_becomes_a_mean_layer(opset, axes, keepdims, rng):
    model = _model(opset, axes, keepdims)
    out, folded = _folded(model, opset)
    assert [n.op_type for n in out.graph.node] == ["Mean", "Sigmoid"]
    mean = out.graph.node[0]
    assert mean.domain == DOMAIN and list(mean.input) == ["x"] and list(mean.output) == ["m"]
    assert {a.name: a.i for a in mean.attribute} == {"keepdims": keepdims, "channels_last": 1}
    assert (mean.name, mean.overload) == ("fcm_mean0", "m0") and folded[0].replaced == [model.graph.node[0].name]
    x = rng.normal(size=(2, 7, 5, 3)).astype(np.float32)
    want = _run(model, x, with_library=False)
    for with_library in (True, False):  # the reference kernel; the function body
        got = _run(out, x, with_library)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", ["axes [2, 3]", "axis 1 alone", "symbolic H", "ReduceSum", "ReduceMax", "rank 3", "fp16 map"])
def test_other_reductions_stay(case):
    model = {
        "axes [2, 3]": lambda: _model(13, (2, 3)),
        "axis 1 alone": lambda: _model(18, (1,)),
        "symbolic H": lambda: _model(13, shape="2, H, 4, 3"),
        "ReduceSum": lambda: _model(13, op="ReduceSum"),
        "ReduceMax": lambda: _model(13, op="ReduceMax"),
        "rank 3": lambda: _model(13, shape="5, 4, 3"),
        "fp16 map": lambda: _model(13, element="float16"),
    }[case]()
    graph = gs.import_onnx(model)
    assert layers.fold_spatial_means(graph, 13) == []
    assert [n.op for n in graph.nodes] == [n.op_type for n in model.graph.node]


def test_a_symbolic_batch_makes_a_layer_for_any_batch(rng):
    out, _ = _folded(_model(18, shape="N, 6, 6, 4"), 18)
    assert [n.op_type for n in out.graph.node] == ["Mean", "Sigmoid"]
    for batch in (1, 3):
        x = rng.normal(size=(batch, 6, 6, 4)).astype(np.float32)
        np.testing.assert_allclose(_run(out, x), 1 / (1 + np.exp(-x.mean(axis=(1, 2), keepdims=True))), rtol=1e-6)


def test_the_final_rules_leave_the_means_to_the_layers_only_when_asked():
    """By default (batch 2 or more, or not known) the final rules make a spatial mean a product; with
    ``mean_layers`` they leave it for the layer rule, at any batch, and keep their other rules."""
    assert transposes.spatial_means_to_products in transposes.final_rules(32)
    for batch in (0, 1, 32):
        rules = transposes.final_rules(batch, mean_layers=True)
        assert transposes.spatial_means_to_products not in rules
        assert rules == tuple(rule for rule in transposes.FINAL if rule is not transposes.spatial_means_to_products)
    for mean_layers, kept in ((False, False), (True, True)):
        graph = gs.import_onnx(_model(18))
        transposes.optimize(graph, rules=(), final=transposes.final_rules(32, mean_layers))
        assert ("ReduceMean" in [n.op for n in graph.nodes]) == kept


def _producer_and_readers(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[onnx.NodeProto, list[str]]:
    producer = next(n for n in model.graph.node if node.input[0] in n.output)
    return producer, [n.op_type for n in model.graph.node if node.output[0] in n.input]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_a_half_model_runs_the_half_mean_layer(precision, rng):
    """The half conversion types the layer (Fp16Mean, Bf16Mean: it sums in fp32 itself, so no Casts
    around it, unlike a ReduceMean it keeps in fp32), and its half function body computes what its
    kernel does, both within the precision's roundings of the fp32 model."""
    model = _model(18)
    out, _ = _folded(model, 18)
    half = to_half(out, precision)
    (mean,) = [n for n in half.graph.node if n.domain == DOMAIN]
    assert mean.op_type == {"fp16": "Fp16Mean", "bf16": "Bf16Mean"}[precision]
    producer, readers = _producer_and_readers(half, mean)
    # it reads the model input's Cast to the precision (fp32 inputs by default); fp16: Sigmoid reads
    # its output (bf16: every standard operator widens its inputs, Sigmoid's Cast to fp32 reads it)
    assert producer.op_type == "Cast" and producer.input[0] == "x"
    element = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}[precision]
    assert [a.i for a in producer.attribute if a.name == "to"] == [element]
    assert readers == (["Sigmoid"] if precision == "fp16" else ["Cast"])
    (function,) = [f for f in half.functions if f.name == mean.op_type]
    assert [n.op_type for n in function.node if n.op_type != "Constant"] == ["Cast", "ReduceMean", "Cast"]
    x = rng.normal(size=(2, 7, 5, 3)).astype(np.float32)
    want = _run(model, x, with_library=False)
    kernel, body = _run(half, x), _run(half, x, with_library=False)
    u = PRECISIONS[precision].unit_roundoff
    # x, the mean and the Sigmoid each rounded once (Sigmoid's slope at most 1/4), the output once more
    assert np.abs(kernel - want).max() <= 4 * u
    assert np.abs(kernel - body).max() <= 2 * u


def test_unfused_a_mean_layer_is_a_reduce_mean_again(rng):
    model = _model(18, keepdims=0)
    out, folded = _folded(model, 18)
    back = unfuse(out, [folded[0].node.name])
    assert [n.op_type for n in back.graph.node if n.op_type != "Constant"] == ["ReduceMean", "Sigmoid"]
    assert not back.functions and all(n.domain != DOMAIN for n in back.graph.node)
    x = rng.normal(size=(2, 7, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(_run(back, x, with_library=False), _run(model, x, with_library=False), rtol=1e-6)
