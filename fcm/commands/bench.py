"""``fcm bench``: a fused model timed against its unfused version on the CUDA provider.

In: the unfused and fused models, batch sizes. Out: bench.json, bench.md, bench.png (``fcm.bench``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fcm.anchors import MODES
from fcm_core.errors import FcmError

from .common import Reporter, add_timing_arguments, batch_sizes, onnxruntime_errors


HELP = "time a fused model against its unfused version on ONNX Runtime's CUDA provider"
DESCRIPTION = " ".join("""
Time the unfused model and the fused model on the CUDA execution provider in the same run, each in
every configuration (CUDA graphs on/off, prefer_nhwc on/off; an fp16 unfused model also with its
reductions, kept fp32 between Casts for accuracy, in fp16 as converters leave them), with inputs and outputs bound to
device buffers, after warm-up runs; report the medians, the best of each side and their ratio, and
per fused group a micro-benchmark (the group alone vs its original subgraph) with achieved
bandwidth (fp32 models); and, in the same run and report, the anchors in the model's precision: ONNX
Runtime on the unfused model, and torch.compile channels-last on the torchvision version of the
architecture where one exists (and where torch is installed; the report says when not). Writes
bench.json, bench.md and bench.png.
""".split())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the unfused model (<stem>.unfused.onnx from fcm convert)")
    parser.add_argument("--fused", metavar="ONNX", help="the fused model (default: <stem>.onnx beside it)")
    parser.add_argument("--plan", metavar="PLAN", help="the plan (default: <stem>.plan.json beside the fused model)")
    add_timing_arguments(parser, "batch sizes, comma-separated", "timed runs per configuration")
    parser.add_argument("--no-micro", action="store_true", help="skip the per-group micro-benchmarks")
    parser.add_argument("--exact-fp32", action="store_true",
                       help="also time both sides without TF32 (exact FP32 pointwise stages and convolutions)")
    parser.add_argument("--profile", action="store_true", help="also record per-node kernel times (ONNX Runtime's profiler)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"),
                        help="the precision the fused model must be in (fcm convert --precision; default: whatever it is); "
                        "the anchors run in the same precision")
    parser.add_argument("--torch", metavar="ARCH", default="auto",
                        help="the torchvision architecture to time torch.compile on (channels-last, the model's precision, "
                        "max-autotune and reduce-overhead) for the same report: mobilenet_v2, mobilenet_v3_small, "
                        "mobilenet_v3_large, efficientnet_b0, or none (default: the fused file's stem when it is one)")
    parser.add_argument("--torch-modes", metavar="MODES", default=",".join(MODES),
                        help=f"the torch.compile modes to time, comma-separated (default: {','.join(MODES)}; max-autotune "
                        "compiles for minutes per batch size, reduce-overhead for seconds)")
    parser.add_argument("-o", "--output", metavar="DIR", help="where to write (default: <stem>.bench/ beside the fused model)")


def run(args: argparse.Namespace, report: Reporter) -> int:
    import json

    from fcm import bench
    from fcm.pipeline.verify import check_companion, load_model
    from fcm_core.fileio import check_writable, staged_directory

    torch_modes = tuple(m for m in args.torch_modes.split(",") if m)
    if not torch_modes or set(torch_modes) - set(MODES):
        raise FcmError(f"--torch-modes takes some of {', '.join(MODES)}, comma-separated, not '{args.torch_modes}'")
    model = Path(args.model)
    if args.fused:
        fused = Path(args.fused)
    elif model.name.endswith(".unfused.onnx"):
        fused = model.with_name(model.name[: -len(".unfused.onnx")] + ".onnx")
    else:
        raise FcmError("give the fused model with --fused (or MODEL as <stem>.unfused.onnx)", model)
    for path in (model, fused):
        if not path.is_file():
            raise FcmError("no such file", path)
    plan = Path(args.plan) if args.plan else fused.with_name(fused.stem + ".plan.json")
    batches = batch_sizes(args.batch)
    out = Path(args.output) if args.output else fused.with_name(fused.stem + ".bench")
    check_writable(out, ("bench.json", "bench.md", "bench.png"))  # before the measurements
    check_companion(load_model(fused), fused, model)
    with onnxruntime_errors(fused):
        result = bench.run(model, fused, batches, args.runs, args.warmup, plan, not args.no_micro, args.exact_fp32,
                           report.progress, profile=args.profile, precision=args.precision,
                           torch_arch=None if args.torch == "none" else args.torch, torch_modes=torch_modes)
    command = "fcm bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else [])
    result["command"] = command
    text = bench.markdown(result, command)
    with staged_directory(out) as scratch:  # the three files together, or none
        (scratch / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
        (scratch / "bench.md").write_text(text)
        drew = bench.chart(result, scratch / "bench.png")
    print(text)
    print(f"written: {out / 'bench.json'}, {out / 'bench.md'}" + (f", {out / 'bench.png'}" if drew else " (no matplotlib: no chart)"))
    return 0
