"""Each kept fused group's time against its roofline bound, from a tune.

    python benchmarks/group_efficiency.py FUSED.onnx TUNE.json [FUSED2.onnx TUNE2.json ...] [--batch 32]
        [--gpu-times G.gpu_times.json ...] [-o TABLE.md]

In: fused models (``fcm convert``'s, or ``fcm tune``'s output: only the shapes and weights' sizes
are read), each with the ``.tune.json`` of ``fcm tune`` on it (each group's fused time at each
batch size, the node alone on ONNX Runtime's CUDA provider, best launch plan, the host's clock);
optionally ``group_gpu_times.py``'s GPU times of the same groups (the span of their kernels,
without ONNX Runtime's per-run cost). Out: a markdown table per model of every group the tune
kept, at ``--batch``: its time, its multiply-adds and bytes, its roofline bound and its
efficiency (bound / time), on the GPU time too where given, with the summary the kernels are held
to: among groups whose bound is at least ``--min-bound-us`` (5 µs), the median and the lowest
efficiency, per model and over every model given; smaller groups are launch-latency-bound and
listed apart.

The bound is the larger of the group's compulsory bytes at the copy bandwidth and its
multiply-adds at the tensor-core peak (both stages' pointwise and the depthwise multiply-adds
alike, two FLOPs each). Compulsory bytes: the input, the output, the channel scale and every
weight and bias, once each, in the model's element size; the halo and the intermediate are not
counted (a fused kernel need not move them). Defaults: the H200's 4.1 TB/s measured copy bandwidth
and 495 TFLOP/s dense TF32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fcm.measure import fused_macs, value_shapes  # noqa: E402
from fcm_core.vocabulary import kind_of  # noqa: E402
from ort_custom_ops.ops.schema import DOMAIN, is_channels_last, nchw_dims  # noqa: E402


def group_work(node: onnx.NodeProto, shapes: dict[str, list[int]], initializers: dict[str, onnx.TensorProto]) -> dict:
    """Multiply-adds and compulsory bytes of one fused node at the shapes given."""
    x, y = shapes[node.input[0]], shapes[node.output[0]]
    _, c, h, w = nchw_dims(x, is_channels_last(node))
    _, f, oh, _ = nchw_dims(y, is_channels_last(node))
    element = helper.tensor_dtype_to_np_dtype(initializers[node.input[1]].data_type).itemsize
    kind = kind_of(node.op_type)
    if kind is None:
        raise ValueError(f"not a fused op type: {node.op_type}")
    stages = kind[0].stages
    weights = [initializers[name] for name in node.input[1:] if name in initializers]
    macs = sum(fused_macs(node, shapes, initializers).values())
    scale = node.input[-1] if len(node.input) > 1 + 2 * len(stages) else None
    data = int(np.prod(x)) + int(np.prod(y)) + (int(np.prod(shapes[scale])) if scale in shapes else 0)
    weight_values = sum(int(np.prod(t.dims)) for t in weights)
    return {"macs": macs, "bytes": (data + weight_values) * element, "stages": "".join(stages),
            "shape": f"{h}x{w} {c}->{f}" + (" s2" if (oh < h) else "")}


def table(model_path: Path, tune_path: Path, batch: int, bandwidth: float, peak: float, min_bound_us: float,
          gpu_times: dict | None = None) -> tuple[str, dict]:
    """One model's table and its data (rows and summary); ``gpu_times``: group_gpu_times.py's
    result for it, whose groups get a GPU time and efficiency beside the tune's."""
    model = onnx.load(model_path, load_external_data=False)
    report = json.loads(tune_path.read_text())
    shapes = value_shapes(model, batch)
    nodes = {n.name: n for n in model.graph.node if n.domain == DOMAIN}
    initializers = {t.name: t for t in model.graph.initializer}
    rows = []
    for name, group in report["groups"].items():
        entry = group.get("batches", {}).get(str(batch))
        if not group.get("keep_fused") or entry is None or "fused_ms" not in entry or name not in nodes:
            continue
        work = group_work(nodes[name], shapes, initializers)
        bound_us = max(work["bytes"] / bandwidth, 2 * work["macs"] / peak) * 1e6
        time_us = entry["fused_ms"] * 1e3
        row = {"group": name, **work, "time_us": time_us, "bound_us": bound_us,
               "bound_by": "bytes" if work["bytes"] / bandwidth >= 2 * work["macs"] / peak else "tensor cores",
               "efficiency": bound_us / time_us, "speedup_vs_unfused": entry.get("speedup")}
        gpu_us = ((gpu_times or {}).get("groups", {}).get(name) or {}).get("gpu_us")
        if gpu_us:
            row.update(gpu_us=gpu_us, gpu_efficiency=bound_us / gpu_us)
        rows.append(row)
    large = [r for r in rows if r["bound_us"] >= min_bound_us]
    small = [r for r in rows if r["bound_us"] < min_bound_us]
    summary = {"batch": batch, "kept_groups": len(rows), "groups_over_min_bound": len(large), **efficiency_summary(large),
               "bandwidth_TBps": bandwidth / 1e12, "peak_TFLOPs": peak / 1e12, "min_bound_us": min_bound_us}
    lines = [f"{model_path.name} at batch {batch}: {len(rows)} kept groups "
             f"(bound: max(bytes / {bandwidth / 1e12:g} TB/s, 2 x MACs / {peak / 1e12:g} TFLOP/s))", ""]

    with_gpu = any("gpu_us" in r for r in rows)

    def emit(title: str, selected: list[dict]) -> None:
        gpu_head, gpu_rule = (" GPU µs | efficiency (GPU) |", "---|---|") if with_gpu else ("", "")
        lines.extend([title, "", f"| group | block | MMAC | MB | bound µs (by) | time µs | efficiency |{gpu_head} vs unfused |",
                      f"|---|---|---|---|---|---|---|{gpu_rule}---|"])
        for r in sorted(selected, key=lambda r: -r["bound_us"]):
            gpu = (f" {r['gpu_us']:.1f} | {100 * r['gpu_efficiency']:.1f}% |" if "gpu_us" in r else " - | - |") if with_gpu else ""
            lines.append(f"| {r['group']} | {r['shape']} {r['stages']} | {r['macs'] / 1e6:.0f} | {r['bytes'] / 1e6:.2f} | "
                         f"{r['bound_us']:.1f} ({r['bound_by']}) | {r['time_us']:.1f} | {100 * r['efficiency']:.1f}% |{gpu} "
                         f"{r['speedup_vs_unfused'] or '-'}x |")
        lines.append("")

    emit(f"Groups whose bound is at least {min_bound_us:g} µs:", large)
    if large:
        lines.extend([summary_line(summary, len(large)), ""])
    emit(f"Groups whose bound is under {min_bound_us:g} µs (launch-latency-bound):", small)
    return "\n".join(lines), {"summary": summary, "groups": rows}


