"""Every GPU kernel of one ONNX Runtime run, in launch order: its start, its duration and the idle gap
before it, for one or more models side by side.

    python benchmarks/kernel_timeline.py A.onnx [B.onnx ...] --batch 1 [--graph] [--nhwc] [--runs 5]
        [--with-library] [--json OUT.json]

In: ONNX models (a session registers the FCM library where the model has fused nodes, or for every
model with ``--with-library``), a batch size, a session configuration (CUDA graphs, ``prefer_nhwc``).
Out: per model, the kernels (and device copies and fills, kind "copy") of the last of ``--runs`` runs
(after ``--warmup`` runs outside the trace): name, start and duration in microseconds, gap before
it; and totals: kernels, copies, the sum of their durations, the span from the first start to the
last end, the sum of the gaps and their median; a JSON file.
The kernels come from CUPTI through ``torch.profiler``, which records the kernels of every library in
the process (ONNX Runtime's, cuDNN's, cuBLAS's and the FCM library's alike), CUDA-graph launches
included.

Why: at batch 1 a model's time is its kernels and the gaps between them. Nsight Compute times each
kernel alone, so it shows neither the gaps nor a cost paid once per run (MobileNetV3-Small's one-group
models are each 5-18 us slower than the source while all groups fused together cost nothing:
``benchmarks/2026-12-03-h200-pdl-overlap``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def kernels_of_one_run(session, inputs: dict, shapes: list, dtypes: list, runs: int, warmup: int) -> tuple[list[dict], str]:
    """The kernels of the last traced run (each run must launch the same number of kernels), as
    dicts of name, kind (kernel or copy), start_us (from the run's first kernel), duration_us and gap_us; and a note."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from fcm.measure import bind_buffers

    binding, kept_inputs, kept_outputs = bind_buffers(session, inputs, shapes, dtypes)
    for _ in range(warmup):
        session.run_with_iobinding(binding)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        for _ in range(runs):
            session.run_with_iobinding(binding)
        torch.cuda.synchronize()
    # copies and fills are listed too (kind "copy"): a graph holding one runs differently from a graph
    # of kernels only, so they are suspects for a cost paid across the whole run
    events = sorted((e for e in trace.events() if e.device_type == torch.autograd.DeviceType.CUDA and e.name),
                    key=lambda e: e.time_range.start)
    note = ""
    if runs > 1 and len(events) % runs == 0:
        events = events[len(events) - len(events) // runs:]
    elif runs > 1:
        note = f"{len(events)} kernels in {runs} runs: not the same count per run, all of them listed"
    rows = []
    first = events[0].time_range.start if events else 0.0
    previous_end = None
    for e in events:
        start, end = e.time_range.start, e.time_range.end
        kind = "copy" if e.name.startswith(("Memcpy", "Memset", "cudaMemcpy", "cudaMemset")) else "kernel"
        rows.append({"name": e.name, "kind": kind, "start_us": round(start - first, 2), "duration_us": round(end - start, 2),
                     "gap_us": round(start - previous_end, 2) if previous_end is not None else 0.0})
        previous_end = end if previous_end is None else max(previous_end, end)
    return rows, note


def median_gap_us(rows: list[dict]) -> float:
    """The median idle gap before each kernel of a run after its first (0 with fewer than two)."""
    return round(float(np.median([r["gap_us"] for r in rows[1:]])), 3) if len(rows) > 1 else 0.0


def add_session_arguments(parser: argparse.ArgumentParser, runs: int, runs_help: str, warmup: int) -> None:
    """The options of a traced session: --batch, --graph, --nhwc, --runs (``runs_help``), --warmup."""
    parser.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    parser.add_argument("--graph", action="store_true", help="CUDA graphs on (ONNX Runtime's enable_cuda_graph)")
    parser.add_argument("--nhwc", action="store_true", help="prefer_nhwc on")
    parser.add_argument("--runs", type=int, default=runs, help=f"{runs_help} (default: {runs})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"runs before them (default: {warmup})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="ONNX models")
    add_session_arguments(parser, 5, "traced runs; the last one is reported", 20)
    parser.add_argument("--with-library", action="store_true", help="register the FCM library for every model")
    parser.add_argument("--top", type=int, default=12, help="longest kernels listed per model (default: 12)")
    parser.add_argument("--json", default="", help="write everything here")
    args = parser.parse_args()

    import onnx
    from onnx import helper

    from fcm.measure import cuda_session, output_shapes, providers, random_feeds
    from ort_custom_ops.ops.schema import DOMAIN

    results = []
    for path in args.models:
        model = onnx.load(path)
        fused = any(n.domain == DOMAIN for n in model.graph.node)
        session = cuda_session(model, args.with_library or fused, providers(args.graph, args.nhwc))
        feeds = random_feeds(model, args.batch, np.random.default_rng(0))
        dtypes = [helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type) for o in model.graph.output]
        rows, note = kernels_of_one_run(session, feeds, output_shapes(model, args.batch), dtypes, args.runs, args.warmup)
        busy = sum(r["duration_us"] for r in rows)
        span = rows[-1]["start_us"] + rows[-1]["duration_us"] if rows else 0.0
        gaps = sum(max(r["gap_us"], 0.0) for r in rows)
        copies = sum(r["kind"] == "copy" for r in rows)
        total = {"kernels": len(rows) - copies, "copies": copies, "sum_us": round(busy, 1), "span_us": round(span, 1),
                 "gaps_us": round(gaps, 1), "median_gap_us": median_gap_us(rows)}
        results.append({"model": path, "library": args.with_library or fused, "total": total, "note": note, "kernels": rows})
        print(f"{path}: {total['kernels']} kernels and {copies} copies or fills, {total['sum_us']} us busy, span {total['span_us']} us, "
              f"gaps {total['gaps_us']} us (median {total['median_gap_us']}){' (' + note + ')' if note else ''}")
        for r in sorted(rows, key=lambda r: -r["duration_us"])[:args.top]:
            print(f"    {r['duration_us']:8.2f} us  gap {r['gap_us']:7.2f}  {r['name'][:110]}")
        del session
    if args.json:
        Path(args.json).write_text(json.dumps({"batch": args.batch, "graph": args.graph, "nhwc": args.nhwc, "runs": args.runs,
                                               "models": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
