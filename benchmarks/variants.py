"""Several conversions of one model timed in one run: which rewrite pays, measured.

In: the source model (``<stem>.unfused.onnx``) and named fused variants of it (``NAME=PATH``:
the same model converted by different commits or options), batch sizes. Out (``--json``, and a
table on stdout): per batch, each model's median time in each configuration of the CUDA provider
(CUDA graphs on/off, ``prefer_nhwc`` on/off), its best, and its speedup over the source's best;
the largest difference of each variant's outputs from the source's.

How: every session is created once per batch and keeps its IO binding (a CUDA graph replays the
buffers it was captured with); after the warm-up runs, ``--rounds`` passes each time every session
for ``--runs`` runs in turn, so that drift of the clocks reaches all models alike; a model's time
in a configuration is the median over all its timed runs.

    python3 benchmarks/variants.py SRC.unfused.onnx main=A.onnx rule=B.onnx --batch 1,32 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fcm.measure import CONFIGS, bind_buffers, cuda_session, output_shapes, providers, random_feeds  # noqa: E402


def label(graph: bool, nhwc: bool) -> str:
    return f"graph={'on' if graph else 'off'},nhwc={'on' if nhwc else 'off'}"


def one_batch(models: dict[str, onnx.ModelProto], batch: int, configs, runs: int, warmup: int, rounds: int) -> dict:
    source = models["source"]
    feeds = random_feeds(source, batch, np.random.default_rng(batch))
    shapes = output_shapes(source, batch)
    dtypes = [helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type) for o in source.graph.output]
    timed = {}  # (name, label) -> (session, binding, kept buffers, times)
    for name, model in models.items():
        for graph, nhwc in configs:
            try:
                session = cuda_session(model, name != "source", providers(graph, nhwc))
                # conversions name their inputs as their source run did: matched by position
                own = dict(zip((i.name for i in session.get_inputs()), feeds.values()))
                binding, kept_inputs, outputs = bind_buffers(session, own, shapes, dtypes)
                for _ in range(warmup):
                    session.run_with_iobinding(binding)
            except Exception as exc:  # a configuration the runtime refuses is reported, not fatal
                print(f"batch {batch} {name} {label(graph, nhwc)}: {str(exc).splitlines()[0][:160]}", flush=True)
                continue
            timed[name, label(graph, nhwc)] = (session, binding, (kept_inputs, outputs), [])
    for _ in range(rounds):
        for session, binding, _, times in timed.values():
            for _ in range(runs):
                started = time.perf_counter()
                session.run_with_iobinding(binding)
                times.append((time.perf_counter() - started) * 1e3)
    result: dict = {"batch": batch, "models": {}}
    reference = [o.numpy().astype(np.float64) for o in timed[next(k for k in timed if k[0] == "source")][2][1]]
    scale = max(float(np.abs(r).max()) for r in reference) or 1.0
    for (name, config), (_, _, (_, outputs), times) in timed.items():
        entry = result["models"].setdefault(name, {"configs": {}})
        entry["configs"][config] = round(float(np.median(times)), 4)
        difference = max(float(np.abs(o.numpy().astype(np.float64) - r).max()) for o, r in zip(outputs, reference))
        entry["max_relative_difference"] = max(entry.get("max_relative_difference", 0.0), round(difference / scale, 6))
    for entry in result["models"].values():
        entry["best_config"] = min(entry["configs"], key=entry["configs"].get)
        entry["best_ms"] = entry["configs"][entry["best_config"]]
    source_ms = result["models"]["source"]["best_ms"]
    for entry in result["models"].values():
        entry["speedup"] = round(source_ms / entry["best_ms"], 3)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the source model (<stem>.unfused.onnx)")
    parser.add_argument("variants", nargs="+", help="NAME=PATH of each fused variant")
    parser.add_argument("--batch", default="1,32", help="batch sizes, comma-separated (default: 1,32)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per session and round (default: 50)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating passes (default: 4)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up runs per session (default: 20)")
    parser.add_argument("--graph-only", action="store_true", help="only the configurations with CUDA graphs")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    models = {"source": onnx.load(args.source)}
    for spec in args.variants:
        name, sep, path = spec.partition("=")
        if not sep or not name or name == "source" or name in models:
            parser.error(f"{spec!r}: give each variant as NAME=PATH with a new name other than 'source'")
        models[name] = onnx.load(path)
    configs = [c for c in CONFIGS if c[0]] if args.graph_only else CONFIGS
    results = []
    for batch in (int(b) for b in args.batch.split(",")):
        result = one_batch(models, batch, configs, args.runs, args.warmup, args.rounds)
        results.append(result)
        for name, entry in result["models"].items():
            print(f"{args.source.name} b{batch} {name:>10}: {entry['best_ms']:.4f} ms ({entry['best_config']}) "
                  f"{entry['speedup']:.3f}x  diff {entry['max_relative_difference']:.2e}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"source": str(args.source), "variants": args.variants, "runs": args.runs,
                                         "rounds": args.rounds, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
