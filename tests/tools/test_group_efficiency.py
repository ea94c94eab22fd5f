"""benchmarks/group_efficiency.py: a fused group's multiply-adds, compulsory bytes, roofline bound and
efficiency, against the arithmetic done here by hand."""

from __future__ import annotations

import json

import onnx
import pytest

from ort_custom_ops.ops.standalone import fused_model
from tests.support.scripts import benchmark_script
from tests.support.specs import random_spec


def _script():
    return benchmark_script("group_efficiency")


@pytest.mark.parametrize("channels_last", [True, False])
def test_work_bound_and_efficiency_of_a_block(channels_last, rng, tmp_path):
    n, c, m, f = 32, 16, 96, 24
    spec = random_spec(rng, "pwdwpw", c, kernel=3, stride=2, expand=m, out=f, channels_last=channels_last)
    model = fused_model(spec, 14, 14)
    model_path, tune_path = tmp_path / "m.onnx", tmp_path / "m.tune.json"
    onnx.save(model, model_path)
    report = {"groups": {"fcm0": {"keep_fused": True, "batches": {"32": {"fused_ms": 0.05, "speedup": 2.0}}},
                         "fcm9": {"keep_fused": False, "batches": {"32": {"fused_ms": 1.0}}}}}
    tune_path.write_text(json.dumps(report))
    text, data = _script().table(model_path, tune_path, n, bandwidth=4e12, peak=500e12, min_bound_us=5.0)
    (row,) = data["groups"]
    macs = n * 14 * 14 * c * m + n * 7 * 7 * m * 9 + n * 7 * 7 * m * f
    values = n * 14 * 14 * c + n * 7 * 7 * f + (m * c + m) + (m * 9 + m) + (f * m + f)
    assert row["macs"] == macs and row["bytes"] == 4 * values
    bound_us = max(4 * values / 4e12, 2 * macs / 500e12) * 1e6
    assert row["bound_us"] == pytest.approx(bound_us) and row["efficiency"] == pytest.approx(bound_us / 50.0)
    assert row["bound_by"] == ("bytes" if 4 * values / 4e12 > 2 * macs / 500e12 else "tensor cores")
    assert data["summary"]["kept_groups"] == 1  # the group tune unfused is not in the table
    assert ("under 5 µs" in text) and "fcm0" in text


def test_gpu_times_and_the_summary_over_models(rng, tmp_path):
    """Each group's efficiency on its GPU time too, and the median and lowest over every model's
    groups together, against the arithmetic done here."""
    script = _script()
    paths = []
    for stem, fused_ms, gpu_us in (("a", 0.05, 40.0), ("b", 0.10, 80.0)):
        spec = random_spec(rng, "pwdwpw", 32, kernel=3, stride=1, expand=192, out=32, channels_last=True)
        model_path, tune_path = tmp_path / f"{stem}.tuned.onnx", tmp_path / f"{stem}.tune.json"
        onnx.save(fused_model(spec, 28, 28), model_path)
        tune_path.write_text(json.dumps({"groups": {"fcm0": {"keep_fused": True, "batches": {"32": {"fused_ms": fused_ms}}}}}))
        gpu_path = tmp_path / f"{stem}.gpu_times.json"
        gpu_path.write_text(json.dumps({"model": f"{stem}.tuned.onnx", "groups": {"fcm0": {"gpu_us": gpu_us}}}))
        paths.append((model_path, tune_path, gpu_path))
    out = tmp_path / "table.md"
    args = [str(p) for model, tune, _ in paths for p in (model, tune)]
    assert script.main(args + ["--batch", "32", "--min-bound-us", "0", "--gpu-times", *(str(g) for *_, g in paths),
                               "-o", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    (a,), (b,) = data["models"]["a"]["groups"], data["models"]["b"]["groups"]
    assert a["bound_us"] == pytest.approx(b["bound_us"])  # (the same shapes)
    assert a["gpu_efficiency"] == pytest.approx(a["bound_us"] / 40.0) and b["efficiency"] == pytest.approx(b["bound_us"] / 100.0)
    summary = data["summary"]
    assert summary["groups_over_min_bound"] == 2
    assert summary["median_efficiency"] == pytest.approx((a["efficiency"] + b["efficiency"]) / 2)
    assert summary["lowest_gpu_efficiency"] == pytest.approx(b["gpu_efficiency"])
    assert "All 2 models" in out.read_text()


def test_a_model_without_its_tune_report_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _script().main([str(tmp_path / "a.onnx")])
    assert "followed by its tune report" in capsys.readouterr().err
