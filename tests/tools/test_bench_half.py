"""`fcm bench` for half-precision models and the torch.compile anchor, with stand-ins for what runs on
the GPU machine: the child process that times torch.compile (a stand-in runner returns its output),
and the report built from measurements (a synthetic one)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from fcm.anchors import TORCHVISION, best_mode, torch_compile_anchor
from fcm.bench import anchors_table, markdown, run
from fcm.pipeline.verify import model_precision
from fcm_core.errors import FcmError
from fcm_core.vocabulary import KINDS
from ort_custom_ops.ops.library import library_cuda_float_ops, library_kernels
from ort_custom_ops.ops.standalone import fused_model
from tests.support.specs import random_spec


def _child_output(modes: dict) -> str:
    return json.dumps({"arch": "mobilenet_v2", "precision": "fp16", "modes": modes, "eager": {"median_ms": 3.0}})


def test_the_anchor_takes_the_faster_compile_mode_and_keeps_failures():
    calls = []

    def runner(command, limit_s):
        calls.append(command)
        batch = int(command[command.index("--one") + 3])
        if batch == 64:
            return 1, "", "Traceback ...\nRuntimeError: out of memory"
        modes = {"max-autotune": {"median_ms": 1.2 * batch}, "reduce-overhead": {"median_ms": 1.0 * batch}}
        if batch == 32:
            modes["reduce-overhead"] = {"error": "RuntimeError: graph capture failed"}
        return 0, "compiling...\n" + _child_output(modes), ""

    out = torch_compile_anchor("mobilenet_v2", "fp16", [1, 32, 64], 224, runs=10, warmup=2, runner=runner,
                               available=lambda: True)
    assert out["arch"] == "mobilenet_v2" and out["precision"] == "fp16"
    assert out["batches"]["1"]["best"] == {"mode": "reduce-overhead", "median_ms": 1.0}
    assert out["batches"]["32"]["best"] == {"mode": "max-autotune", "median_ms": 38.4}
    assert out["batches"]["64"] == {"error": "RuntimeError: out of memory"}
    assert all(c[c.index("--one") + 1:c.index("--one") + 5] == ["mobilenet_v2", "fp16", c[c.index("--one") + 3], "224"]
               for c in calls)


@pytest.mark.parametrize("arch, available, reason", [
    (None, True, "no torchvision version"), ("xception", True, "not a torchvision architecture"),
    ("mobilenet_v2", False, "torch and torchvision are not installed")])
def test_the_report_says_why_there_is_no_torch_anchor(arch, available, reason):
    def runner(command, limit_s):  # pragma: no cover (must not be called)
        raise AssertionError("no child for an absent anchor")

    out = torch_compile_anchor(arch, "bf16", [1], 224, 10, 2, runner=runner, available=lambda: available)
    assert reason in out["absent"]


def test_the_anchor_times_only_the_modes_asked_for():
    """--torch-modes reduce-overhead: the child is told the mode, and the table names it alone."""
    calls = []

    def runner(command, limit_s):
        calls.append(command)
        return 0, _child_output({"reduce-overhead": {"median_ms": 1.1}}), ""

    out = torch_compile_anchor("mobilenet_v2", "fp16", [1, 32], 224, 10, 2, runner=runner, available=lambda: True,
                               modes=("reduce-overhead",))
    assert [c[c.index("--modes") + 1] for c in calls] == ["reduce-overhead", "reduce-overhead"]
    assert out["modes"] == ["reduce-overhead"] and out["batches"]["32"]["best"]["mode"] == "reduce-overhead"
    text = "\n".join(anchors_table(_report(out)))
    assert "channels-last, reduce-overhead only." in text
    both = torch_compile_anchor("mobilenet_v2", "fp16", [1], 224, 10, 2, runner=runner, available=lambda: True)
    assert calls[-1][calls[-1].index("--modes") + 1] == "max-autotune,reduce-overhead"
    assert "the better of max-autotune and reduce-overhead." in "\n".join(anchors_table(_report(both)))


@pytest.mark.parametrize("modes", ["fast", "", "max-autotune,default"])
def test_bench_refuses_unknown_torch_modes(modes, tmp_path, capsys):
    from fcm.cli import main

    assert main(["bench", str(tmp_path / "m.unfused.onnx"), "--torch-modes", modes]) != 0
    assert "--torch-modes takes some of max-autotune, reduce-overhead" in capsys.readouterr().err


def test_no_mode_timed_gives_no_best():
    assert "best" not in best_mode({"modes": {"max-autotune": {"error": "x"}}})


def _report(torch: dict) -> dict:
    best = {"unfused": {"config": "graph=on,nhwc=on", "median_ms": 1.85},
            "fused": {"config": "graph=on,nhwc=off", "median_ms": 0.74}, "speedup": 2.5}
    return {"unfused": "m.unfused.onnx", "fused": "m.onnx", "precision": "fp16", "runs": 100, "warmup": 20,
            "device": {"gpu": "stand-in", "driver": "0", "onnxruntime": "1.31.1"}, "notes": ["a note"],
            "batches": [{"batch": 32, "best": {"tf32": best}}], "groups": {},
            "anchors": {"onnxruntime": "m.unfused.onnx, fp16, best configuration (the unfused side)", "torch_compile": torch}}


def test_one_table_shows_every_alternative():
    torch = {"arch": "mobilenet_v2", "precision": "fp16",
             "batches": {"32": {"best": {"mode": "max-autotune", "median_ms": 1.06}}}}
    text = "\n".join(anchors_table(_report(torch)))
    assert "## The alternatives (fp16, same run)" in text
    assert "| 32 | 1.850 | 0.740 | 1.060 | max-autotune | 2.50x | 1.43x |" in text
    page = markdown(_report(torch), "fcm bench m.unfused.onnx --precision fp16")
    assert "Precision: fp16." in page and "Note: a note." in page and "| 32 | 1.850 |" in page
    assert "| 32 | fp16 | 1.850 |" in page  # the mode column names the half precision, not TF32


def test_an_absent_torch_anchor_is_named_in_the_table():
    text = "\n".join(anchors_table(_report({"absent": "torch and torchvision are not installed on this machine"})))
    assert "torch.compile: none (torch and torchvision are not installed on this machine)." in text
    row = next(line for line in text.splitlines() if line.startswith("| 32 |"))
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "32", "1.850", "0.740", "torch and torchvision are not installed on this machine", "", "2.50x", ""]


def test_the_library_runs_every_half_op_on_cuda_when_built_with_cuda():
    """Built with CUDA, the library runs the fp16 and bf16 ops on the CUDA provider (so fcm bench adds
    no note); built without, no float op."""
    ops = library_cuda_float_ops()
    if "cuda" in library_kernels():
        assert {kind.op_type(p) for kind in KINDS.values() for p in ("fp16", "bf16")} <= ops
    else:
        assert ops == set()


def test_the_torch_anchor_covers_the_torchvision_architectures():
    assert set(TORCHVISION) == {"mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0"}


def test_bench_checks_the_precision_before_it_needs_a_gpu(tmp_path, rng):
    import dataclasses

    spec = dataclasses.replace(random_spec(rng, "pwdwpw", 8), precision="bf16")
    fused = tmp_path / "m.onnx"
    onnx.save(fused_model(spec), fused)
    onnx.save(fused_model(random_spec(rng, "pwdwpw", 8)), tmp_path / "m.unfused.onnx")
    assert model_precision(onnx.load(fused)) == "bf16"
    with pytest.raises(FcmError, match="the fused model is bf16, not fp16"):
        run(tmp_path / "m.unfused.onnx", fused, [1], 1, 1, None, False, False, print, precision="fp16")
    with pytest.raises(FcmError, match="--exact-fp32 times fp32 models without TF32; this one is bf16"):
        run(tmp_path / "m.unfused.onnx", fused, [1], 1, 1, None, False, True, print)


def test_timing_binds_half_inputs_and_outputs(rng, tmp_path):
    """fcm bench binds a model's inputs and outputs in their own element type (fp16 for --io half);
    the same code on the CPU device here, its outputs against the session's own run."""
    import dataclasses

    from fcm.measure import random_feeds, time_session
    from ort_custom_ops.ops.library import make_session

    spec = dataclasses.replace(random_spec(rng, "pwdwpw", 8), precision="fp16")
    model = fused_model(spec)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    feeds = random_feeds(model, 2, rng)
    assert all(a.dtype == np.float16 for a in feeds.values())
    session = make_session(model)
    (want,) = session.run(None, feeds)
    timing, (got,) = time_session(session, feeds, [list(want.shape)], runs=3, warmup=1, output_dtypes=[np.float16],
                                  device="cpu")
    assert got.dtype == np.float16 and timing.median_ms > 0
    np.testing.assert_array_equal(got, want)


