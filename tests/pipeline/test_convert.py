"""`fcm convert`: Keras models -> fused ONNX that matches Keras, with and without the library."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from fcm.cli import main
from fcm.pipeline.convert import ConvertOptions, convert
from fcm_core.errors import FcmError
from fcm_core.vocabulary import layer_of, layer_op_type
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.lowering.half import spatial_mean_nodes
from ort_custom_ops.lowering.transposes import planned_batch, transpose_count
from ort_custom_ops.lowering.unfuse import unfuse
from ort_custom_ops.ops.schema import DOMAIN, is_channels_last, is_fused_group
from tests.support.fixtures import CHEAP, keras_model


def _fused_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if is_fused_group(n)]


@pytest.mark.parametrize("name", CHEAP)
def test_fused_model_matches_keras_with_and_without_the_library(name, converted, rng):
    result = converted[name]
    model = keras_model(name, logits=True)
    fused = onnx.load(result.files["fused"])
    with_library = make_session(fused, with_library=True)
    without_library = make_session(fused, with_library=False)
    assert with_library.get_inputs()[0].shape[0] != 1 and with_library.get_inputs()[0].shape[1:] == [224, 224, 3]
    for batch in (1, 3):
        x = rng.uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
        reference = model.predict(x, verbose=0)
        bound = 1e-4 * np.abs(reference).max()
        (ours,) = with_library.run(None, {with_library.get_inputs()[0].name: x})
        (inlined,) = without_library.run(None, {without_library.get_inputs()[0].name: x})
        assert np.abs(ours - reference).max() <= bound
        assert np.abs(inlined - reference).max() <= bound
        assert np.abs(ours - inlined).max() <= bound


@pytest.mark.parametrize("name", CHEAP)
def test_every_planned_group_is_one_node_with_its_function(name, converted):
    result = converted[name]
    fused = onnx.load(result.files["fused"])
    nodes = _fused_nodes(fused)
    assert result.rewrite.skipped == []
    assert len(nodes) == len(result.plan.groups) > 0
    overloads = {(f.name, f.overload) for f in fused.functions if f.domain == DOMAIN}
    layers = [n for n in fused.graph.node if n.domain == DOMAIN and not is_fused_group(n)]
    for node in nodes + layers:
        assert (node.op_type, node.overload) in overloads
    assert len(overloads) == len(nodes) + len(layers)
    # the stem, which no group takes, is one convolution layer (3x3, stride 2, 3 channels in) where
    # the layout cleanup leaves it between Transposes; MobileNetV3Small's stays NCHW with the
    # depthwise Conv (3x3, stride 2) and squeeze-and-excitation mean of its first block, which no
    # group takes either: both become layers there, and the Transposes around them cancel or move
    assert [entry["node"] for entry in result.rewrite.layers] == [n.name for n in layers]
    assert [n.op_type for n in layers] == (["Conv", "Conv"] if name == "MobileNetV3Small" else ["Conv"])
    for layer in layers:
        assert {a.name: list(a.ints) for a in layer.attribute if a.name in ("kernel_shape", "strides")} == \
            {"kernel_shape": [3, 3], "strides": [2, 2]}
    onnx.checker.check_model(fused)
    report = result.files["report"].read_text()
    for group in result.plan.groups:
        assert f"| {group.id} | {group.candidate.kind}" in report
    plan = json.loads(result.files["plan"].read_text())
    assert len(plan["groups"]) == len(nodes)


@pytest.mark.parametrize("name", CHEAP)
def test_fused_nodes_are_channels_last_with_transposes_only_where_needed(name, converted):
    """NHWC by default: every fused node channels last; a Transpose is left only where an operator
    the rewrite left alone needs NCHW (each unfused Conv at most one before it and one after it),
    and where the NHWC model input meets the first of them."""
    result = converted[name]
    fused, unfused = onnx.load(result.files["fused"]), onnx.load(result.files["unfused"])
    assert all(is_channels_last(n) for n in _fused_nodes(fused))
    before, after = result.rewrite.transposes
    assert (before, after) == (transpose_count(unfused), transpose_count(fused))
    convs = sum(1 for n in fused.graph.node if n.op_type == "Conv")
    assert after <= before + 2 * convs
    if name in ("MobileNet", "MobileNetV2"):  # one unfused Conv between the input and the fused chain, one after
        assert after <= 3
    assert "layout: NHWC (channels last) fused nodes; Transpose nodes:" in result.files["report"].read_text()


def test_the_nchw_layout_adds_no_transposes(tmp_path, capsys):
    out = tmp_path / "mnv3.onnx"
    assert main(["-q", "convert", "keras:MobileNetV3Small", "--input-size", "96", "--logits", "--gpu", "H100",
                 "--layout", "nchw", "-o", str(out)]) == 0
    assert "verified against the source model" in capsys.readouterr().out
    fused, unfused = onnx.load(out), onnx.load(tmp_path / "mnv3.unfused.onnx")
    assert _fused_nodes(fused) and not any(is_channels_last(n) for n in _fused_nodes(fused))
    assert transpose_count(fused) == transpose_count(unfused)
    assert "layout: NCHW fused nodes" in (tmp_path / "mnv3.report.md").read_text()


@pytest.mark.parametrize("name", ["MobileNet", "MobileNetV2"])
def test_most_depthwise_convolutions_are_fused(name, converted):
    result = converted[name]
    dag, plan = result.dag, result.plan
    fused_dw = {c for g in plan.groups for c in g.candidate.convs if dag[c].type == "dw"}
    all_dw = [layer.id for layer in dag if layer.type == "dw"]
    assert len(fused_dw) >= 0.8 * len(all_dw)


def test_mobilenet_v2_blocks_become_whole_inverted_residual_nodes(converted):
    fused = onnx.load(converted["MobileNetV2"].files["fused"])
    kinds = [n.op_type for n in _fused_nodes(fused)]
    assert kinds.count("FusedPwDwPw") == 16 and kinds.count("FusedDwPw") == 1
    residual = [n for n in _fused_nodes(fused) if any(a.name == "residual" and a.i == 1 for a in n.attribute)]
    assert len(residual) == 10


def _no_dwpw_model():
    import keras

    keras.utils.set_random_seed(5)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def test_a_model_without_depthwise_or_pointwise_layers_is_unchanged(tmp_path):
    result = convert(_no_dwpw_model(), tmp_path / "plain.onnx", ConvertOptions(gpu="H100"))
    assert any("no depthwise or pointwise" in note for note in result.notes)
    fused, unfused = onnx.load(result.files["fused"]), onnx.load(result.files["unfused"])
    assert [n.op_type for n in fused.graph.node] == [n.op_type for n in unfused.graph.node]
    assert not fused.functions
    assert "no depthwise or pointwise" in result.files["report"].read_text()


def _model_with_unsupported_layers():
    import keras

    keras.utils.set_random_seed(6)
    inputs = keras.Input((20, 20, 8))
    x = keras.layers.DepthwiseConv2D(9, padding="same")(inputs)  # a 9x9 kernel: no fused kernel takes it
    x = keras.layers.Conv2D(16, 1)(x)
    x = keras.layers.LeakyReLU(0.1)(x)  # an activation the epilogue does not implement
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.Conv2D(12, 1, activation="relu")(x)  # this DW -> PW pair is fusable
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    from extractor.sources import randomize_batchnorm

    randomize_batchnorm(model, np.random.default_rng(0))
    return model


def test_unsupported_layers_stay_unfused_and_the_model_verifies(tmp_path):
    result = convert(_model_with_unsupported_layers(), tmp_path / "odd.onnx", ConvertOptions(gpu="H100"))
    reasons = result.plan.unfused_reasons
    assert "depthwise kernel [9, 9]" in reasons[0]
    assert "layer 0: depthwise kernel [9, 9]" in reasons[1]  # its only candidate holds the 9x9 layer
    fused = onnx.load(result.files["fused"])
    assert [n.op_type for n in _fused_nodes(fused)] == ["FusedDwPw"]
    ops = [n.op_type for n in fused.graph.node]
    # kept: the 9x9 depthwise Conv as it was, the pointwise one as the MatMul it is between
    # channels-last neighbours (beside the Dense layer's)
    convs = [n for n in fused.graph.node if n.op_type == "Conv"]
    assert "LeakyRelu" in ops and len(convs) == 1 and ops.count("MatMul") == 2
    assert [a.ints for a in convs[0].attribute if a.name == "kernel_shape"] == [[9, 9]]
    assert all(c.passed(1e-4) for c in result.checks if c.name != "unfused ONNX")


@pytest.mark.parametrize("batch", [1, 32])
def test_the_spatial_mean_is_a_product_in_a_model_planned_for_a_batch(tmp_path, batch):
    # the global pool over the NHWC map: a ReduceMean at batch 1, where ONNX Runtime's reduction is
    # the faster form, at larger batches a MatMul of the transposed map by a column of 1/HW
    # (transposes.final_rules): spatial_mean_nodes names the product and its Transpose
    result = convert(_model_with_unsupported_layers(), tmp_path / "odd.onnx", ConvertOptions(gpu="H100", batch=batch))
    fused = onnx.load(result.files["fused"])
    assert [n.op_type for n in _fused_nodes(fused)] == ["FusedDwPw"]
    means = [n.op_type for n in fused.graph.node].count("ReduceMean")
    assert (means, len(spatial_mean_nodes(fused))) == ((1, 0) if batch == 1 else (0, 2))
    # the model says what it was planned for, and unfusing its group keeps that batch's form
    assert planned_batch(fused) == batch
    unfused = unfuse(fused, [n.name for n in _fused_nodes(fused)])
    means = [n.op_type for n in unfused.graph.node].count("ReduceMean")
    assert (means, len(spatial_mean_nodes(unfused))) == ((1, 0) if batch == 1 else (0, 2))
    assert all(c.passed(1e-4) for c in result.checks if c.name != "unfused ONNX")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_mean_layers_take_the_spatial_means_when_asked(tmp_path, precision):
    # the rewrite's mean_layers option (off by default): the global pool is one Mean layer of the
    # domain at batch 32 (no product, no ReduceMean), the model verifies against Keras (convert
    # raises otherwise), unfusing the layer gives the batch's product back, and fcm tune's rewrite
    # of the source (fp32) makes the layer again
    options = ConvertOptions(gpu="H100", batch=32, precision=precision, samples=16, mean_layers=True)
    result = convert(_model_with_unsupported_layers(), tmp_path / "odd.onnx", options)
    fused = onnx.load(result.files["fused"])
    means = [n for n in fused.graph.node if n.domain == DOMAIN and (layer_of(n.op_type) or ("",))[0] == "Mean"]
    assert [n.op_type for n in means] == [layer_op_type("Mean", precision)]
    assert "ReduceMean" not in [n.op_type for n in fused.graph.node] and not spatial_mean_nodes(fused)
    assert [entry["node"] for entry in result.rewrite.layers if entry["op"] == "Mean"] == [means[0].name]
    if precision == "fp32":
        assert all(c.passed(1e-4) for c in result.checks if c.name != "unfused ONNX")
        unfused = unfuse(fused, [means[0].name])
        assert len(spatial_mean_nodes(unfused)) == 2 and "Mean" not in [n.op_type for n in unfused.graph.node]
        from fcm import tune

        conversion, why = tune.load_conversion(fused, result.files["fused"])
        assert conversion is not None and conversion.mean_layers, why
        tuned = tune.rewritten_source(fused, conversion, {n.name for n in _fused_nodes(fused)})
        assert [n.op_type for n in tuned.graph.node if n.domain == DOMAIN and n.op_type == "Mean"] == ["Mean"]


def test_failed_verification_writes_nothing(tmp_path):
    out = tmp_path / "out" / "model.onnx"
    with pytest.raises(FcmError, match="verification failed"):
        convert(keras_model("MobileNetV2", logits=True), out, ConvertOptions(gpu="H100", tolerance=0.0))
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_output_must_be_an_onnx_file(tmp_path):
    with pytest.raises(FcmError, match="must be an .onnx file"):
        convert(keras_model("MobileNetV2", logits=True), tmp_path / "model.txt")
    assert not list(tmp_path.iterdir())


def test_cli(tmp_path, capsys):
    out = tmp_path / "mnv2.onnx"
    assert main(["-q", "convert", "keras:MobileNetV2", "--input-size", "96", "--logits", "--gpu", "A100",
                 "--batch", "8", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fused nodes (" in printed and "verified against the source model" in printed
    for suffix in (".onnx", ".unfused.onnx", ".dag.json", ".weights.npz", ".plan.json", ".report.md"):
        assert (tmp_path / f"mnv2{suffix}").is_file()
    plan = json.loads((tmp_path / "mnv2.plan.json").read_text())
    assert plan["gpu"]["name"] == "A100" and plan["batch"] == 8

