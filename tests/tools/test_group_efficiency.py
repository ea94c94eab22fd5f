"""benchmarks/group_efficiency.py: a fused group's multiply-adds, compulsory bytes, roofline bound and
efficiency, against the arithmetic done here by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import onnx
import pytest

from ort_custom_ops.ops.standalone import fused_model
from tests.support.specs import random_spec

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "group_efficiency.py"


def _script():
    spec = importlib.util.spec_from_file_location("group_efficiency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
