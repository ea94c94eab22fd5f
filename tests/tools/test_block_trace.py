"""benchmarks/block_trace.py: the fused-block kernels' phase records read back (the part that needs no
GPU), and their layout against ort_custom_ops/csrc/cuda/block/trace.h."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.support.scripts import benchmark_script

TRACE_H = Path(__file__).resolve().parents[2] / "ort_custom_ops" / "csrc" / "cuda" / "block" / "trace.h"


def _script():
    return benchmark_script("block_trace")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_the_phases_and_the_record_size_are_those_of_trace_h():
    text = TRACE_H.read_text()
    enum = re.search(r"enum TracePhase : int \{(.*?)\};", text, re.S).group(1)
    names = re.findall(r"^\s*kTrace(\w+)", enum, re.M)
    assert names[-1] == "Phases"
    assert [_snake(n) for n in names[:-1]] == _script().PHASES
    size = int(re.search(r"static_assert\(sizeof\(TraceRecord\) == (\d+)", text).group(1))
    assert _script().RECORD.itemsize == size


def _records(script, rows):
    """rows: (launch, cta, output, times by phase name) -> a record array with two empty slots."""
    records = np.zeros(len(rows) + 2, dtype=script.RECORD)
    for k, (launch, cta, output, times) in enumerate(rows, start=1):
        records[k]["launch"], records[k]["cta"], records[k]["output"] = launch, cta, output
        records[k]["shape"] = [1, 96, 576, 96, 14, 14, 2]
        records[k]["t"] = [times.get(p, 0) for p in script.PHASES]
    return records


def test_a_run_s_launches_their_spans_gaps_and_phase_medians():
    script = _script()
    base = {"entry": 1000, "barriers": 2000, "inputs": 2500, "operands": 4500, "first_chunk": 5500,
            "chunks": 7500, "shares": 8500, "stored": 9500, "exit": 10000}
    late = {p: t + 400 for p, t in base.items()} | {"chunks": 8900}  # its chunks took 1 us longer
    second = {"entry": 12000, "barriers": 12500, "inputs": 13000, "operands": 14000, "stored": 16000, "exit": 17000}
    # listed out of order: the later launch first
    launches = script.launches_of(_records(script, [(8, 0, 77, second), (7, 1, 55, late), (7, 0, 55, base)]))
    assert [x["launch"] for x in launches] == [7, 8]
    first, after = launches
    assert first["ctas"] == 2 and first["shape"] == "1x14x14 96-576-96" and first["split"] == 2
    assert first["span_us"] == pytest.approx(9.4)  # 1000 -> 10400
    assert first["entry_spread_us"] == pytest.approx(0.4)
    phases = first["phases_us"]
    assert phases["barriers"] == pytest.approx(1.0) and phases["operands"] == pytest.approx(2.0)
    assert phases["chunks"] == pytest.approx(2.5)  # the median of 2.0 and 3.0
    assert "issued" not in phases  # no CTA reached it
    # a phase counts from the latest earlier one its CTA reached (stored after operands here)
    assert after["phases_us"]["stored"] == pytest.approx(2.0)
    assert after["gap_us"] == pytest.approx(1.6)  # 10400 -> 12000
    assert "gap_us" not in first


def test_a_launch_whose_ctas_did_not_all_exit_has_no_span():
    script = _script()
    times = {"entry": 1000, "barriers": 1500, "exit": 3000}
    launches = script.launches_of(_records(script, [(3, 0, 5, times), (3, 1, 5, {"entry": 1100, "barriers": 1600})]))
    assert launches[0]["span_us"] is None and launches[0]["last_exit"] == 0
