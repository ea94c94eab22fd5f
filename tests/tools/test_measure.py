"""fcm.measure on converted models: a fused node's multiply-accumulates, a model cut around its fused nodes;
the per-group micro-benchmark's two sides (the fused node alone, and its subgraph as the source model
runs it: NCHW, without the layout changes of a channels-last node's function body) compute the same."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from extractor.summary import layer_macs
from fcm.measure import fused_macs, group_models, model_pieces, plain_feeds, value_shapes
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import DOMAIN, TO_NHWC, is_fused_group
from ort_custom_ops.ops.standalone import fused_model
from tests.support.fixtures import CHEAP
from tests.support.specs import random_spec


def _fused_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if is_fused_group(n)]

@pytest.mark.parametrize("name", CHEAP)
def test_a_fused_nodes_multiply_accumulates_are_its_layers(name, converted):
    # fcm.measure.fused_macs (from the ONNX node's shapes and weights) against the extractor's count
    # of the Keras layers the group replaced (from the DAG), at batch 2
    result = converted[name]
    fused = onnx.load(result.files["fused"])
    shapes = value_shapes(fused, 2)
    initializers = {i.name: i for i in fused.graph.initializer}
    nodes = {n.name: n for n in _fused_nodes(fused)}
    for group in result.plan.groups:
        node = nodes[f"fcm{group.id}_{group.candidate.kind}"]
        macs = fused_macs(node, shapes, initializers)
        layers = [result.dag[c] for c in group.candidate.convs]
        assert macs["dw"] == 2 * sum(layer_macs(layer) for layer in layers if layer.type == "dw")
        assert macs["pw"] == 2 * sum(layer_macs(layer) for layer in layers if layer.type != "dw") > 0


def test_a_fused_model_cut_around_its_fused_nodes_runs_as_the_whole(converted, rng):
    # benchmarks/segment_times.py times these pieces alone: run one after the other they must give
    # the whole model's output
    import onnx.utils

    fused = onnx.load(converted["MobileNetV2"].files["fused"])
    extractor = onnx.utils.Extractor(fused)
    x = rng.uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    whole = make_session(fused, with_library=True)
    (expected,) = whole.run(None, {whole.get_inputs()[0].name: x})
    value = x
    cut = model_pieces(fused)
    # the head, up to the first group: the stem, one channels-last convolution layer with its ReLU6
    assert [(n.op_type, n.domain) for n in extractor.extract_model(*cut["head"]).graph.node] == [("Conv", DOMAIN)]
    for name in ("head", "body", "tail"):
        piece = make_session(extractor.extract_model(*cut[name]), with_library=True)
        (value,) = piece.run(None, {piece.get_inputs()[0].name: value})
    # the same kernels either way; ONNX Runtime may lay out the cut tensors differently, not compute them so
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_exact_fp32_is_asked_of_the_fused_nodes_by_attribute(converted, rng):
    """fcm bench --exact-fp32 sets allow_tf32=0 on a copy of the fused model (not an environment
    variable); the copy is valid and computes the same on the CPU kernels."""
    from fcm.measure import with_allow_tf32

    fused = onnx.load(converted["MobileNetV2"].output)
    exact = with_allow_tf32(fused, False)
    assert all(next(a.i for a in n.attribute if a.name == "allow_tf32") == 0 for n in _fused_nodes(exact))
    assert not any(a.name == "allow_tf32" for n in _fused_nodes(fused) for a in n.attribute)  # the original is untouched
    x = rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    outputs = [make_session(model).run(None, {model.graph.input[0].name: x})[0] for model in (fused, exact)]
    np.testing.assert_array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("kind,scale", [("pwdwpw", False), ("pwpw", True), ("dwpw", False)])
def test_the_subgraph_in_the_source_layout_has_no_transposes(kind, scale, rng):
    spec = random_spec(rng, kind, 12, scale=scale, channels_last=True)
    model = fused_model(spec, 9, 7)
    shapes = value_shapes(model, 2)
    node = model.graph.node[0]
    alone, plain, data_inputs = group_models(model, node, shapes, source_layout=True)
    assert "Transpose" not in [n.op_type for n in plain.graph.node]
    x = plain.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in x] == [shapes["X"][i] for i in (0, 3, 1, 2)]  # NCHW
    feeds = {name: rng.uniform(-1, 1, shapes[name]).astype(np.float32) for name in data_inputs}
    (fused,) = make_session(alone).run(None, feeds)
    (nchw,) = make_session(plain, with_library=False).run(None, plain_feeds(plain, data_inputs, feeds))
    np.testing.assert_allclose(nchw.transpose(TO_NHWC), fused, rtol=1e-5, atol=1e-5 * float(np.abs(fused).max()))
    # without source_layout the body keeps its layout changes and the node's own inputs
    _, with_transposes, _ = group_models(model, node, shapes)
    assert [n.op_type for n in with_transposes.graph.node].count("Transpose") == 2
    assert plain_feeds(with_transposes, data_inputs, feeds).keys() == feeds.keys()


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("kind,scale", [("pwdwpw", False), ("pwpw", True), ("dwpw", False)])
def test_the_micro_benchmark_of_a_half_group_runs_in_its_precision(kind, scale, precision, rng):
    """fcm bench's and fcm tune's per-group models of an fp16 or bf16 node: both sides typed in the
    node's precision (bf16 through a Cast at each side's input and output, numpy holding no bf16),
    fed inputs of that precision, timed as such, and computing the same within the half bound
    (the fused node rounds once per stage, its subgraph once per operator)."""
    import dataclasses

    from fcm.measure import time_session, timing_feeds, unavoidable_bytes
    from fcm.pipeline.verify import derived_bound

    element = {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}[precision]
    spec = dataclasses.replace(random_spec(rng, kind, 16, scale=scale, channels_last=True), precision=precision)
    model = fused_model(spec, 9, 7)
    shapes = value_shapes(model, 2)
    node = model.graph.node[0]
    alone, plain, data_inputs = group_models(model, node, shapes, source_layout=True)
    assert {v.type.tensor_type.elem_type for v in list(alone.graph.input) + list(plain.graph.input)
            + list(alone.graph.output) + list(plain.graph.output)} == {element}
    timed_alone, feeds, dtype = timing_feeds(alone, data_inputs, shapes, rng)
    timed_plain, _, _ = timing_feeds(plain, data_inputs, shapes, rng)
    if precision == "fp16":
        assert dtype == np.float16 and all(a.dtype == np.float16 for a in feeds.values())
    else:  # Casts at the edges, the inputs already bf16 values
        assert dtype == np.float32 and [n.op_type for n in timed_alone.graph.node].count("Cast") == 1 + len(data_inputs)
        import ml_dtypes

        assert all(np.array_equal(a, a.astype(ml_dtypes.bfloat16).astype(np.float32)) for a in feeds.values())
    session = make_session(timed_alone)
    timing, (fused,) = time_session(session, feeds, [shapes[node.output[0]]], runs=2, warmup=1, output_dtypes=[dtype],
                                    device="cpu")
    assert fused.dtype == dtype and timing.median_ms > 0
    (nchw,) = make_session(timed_plain, with_library=False).run(None, plain_feeds(timed_plain, data_inputs, feeds))
    fused, nhwc = fused.astype(np.float32), nchw.astype(np.float32).transpose(TO_NHWC)
    assert np.abs(nhwc - fused).max() <= derived_bound(precision, 8) * np.abs(nhwc).max()
    initializers = {i.name: i for i in model.graph.initializer}
    fp32 = fused_model(dataclasses.replace(spec, precision="fp32"), 9, 7)
    assert 2 * unavoidable_bytes(node, shapes, initializers) == unavoidable_bytes(
        fp32.graph.node[0], shapes, {i.name: i for i in fp32.graph.initializer})
