"""Each fused group's GPU time: the span of its kernels in one run of the node alone (CUPTI).

    python benchmarks/group_gpu_times.py M.tuned.onnx [M2.tuned.onnx ...] --batch 32 [--runs 50] -o DIR

In: fused models (``fcm tune``'s output: its fused nodes are the groups it kept, carrying the launch
plans that won in their ``cuda_plans`` attribute). Out: per model, ``DIR/<stem>.gpu_times.json``:
per fused node, alone on ONNX Runtime's CUDA provider with CUDA graphs on and its inputs and output
bound to device buffers (as ``fcm tune`` times it), the median over ``--runs`` runs of the span from
its first kernel's start to its last kernel's end (copies and fills included: a three-pass group's
zeroing is its work; a BF16 group's span holds the Casts ``timing_feeds`` puts at its edges, numpy
having no bf16), the kernels in a run and their names; and the host's median wall clock around the
same runs.

Why: ``fcm tune``'s group times are the host's clock around each run, which adds ONNX Runtime's
per-run cost (binding, launching the graph, waiting for it) to every group. The roofline bound
that ``group_efficiency.py`` divides by a time is the GPU's; its ``--gpu-times`` takes these files
and reports the efficiency on both times. The kernels come from CUPTI through ``torch.profiler``
(the GPU machine has PyTorch), as in ``kernel_timeline.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_spans(events: list[tuple[str, float, float]], runs: int) -> tuple[list[float], list[str]]:
    """The span (us) of each of ``runs`` runs that launched the same kernels, from ``events``
    (name, start us, end us) of all of them, and one run's kernel names in launch order. A
    ValueError where the events do not split into ``runs`` runs of the same kernels."""
    if runs < 1 or not events or len(events) % runs:
        raise ValueError(f"{len(events)} kernels in {runs} runs: not the same kernels per run")
    ordered = sorted(events, key=lambda e: e[1])
    per_run = len(ordered) // runs
    names = [e[0] for e in ordered[:per_run]]
    spans = []
    for i in range(runs):
        run = ordered[i * per_run:(i + 1) * per_run]
        if [e[0] for e in run] != names:
            raise ValueError(f"run {i} launched other kernels than run 0")
        spans.append(max(e[2] for e in run) - min(e[1] for e in run))
    return spans, names


def traced_spans(session, feeds: dict, out_shapes: list, dtype, runs: int, warmup: int) -> tuple[list[float], list[str], list[float]]:
    """``runs`` runs of ``session`` traced: their GPU spans (us), one run's kernel names, and the
    host's wall clock of each run (ms)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from fcm.measure import bind_buffers

    binding, _inputs, _outputs = bind_buffers(session, feeds, out_shapes, [dtype])
    for _ in range(warmup):
        session.run_with_iobinding(binding)
    torch.cuda.synchronize()
    host = []
    with profile(activities=[ProfilerActivity.CUDA]) as trace:
        for _ in range(runs):
            started = time.perf_counter()
            session.run_with_iobinding(binding)
            host.append((time.perf_counter() - started) * 1e3)
        torch.cuda.synchronize()
    events = [(e.name, e.time_range.start, e.time_range.end) for e in trace.events()
              if e.device_type == torch.autograd.DeviceType.CUDA and e.name]
    spans, names = run_spans(events, runs)
    return spans, names, host


def model_gpu_times(path: Path, batch: int, runs: int, warmup: int) -> dict:
    import onnx

    from fcm.measure import cuda_session, group_models, providers, timing_feeds, value_shapes
    from ort_custom_ops.ops.schema import is_fused_group

    model = onnx.load(path)
    shapes = value_shapes(model, batch)
    rng = np.random.default_rng(0)
    groups = {}
    for node in model.graph.node:
        if not is_fused_group(node):
            continue
        alone, _, data_inputs = group_models(model, node, shapes)
        alone, feeds, dtype = timing_feeds(alone, data_inputs, shapes, rng)
        try:
            session = cuda_session(alone, True, providers(True, False))
            spans, names, host = traced_spans(session, feeds, [shapes[node.output[0]]], dtype, runs, warmup)
        except Exception as exc:  # one group's failure is its row, not the run's end
            groups[node.name] = {"error": str(exc).strip().splitlines()[0][:200]}
            print(f"  {node.name}: {groups[node.name]['error']}", flush=True)
            continue
        groups[node.name] = {"gpu_us": round(float(np.median(spans)), 2), "gpu_p10_us": round(float(np.percentile(spans, 10)), 2),
                             "gpu_p90_us": round(float(np.percentile(spans, 90)), 2), "host_ms": round(float(np.median(host)), 4),
                             "kernels": len(names), "names": [n[:120] for n in names]}
        g = groups[node.name]
        print(f"  {node.name:<18} GPU {g['gpu_us']:8.1f} us  host {1e3 * g['host_ms']:8.1f} us  {g['kernels']} kernels", flush=True)
    return {"model": path.name, "batch": batch, "runs": runs, "warmup": warmup, "graph": True, "groups": groups}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="fused models (fcm tune's output)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the <stem>.gpu_times.json files")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    for path in args.models:
        print(f"{path} at batch {args.batch}:", flush=True)
        result = model_gpu_times(path, args.batch, args.runs, args.warmup)
        stem = path.name.removesuffix(".onnx").removesuffix(".tuned")
        (args.output / f"{stem}.gpu_times.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
