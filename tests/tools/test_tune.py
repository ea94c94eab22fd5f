"""`fcm tune`: unfusing groups, the whole-model check, launch-plan search and --apply, how the tuned model is
built (the source rewritten with the kept groups, or the fused model unfused) and checked before it is written
(stand-in timers here: the measurements run on the GPU machine)."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from fcm.cli import main
from fcm.measure import value_shapes
from ort_custom_ops.ops.launch_plan import PLANS_ATTRIBUTE, effective_split, node_plan_candidates, plan_candidates
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import DOMAIN, is_channels_last, is_fused_group


def _fused_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if is_fused_group(n)]

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
    # a function for each group left, and for each convolution layer the rewrite of the source makes
    assert len(tuned.functions) == len([n for n in tuned.graph.node if n.domain == DOMAIN]) >= len(left)
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


def _whole_model_case(converted, monkeypatch, losers_of):
    """MobileNetV2's groups with per-group leads (names[0] the weakest), the last lost alone, and a
    stand-in timer: a model is slower at batch 1 while it holds one of ``losers_of(names)``."""
    from fcm import tune

    fused = onnx.load(converted["MobileNetV2"].output)
    names = [n.name for n in _fused_nodes(fused)]
    assert len(names) >= 8
    leads = {name: 1.1 + 0.1 * i for i, name in enumerate(names)}
    result = {"groups": {name: {"keep_fused": True, "batches": {"1": {"speedup": leads[name]}, "32": {"speedup": 5.0}}}
                         for name in names}}
    result["groups"][names[-1]]["keep_fused"] = False  # lost its own measurement
    losers_in_model = losers_of(names)

    def stand_in(reference, tuned, batch, runs, warmup, progress, unfused_side=None):
        assert not any(is_fused_group(n) for n in reference.graph.node)
        held = {n.name for n in tuned.graph.node if is_fused_group(n)}
        slower = batch == 1 and held & losers_in_model
        given.append((batch, unfused_side))
        return {"unfused": unfused_side or {"tf32": {"timed at": batch}}, "best": {"tf32": {"speedup": 0.97 if slower else 1.2}}}

    given = []

    monkeypatch.setattr(tune, "bench_pair", stand_in)
    tune.verify_whole_model(fused, result, [1, 32], runs=1, warmup=0, progress=lambda message: None)
    # the source model is timed once per batch size: every later step takes that side as it is
    assert [side for _, side in given[:2]] == [None, None]
    assert all(side == {"tf32": {"timed at": batch}} for batch, side in given[2:])
    return names, result


def test_whole_model_check_keeps_the_most_strongest_groups(converted, monkeypatch):
    """fcm tune's whole-model check: while the tuned model is slower at some batch size, the weakest
    kept groups (smallest per-group lead) are unfused, 1, 2, 4, ... at a time, then the interval
    halved: the most of the strongest groups with which the model is not slower stay fused."""
    names, result = _whole_model_case(converted, monkeypatch, lambda names: {names[0], names[1]})
    kept = len(names) - 1
    steps = result["whole_model"]
    assert [len(step["fused_groups"]) for step in steps] == [kept, kept - 1, kept - 3, kept - 2]
    chosen = [step for step in steps if step.get("chosen")]
    assert len(chosen) == 1 and len(chosen[0]["fused_groups"]) == kept - 2
    assert chosen[0]["speedup"] == {"1": 1.2, "32": 1.2}
    assert result["unfuse"] == sorted([names[0], names[1], names[-1]])
    assert result["groups"][names[0]]["unfused_by"] == "whole-model check"
    assert "unfused_by" not in result["groups"][names[2]]


def test_whole_model_check_where_every_group_loses_measures_few_times(converted, monkeypatch):
    """A model slower with any group fused (the strongest loses in the model): a handful of
    measurements, not one per group, and every group unfused."""
    names, result = _whole_model_case(converted, monkeypatch, lambda names: {names[-2]})
    kept = len(names) - 1
    counts = [len(step["fused_groups"]) for step in result["whole_model"]]
    assert counts[:3] == [kept, kept - 1, kept - 3] and counts[-1] == 1
    assert len(counts) <= 2 + 2 * kept.bit_length()
    assert not any(step.get("chosen") for step in result["whole_model"])
    assert result["unfuse"] == sorted(names)


def test_plan_candidates_are_distinct_and_clamped(rng):
    """fcm tune's launch-plan grid for NCHW nodes (the chain kernels): every candidate is one the
    kernels run as written (tile within the output, output-channel tile a multiple of 16 up to the
    output channels, a split that leaves no 32-channel share empty, a cluster only for splits of 2
    to 16), and none twice. (Channels-last nodes take the block kernels' own candidates.)"""
    from ort_custom_ops.ops.standalone import fused_model
    from tests.support.specs import random_spec

    for kind, c, expand, out, size, stride in (("pwdwpw", 24, 144, 24, 56, 1), ("pwdwpw", 160, 960, 320, 7, 1),
                                              ("dwpw", 32, None, 16, 112, 1), ("pwdw", 16, 96, None, 28, 2)):
        spec = random_spec(rng, kind, c, stride=stride, expand=expand, out=out)
        model = fused_model(spec)
        node = model.graph.node[0]
        initializers = {i.name: i for i in model.graph.initializer}
        f = spec.stages[-1].out_channels
        out_size = -(-size // stride)
        for batch in (1, 32):
            shapes = {node.input[0]: [batch, c, size, size], node.output[0]: [batch, f, out_size, out_size]}
            plans = node_plan_candidates(node, shapes, initializers)
            assert plans == plan_candidates(node, shapes, initializers)
            assert plans and len(plans) == len(set(plans))
            m = spec.stages[0].out_channels if kind.startswith("pw") else c
            chunks = -(-m // 32)
            for plan in plans:
                pixels, tile, f_tile, split, buffers, direct, *cluster = plan.split(",")
                assert cluster in ([], ["1"]) and (not cluster or 2 <= int(split) <= 16)
                tile_h, tile_w = map(int, tile.split("x"))
                assert int(pixels) in (64, 128) and tile_h * tile_w <= int(pixels)
                assert tile_h <= out_size and tile_w <= out_size
                assert int(f_tile) % 16 == 0 and int(f_tile) <= max(16, -(-f // 16) * 16)
                share = -(-chunks // int(split))
                assert -(-chunks // share) == int(split) <= chunks
    assert effective_split(8, 12) == 6 and effective_split(64, 3) == 3 and effective_split(5, 30) == 5


def _measure_with_stand_ins(monkeypatch, fused, groups, plans) -> dict:
    """fcm tune's measurements at batch sizes 1 and 2 with stand-in group timings and plan searches
    (and a stand-in GPU), for the decisions alone."""
    from fcm import tune

    monkeypatch.setattr(tune, "bench_groups", groups)
    monkeypatch.setattr(tune, "search_plans", plans)
    monkeypatch.setattr(tune, "device_info", lambda: {"gpu": "stand-in"})
    monkeypatch.setattr("ort_custom_ops.ops.library.library_kernels", lambda: {"cpu", "cuda"})
    import onnxruntime as ort
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    return tune.measure(fused, [1, 2], 1, 0, 1.0, lambda message: None)


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

    def plans(model, node, batch, runs, warmup, progress, shapes):
        best = 0.8 if node == rescued else 1.1 if node == slow else 0.6
        # block-kernel plans: the converted model's fused nodes are channels last
        return {f"8x8,16,{batch},3": best, "4x16,32,1,4": best + 0.1, "9x9,16,1,3": "does not fit"}

    result = _measure_with_stand_ins(monkeypatch, fused, groups, plans)
    assert result["unfuse"] == [slow]
    assert result["groups"][rescued]["batches"]["2"] == {
        "fused_ms": 0.8, "unfused_ms": 1.0, "speedup": 1.25, "own_plan_ms": 1.2, "faster": True,
        "plans": plans(None, rescued, 2, 1, 0, None, None), "plan": "8x8,16,2,3"}
    assert "plan" not in result["groups"][own_best]["batches"]["1"]  # 0.6 does not beat 0.5
    tuned = tune.with_plans(fused, result)
    attributes = {n.name: {a.name: a for a in n.attribute} for n in _fused_nodes(tuned)}
    assert attributes[rescued][PLANS_ATTRIBUTE].s == b"1:8x8,16,1,3;2:8x8,16,2,3"
    assert PLANS_ATTRIBUTE not in attributes[own_best]
    onnx.checker.check_model(tuned)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    sessions = [make_session(m) for m in (fused, tuned)]
    (a,), (b,) = (s.run(None, {s.get_inputs()[0].name: x}) for s in sessions)
    assert np.array_equal(a, b)


def test_groups_of_one_problem_share_a_plan_search(converted, monkeypatch):
    """Groups alike in op, attributes and input shapes (MobileNetV2's three 64 -> 384 -> 64 blocks at
    14x14) are searched once per batch size; each still compares the shared times with its own."""
    from fcm import tune

    fused = onnx.load(converted["MobileNetV2"].output)
    names = [n.name for n in _fused_nodes(fused)]
    searched = []

    def groups(model, plan, batch, runs, warmup, progress):
        return [{"node": n, "fused_ms": 0.5, "unfused_ms": 1.0, "speedup": 2.0} for n in names]

    def plans(model, node, batch, runs, warmup, progress, shapes):
        assert shapes == value_shapes(fused, batch)  # the batch's shapes, inferred once by the caller
        searched.append((node, batch))
        return {"8x8,16,1,3": 0.4}

    result = _measure_with_stand_ins(monkeypatch, fused, groups, plans)
    initializers = {i.name: i for i in fused.graph.initializer}
    nodes = {n.name: n for n in _fused_nodes(fused)}
    for batch in (1, 2):
        shapes = value_shapes(fused, batch)
        problems = {tune.problem_key(nodes[n], shapes, initializers) for n in names}
        assert len(problems) < len(names)  # some blocks repeat
        assert sorted(n for n, b in searched if b == batch) == sorted(
            next(n for n in names if tune.problem_key(nodes[n], shapes, initializers) == p) for p in problems)
        for name in names:
            entry = result["groups"][name]["batches"][str(batch)]
            assert entry["plan"] == "8x8,16,1,3" and entry["fused_ms"] == 0.4
            if "plans_of" in entry:  # reused from the first group of its problem
                assert (entry["plans_of"], batch) in searched and entry["plans_of"] != name
                assert tune.problem_key(nodes[entry["plans_of"]], shapes, initializers) == tune.problem_key(
                    nodes[name], shapes, initializers)
    assert sum("plans_of" in result["groups"][n]["batches"]["2"] for n in names) == len(names) - len(
        [n for n, b in searched if b == 2])


def test_plan_search_forces_each_plan_through_the_node(converted, monkeypatch):
    """fcm tune times each candidate plan on a copy of the node alone whose cuda_plans holds that
    plan at the batch size, strict (a plan it cannot run fails instead of falling back to the
    kernels' own), and records a plan that fails as its error (stand-in sessions here)."""
    from fcm import tune
    from fcm.measure import Timing
    from ort_custom_ops.ops.launch_plan import STRICT_ATTRIBUTE

    fused = onnx.load(converted["MobileNetV2"].output)
    node = _fused_nodes(fused)[3]
    seen = []

    def session(model, with_library, providers):
        (alone,) = _fused_nodes(model)
        values = {a.name: onnx.helper.get_attribute_value(a) for a in alone.attribute}
        if PLANS_ATTRIBUTE not in values:  # the kernels' own plan: the outputs' reference
            return None
        seen.append((values[PLANS_ATTRIBUTE].decode(), values[STRICT_ATTRIBUTE]))
        if seen[-1][0].endswith("9x9,16,1,3"):
            raise RuntimeError("FCM CUDA: a tile holds 1 to 64 output pixels\nmore")
        return seen[-1][0]

    monkeypatch.setattr(tune, "node_plan_candidates", lambda n, shapes, inits: ["8x8,16,1,3", "9x9,16,1,3"])
    monkeypatch.setattr(tune, "cuda_session", session)
    monkeypatch.setattr(tune, "time_session", lambda session, feeds, shapes, *args: (Timing(0.25, 0.2, 0.3, 1), [np.ones(shapes[0])]))
    times = tune.search_plans(fused, node.name, 2, 1, 0, lambda message: None)
    assert seen == [("2:8x8,16,1,3", 1), ("2:9x9,16,1,3", 1)]
    assert times == {"8x8,16,1,3": 0.25, "9x9,16,1,3": "FCM CUDA: a tile holds 1 to 64 output pixels"}


def test_plan_search_refuses_a_plan_that_computes_something_else(converted, monkeypatch):
    """A candidate plan whose output is not the kernels' own plan's (beyond PLAN_AGREEMENT) is
    recorded as an error, never timed as a winner, however fast; one within the bound is timed
    (stand-in sessions and outputs here)."""
    from fcm import tune
    from fcm.measure import Timing

    fused = onnx.load(converted["MobileNetV2"].output)
    node = _fused_nodes(fused)[3]

    def session(model, with_library, providers):
        (alone,) = _fused_nodes(model)
        values = {a.name: onnx.helper.get_attribute_value(a) for a in alone.attribute}
        return values[PLANS_ATTRIBUTE].decode() if PLANS_ATTRIBUTE in values else "own"

    def time_session(session, feeds, shapes, *args):
        out = np.full(shapes[0], 2.0)  # largest output 2: bound 2 x PLAN_AGREEMENT for fp32
        if session.endswith("8x8,16,1,3"):
            out = out + 0.5 * tune.PLAN_AGREEMENT[onnx.TensorProto.FLOAT]  # within the bound
        elif session.endswith("4x16,16,1,3"):
            out = out + 0.1  # a wrong result, and the fastest
        return Timing(0.1 if session.endswith("4x16,16,1,3") else 0.3, 0.1, 0.3, 1), [out]

    monkeypatch.setattr(tune, "node_plan_candidates", lambda n, shapes, inits: ["8x8,16,1,3", "4x16,16,1,3"])
    monkeypatch.setattr(tune, "cuda_session", session)
    monkeypatch.setattr(tune, "time_session", time_session)
    times = tune.search_plans(fused, node.name, 2, 1, 0, lambda message: None)
    assert times["8x8,16,1,3"] == 0.3
    assert times["4x16,16,1,3"].startswith("output differs from the kernels' own plan's by 0.1 ")


def test_tune_refuses_the_plan_override(converted, monkeypatch):
    """FCM_CUDA_PLAN (the kernels' debugging override) would force its plan on every node measured."""
    from fcm import tune
    from fcm_core.errors import FcmError

    monkeypatch.setenv("FCM_CUDA_PLAN", "8x8,16,1,3")
    with pytest.raises(FcmError, match="FCM_CUDA_PLAN is set"):
        tune.measure(onnx.load(converted["MobileNetV2"].output), [1], 1, 0, 1.0, lambda message: None)


def test_tune_apply_reproduces_a_report(converted, tmp_path, capsys):
    """`fcm tune --apply REPORT`: an earlier tune's unfused groups and launch plans, without a GPU;
    a report of another model or not a report at all is a clear error that writes nothing."""
    path = str(converted["MobileNetV2"].output)
    names = [n.name for n in _fused_nodes(onnx.load(path))]
    report = {"unfuse": [names[0]], "groups": {
        names[0]: {"keep_fused": False, "batches": {"1": {"fused_ms": 2.0, "unfused_ms": 1.0}}},
        names[1]: {"keep_fused": True, "batches": {"1": {"fused_ms": 0.5, "unfused_ms": 1.0, "plan": "8x8,16,2,3"},
                                                    "32": {"fused_ms": 0.5, "unfused_ms": 1.0}}}}}
    (tmp_path / "r.tune.json").write_text(json.dumps(report))
    out = tmp_path / "t.onnx"
    assert main(["tune", path, "--apply", str(tmp_path / "r.tune.json"), "-o", str(out)]) == 0
    tuned = onnx.load(out)
    left = {n.name: n for n in _fused_nodes(tuned)}
    assert names[0] not in left and len(left) == len(names) - 1
    plans = {a.name: a.s for a in left[names[1]].attribute}
    assert plans[PLANS_ATTRIBUTE] == b"1:8x8,16,2,3"
    assert all(PLANS_ATTRIBUTE not in {a.name for a in left[n].attribute} for n in names[2:])
    make_session(tuned)  # the library accepts the attribute
    capsys.readouterr()
    for name, text in (("other", json.dumps({"unfuse": ["fcm99_dwpw"], "groups": {}})), ("junk", "[1, 2")):
        (tmp_path / f"{name}.json").write_text(text)
        assert main(["tune", path, "--apply", str(tmp_path / f"{name}.json"), "-o", str(tmp_path / "x.onnx")]) == 2
        assert ("another model" if name == "other" else "not a tune report") in capsys.readouterr().err
        assert not (tmp_path / "x.onnx").exists()


def test_whole_model_check_measures_against_the_source_model(converted, monkeypatch):
    """The whole-model check times the tuned model against fcm convert's <stem>.unfused.onnx (what
    users compare with, and what fcm bench measures), not against the fused model with every group
    unfused, whose layout differs: a tune that ends faster than the latter could be slower than the
    source (stand-in timer: the source is faster than anything holding a fused group)."""
    from fcm import tune

    result_paths = converted["MobileNetV2"]
    fused = onnx.load(result_paths.output)
    source = onnx.load(result_paths.files["unfused"])
    assert tune.unfused_companion(result_paths.output) == result_paths.files["unfused"]
    names = [n.name for n in _fused_nodes(fused)]
    result = {"groups": {name: {"keep_fused": True, "batches": {"1": {"speedup": 1.5}}} for name in names}}
    seen = []

    def stand_in(reference, tuned, batch, runs, warmup, progress, unfused_side=None):
        is_source = reference.SerializeToString() == source.SerializeToString()
        seen.append(is_source)
        held = any(is_fused_group(n) for n in tuned.graph.node)
        return {"unfused": {}, "best": {"tf32": {"speedup": 0.9 if is_source and held else 1.1}}}

    monkeypatch.setattr(tune, "bench_pair", stand_in)
    tune.verify_whole_model(fused, result, [1], runs=1, warmup=0, progress=lambda message: None, baseline=source)
    assert seen and all(seen)
    assert result["unfuse"] == sorted(names)  # every group lost against the source
    # without a baseline, the reference is the all-unfused fused model (the stand-in calls it even)
    result = {"groups": {name: {"keep_fused": True, "batches": {"1": {"speedup": 1.5}}} for name in names}}
    seen.clear()
    tune.verify_whole_model(fused, result, [1], runs=1, warmup=0, progress=lambda message: None)
    assert seen and not any(seen) and result["unfuse"] == []


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(n.op_type for n in model.graph.node))


def _copy_conversion(result, folder) -> Path:
    """The fused model and its companions copied into ``folder``: the fused model's path."""
    for path in result.files.values():
        shutil.copy(path, folder / path.name)
    return folder / result.output.name


def _outputs(model, x: np.ndarray, with_library: bool = True) -> np.ndarray:
    session = make_session(model, with_library=with_library)
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    return y


def test_a_tune_that_unfuses_every_group_writes_the_source(converted, tmp_path):
    """Every group unfused (a channels-last conversion): the tuned model is the source graph, node
    for node, not the fused model with its groups' bodies put back (whose layout cleanup leaves
    Reshapes and Constants the source does not have)."""
    result = converted["MobileNetV2"]
    fused, source = onnx.load(result.output), onnx.load(result.files["unfused"])
    names = [n.name for n in _fused_nodes(fused)]
    assert all(is_channels_last(n) for n in _fused_nodes(fused))
    out = tmp_path / "t.onnx"
    assert main(["tune", str(result.output), "--unfuse", ",".join(names), "-o", str(out)]) == 0
    tuned = onnx.load(out)
    assert _op_counts(tuned) == _op_counts(source) and not _fused_nodes(tuned)
    assert [n.name for n in tuned.graph.node] == [n.name for n in source.graph.node]
    report = json.loads((tmp_path / "t.tune.json").read_text())
    assert report["built_from"] == "source" and "fallback_reason" not in report
    assert report["output_check"]["against"] == str(result.files["unfused"])


def test_a_tune_keeping_some_groups_rewrites_the_source(converted, tmp_path, rng):
    """Some groups kept (--apply, with launch plans): the kept nodes are the fused model's with
    their plans, the rest of the graph is the source rewritten with those groups alone (far fewer
    Reshapes and no Constants, against the fused model with the other groups' bodies put back),
    and the model computes what the source does."""
    from extractor.dag import Dag
    from ort_custom_ops.lowering.transposes import spatial_mean_products
    from ort_custom_ops.lowering.rewrite import rewrite
    from ort_custom_ops.lowering.unfuse import unfuse

    result = converted["MobileNetV3Small"]
    fused = onnx.load(result.output)
    names = [n.name for n in _fused_nodes(fused)]
    kept = names[1::3]
    unfused = sorted(set(names) - set(kept))
    report = {"unfuse": unfused, "groups": {name: {"keep_fused": True, "batches": {
        "1": {"fused_ms": 0.5, "unfused_ms": 1.0, "plan": f"8x8,16,{i + 1},3"}}} for i, name in enumerate(kept)}}
    (tmp_path / "r.tune.json").write_text(json.dumps(report))
    out = tmp_path / "t.onnx"
    assert main(["tune", str(result.output), "--apply", str(tmp_path / "r.tune.json"), "-o", str(out)]) == 0
    tuned = onnx.load(out)
    assert json.loads((tmp_path / "t.tune.json").read_text())["built_from"] == "source"

    fused_nodes = {n.name: n for n in _fused_nodes(fused)}
    tuned_nodes = {n.name: n for n in _fused_nodes(tuned)}
    assert sorted(tuned_nodes) == sorted(kept)
    for i, name in enumerate(kept):
        attributes = {a.name: a for a in tuned_nodes[name].attribute}
        assert attributes.pop(PLANS_ATTRIBUTE).s == f"1:8x8,16,{i + 1},3".encode()
        assert attributes == {a.name: a for a in fused_nodes[name].attribute}
        assert tuned_nodes[name].op_type == fused_nodes[name].op_type
        assert len(tuned_nodes[name].input) == len(fused_nodes[name].input)

    source = onnx.load(result.files["unfused"])
    plan = json.loads(result.files["plan"].read_text())
    subset = {**plan, "groups": [g for g in plan["groups"] if f"fcm{g['id']}_{g['kind']}" in kept]}
    alone = rewrite(source, Dag.load(result.files["dag"], result.files["weights"]), subset, "nhwc").model
    assert _op_counts(tuned) == _op_counts(alone)
    unfolded = unfuse(fused, unfused)
    by_unfusing = _op_counts(unfolded)
    counts = _op_counts(tuned)
    assert "Constant" not in counts and by_unfusing["Constant"] > 0
    for op in ("Reshape", "Transpose"):
        assert counts.get(op, 0) <= by_unfusing.get(op, 0)
    assert counts["Reshape"] < by_unfusing["Reshape"]
    # each of the source's means is one ReduceMean in both, or a MatMul (with the Transpose it reads)
    # where it reads an NHWC map (fewer of those where fewer groups are fused around the
    # squeeze-and-excitation blocks)
    means = [_op_counts(m).get("ReduceMean", 0) + len(spatial_mean_products(m)) for m in (tuned, unfolded)]
    assert means == [_op_counts(source)["ReduceMean"]] * 2
    assert len(spatial_mean_products(tuned)) <= len(spatial_mean_products(unfolded))

    x = rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    expected = _outputs(result.files["unfused"], x, with_library=False)
    assert np.abs(_outputs(tuned, x) - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("case", ["no dag", "another plan", "group skipped", "node differs"])
def test_a_tune_falls_back_to_unfusing(converted, tmp_path, monkeypatch, case):
    """Without the conversion's companions (or with a companion the fused model was not written
    with), or where the rewrite does not give a kept group as the fused model has it, the tuned
    model is the fused model with the groups' bodies put back, and the report says why."""
    from fcm import tune
    from ort_custom_ops.lowering.unfuse import unfuse

    path = _copy_conversion(converted["MobileNetV2"], tmp_path)
    fused = onnx.load(path)
    names = [n.name for n in _fused_nodes(fused)]
    unfused = names[::2]
    if case == "no dag":
        (tmp_path / "MobileNetV2.dag.json").unlink()
    elif case == "another plan":
        with open(tmp_path / "MobileNetV2.plan.json", "a") as plan:
            plan.write("\n")
    else:
        real = tune.rewrite

        def unfaithful(*args, **options):
            result = real(*args, **options)
            if case == "group skipped":
                result.skipped.append({"group": 1, "kind": "pwdw", "layers": [3, 4], "reason": "stand-in"})
            else:
                node = next(n for n in result.model.graph.node if is_fused_group(n))
                node.attribute.append(onnx.helper.make_attribute("allow_tf32", 0))
            return result

        monkeypatch.setattr(tune, "rewrite", unfaithful)
    out = tmp_path / "t.onnx"
    assert main(["tune", str(path), "--unfuse", ",".join(unfused), "-o", str(out)]) == 0
    report = json.loads((tmp_path / "t.tune.json").read_text())
    assert report["built_from"] == "unfused fused model"
    assert {"no dag": "no MobileNetV2.dag.json beside the model",
            "another plan": "not the file MobileNetV2.onnx was converted with",
            "group skipped": "left group 1 unfused (stand-in)",
            "node differs": "differ from the fused model's: " + names[1]}[case] in report["fallback_reason"]
    tuned = onnx.load(out)
    assert tuned.graph == unfuse(fused, unfused).graph
    against = str(path) if case in ("no dag", "another plan") else str(tmp_path / "MobileNetV2.unfused.onnx")
    assert report["output_check"]["against"] == against


def test_a_tuned_model_that_computes_otherwise_is_not_written(converted, tmp_path, monkeypatch, capsys):
    """The check before writing: a tuned model whose outputs differ from the source's (here a kept
    node's weights doubled) is an error, and nothing is written."""
    from fcm import tune

    real = tune.rewritten_source

    def doubled(model, conversion, kept):
        tuned = real(model, conversion, kept)
        weight = next(n for n in tuned.graph.node if is_fused_group(n)).input[1]
        tensor = next(t for t in tuned.graph.initializer if t.name == weight)
        tensor.CopyFrom(onnx.numpy_helper.from_array(2 * onnx.numpy_helper.to_array(tensor), weight))
        return tuned

    monkeypatch.setattr(tune, "rewritten_source", doubled)
    path = converted["MobileNetV2"].output
    names = [n.name for n in _fused_nodes(onnx.load(path))]
    out = tmp_path / "t.onnx"
    assert main(["tune", str(path), "--unfuse", names[0], "-o", str(out)]) == 2
    assert "the tuned model's outputs differ from MobileNetV2.unfused.onnx's" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "t.tune.json").exists()


def test_the_models_timed_are_built_as_the_one_written(converted, tmp_path, monkeypatch):
    """The whole-model check times tuned models built from the source, as the one written (stand-in
    timers: the model is slower while it holds its weakest kept group)."""
    from fcm import tune

    result = converted["MobileNetV2"]
    names = [n.name for n in _fused_nodes(onnx.load(result.output))]
    kept = names[::2]

    def measured(model, batches, runs, warmup, margin, progress, plans=True):
        groups = {name: {"keep_fused": name in kept, "batches": {"1": {"speedup": 1.5 + i / 100}}}
                  for i, name in enumerate(names)}
        return {"groups": groups, "unfuse": sorted(set(names) - set(kept))}

    timed = []

    def stand_in(reference, tuned, batch, runs, warmup, progress, unfused_side=None):
        timed.append(tuned)
        return {"unfused": {}, "best": {"tf32": {"speedup": 0.9 if kept[0] in {n.name for n in tuned.graph.node} else 1.1}}}

    monkeypatch.setattr(tune, "measure", measured)
    monkeypatch.setattr(tune, "bench_pair", stand_in)
    out = tmp_path / "t.onnx"
    report = tune.tune(result.output, out, [1], 1, 0, 1.0, None, lambda message: None)
    assert len(timed) == 2 and report["unfuse"] == sorted(set(names) - set(kept[1:]))
    assert report["built_from"] == "source"
    assert all("Constant" not in _op_counts(model) for model in timed)
    assert onnx.load(out).graph == timed[-1].graph


@pytest.fixture(scope="module")
def half_converted(tmp_path_factory):
    """fp16 MobileNetV2 at 96x96 (fcm convert --precision fp16, a few verification images)."""
    from fcm.pipeline.convert import ConvertOptions, convert
    from tests.support.fixtures import keras_model

    out = tmp_path_factory.mktemp("half") / "mobilenet_v2.onnx"
    return convert(keras_model("MobileNetV2", input_size=96, logits=True), out,
                   ConvertOptions(gpu="H100", batch=32, precision="fp16", samples=16))


def test_a_half_model_is_tuned_by_unfusing_and_checked_in_its_precision(half_converted, tmp_path, monkeypatch, capsys):
    """fcm tune on an fp16 model: the named groups become their fp16 subgraphs, the rest stay fused
    in fp16, and the tuned model is checked against the unfused fp16 model with fcm verify's bound
    for half models before it is written; a tuned model outside that bound is an error, nothing
    written."""
    from fcm import tune
    from fcm.pipeline.verify import derived_bound, model_precision

    path = half_converted.output
    fused = onnx.load(path)
    names = [n.name for n in _fused_nodes(fused)]
    chosen = [names[0], names[len(names) // 2]]
    out = tmp_path / "tuned.onnx"
    assert main(["tune", str(path), "--unfuse", ",".join(chosen), "-o", str(out)]) == 0
    tuned = onnx.load(out)
    assert model_precision(tuned) == "fp16"
    assert {n.name for n in _fused_nodes(tuned)} == set(names) - set(chosen)
    report = json.loads((tmp_path / "tuned.tune.json").read_text())
    check = report["output_check"]
    assert check["against"] == str(half_converted.files["unfused"])
    assert derived_bound("fp16", 1) < check["bound"] and check["relative_error"] <= check["bound"]
    assert report["built_from"] == "unfused fused model"

    # a tuned model that computes something else: its outputs are off by far more than the bound
    real_unfuse = tune.unfuse

    def wrong(model, unfused):
        built = real_unfuse(model, unfused)
        weight = next(t for t in built.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16 and len(t.dims) == 2)
        array = onnx.numpy_helper.to_array(weight) * np.float16(1.5)
        weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
        return built

    monkeypatch.setattr(tune, "unfuse", wrong)
    bad = tmp_path / "bad.onnx"
    capsys.readouterr()
    assert main(["tune", str(path), "--unfuse", chosen[0], "-o", str(bad)]) == 2
    assert "the tuned model's outputs differ from mobilenet_v2.unfused.onnx's" in capsys.readouterr().err
    assert not bad.exists() and not (tmp_path / "bad.tune.json").exists()


def test_the_groups_of_a_half_model_are_timed_in_its_precision(half_converted, monkeypatch):
    """fcm tune's per-group measurement (fcm.measure.bench_groups) on an fp16 conversion, with the CPU
    standing in for the GPU: every group's node and its subgraph build, run in fp16 and agree within
    the half bound; the bytes a group cannot avoid are counted in fp16."""
    from fcm import measure
    from fcm.pipeline.verify import derived_bound

    real_time = measure.time_session
    configs = []  # (the library, the provider options) of each session made

    def session(model, with_library, providers):
        configs.append((with_library, providers[0][1]["enable_cuda_graph"], providers[0][1]["prefer_nhwc"]))
        return make_session(model, with_library=with_library)

    monkeypatch.setattr(measure, "cuda_session", session)
    monkeypatch.setattr(measure, "time_session", lambda *args, **kwargs: real_time(*args, **{**kwargs, "device": "cpu"}))
    fused = onnx.load(half_converted.output)
    rows = measure.bench_groups(fused, None, 2, runs=1, warmup=0, progress=lambda message: None)
    assert len(rows) == len(_fused_nodes(fused))
    # per group: the node with CUDA graphs off and on; its subgraph in all four configurations (with
    # prefer_nhwc too: the source model may run faster in NHWC), the fastest kept
    per_group = Counter(configs)
    assert per_group == {**{(True, g, "0"): len(rows) for g in "01"}, **{(False, g, n): len(rows) for g in "01" for n in "01"}}
    assert all(isinstance(row["unfused_nhwc"], bool) for row in rows)
    assert all("error" not in row for row in rows), [row for row in rows if "error" in row]
    assert all(row["fused_ms"] > 0 and row["unfused_ms"] > 0 for row in rows)
    assert all(row["max_relative_difference"] <= derived_bound("fp16", 8) for row in rows)
    shapes = measure.value_shapes(fused, 2)
    weights = {t.name: t for t in fused.graph.initializer}
    first = next(n for n in _fused_nodes(fused) if n.name == rows[0]["node"])
    elements = sum(int(np.prod(weights[name].dims if name in weights else shapes[name]))
                   for name in list(first.input) + list(first.output) if name)
    assert rows[0]["unavoidable_bytes"] == 2 * elements  # two bytes an fp16 value
