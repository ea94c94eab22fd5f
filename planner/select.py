"""Choosing which candidates to fuse: a consistent set that saves the most predicted time.

In: the windows of one chain, each ``(start, length, saving)`` over positions ``0..n-1``.
Out: the chosen windows, non-overlapping, with the largest total saving.

Candidates only ever overlap along a chain (a stage has at most one successor and one
predecessor), so the whole-graph optimum is the sum of the chains' optima, each found exactly by
dynamic programming over positions (weighted interval scheduling). :func:`select_greedy` is the
pairwise-greedy rule kept for comparison.
"""

from __future__ import annotations

from typing import Sequence

Window = tuple[int, int, float]  # (start, length, saving)


def select_optimal(n: int, windows: Sequence[Window]) -> list[int]:
    """Indices of the windows (into ``windows``) of the best non-overlapping set."""
    ending_at: dict[int, list[int]] = {}
    for index, (start, length, saving) in enumerate(windows):
        if saving > 0 and 0 <= start and start + length <= n:
            ending_at.setdefault(start + length, []).append(index)
    best = [0.0] * (n + 1)  # best[i]: best saving using positions [0, i)
    choice: list[int | None] = [None] * (n + 1)
    for end in range(1, n + 1):
        best[end], choice[end] = best[end - 1], None
        for index in ending_at.get(end, []):
            start, _, saving = windows[index]
            if best[start] + saving > best[end] + 1e-15:
                best[end], choice[end] = best[start] + saving, index
    chosen = []
    position = n
    while position > 0:
        index = choice[position]
        if index is None:
            position -= 1
        else:
            chosen.append(index)
            position = windows[index][0]
    return sorted(chosen)


def select_greedy(windows: Sequence[Window]) -> list[int]:
    """The most saving window first, then the next that does not overlap, and so on."""
    taken: set[int] = set()
    chosen = []
    for index in sorted(range(len(windows)), key=lambda i: -windows[i][2]):
        start, length, saving = windows[index]
        cells = set(range(start, start + length))
        if saving > 0 and not cells & taken:
            taken |= cells
            chosen.append(index)
    return sorted(chosen)


def total_saving(windows: Sequence[Window], chosen: Sequence[int]) -> float:
    return sum(windows[i][2] for i in chosen)
