"""`fcm convert`: Keras models -> fused ONNX that matches Keras, with and without the library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import keras_model
from extractor.sources import SourceOptions
from extractor.summary import layer_macs
from fcm.bench import _value_shapes, fused_macs
from fcm.cli import main
from fcm.convert import ConvertOptions, convert
from fcm.errors import FcmError
from ort_custom_ops.library import make_session
from ort_custom_ops.schema import DOMAIN

CHEAP = ["MobileNet", "MobileNetV2", "MobileNetV3Small"]


def _fused_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    results = {}
    for name in CHEAP:
        out = tmp_path_factory.mktemp(name) / f"{name}.onnx"
        results[name] = convert(keras_model(name, logits=True), out, ConvertOptions(gpu="H100", batch=32))
    return results


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
    for node in nodes:
        assert (node.op_type, node.overload) in overloads
    assert len(overloads) == len(nodes)
    onnx.checker.check_model(fused)
    report = result.files["report"].read_text()
    for group in result.plan.groups:
        assert f"| {group.id} | {group.candidate.kind}" in report
    plan = json.loads(result.files["plan"].read_text())
    assert len(plan["groups"]) == len(nodes)


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


@pytest.mark.parametrize("name", CHEAP)
def test_a_fused_nodes_multiply_accumulates_are_its_layers(name, converted):
    # fcm.bench.fused_macs (from the ONNX node's shapes and weights) against the extractor's count
    # of the Keras layers the group replaced (from the DAG), at batch 2
    result = converted[name]
    fused = onnx.load(result.files["fused"])
    shapes = _value_shapes(fused, 2)
    initializers = {i.name: i for i in fused.graph.initializer}
    nodes = {n.name: n for n in _fused_nodes(fused)}
    for group in result.plan.groups:
        node = nodes[f"fcm{group.id}_{group.candidate.kind}"]
        macs = fused_macs(node, shapes, initializers)
        layers = [result.dag[c] for c in group.candidate.convs]
        assert macs["dw"] == 2 * sum(layer_macs(layer) for layer in layers if layer.type == "dw")
        assert macs["pw"] == 2 * sum(layer_macs(layer) for layer in layers if layer.type != "dw") > 0


def test_a_fused_model_cut_around_its_fused_nodes_runs_as_the_whole(converted, rng, monkeypatch):
    # benchmarks/segment_times.py times these pieces alone: run one after the other they must give
    # the whole model's output
    import onnx.utils

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import segment_times

    fused = onnx.load(converted["MobileNetV2"].files["fused"])
    extractor = onnx.utils.Extractor(fused)
    x = rng.uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    whole = make_session(fused, with_library=True)
    (expected,) = whole.run(None, {whole.get_inputs()[0].name: x})
    value = x
    cut = segment_times.pieces(fused)
    assert [n.op_type for n in extractor.extract_model(*cut["head"]).graph.node] == ["Transpose", "Conv", "Clip"]
    for name in ("head", "body", "tail"):
        piece = make_session(extractor.extract_model(*cut[name]), with_library=True)
        (value,) = piece.run(None, {piece.get_inputs()[0].name: value})
    # the same kernels either way; ONNX Runtime may lay out the cut tensors differently, not compute them so
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


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
    assert "LeakyRelu" in ops and ops.count("Conv") == 2  # kept as they were
    assert all(c.passed(1e-4) for c in result.checks if c.name != "unfused ONNX")


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


def test_unfusing_groups_keeps_the_function(converted, tmp_path, rng, capsys):
    """`fcm tune --unfuse`: the named groups become their subgraphs again; outputs unchanged."""
    result = converted["MobileNetV2"]
    fused = onnx.load(result.output)
    names = [n.name for n in _fused_nodes(fused)]
    chosen = [names[0], names[len(names) // 2], names[-1]]
    out = tmp_path / "tuned.onnx"
    assert main(["tune", str(result.output), "--unfuse", ",".join(chosen), "-o", str(out)]) == 0
    tuned = onnx.load(out)
    onnx.checker.check_model(tuned)
    left = {n.name for n in _fused_nodes(tuned)}
    assert left == set(names) - set(chosen)
    assert len(tuned.functions) == len(left)
    assert len({n.name for n in tuned.graph.node}) == len(tuned.graph.node)
    report = json.loads((tmp_path / "tuned.tune.json").read_text())
    assert report["unfuse"] == sorted(chosen) and report["fused_groups"] == len(left)
    shape = (2,) + tuple(make_session(result.output).get_inputs()[0].shape[1:])
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    unfused = make_session(result.files["unfused"], with_library=False)
    (expected,) = unfused.run(None, {unfused.get_inputs()[0].name: x})
    tuned_session = make_session(out)
    (got,) = tuned_session.run(None, {tuned_session.get_inputs()[0].name: x})
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_tune_errors(converted, tmp_path, capsys):
    model = str(converted["MobileNet"].output)
    assert main(["tune", model, "--unfuse", "no_such_node", "-o", str(tmp_path / "t.onnx")]) == 2
    assert "no fused node named no_such_node" in capsys.readouterr().err
    assert not (tmp_path / "t.onnx").exists()
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert main(["tune", model, "-o", str(tmp_path / "t.onnx")]) == 2
        assert "no CUDA execution provider" in capsys.readouterr().err
        assert not (tmp_path / "t.onnx").exists()


def test_whole_model_check_unfuses_the_weakest_group_first(converted, monkeypatch):
    """fcm tune's whole-model check: while the tuned model is slower at some batch size, the kept
    group with the smallest lead in the per-group measurement is unfused, and the model is timed
    again (here with a stand-in timer: a model is slower at batch 1 while it holds a group that
    loses in the model)."""
    from fcm import tune

    fused = onnx.load(converted["MobileNetV2"].output)
    names = [n.name for n in _fused_nodes(fused)]
    assert len(names) >= 3
    leads = {name: 1.1 + 0.1 * i for i, name in enumerate(names)}  # names[0] leads least
    result = {"groups": {name: {"keep_fused": True, "batches": {"1": {"speedup": leads[name]}, "32": {"speedup": 2.0}}}
                         for name in names}}
    result["groups"][names[-1]]["keep_fused"] = False  # lost its own measurement
    losers_in_model = {names[0], names[1]}

    def stand_in(reference, tuned, batch, runs, warmup, progress):
        assert not any(n.domain == tune.DOMAIN for n in reference.graph.node)
        held = {n.name for n in tuned.graph.node if n.domain == tune.DOMAIN}
        slower = batch == 1 and held & losers_in_model
        return {"best": {"tf32": {"speedup": 0.97 if slower else 1.2}}}

    monkeypatch.setattr(tune, "bench_pair", stand_in)
    tune.verify_whole_model(fused, result, [1, 32], runs=1, warmup=0, progress=lambda message: None)
    steps = result["whole_model"]
    assert [len(step["fused_groups"]) for step in steps] == [len(names) - 1, len(names) - 2, len(names) - 3]
    assert steps[-1]["speedup"] == {"1": 1.2, "32": 1.2}
    assert result["unfuse"] == sorted([names[0], names[1], names[-1]])
    assert result["groups"][names[0]]["unfused_by"] == "whole-model check"


def test_plan_candidates_are_distinct_and_clamped(converted):
    """fcm tune's launch-plan grid: every candidate is one the kernels run as written (tile within
    the output, output-channel tile a multiple of 16 up to the output channels, a split that leaves
    no 32-channel share empty, a cluster only for splits of 2 to 16), and none twice."""
    from fcm import tune
    from fcm.bench import _value_shapes

    fused = onnx.load(converted["MobileNetV2"].output)
    initializers = {i.name: i for i in fused.graph.initializer}
    for batch in (1, 32):
        shapes = _value_shapes(fused, batch)
        for node in _fused_nodes(fused):
            plans = tune.plan_candidates(node, shapes, initializers)
            assert plans and len(plans) == len(set(plans))
            _, f, out_h, out_w = shapes[node.output[0]]
            weight = initializers[node.input[1]]
            m = weight.dims[0] if node.op_type.startswith("FusedPw") else shapes[node.input[0]][1]
            chunks = -(-m // 32)
            for plan in plans:
                pixels, tile, f_tile, split, buffers, direct, *cluster = plan.split(",")
                assert cluster in ([], ["1"]) and (not cluster or 2 <= int(split) <= 16)
                tile_h, tile_w = map(int, tile.split("x"))
                assert int(pixels) in (64, 128) and tile_h * tile_w <= int(pixels)
                assert tile_h <= out_h and tile_w <= out_w
                assert int(f_tile) % 16 == 0 and int(f_tile) <= max(16, -(-f // 16) * 16)
                share = -(-chunks // int(split))
                assert -(-chunks // share) == int(split) <= chunks
    assert tune._effective_split(8, 12) == 6 and tune._effective_split(64, 3) == 3 and tune._effective_split(5, 30) == 5


def test_tune_keeps_the_best_plan(converted, monkeypatch):
    """fcm tune with the plan search (stand-in timers): a group's time is its best plan's when that
    beats the kernels' own; the decision uses it; the kept group carries the winners per batch size
    in cuda_plans, a group whose own plan won carries none, and the tuned model computes the same."""
    from fcm import tune

    path = converted["MobileNetV2"].output
    fused = onnx.load(path)
    names = [n.name for n in _fused_nodes(fused)]
    slow, rescued, own_best = names[0], names[1], names[2]

    def groups(model, plan, batch, runs, warmup, progress):
        return [{"node": n, "fused_ms": 1.2 if n in (slow, rescued) else 0.5, "unfused_ms": 1.0,
                 "speedup": 1.0 / (1.2 if n in (slow, rescued) else 0.5)} for n in names]

    def plans(model, node, batch, runs, warmup, progress):
        best = 0.8 if node == rescued else 1.1 if node == slow else 0.6
        return {f"64,8x8,16,{batch},2,0": best, "128,8x16,32,1,2,0": best + 0.1, "64,4x16,256,1,1,0": "does not fit"}

    monkeypatch.setattr(tune, "bench_groups", groups)
    monkeypatch.setattr(tune, "search_plans", plans)
    monkeypatch.setattr(tune, "device_info", lambda: {"gpu": "stand-in"})
    monkeypatch.setattr("ort_custom_ops.library.library_kernels", lambda: {"cpu", "cuda"})
    import onnxruntime as ort
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    result = tune.measure(fused, [1, 2], 1, 0, 1.0, lambda message: None)
    assert result["unfuse"] == [slow]
    assert result["groups"][rescued]["batches"]["2"] == {
        "fused_ms": 0.8, "unfused_ms": 1.0, "speedup": 1.25, "own_plan_ms": 1.2, "faster": True,
        "plans": plans(None, rescued, 2, 1, 0, None), "plan": "64,8x8,16,2,2,0"}
    assert "plan" not in result["groups"][own_best]["batches"]["1"]  # 0.6 does not beat 0.5
    tuned = tune.with_plans(fused, result)
    attributes = {n.name: {a.name: a for a in n.attribute} for n in _fused_nodes(tuned)}
    assert attributes[rescued][tune.PLANS_ATTRIBUTE].s == b"1:64,8x8,16,1,2,0;2:64,8x8,16,2,2,0"
    assert tune.PLANS_ATTRIBUTE not in attributes[own_best]
    onnx.checker.check_model(tuned)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    sessions = [make_session(m) for m in (fused, tuned)]
    (a,), (b,) = (s.run(None, {s.get_inputs()[0].name: x}) for s in sessions)
    assert np.array_equal(a, b)


def test_tune_apply_reproduces_a_report(converted, tmp_path, capsys):
    """`fcm tune --apply REPORT`: an earlier tune's unfused groups and launch plans, without a GPU;
    a report of another model or not a report at all is a clear error that writes nothing."""
    from fcm import tune

    path = str(converted["MobileNetV2"].output)
    names = [n.name for n in _fused_nodes(onnx.load(path))]
    report = {"unfuse": [names[0]], "groups": {
        names[0]: {"keep_fused": False, "batches": {"1": {"fused_ms": 2.0, "unfused_ms": 1.0}}},
        names[1]: {"keep_fused": True, "batches": {"1": {"fused_ms": 0.5, "unfused_ms": 1.0, "plan": "64,8x8,16,2,2,0"},
                                                    "32": {"fused_ms": 0.5, "unfused_ms": 1.0}}}}}
    (tmp_path / "r.tune.json").write_text(json.dumps(report))
    out = tmp_path / "t.onnx"
    assert main(["tune", path, "--apply", str(tmp_path / "r.tune.json"), "-o", str(out)]) == 0
    tuned = onnx.load(out)
    left = {n.name: n for n in _fused_nodes(tuned)}
    assert names[0] not in left and len(left) == len(names) - 1
    plans = {a.name: a.s for a in left[names[1]].attribute}
    assert plans[tune.PLANS_ATTRIBUTE] == b"1:64,8x8,16,2,2,0"
    assert all(tune.PLANS_ATTRIBUTE not in {a.name for a in left[n].attribute} for n in names[2:])
    make_session(tuned)  # the library accepts the attribute
    capsys.readouterr()
    for name, text in (("other", json.dumps({"unfuse": ["fcm99_dwpw"], "groups": {}})), ("junk", "[1, 2")):
        (tmp_path / f"{name}.json").write_text(text)
        assert main(["tune", path, "--apply", str(tmp_path / f"{name}.json"), "-o", str(tmp_path / "x.onnx")]) == 2
        assert ("another model" if name == "other" else "not a tune report") in capsys.readouterr().err
        assert not (tmp_path / "x.onnx").exists()
