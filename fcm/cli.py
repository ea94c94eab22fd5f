"""The ``fcm`` command: one entry point for the whole pipeline.

``fcm extract`` (model -> DAG + weights), ``fcm inspect`` (DAG -> table, totals, HTML),
``fcm plan`` (DAG + GPU -> fusion plan) and ``fcm convert`` (model -> verified fused ONNX); each
subcommand's ``--help`` says what it takes and writes. Bad input is reported as one line,
``fcm: error: <where>: <what>``, with exit status 2; nothing is written then.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from pathlib import Path

from . import __version__
from .errors import FcmError, FcmWarning

EXIT_USAGE = 2
EXIT_INTERNAL = 3


class _Reporter:
    """Progress and warnings on stderr; results on stdout."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.started = time.monotonic()

    def progress(self, message: str) -> None:
        if not self.quiet:
            print(f"fcm: {message}", file=sys.stderr, flush=True)

    def warning(self, message: str) -> None:
        print(f"fcm: warning: {message}", file=sys.stderr, flush=True)


def _source_options(args: argparse.Namespace):
    from extractor.sources import SourceOptions

    return SourceOptions(input_size=args.input_size, weights=args.weights, seed=args.seed, logits=args.logits)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="the model: a .tflite file, a .keras or .h5 file, a SavedModel directory, or keras:<Name> for a "
        "keras.applications architecture (e.g. keras:MobileNetV2)",
    )
    group = parser.add_argument_group("keras:<Name> models")
    group.add_argument("--input-size", type=int, metavar="N", help="square input size (default: the architecture's, 224 for most)")
    group.add_argument(
        "--weights",
        metavar="W",
        help="'imagenet' (needs network access), or a path to a weights file; default: random weights from --seed",
    )
    group.add_argument("--seed", type=int, default=0, help="seed for random weights (default: 0)")
    group.add_argument("--logits", action="store_true", help="build the classifier without its softmax (classifier_activation=None)")


def cmd_extract(args: argparse.Namespace, report: _Reporter) -> int:
    from extractor import summary
    from extractor.sources import extract

    report.progress(f"reading {args.model}")
    dag = extract(args.model, _source_options(args))
    report.progress(f"writing {args.output}")
    dag_path, weights_path = dag.save(args.output)
    t = summary.totals(dag)
    size = weights_path.stat().st_size
    print(f"{dag_path}: {t.layers} entries ({t.convs['dw']} depthwise, {t.convs['pw']} pointwise, {t.convs['s']} standard "
          f"convolutions, {t.fc} fully connected, {t.other_ops} other ops" + (f", {t.opaque} opaque" if t.opaque else "") + ")")
    print(f"{weights_path}: {len(dag.weights)} arrays, {size / 1e6:.1f} MB")
    return 0


def cmd_inspect(args: argparse.Namespace, report: _Reporter) -> int:
    from extractor import summary
    from extractor.dag import Dag

    if args.batch < 1:
        raise FcmError(f"--batch must be at least 1, not {args.batch}")
    dag = Dag.load(args.dag)
    if args.html:
        from fcm.fileio import atomic_write_text
        from planner.view import render_html

        plan = _read_plan(args.plan, dag) if args.plan else None
        atomic_write_text(args.html, render_html(dag, plan, title=str(args.dag)))
        print(f"{args.html}: {len(dag)} entries" + (f", {len(plan['groups'])} fusion groups" if plan else ""))
        return 0
    if not args.totals_only:
        print(summary.format_table(dag))
        print()
    print(summary.format_totals(summary.totals(dag, args.batch, args.dtype)))
    return 0


