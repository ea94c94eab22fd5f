"""benchmarks/summarize.py: a run's JSON results in one file, and a summarized run left whole."""

from __future__ import annotations

import json

from tests.support.scripts import benchmark_script


def test_summary_holds_every_result_and_is_not_rewritten_without_them(tmp_path, capsys):
    summarize = benchmark_script("summarize")
    run = tmp_path / "2026-01-01-run"
    (run / "tune").mkdir(parents=True)
    (run / "device.txt").write_text("GPU\n")
    (run / "tune" / "m.tune.json").write_text(json.dumps({"groups": {"g": {"batches": {"32": {"plans": {"a": 0.1, "b": "no"}}}}}}))
    (run / "blocks.json").write_text(json.dumps([1, 2]))
    (run / "trace.json").write_text(json.dumps({"batch": 1, "summary": [{"span_us": 9.5}], "runs": [[{"span_us": 9.4}], [{"span_us": 9.6}]]}))
    assert summarize.main([str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["device"] == "GPU" and sorted(summary["results"]) == ["blocks.json", "trace.json", "tune/m.tune.json"]
    assert summary["results"]["tune/m.tune.json"]["groups"]["g"]["batches"]["32"] == {"plans_timed": 1}
    # a phase trace keeps its medians, not each run's launches
    assert summary["results"]["trace.json"] == {"batch": 1, "summary": [{"span_us": 9.5}], "runs_traced": 2}
    # the raw files removed, as after a commit: summarizing again would drop the results, so it refuses
    (run / "blocks.json").unlink()
    before = (run / "summary.json").read_text()
    assert summarize.main([str(run)]) == 1
    assert (run / "summary.json").read_text() == before
    assert "blocks.json" in capsys.readouterr().err
