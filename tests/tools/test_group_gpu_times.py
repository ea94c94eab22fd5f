"""benchmarks/group_gpu_times.py: runs' GPU spans from a trace of their kernels (the part that needs
no GPU)."""

from __future__ import annotations

import pytest

from tests.support.scripts import benchmark_script


def _script():
    return benchmark_script("group_gpu_times")


def test_spans_of_runs_of_two_kernels_and_a_fill():
    # three runs, each a fill, a depthwise pass and a GEMM, listed out of order
    runs = [(1000.0, [("Memset", 0, 1), ("dw", 2, 12), ("gemm", 13, 40)]),
            (2000.0, [("Memset", 0, 1), ("dw", 3, 14), ("gemm", 15, 45)]),
            (3000.0, [("Memset", 0, 2), ("dw", 2, 12), ("gemm", 12, 38)])]
    events = [(name, base + start, base + end) for base, kernels in runs for name, start, end in kernels]
    spans, names = _script().run_spans(list(reversed(events)), 3)
    assert spans == [40.0, 45.0, 38.0]
    assert names == ["Memset", "dw", "gemm"]


@pytest.mark.parametrize("events, runs", [([("k", 0.0, 1.0)] * 3, 2), ([], 1),
                                          ([("a", 0.0, 1.0), ("b", 5.0, 6.0)], 2)])
def test_traces_that_do_not_split_into_runs_of_the_same_kernels_are_refused(events, runs):
    with pytest.raises(ValueError):
        _script().run_spans(events, runs)