def efficiency_summary(large: list[dict]) -> dict:
    """The median and lowest efficiency of ``large`` (the groups held to the target), on the tune's
    times and, where every one has one, on the GPU times."""
    out = {"median_efficiency": statistics.median(r["efficiency"] for r in large) if large else None,
           "lowest_efficiency": min((r["efficiency"] for r in large), default=None)}
    if large and all("gpu_efficiency" in r for r in large):
        out.update(median_gpu_efficiency=statistics.median(r["gpu_efficiency"] for r in large),
                   lowest_gpu_efficiency=min(r["gpu_efficiency"] for r in large))
    return out


def summary_line(summary: dict, count: int) -> str:
    line = (f"Median efficiency {100 * summary['median_efficiency']:.1f}%, lowest {100 * summary['lowest_efficiency']:.1f}% "
            f"(over {count} groups; the tune's times)")
    if summary.get("median_gpu_efficiency") is not None:
        line += (f"; on the GPU times {100 * summary['median_gpu_efficiency']:.1f}%, lowest "
                 f"{100 * summary['lowest_gpu_efficiency']:.1f}%")
    return line + "."


def combined(results: list[tuple[str, dict]], min_bound_us: float) -> tuple[str, dict]:
    """The summary over every model's groups together: (model name, table()'s data) each."""
    large = [dict(r, model=name) for name, data in results for r in data["groups"] if r["bound_us"] >= min_bound_us]
    summary = {"models": [name for name, _ in results], "kept_groups": sum(len(data["groups"]) for _, data in results),
               "groups_over_min_bound": len(large), **efficiency_summary(large)}
    text = f"All {len(results)} models: {summary['kept_groups']} kept groups, {len(large)} with a bound of at least {min_bound_us:g} µs."
    if large:
        text += " " + summary_line(summary, len(large))
    return text, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="+", type=Path, metavar="MODEL TUNE",
                        help="fused models, each followed by fcm tune's report on it (.tune.json)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bandwidth", type=float, default=4.1e12, help="copy bandwidth, bytes/s (default: the H200's 4.1e12)")
    parser.add_argument("--peak", type=float, default=495e12, help="tensor-core peak, FLOP/s (default: the H200's dense TF32, 495e12)")
    parser.add_argument("--min-bound-us", type=float, default=5.0)
    parser.add_argument("--gpu-times", nargs="*", type=Path, default=[],
                        help="group_gpu_times.py's files (<stem>.gpu_times.json), matched to the models by stem")
    parser.add_argument("-o", "--output", type=Path, help="write the tables here (and the JSON beside it)")
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error("give each fused model followed by its tune report (MODEL TUNE [MODEL TUNE ...])")
    gpu_times = {}
    for path in args.gpu_times:
        data = json.loads(path.read_text())
        gpu_times[stem_of(data["model"])] = data
    texts, results = [], []
    for model_path, tune_path in zip(args.pairs[::2], args.pairs[1::2]):
        text, data = table(model_path, tune_path, args.batch, args.bandwidth, args.peak, args.min_bound_us,
                           gpu_times.get(stem_of(model_path.name)))
        texts.append(text)
        results.append((stem_of(model_path.name), data))
    if len(results) > 1:
        text, summary = combined(results, args.min_bound_us)
        texts.append(text)
    else:
        summary = results[0][1]["summary"]
    output = "\n\n".join(texts)
    print(output)
    if args.output:
        args.output.write_text(output + "\n")
        args.output.with_suffix(".json").write_text(json.dumps({"summary": summary, "models": dict(results)}, indent=1) + "\n")
    return 0


def stem_of(name: str) -> str:
    """A model file's stem without ``.onnx`` and fcm tune's ``.tuned``: the name that matches a
    model with its GPU times."""
    return Path(name).name.removesuffix(".onnx").removesuffix(".tuned")


if __name__ == "__main__":
    sys.exit(main())
