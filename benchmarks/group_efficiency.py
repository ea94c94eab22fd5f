"""Each kept fused group's time against its roofline bound, from a tune.

    python benchmarks/group_efficiency.py FUSED.onnx TUNE.json [--batch 32] [-o TABLE.md]

In: a fused model (``fcm convert``'s, or ``fcm tune``'s output: only the shapes and weights' sizes
are read) and the ``.tune.json`` of ``fcm tune`` on it (each group's fused time at each batch
size, the node alone on ONNX Runtime's CUDA provider, best launch plan). Out: a markdown table of
every group the tune kept, at ``--batch``: its time, its multiply-adds and bytes, its roofline
bound and its efficiency (bound / time), with the summary the kernels are held to: among groups
whose bound is at least ``--min-bound-us`` (5 µs), the median and the lowest efficiency; smaller
groups are launch-latency-bound and listed apart.

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


def table(model_path: Path, tune_path: Path, batch: int, bandwidth: float, peak: float, min_bound_us: float) -> tuple[str, dict]:
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
        rows.append({"group": name, **work, "time_us": time_us, "bound_us": bound_us,
                     "bound_by": "bytes" if work["bytes"] / bandwidth >= 2 * work["macs"] / peak else "tensor cores",
                     "efficiency": bound_us / time_us, "speedup_vs_unfused": entry.get("speedup")})
    large = [r for r in rows if r["bound_us"] >= min_bound_us]
    small = [r for r in rows if r["bound_us"] < min_bound_us]
    summary = {"batch": batch, "kept_groups": len(rows), "groups_over_min_bound": len(large),
               "median_efficiency": statistics.median(r["efficiency"] for r in large) if large else None,
               "lowest_efficiency": min((r["efficiency"] for r in large), default=None),
               "bandwidth_TBps": bandwidth / 1e12, "peak_TFLOPs": peak / 1e12, "min_bound_us": min_bound_us}
    lines = [f"{model_path.name} at batch {batch}: {len(rows)} kept groups "
             f"(bound: max(bytes / {bandwidth / 1e12:g} TB/s, 2 x MACs / {peak / 1e12:g} TFLOP/s))", ""]

    def emit(title: str, selected: list[dict]) -> None:
        lines.extend([title, "", "| group | block | MMAC | MB | bound µs (by) | time µs | efficiency | vs unfused |",
                      "|---|---|---|---|---|---|---|---|"])
        for r in sorted(selected, key=lambda r: -r["bound_us"]):
            lines.append(f"| {r['group']} | {r['shape']} {r['stages']} | {r['macs'] / 1e6:.0f} | {r['bytes'] / 1e6:.2f} | "
                         f"{r['bound_us']:.1f} ({r['bound_by']}) | {r['time_us']:.1f} | {100 * r['efficiency']:.1f}% | "
                         f"{r['speedup_vs_unfused'] or '-'}x |")
        lines.append("")

    emit(f"Groups whose bound is at least {min_bound_us:g} µs:", large)
    if large:
        lines.append(f"Median efficiency {100 * summary['median_efficiency']:.1f}%, lowest "
                     f"{100 * summary['lowest_efficiency']:.1f}% (over {len(large)} groups).")
        lines.append("")
    emit(f"Groups whose bound is under {min_bound_us:g} µs (launch-latency-bound):", small)
    return "\n".join(lines), {"summary": summary, "groups": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the fused model (fcm convert's or fcm tune's)")
    parser.add_argument("tune", type=Path, help="fcm tune's report on it (.tune.json)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bandwidth", type=float, default=4.1e12, help="copy bandwidth, bytes/s (default: the H200's 4.1e12)")
    parser.add_argument("--peak", type=float, default=495e12, help="tensor-core peak, FLOP/s (default: the H200's dense TF32, 495e12)")
    parser.add_argument("--min-bound-us", type=float, default=5.0)
    parser.add_argument("-o", "--output", type=Path, help="write the table here (and the JSON beside it)")
    args = parser.parse_args(argv)
    text, data = table(args.model, args.tune, args.batch, args.bandwidth, args.peak, args.min_bound_us)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
        args.output.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
