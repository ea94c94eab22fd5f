"""What each fused group gains in the whole model: the model with that one group fused against the
unfused model, per group, beside what ``fcm tune``'s per-group micro-benchmark said of it; first, as a
control, the unfused model in a session with the FCM library registered against one without.

    python benchmarks/group_in_model.py MODEL.onnx [--tune MODEL.tune.json] [--batch 1,32] [--runs 50] [--json OUT.json]

In: a fused model with ``fcm convert``'s companions beside it (``<stem>.unfused.onnx``, the DAG, weights
and plan: each one-group model is rewritten from the source as ``fcm tune`` builds its models), and
optionally the tune report of the same model. Out: per group and batch size, the unfused model's
time, the one-group model's time (each side in its best configuration, CUDA graphs and
``prefer_nhwc`` tried, as ``fcm bench`` times them), the difference in microseconds, and the
micro-benchmark's fused and subgraph times and their difference. Why: MobileNetV3-Small's groups
each beat their subgraphs in the micro-benchmark, yet the model with them fused is no faster
(``benchmarks/2026-12-03-h200-pixel-chain``); this says which groups' gains do not carry over.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a fused .onnx model with fcm convert's companions beside it")
    parser.add_argument("--tune", default="", help="the model's fcm tune report (.tune.json), for the micro-benchmark's figures")
    parser.add_argument("--batch", default="1,32", help="batch sizes, comma-separated (default: 1,32)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per configuration (default: 50)")
    parser.add_argument("--warmup", type=int, default=10, help="warm-up runs per configuration (default: 10)")
    parser.add_argument("--json", default="", help="write the results here")
    args = parser.parse_args()

    import onnx

    from fcm.measure import bench_pair
    from fcm.tune import TunedModels, load_conversion
    from ort_custom_ops.ops.schema import is_fused_group

    path = Path(args.model)
    model = onnx.load(path)
    conversion, why_not = load_conversion(model, path)
    if conversion is None:
        print(f"{path}: {why_not}", file=sys.stderr)
        return 2
    builder = TunedModels(model, conversion)
    names = [n.name for n in model.graph.node if is_fused_group(n)]
    micro = json.loads(Path(args.tune).read_text())["groups"] if args.tune else {}
    batches = [int(b) for b in args.batch.split(",")]
    quiet = lambda message: None  # noqa: E731
    rows = []
    print("group, batch: unfused model ms, model with the group fused ms, gain us | micro-benchmark: subgraph ms, fused ms, gain us")
    # first a control: the source model itself on the fused side, which registers the FCM library --
    # what having the library in the session costs with no group fused
    control = "(none: library only)"
    for name in [control] + names:
        alone = conversion.source if name == control else builder.build(other for other in names if other != name)
        for batch in batches:
            best = bench_pair(conversion.source, alone, batch, args.runs, args.warmup, quiet)["best"]["tf32"]
            unfused_ms, fused_ms = best["unfused"]["median_ms"], best["fused"]["median_ms"]
            row = {"group": name, "batch": batch, "unfused_model_ms": unfused_ms, "one_group_model_ms": fused_ms,
                   "gain_us": round(1e3 * (unfused_ms - fused_ms), 1)}
            timed = micro.get(name, {}).get("batches", {}).get(str(batch), {})
            if "fused_ms" in timed:
                row.update(micro_subgraph_ms=timed["unfused_ms"], micro_fused_ms=timed["fused_ms"],
                           micro_gain_us=round(1e3 * (timed["unfused_ms"] - timed["fused_ms"]), 1))
            rows.append(row)
            micro_text = (f"{row['micro_subgraph_ms']:.4f} {row['micro_fused_ms']:.4f} {row['micro_gain_us']:+.1f}"
                          if "micro_gain_us" in row else "-")
            print(f"  {name:16s} b{batch:<3d} {unfused_ms:.4f} {fused_ms:.4f} {row['gain_us']:+.1f} | {micro_text}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": str(path), "runs": args.runs, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
