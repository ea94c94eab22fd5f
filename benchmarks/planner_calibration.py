"""How well the planner's cost model predicts the measured fused groups.

In: a folder of `fcm bench` results (``bench_<model>/bench.json``, each group row carrying the
planner's prediction for the plan's batch size). Out (stdout, markdown): per model and over the
zoo, at the plan's batch size, the Spearman rank correlation of predicted and measured times (the
fused kernel, its unfused subgraph, the speedup), the median ratio of measured to predicted time,
and how often the planner's decision to fuse (it fused every group in the file, predicting a
saving) was right, that is, the group measured faster than its subgraph.

    python benchmarks/planner_calibration.py benchmarks/2026-11-21-h200-cuda-v4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from planner.calibration import spearman


def rows_of(report: dict) -> list[dict]:
    """The group rows measured at the batch size their plan was made for."""
    out = []
    for batch, rows in report.get("groups", {}).items():
        for row in rows:
            planner = row.get("planner") or {}
            if "fused_ms" in row and planner.get("plan_batch") == int(batch) and planner.get("time_us"):
                out.append({"node": row["node"], "fused_us": 1e3 * row["fused_ms"], "unfused_us": 1e3 * row["unfused_ms"],
                            "pred_fused_us": planner["time_us"], "pred_unfused_us": planner["unfused_time_us"]})
    return out


def summary(name: str, rows: list[dict]) -> str:
    fused = np.array([r["fused_us"] for r in rows])
    unfused = np.array([r["unfused_us"] for r in rows])
    pred_fused = np.array([r["pred_fused_us"] for r in rows])
    pred_unfused = np.array([r["pred_unfused_us"] for r in rows])
    right = int(np.sum(fused < unfused))
    return (f"| {name} | {len(rows)} | {spearman(pred_fused, fused):.2f} | {spearman(pred_unfused, unfused):.2f} | "
            f"{spearman(pred_unfused / pred_fused, unfused / fused):.2f} | {np.median(fused / pred_fused):.1f}x | "
            f"{np.median(unfused / pred_unfused):.1f}x | {right} of {len(rows)} ({100.0 * right / len(rows):.0f}%) |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a folder holding bench_<model>/bench.json files")
    args = parser.parse_args(argv)
    reports = sorted(Path(args.folder).glob("bench_*/bench.json"))
    if not reports:
        print(f"no bench_*/bench.json under {args.folder}", file=sys.stderr)
        return 2
    lines = ["| model | groups | rank corr. fused time | rank corr. subgraph time | rank corr. speedup | "
             "measured / predicted, fused | measured / predicted, subgraph | fusing was right |",
             "|---|---|---|---|---|---|---|---|"]
    everything = []
    for path in reports:
        rows = rows_of(json.loads(path.read_text()))
        if rows:
            lines.append(summary(path.parent.name.removeprefix("bench_"), rows))
            everything += rows
    if not everything:
        print("no group rows with the planner's prediction at its plan's batch size", file=sys.stderr)
        return 2
    lines.append(summary("all", everything))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
