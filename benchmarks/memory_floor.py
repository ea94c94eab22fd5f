"""Each fused group's measured time against its memory floor: the time its unavoidable bytes (input
read once, output written once, weights read once, fp32) take at the measured device bandwidth.

    python benchmarks/memory_floor.py FOLDER MODEL.onnx [--batch 32]

In: a benchmark folder holding tune/<model>.tune.json (the groups' times from `fcm tune`, each
group's best launch plan, alone on the GPU) and bench/bench_<model>/bench.json (the device-to-device
copy bandwidth measured in the same session), and the planner's fused ONNX model (for the shapes and
weights). Out: a markdown table on stdout, per group: unavoidable MB, the floor, the measured time,
their ratio (the issue's bound is 1.5x), and the subgraph's time on ONNX Runtime for comparison.
Runs on CPU (shape inference only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx

from fcm.bench import _value_shapes, unavoidable_bytes


def rows(folder: Path, model_path: Path, batch: int) -> tuple[list[dict], float]:
    model = onnx.load(model_path)
    name = model_path.name.removesuffix(".onnx")
    tune = json.loads((folder / "tune" / f"{name}.tune.json").read_text())
    bandwidth = json.loads((folder / "bench" / f"bench_{name}" / "bench.json").read_text())["copy_bandwidth_gb_s"] * 1e9
    shapes = _value_shapes(model, batch)
    initializers = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        group = tune["groups"].get(node.name)
        if node.domain != "ai.fcm" or group is None:
            continue
        measured = group["batches"].get(str(batch))
        if measured is None:
            continue
        floor_bytes = unavoidable_bytes(node, shapes, initializers)
        floor_ms = floor_bytes / bandwidth * 1e3
        out.append({"group": node.name, "kept": group["keep_fused"], "unavoidable_mb": floor_bytes / 1e6,
                    "floor_ms": floor_ms, "fused_ms": measured["fused_ms"], "unfused_ms": measured["unfused_ms"],
                    "over_floor": measured["fused_ms"] / floor_ms, "unfused_over_floor": measured["unfused_ms"] / floor_ms})
    return out, bandwidth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("model", type=Path, help="the planner's fused model (<name>.onnx)")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    table, bandwidth = rows(args.folder, args.model, args.batch)
    print(f"batch {args.batch}, copy bandwidth {bandwidth / 1e9:.0f} GB/s\n")
    print("| group | kept | unavoidable MB | floor (ms) | fused (ms) | fused / floor | subgraph on ORT (ms) | subgraph / floor |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['group']} | {'yes' if r['kept'] else 'no'} | {r['unavoidable_mb']:.2f} | {r['floor_ms']:.4f} | "
              f"{r['fused_ms']:.4f} | {r['over_floor']:.1f}x | {r['unfused_ms']:.4f} | {r['unfused_over_floor']:.1f}x |")
    if table:
        within = sum(1 for r in table if r["over_floor"] <= 1.5)
        ratios = sorted(r["over_floor"] for r in table)
        print(f"\n{within} of {len(table)} groups within 1.5x of the floor; median {ratios[len(ratios) // 2]:.1f}x, "
              f"range {ratios[0]:.1f}-{ratios[-1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