def test_the_torch_anchor_is_found_for_tuned_and_converted_files():
    """fcm tune writes mobilenet_v2.tuned.onnx: the anchor's architecture is the name before the
    first dot (the file's stem alone, mobilenet_v2.tuned, named none)."""
    from pathlib import Path

    from fcm.bench import default_torch_arch

    assert default_torch_arch(Path("/m/mobilenet_v2.tuned.onnx")) == "mobilenet_v2"
    assert default_torch_arch(Path("/m/efficientnet_b0.onnx")) == "efficientnet_b0"
    assert default_torch_arch(Path("/m/xception.tuned.onnx")) is None
    assert default_torch_arch(Path("/m/my_net.onnx")) is None


def test_the_torch_anchor_is_skipped_only_when_not_asked_for():
    """--torch none: no anchor timed and the report says it was not asked for; "auto" on a file with
    no torchvision architecture asks the anchor, which names why it is absent."""
    from pathlib import Path

    from fcm.anchors import torch_compile_anchor
    from fcm.bench import torch_anchor

    calls = []

    def stand_in(arch, precision, batches, size, runs, warmup, modes):
        calls.append(arch)
        return torch_compile_anchor(arch, precision, batches, size, runs, warmup, available=lambda: False, modes=modes)

    skipped = torch_anchor(None, Path("/m/mobilenet_v2.onnx"), "fp32", [1], 224, 3, 1, lambda m: None, stand_in)
    assert skipped == {"absent": "not asked for (--torch none)"} and calls == []
    auto = torch_anchor("auto", Path("/m/my_net.onnx"), "fp32", [1], 224, 3, 1, lambda m: None, stand_in)
    assert calls == [None] and auto == {"absent": "no torchvision version of this architecture"}
    named = torch_anchor("auto", Path("/m/mobilenet_v2.tuned.onnx"), "fp32", [1], 224, 3, 1, lambda m: None, stand_in)
    assert calls[-1] == "mobilenet_v2" and "not installed" in named["absent"]


def test_the_group_table_says_where_the_subgraph_ran_in_nhwc():
    """A group's subgraph is timed in every provider configuration; where prefer_nhwc won, the
    table says so beside its time."""
    report = _report({"absent": "not asked for"})
    row = {"op": "FusedDwPw", "fused_ms": 0.12, "unfused_ms": 0.1, "speedup": 0.83, "unavoidable_bytes": 2e6,
           "achieved_gb_s": 16.7}
    report["groups"] = {"32": [{**row, "node": "fcm0_dwpw", "unfused_nhwc": True},
                               {**row, "node": "fcm1_dwpw", "unfused_nhwc": False}]}
    page = markdown(report, "fcm bench m.unfused.onnx")
    assert "| fcm0_dwpw | 0.1200 | 0.1000 (NHWC) | 0.83x |" in page
    assert "| fcm1_dwpw | 0.1200 | 0.1000 | 0.83x |" in page