def _read_plan(path: str, dag) -> dict:
    import json

    from planner.plan import PLAN_FORMAT, dag_digest

    try:
        plan = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FcmError("no such file", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FcmError(f"not a JSON file ({exc})", path) from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise FcmError("not a fusion plan (made by fcm plan)", path)
    if plan["dag"]["sha256"] != dag_digest(dag):
        raise FcmError("this plan was made for another DAG", path)
    return plan


def cmd_plan(args: argparse.Namespace, report: _Reporter) -> int:
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


def cmd_convert(args: argparse.Namespace, report: _Reporter) -> int:
    from fcm.convert import ConvertOptions, convert

    if args.batch < 1:
        raise FcmError(f"--batch must be at least 1, not {args.batch}")
    options = ConvertOptions(gpu=args.gpu, batch=args.batch, dtype=args.dtype, scheme=args.scheme,
                             verify=not args.no_verify, source=_source_options(args), int8=args.int8,
                             calibration=args.calibration, io_dtype=args.io_dtype)
    result = convert(args.model, args.output, options, progress=report.progress)
    for note in result.notes:
        report.warning(note) if "left unfused" in note else report.progress(note)
    totals = result.plan.totals()
    fused = result.rewrite.fused
    kinds: dict[str, int] = {}
    for entry in fused:
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    print(f"{result.output}: {len(fused)} fused nodes (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")"
          if fused else f"{result.output}: no fused nodes")
    for line in result.summary:
        print(line)
    if result.checks:
        worst = max((c for c in result.checks if c.name != "unfused ONNX"), key=lambda c: c.relative)
        print(f"verified against the source model: largest relative error {worst.relative:.2g} "
              f"(bound {options.tolerance:g}), with and without the FCM library")
    print(f"predicted on {result.plan.gpu.name} at batch {args.batch}: {totals['unfused']['time_us'] / 1e3:.3f} ms -> "
          f"{totals['fused']['time_us'] / 1e3:.3f} ms")
    print("files: " + ", ".join(str(p) for p in result.files.values()))
    return 0


def cmd_verify(args: argparse.Namespace, report: _Reporter) -> int:
    import numpy as np
    import onnx

    from fcm.convert import random_inputs
    from ort_custom_ops.library import default_providers, make_session

    fused_path = Path(args.model)
    against = Path(args.against) if args.against else fused_path.with_name(fused_path.stem + ".unfused.onnx")
    for path in (fused_path, against):
        if not path.is_file():
            raise FcmError("no such file" + ("" if args.against or path == fused_path else " (give --against)"), path)
    providers = {"auto": default_providers(), "cpu": ["CPUExecutionProvider"],
                 "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}[args.provider]
    try:
        fused_model = onnx.load(fused_path)
    except Exception as exc:
        raise FcmError(f"not an ONNX model ({type(exc).__name__})", fused_path) from None
    report.progress(f"running {fused_path.name} and {against.name} on {providers[0]}")
    fused = make_session(fused_model, with_library=True, providers=providers)
    reference = make_session(against, with_library=True, providers=providers)  # an int8 model's ops are all FCM ops
    used = fused.get_providers()[0]
    rng = np.random.default_rng()
    inputs = random_inputs(fused_model, args.batch, rng)
    feeds = {i.name: a for i, a in zip(fused.get_inputs(), inputs)}
    times = []
    for _ in range(max(1, args.runs)):
        started = time.perf_counter()
        outputs = fused.run(None, feeds)
        times.append(time.perf_counter() - started)
    expected = reference.run(None, {i.name: a for i, a in zip(reference.get_inputs(), inputs)})
    error = max(float(np.abs(o.astype(np.float64) - e).max()) for o, e in zip(outputs, expected))  # int8 models too
    scale = max(float(np.abs(e.astype(np.float64)).max()) for e in expected)
    bound = args.tolerance * scale
    print(f"{fused_path}: ran on {used} at batch {args.batch}: {sorted(times)[len(times) // 2] * 1e3:.2f} ms per run "
          f"(median of {len(times)}, wall clock, not a benchmark)")
    print(f"largest difference from {against.name}: {error:.3g} ({error / scale if scale else 0:.3g} of the largest output)")
    if error > bound:
        raise FcmError(f"the outputs differ by more than {args.tolerance:g} of the largest output", fused_path)
    return 0


def _batch_sizes(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",")]
    except ValueError:
        raise FcmError(f"--batch takes sizes separated by commas, not {text!r}") from None
    if any(b < 1 for b in batches):
        raise FcmError("batch sizes must be at least 1")
    return batches


def cmd_bench(args: argparse.Namespace, report: _Reporter) -> int:
    import json

    from fcm import bench

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
    batches = _batch_sizes(args.batch)
    result = bench.run(model, fused, batches, args.runs, args.warmup, plan, not args.no_micro, args.exact_fp32,
                       report.progress, profile=args.profile)
    command = "fcm bench " + " ".join(sys.argv[2:] if len(sys.argv) > 2 else [])
    result["command"] = command
    out = Path(args.output) if args.output else fused.with_name(fused.stem + ".bench")
    out.mkdir(parents=True, exist_ok=True)
    from fcm.fileio import atomic_write_text

    atomic_write_text(out / "bench.json", json.dumps(result, indent=1) + "\n")
    text = bench.markdown(result, command)
    atomic_write_text(out / "bench.md", text)
    drew = bench.chart(result, out / "bench.png")
    print(text)
    print(f"written: {out / 'bench.json'}, {out / 'bench.md'}" + (f", {out / 'bench.png'}" if drew else " (no matplotlib: no chart)"))
    return 0


