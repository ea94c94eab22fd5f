"""``fcm plan``: a DAG + a GPU -> a fusion plan.

In: a dag.json, a GPU, a batch size. Out: the plan (JSON), and its summary or full report on stdout.
"""

from __future__ import annotations

import argparse

from .common import Reporter, positive_int


HELP = "choose which layers to fuse, with a GPU cost model"
DESCRIPTION = " ".join("""
Plan the fusion of a DAG's depthwise and pointwise convolutions for a GPU: build the candidate
groups from the graph's edges (DW->PW, PW->DW, PW->PW, PW->DW->PW with residual adds and activations
folded in), price each with its best tiling under the GPU's limits, and keep the non-overlapping set
that saves the most predicted time. Reads our DAGs and the paper's DAG files alike.
""".split())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dag", help="a dag.json file (from fcm extract, or the paper's), or a directory holding one")
    parser.add_argument("--gpu", required=True,
                      help="a GPU name (H100, H100-PCIe, H200, A100, L4, RTX4090, A4000, GTX1660, Orin, ...), 'auto' "
                      "for this machine's GPU, or a .cfg file in the paper's format")
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size (default: 1)")
    parser.add_argument("--dtype", choices=("fp32", "tf32", "fp16", "int8"),
                      help="element type (default: int8 for quantized DAGs, else fp32)")
    parser.add_argument("-o", "--output", metavar="PLAN", help="write the plan (JSON) here")
    parser.add_argument("--report", action="store_true", help="print the full readable summary")
    parser.add_argument("--constants", metavar="JSON", help="cost-model constants (e.g. from calibration) overriding the defaults")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="price kernel launches as one-by-one launches")


def run(args: argparse.Namespace, report: Reporter) -> int:
    from extractor.dag import Dag
    from extractor.executor import is_quantized
    from planner import CostConstants, format_report, make_plan, resolve_gpu

    dag = Dag.load(args.dag)
    gpu = resolve_gpu(args.gpu)
    constants = CostConstants.load(args.constants) if args.constants else CostConstants()
    if args.no_cuda_graphs:
        constants.cuda_graphs = False
    if gpu.defaulted:
        report.warning(f"{gpu.source} gives no {', '.join(gpu.defaulted)}: generic values are used, so predicted bytes "
                       "are exact but predicted times are rough")
    dtype = args.dtype or ("int8" if is_quantized(dag) else "fp32")
    report.progress(f"planning {args.dag} for {gpu.name}, batch {args.batch}, {dtype}")
    plan = make_plan(dag, gpu, args.batch, dtype, constants, dag_path=str(args.dag))
    if args.output:
        plan.save(args.output)
    if args.report:
        print(format_report(plan))
    else:
        t = plan.totals()
        print(f"{t['groups']} groups fuse {t['convs_fused']} of {t['convs']} convolutions "
              f"({t['dw_fused']} of {t['dw_convs']} depthwise); predicted {t['unfused']['time_us'] / 1e3:.3f} ms -> "
              f"{t['fused']['time_us'] / 1e3:.3f} ms, {t['unfused']['launches']} -> {t['fused']['launches']} launches"
              + (f"; written to {args.output}" if args.output else ""))
    return 0
