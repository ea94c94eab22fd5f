"""What ``fcm convert`` tells the user after a conversion: the GPU the plan is for (an assumed one
where there is none here) and the one command that tunes the model on the GPU it is deployed on;
the README's deployment section says the same."""

from __future__ import annotations

import re

from fcm.cli import main
from planner.gpus import detect_local
from fcm_core.errors import FcmError
from tests.support.fixtures import ROOT
from tests.support.tiny import tiny_keras


def _has_gpu() -> bool:
    try:
        detect_local()
    except FcmError:
        return False
    return True


def test_the_summary_says_to_tune_on_the_deployment_gpu(tmp_path, capsys):
    out = tmp_path / "out" / "tiny.onnx"
    assert main(["-q", "convert", str(tiny_keras(tmp_path)), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fused nodes (" in printed
    advice = [line for line in printed.splitlines() if line.startswith("next: ")]
    assert len(advice) == 1, printed
    assert f"`fcm tune {out} --batch 1,32`" in advice[0] and "the GPU you deploy on" in advice[0]
    if not _has_gpu():
        assert "planned for an assumed H100" in advice[0] and "no GPU here" in advice[0]
    report = out.with_name("tiny.report.md").read_text()
    assert "`fcm tune tiny.onnx --batch 1,32`" in report and str(out.parent) not in report  # the report keeps it


def test_the_readme_says_to_tune_where_the_model_is_deployed():
    readme = (ROOT / "README.md").read_text()
    deployment = readme.split("## Deploying a fused model", 1)[1].split("\n## ", 1)[0]
    assert "Tune on the GPU you deploy on" in deployment
    assert re.search(r"^fcm tune \S+\.onnx --batch 1,32", deployment, re.M)