def cmd_tune(args: argparse.Namespace, report: _Reporter) -> int:
    from fcm import tune

    model = Path(args.model)
    if not model.is_file():
        raise FcmError("no such file", model)
    batches = _batch_sizes(args.batch)
    if args.margin <= 0:
        raise FcmError("--margin must be positive")
    output = Path(args.output) if args.output else model.with_name(model.name.removesuffix(".onnx") + ".tuned.onnx")
    names = [n for n in args.unfuse.split(",") if n] if args.unfuse is not None else None
    if args.apply and names is not None:
        raise FcmError("give --unfuse or --apply, not both")
    result = tune.tune(model, output, batches, args.runs, args.warmup, args.margin, names, report.progress,
                       verify=not args.no_verify, plans=not args.no_plans,
                       apply_report=Path(args.apply) if args.apply else None)
    for name, group in result["groups"].items():
        times = ", ".join(f"batch {b}: {t['fused_ms']:.4f} vs {t['unfused_ms']:.4f} ms" + (f" (plan {t['plan']})" if t.get("plan") else "")
                          if "fused_ms" in t else f"batch {b}: {t['error']}" for b, t in group["batches"].items())
        print(f"{name:24s} {'fused  ' if group['keep_fused'] else 'unfused'} {times}")
    for step in result.get("whole_model", []):
        ratios = ", ".join(f"batch {b}: {v:.3f}x" for b, v in step["speedup"].items())
        print(f"whole model with {len(step['fused_groups'])} fused groups vs unfused: {ratios}")
    print(f"written: {result['output']} ({result['fused_groups']} fused groups kept, {len(result['unfuse'])} unfused), "
          f"{result['report']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcm",
        description="Fuse depthwise and pointwise convolutions of Keras/TFLite models into ONNX Runtime custom "
        "operators. The pipeline: extract (model -> layer DAG) -> plan (DAG -> fusion groups) -> convert (fused ONNX).",
    )
    parser.add_argument("--version", action="version", version=f"fcm {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    parser.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    extract = commands.add_parser(
        "extract",
        help="read a model into a layer DAG (dag.json) and its weights (weights.npz)",
        description="Read a Keras or TFLite model and write DIR/dag.json (one entry per operator, in the seed's DAG "
        "format plus extensions) and DIR/weights.npz (weights, biases and per-channel quantization, keyed by layer id). "
        "Both files are written, or neither.",
    )
    _add_model_arguments(extract)
    extract.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (created if missing)")
    extract.set_defaults(func=cmd_extract)

    inspect = commands.add_parser(
        "inspect",
        help="print a DAG as a table with totals",
        description="Print a DAG (ours or the seed's) as a table: id, operator, type, input and output shapes, "
        "kernel/stride, activation and edges; then totals: layer counts, parameters, MACs and feature-map bytes.",
    )
    inspect.add_argument("dag", help="a dag.json file, or a directory holding one")
    inspect.add_argument("--batch", type=int, default=1, help="batch size for MACs and bytes (default: 1)")
    inspect.add_argument("--dtype", choices=("fp32", "tf32", "fp16", "bf16", "int8"), default="fp32",
                         help="element type for feature-map bytes (default: fp32)")
    inspect.add_argument("--totals-only", action="store_true", help="print the totals without the table")
    inspect.add_argument("--html", metavar="FILE", help="write the DAG as a self-contained HTML page instead")
    inspect.add_argument("--plan", metavar="PLAN", help="with --html: highlight the fusion groups of this plan (from fcm plan)")
    inspect.set_defaults(func=cmd_inspect)

    plan = commands.add_parser(
        "plan",
        help="choose which layers to fuse, with a GPU cost model",
        description="Plan the fusion of a DAG's depthwise and pointwise convolutions for a GPU: build the candidate "
        "groups from the graph's edges (DW->PW, PW->DW, PW->PW, PW->DW->PW with residual adds and activations "
        "folded in), price each with its best tiling under the GPU's limits, and keep the non-overlapping set that "
        "saves the most predicted time. Reads our DAGs and the paper's DAG files alike.",
    )
    plan.add_argument("dag", help="a dag.json file (from fcm extract, or the paper's), or a directory holding one")
    plan.add_argument("--gpu", required=True,
                      help="a GPU name (H100, H100-PCIe, H200, A100, L4, RTX4090, A4000, GTX1660, Orin, ...), 'auto' "
                      "for this machine's GPU, or a .cfg file in the paper's format")
    plan.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    plan.add_argument("--dtype", choices=("fp32", "tf32", "fp16", "int8"),
                      help="element type (default: int8 for quantized DAGs, else fp32)")
    plan.add_argument("-o", "--output", metavar="PLAN", help="write the plan (JSON) here")
    plan.add_argument("--report", action="store_true", help="print the full readable summary")
    plan.add_argument("--constants", metavar="JSON", help="cost-model constants (e.g. from calibration) overriding the defaults")
    plan.add_argument("--no-cuda-graphs", action="store_true", help="price kernel launches as one-by-one launches")
    plan.set_defaults(func=cmd_plan)

    convert = commands.add_parser(
        "convert",
        help="convert a model into a fused ONNX model, verified against the source",
        description="Export the model to ONNX (tf2onnx, opset 17, dynamic batch, NHWC input kept), normalize it, "
        "extract its DAG and plan the fusion for a GPU, replace each fusion group with one node of the ai.fcm "
        "domain (with a function body holding the original subgraph, so the model also runs without the "
        "custom-op library), verify the result against the source model on fresh random inputs, and write "
        "OUT.onnx with, beside it, <stem>.unfused.onnx, <stem>.dag.json, <stem>.plan.json and <stem>.report.md. "
        "Nothing is written if any step fails. A full-integer .tflite model (int8 weights and activations, "
        "uint8/int8 input and output) becomes an int8 model instead, built from its DAG: every layer an int8 op of "
        "the ai.fcm domain with TFLite's integer arithmetic (--scheme), each fusion group one fused int8 node; it "
        "needs the custom-op library, and is verified against the TFLite interpreter.",
    )
    _add_model_arguments(convert)
    convert.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the fused model to write")
    convert.add_argument("--gpu", default="auto", help="GPU to plan for (as for fcm plan; default: this machine's, or H100)")
    convert.add_argument("--batch", type=int, default=1, help="batch size to plan for (default: 1)")
    convert.add_argument("--dtype", choices=("fp32", "int8"),
                         help="element type: int8 for full-integer .tflite models (their only one), else fp32")
    convert.add_argument("--scheme", choices=("fp32", "fixed_point"), default="fp32",
                         help="int8 only: the requantization arithmetic to reproduce: fp32 (XNNPACK, the TFLite "
                         "interpreter's default; default) or fixed_point (TFLite's builtin kernels)")
    convert.add_argument("--no-verify", action="store_true", help="skip the comparison with the source model")
    quantize = convert.add_argument_group(
        "int8 quantization of Keras models",
        "With --int8, a Keras model (keras:<Name>, .keras, .h5) is first quantized by TFLite's post-training "
        "full-integer quantization (int8 weights per channel, int8 activations, calibrated on --calibration), "
        "written beside the output as <stem>.tflite, and converted on the int8 path; the fused int8 model is "
        "verified against the TFLite interpreter running that .tflite. A .tflite that is full-integer already "
        "takes the int8 path with or without --int8.")
    quantize.add_argument("--int8", action="store_true", help="quantize the Keras model to int8 and convert that")
    quantize.add_argument("--calibration", metavar="FILE.npy",
                          help="representative input samples for the quantization ranges: one float array "
                          "[N, H, W, C] saved with numpy.save, preprocessed as the model expects (a few hundred "
                          "real samples are typical); default: 16 random samples uniform in [-1, 1], with a "
                          "warning (fine for testing the conversion, meaningless for accuracy)")
    quantize.add_argument("--io-dtype", choices=("int8", "uint8"), default="int8",
                          help="the quantized model's input and output type (default: int8, TFLite's usual choice)")
    convert.set_defaults(func=cmd_convert)

    verify = commands.add_parser(
        "verify",
        help="run a fused model and compare it with its unfused version",
        description="Run a fused model in onnxruntime with the FCM library registered (on the CUDA provider when "
        "this onnxruntime has it, else the CPU) and the unfused model beside it on the same random inputs; "
        "print the difference and the time per run.",
    )
    verify.add_argument("model", help="a fused .onnx file (from fcm convert)")
    verify.add_argument("--against", metavar="ONNX", help="the model to compare with (default: <stem>.unfused.onnx beside it)")
    verify.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    verify.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto",
                        help="execution provider (default: CUDA when available)")
    verify.add_argument("--runs", type=int, default=10, help="runs to time (default: 10)")
    verify.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed difference, relative to the largest output (default: 1e-4; 5e-3 for TF32 on GPUs)")
    verify.set_defaults(func=cmd_verify)

    bench = commands.add_parser(
        "bench",
        help="time a fused model against its unfused version on ONNX Runtime's CUDA provider",
        description="Time the unfused model and the fused model on the CUDA execution provider in the same run, "
        "each in every configuration (CUDA graphs on/off, prefer_nhwc on/off), with inputs and outputs bound to "
        "device buffers, after warm-up runs; report the medians, the best of each side and their ratio, and per "
        "fused group a micro-benchmark (the group alone vs its original subgraph) with achieved bandwidth. "
        "Writes bench.json, bench.md and bench.png.",
    )
    bench.add_argument("model", help="the unfused model (<stem>.unfused.onnx from fcm convert)")
    bench.add_argument("--fused", metavar="ONNX", help="the fused model (default: <stem>.onnx beside it)")
    bench.add_argument("--plan", metavar="PLAN", help="the plan (default: <stem>.plan.json beside the fused model)")
    bench.add_argument("--batch", default="1,32", help="batch sizes, comma-separated (default: 1,32)")
    bench.add_argument("--runs", type=int, default=100, help="timed runs per configuration (default: 100)")
    bench.add_argument("--warmup", type=int, default=20, help="warm-up runs (default: 20)")
    bench.add_argument("--no-micro", action="store_true", help="skip the per-group micro-benchmarks")
    bench.add_argument("--exact-fp32", action="store_true",
                       help="also time both sides without TF32 (exact FP32 pointwise stages and convolutions)")
    bench.add_argument("--profile", action="store_true", help="also record per-node kernel times (ONNX Runtime's profiler)")
    bench.add_argument("-o", "--output", metavar="DIR", help="where to write (default: <stem>.bench/ beside the fused model)")
    bench.set_defaults(func=cmd_bench)

    tune = commands.add_parser(
        "tune",
        help="unfuse the groups that are not faster on this GPU",
        description="Time every fused group of a fused model against its original subgraph on this machine's GPU "
        "(ONNX Runtime's CUDA provider, the micro-benchmark of fcm bench) at each batch size, and write a model in "
        "which the groups that are not faster at all of them run unfused again, plus a JSON report of the times "
        "and decisions. Then the whole tuned model is timed against the whole unfused one, and kept groups are "
        "unfused, the one with the smallest lead first, until it is not slower at any batch size. Each group is "
        "also timed under a grid of CUDA launch plans (tile, output-channel tile, split); a kept group carries the "
        "plans that beat the kernels' own in its cuda_plans attribute, used at those batch sizes. With --unfuse, "
        "apply a given decision without measuring; with --apply, an earlier tune's report.",
    )
    tune.add_argument("model", help="a fused .onnx file (from fcm convert)")
    tune.add_argument("--batch", default="1,32", help="batch sizes a group must be faster at, comma-separated (default: 1,32)")
    tune.add_argument("--runs", type=int, default=100, help="timed runs per measurement (default: 100)")
    tune.add_argument("--warmup", type=int, default=20, help="warm-up runs (default: 20)")
    tune.add_argument("--margin", type=float, default=1.0,
                      help="keep a group fused when its time is below MARGIN x its subgraph's (default: 1.0)")
    tune.add_argument("--no-verify", action="store_true",
                      help="skip the whole-model check (by default, while the tuned model is slower than the unfused "
                      "one at some batch size, the kept group with the smallest lead is unfused and the model measured again)")
    tune.add_argument("--no-plans", action="store_true",
                      help="time each group with the kernels' own launch plan only (no plan search, no cuda_plans attribute)")
    tune.add_argument("--unfuse", metavar="NODES", help="comma-separated fused node names to unfuse, without measuring")
    tune.add_argument("--apply", metavar="REPORT",
                      help="apply an earlier tune of this model (its .tune.json: unfused groups and launch plans), without measuring")
    tune.add_argument("-o", "--output", metavar="ONNX", help="where to write (default: <stem>.tuned.onnx beside the model)")
    tune.set_defaults(func=cmd_tune)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    report = _Reporter(args.quiet)

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FcmWarning):
            report.warning(str(message))

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # libraries' deprecation chatter
            warnings.simplefilter("always", FcmWarning)
            warnings.showwarning = show
            return args.func(args, report)
    except FcmError as exc:
        print(f"fcm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fcm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so plainly, traceback on request
        if args.debug:
            raise
        print(f"fcm: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        warnings.showwarning = previous


def run() -> None:  # console-script entry point
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if hasattr(signal, "SIGPIPE"):  # `fcm inspect ... | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
