"""Each fused group's measured time against its memory floor: the time its unavoidable bytes (input
read once, output written once, weights read once, fp32) take at the measured device bandwidth;
and against its compute floor: its pointwise multiply-accumulates at the TF32 tensor-core peak and
its depthwise ones at the FP32 peak (the larger of the two; the issue's 1.5x memory bound cannot be
met where this floor alone exceeds it).

    python benchmarks/memory_floor.py FOLDER MODEL.onnx [--batch 32] [--tf32-tflops 494.7 --fp32-tflops 66.9]

In: a benchmark folder holding tune/<model>.tune.json (the groups' times from `fcm tune`, each
group's best launch plan, alone on the GPU) and bench/bench_<model>/bench.json (the device-to-device
copy bandwidth measured in the same session), and the planner's fused ONNX model (for the shapes and
weights). Out: a markdown table on stdout, per group: unavoidable MB, both floors, the measured
time, its ratio to the memory floor (the issue's bound is 1.5x) and to the larger floor, and the
subgraph's time on ONNX Runtime for comparison. The peaks default to NVIDIA's dense figures for the
H100 and H200 SXM (494.7 TFLOP/s TF32 tensor, 66.9 TFLOP/s FP32, at the 1980 MHz boost clock).
Runs on CPU (shape inference only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx

from fcm.measure import fused_macs, unavoidable_bytes, value_shapes

# NVIDIA's dense peaks for the H100 and H200 SXM at the 1980 MHz boost clock
TF32_TFLOPS, FP32_TFLOPS = 494.7, 66.9


def rows(folder: Path, model_path: Path, batch: int, tf32_tflops: float = TF32_TFLOPS,
         fp32_tflops: float = FP32_TFLOPS) -> tuple[list[dict], float]:
    model = onnx.load(model_path)
    name = model_path.name.removesuffix(".onnx")
    tune = json.loads((folder / "tune" / f"{name}.tune.json").read_text())
    bandwidth = json.loads((folder / "bench" / f"bench_{name}" / "bench.json").read_text())["copy_bandwidth_gb_s"] * 1e9
    shapes = value_shapes(model, batch)
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
        macs = fused_macs(node, shapes, initializers)
        # a multiply-accumulate is two floating-point operations in the peak figures
        compute_ms = max(2 * macs["pw"] / (tf32_tflops * 1e12), 2 * macs["dw"] / (fp32_tflops * 1e12)) * 1e3
        out.append({"group": node.name, "kept": group["keep_fused"], "unavoidable_mb": floor_bytes / 1e6,
                    "floor_ms": floor_ms, "compute_floor_ms": compute_ms, "gmac": (macs["pw"] + macs["dw"]) / 1e9,
                    "fused_ms": measured["fused_ms"], "unfused_ms": measured["unfused_ms"],
                    "over_floor": measured["fused_ms"] / floor_ms,
                    "over_larger_floor": measured["fused_ms"] / max(floor_ms, compute_ms),
                    "unfused_over_floor": measured["unfused_ms"] / floor_ms})
    return out, bandwidth


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("model", type=Path, help="the planner's fused model (<name>.onnx)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tf32-tflops", type=float, default=TF32_TFLOPS, help="TF32 tensor-core peak, dense (default: H100/H200 SXM)")
    parser.add_argument("--fp32-tflops", type=float, default=FP32_TFLOPS, help="FP32 peak (default: H100/H200 SXM)")
    args = parser.parse_args()
    table, bandwidth = rows(args.folder, args.model, args.batch, args.tf32_tflops, args.fp32_tflops)
    print(f"batch {args.batch}, copy bandwidth {bandwidth / 1e9:.0f} GB/s; peaks {args.tf32_tflops} TFLOP/s TF32 tensor, "
          f"{args.fp32_tflops} TFLOP/s FP32\n")
    print("| group | kept | unavoidable MB | memory floor (ms) | GMAC | compute floor (ms) | fused (ms) | fused / memory floor | "
          "fused / larger floor | subgraph on ORT (ms) | subgraph / memory floor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['group']} | {'yes' if r['kept'] else 'no'} | {r['unavoidable_mb']:.2f} | {r['floor_ms']:.4f} | "
              f"{r['gmac']:.3f} | {r['compute_floor_ms']:.4f} | {r['fused_ms']:.4f} | {r['over_floor']:.1f}x | "
              f"{r['over_larger_floor']:.1f}x | {r['unfused_ms']:.4f} | {r['unfused_over_floor']:.1f}x |")
    if table:
        within = sum(1 for r in table if r["over_floor"] <= 1.5)
        beyond = sum(1 for r in table if r["compute_floor_ms"] > 1.5 * r["floor_ms"])
        ratios = sorted(r["over_floor"] for r in table)
        larger = sorted(r["over_larger_floor"] for r in table)
        print(f"\n{within} of {len(table)} groups within 1.5x of the memory floor; median {ratios[len(ratios) // 2]:.1f}x, "
              f"range {ratios[0]:.1f}-{ratios[-1]:.1f}x. For {beyond} of {len(table)}, the compute floor alone is above 1.5x "
              f"the memory floor. Over the larger floor: median {larger[len(larger) // 2]:.1f}x, range {larger[0]:.1f}-{larger[-1]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
