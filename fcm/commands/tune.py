"""``fcm tune``: keep fused only the groups faster on this GPU (``fcm.tune``).

In: a fused .onnx, batch sizes. Out: <stem>.tuned.onnx and <stem>.tune.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fcm_core.errors import FcmError

from .common import Reporter, add_timing_arguments, batch_sizes, onnxruntime_errors


HELP = "unfuse the groups that are not faster on this GPU"
DESCRIPTION = " ".join("""
Time every fused group of a fused model against its original subgraph on this machine's GPU (ONNX
Runtime's CUDA provider, the micro-benchmark of fcm bench) at each batch size, and write a model in
which the groups that are not faster at all of them run unfused again, plus a JSON report of the
times and decisions. Then the whole tuned model is timed against the source model
(<stem>.unfused.onnx): while it is slower at some batch size, the kept groups with the smallest
leads are unfused too, keeping the most of the strongest with which it is not slower, found in a
few measurements (1, 2, 4, ... groups fewer, then halving the interval). Each group is also timed under a grid of CUDA launch plans (tile,
output-channel tile, split); a kept group carries the plans that beat the kernels' own in its
cuda_plans attribute, used at those batch sizes. With --unfuse, apply a given decision without
measuring; with --apply, an earlier tune's report. The tuned model (and each one timed) is the
source model rewritten with only the kept groups, where the conversion's companions are beside the
fused model (fp32); otherwise, or where the rewrite does not reproduce a kept group, the fused model
with the other groups replaced by their subgraphs, whose leftover layout operators can make it
slower than the source. Before writing, its outputs are checked against the source's on the CPU.
fp16 and bf16 models (fcm convert --precision) are tuned the same way, in their own precision,
built by unfusing, and checked against the unfused half model with fcm verify's bound; their
groups try the fp32 kernels' candidate plans.
""".split())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a fused .onnx file (from fcm convert)")
    add_timing_arguments(parser, "batch sizes a group must be faster at, comma-separated", "timed runs per measurement")
    parser.add_argument("--margin", type=float, default=1.0,
                      help="keep a group fused when its time is below MARGIN x its subgraph's (default: 1.0)")
    parser.add_argument("--no-verify", action="store_true",
                      help="skip the whole-model check (by default, while the tuned model is slower than the unfused "
                      "one at some batch size, the weakest kept groups are unfused too: the most of the strongest with "
                      "which it is not slower, in a few measurements)")
    parser.add_argument("--no-plans", action="store_true",
                      help="time each group with the kernels' own launch plan only (no plan search, no cuda_plans attribute)")
    parser.add_argument("--unfuse", metavar="NODES", help="comma-separated fused node names to unfuse, without measuring")
    parser.add_argument("--apply", metavar="REPORT",
                      help="apply an earlier tune of this model (its .tune.json: unfused groups and launch plans), without measuring")
    parser.add_argument("-o", "--output", metavar="ONNX", help="where to write (default: <stem>.tuned.onnx beside the model)")
    return parser


def run(args: argparse.Namespace, report: Reporter) -> int:
    from fcm import tune

    model = Path(args.model)
    if not model.is_file():
        raise FcmError("no such file", model)
    batches = batch_sizes(args.batch)
    if args.margin <= 0:
        raise FcmError("--margin must be positive")
    output = Path(args.output) if args.output else model.with_name(model.name.removesuffix(".onnx") + ".tuned.onnx")
    names = [n for n in args.unfuse.split(",") if n] if args.unfuse is not None else None
    if args.apply and names is not None:
        raise FcmError("give --unfuse or --apply, not both")
    with onnxruntime_errors(model):
        result = tune.tune(model, output, batches, args.runs, args.warmup, args.margin, names, report.progress,
                           verify=not args.no_verify, plans=not args.no_plans,
                           apply_report=Path(args.apply) if args.apply else None)
    for name, group in result["groups"].items():
        times = ", ".join(f"batch {b}: {t['fused_ms']:.4f} vs {t['unfused_ms']:.4f} ms" + (f" (plan {t['plan']})" if t.get("plan") else "")
                          if "fused_ms" in t else f"batch {b}: {t['error']}" for b, t in group["batches"].items())
        print(f"{name:24s} {'fused  ' if group['keep_fused'] else 'unfused'} {times}")
    for step in result.get("whole_model", []):
        ratios = ", ".join(f"batch {b}: {v:.3f}x" for b, v in step["speedup"].items())
        print(f"whole model with {len(step['fused_groups'])} fused groups vs unfused: {ratios}"
              + (" (kept)" if step.get("chosen") else ""))
    print("built from the source model" if result["built_from"] == "source" else
          f"built by unfusing the fused model's groups: {result['fallback_reason']}")
    print(f"written: {result['output']} ({result['fused_groups']} fused groups kept, {len(result['unfuse'])} unfused), "
          f"{result['report']}")
    return 0
