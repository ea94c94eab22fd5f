"""Where a fused model's time goes in a timed run: the model cut into three pieces around its fused
nodes, each timed alone the way ``fcm bench`` times a model (GPU machine).

    python benchmarks/segment_times.py MODEL.tuned.onnx --batch 1,32 [-o segments.json]

In: a fused model (``fcm convert`` or ``fcm tune`` output). The pieces: the head (the graph's input to
the first fused node's input: the stem), the body (the first fused node's input to the last fused
node's output, with whatever lies between the fused nodes) and the tail (from there to the graph's
outputs). Out: per batch size, each piece's median time and the whole model's, each in its best
configuration of ONNX Runtime's CUDA provider (CUDA graphs on/off, prefer_nhwc on/off), as JSON and a
markdown table on stdout. The pieces' sum exceeds the whole by the fixed cost of two more runs; the
figures say what removing a piece's work could save, unlike Nsight Compute's per-kernel times,
which run each kernel alone with its caches flushed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.utils

from fcm.measure import CONFIGS, cuda_session, model_pieces, providers, time_session, value_shapes


def best_time(model: onnx.ModelProto, shapes: dict, runs: int, warmup: int, rng: np.random.Generator) -> dict:
    """``shapes``: the whole model's tensor shapes (a piece's own inference cannot see through the
    fused nodes at its edges)."""
    feeds = {i.name: rng.uniform(-1, 1, shapes[i.name]).astype(np.float32) for i in model.graph.input}
    outs = [shapes[o.name] for o in model.graph.output]
    results = []
    for graph, nhwc in CONFIGS:
        timing, _ = time_session(cuda_session(model, True, providers(graph, nhwc)), feeds, outs, runs, warmup)
        results.append((timing.median_ms, graph, nhwc))
    ms, graph, nhwc = min(results)
    return {"median_ms": round(ms, 4), "graph": graph, "nhwc": nhwc}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--batch", default="1,32", help="comma-separated batch sizes (default 1,32)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("-o", "--output", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    model = onnx.load(args.model)
    extractor = onnx.utils.Extractor(model)
    models = {"whole": model}
    for name, (inputs, outputs) in model_pieces(model).items():
        models[name] = extractor.extract_model(inputs, outputs)  # keeps the functions its nodes use
    rng = np.random.default_rng(0)
    report = {"model": args.model.name, "rows": []}
    for batch in [int(b) for b in args.batch.split(",")]:
        row = {"batch": batch}
        shapes = value_shapes(model, batch)
        for name, piece in models.items():
            print(f"batch {batch}: {name} ...", file=sys.stderr, flush=True)
            row[name] = best_time(piece, shapes, args.runs, args.warmup, rng)
        report["rows"].append(row)
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{args.model.name}: median ms, each piece in its best configuration\n")
    print("| batch | whole | head (to the first fused node) | body (the fused nodes) | tail | head + body + tail |")
    print("|---|---|---|---|---|---|")
    for row in report["rows"]:
        parts = sum(row[p]["median_ms"] for p in ("head", "body", "tail"))
        print(f"| {row['batch']} | {row['whole']['median_ms']:.3f} | {row['head']['median_ms']:.3f} | "
              f"{row['body']['median_ms']:.3f} | {row['tail']['median_ms']:.3f} | {parts:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
