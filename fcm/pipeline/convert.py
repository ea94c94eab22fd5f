"""``fcm convert``: a Keras/TFLite model -> a verified fused ONNX model, in fp32, fp16, bf16 or int8.

In: a model specification (as for ``fcm extract``), the output path, the GPU/batch/dtype to plan
for. Out: ``OUT.onnx`` (the fused model) and beside it ``<stem>.unfused.onnx`` (the same model
without fusion), ``<stem>.dag.json`` + ``<stem>.weights.npz``, ``<stem>.plan.json`` and
``<stem>.report.md``, all written only once the fused model has been verified; on any failure
nothing is written.

Steps, the same for every precision: open the model and extract its DAG; choose the precision (a
full-integer TFLite model converts to int8, anything else to fp32, or to fp16 or bf16 with
``--precision``; ``--int8`` quantizes a Keras model first, :mod:`fcm.pipeline.quantize`); prepare the lowering's input; plan the fusion; lower;
verify; write. What differs per precision (how to lower, verify and report) is in
:mod:`fcm.pipeline.precisions`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import onnx

from extractor.dag import Dag
from extractor.sources import OpenedModel, SourceOptions, open_model
from fcm_core.errors import FcmError
from fcm_core.fileio import check_writable, staged_directory
from fcm_core.vocabulary import FLOAT_PRECISIONS

from .precisions import PRECISIONS
from .verify import FP32_TOLERANCE, file_digest, record_companions, record_input_range

Progress = Callable[[str], None]
ASSUMED_GPU = "H100"  # planned for when there is no GPU here and --gpu names none


@dataclass
class ConvertOptions:
    gpu: str = "auto"
    batch: int = 1
    dtype: str | None = None  # "fp32" or "int8"; None: int8 for full-integer TFLite models, else fp32
    scheme: str = "fp32"  # int8: the requantization arithmetic (XNNPACK's "fp32" or the builtin "fixed_point")
    verify: bool = True
    verify_batches: tuple[int, ...] = (1, 3)
    tolerance: float = FP32_TOLERANCE
    seed: int | None = None  # inputs for verification; None: fresh each run
    int8: bool = False  # quantize a Keras model to a full-integer TFLite model first (fcm.pipeline.quantize)
    calibration: str | Path | None = None  # with int8: a .npy of input samples; None: random (a warning)
    io_dtype: str = "int8"  # with int8: the quantized model's input and output type ("int8" or "uint8")
    layout: str = "nhwc"  # fp32: the fused nodes' layout, "nhwc" (channels last) or "nchw" (int8 is NHWC)
    mean_layers: bool = False  # float, nhwc: the spatial means as Mean layers of the domain (not yet measured on a GPU)
    precision: str = "fp32"  # a float model computed in "fp32", "fp16" or "bf16"
    io_half: bool = False  # fp16/bf16: the model's inputs and outputs in the precision too (default: fp32, one Cast each)
    samples: int = 256  # fp16/bf16: random images for the verification's agreement
    # the values of the verification's random inputs; None: the model's (pixel values 0-255 for a Keras
    # model that rescales its input itself, else [-1, 1]: extractor.sources.keras_input_range)
    input_range: tuple[float, float] | None = None
    source: SourceOptions = field(default_factory=SourceOptions)


@dataclass
class ConvertResult:
    output: Path
    files: dict[str, Path]
    dag: Dag
    plan: Any  # planner.Plan
    rewrite: Any  # the lowering's record: .fused and .skipped groups
    checks: list  # the precision's verification records: verify.Check (fp32), verify.Agreement (int8)
    notes: list[str]
    summary: list[str] = field(default_factory=list)  # lines saying how it was verified (int8)
    precision: str = "fp32"
    target: Any = None  # Target: the GPU planned for, and whether it was assumed
    advice: str | None = None  # what to run on the deployment GPU (fp32 models with fused groups)


@dataclass
class Target:
    """The GPU a conversion plans for, and whether it was assumed (no GPU here, no --gpu)."""
    gpu: Any  # planner.Gpu
    assumed: bool = False


def resolve_target(name: str) -> Target:
    from planner.gpus import detect_local, resolve

    if name != "auto":
        return Target(resolve(name))
    try:
        return Target(detect_local())
    except FcmError:
        return Target(resolve(ASSUMED_GPU), assumed=True)


def tune_advice(output: Path, target: Target) -> str:
    """What to run on the GPU the model is deployed on (the plan is the cost model's guess until then)."""
    where = (f"planned for an assumed {target.gpu.name} (no GPU here; --gpu names one)" if target.assumed
             else f"planned for {target.gpu.name} by the cost model")
    return (f"{where}: until `fcm tune {output} --batch 1,32` runs on the GPU you deploy on, some fused groups may be "
            "slower there than ONNX Runtime's own kernels")


def check_options(options: ConvertOptions) -> Any:
    """The options' own consistency and files, before any model is read; the calibration samples
    (None without --calibration)."""
    from .quantize import check_io_dtype, read_calibration

    if options.batch < 1:
        raise FcmError(f"--batch must be at least 1, not {options.batch}")
    if options.dtype not in (None, "fp32", "int8"):
        raise FcmError(f"unknown dtype {options.dtype!r} (fp32 or int8)")
    check_io_dtype(options.io_dtype)
    if (options.calibration is not None or options.io_dtype != "int8") and not options.int8:
        raise FcmError("--calibration and --io-dtype apply with --int8 only")
    if options.int8 and options.dtype == "fp32":
        raise FcmError("--int8 converts to int8: leave out --dtype fp32")
    if options.layout not in ("nhwc", "nchw"):
        raise FcmError(f"unknown layout {options.layout!r} (nhwc or nchw)")
    if options.precision not in FLOAT_PRECISIONS:
        raise FcmError(f"unknown precision {options.precision!r} ({', '.join(FLOAT_PRECISIONS)})")
    if options.io_half and options.precision == "fp32":
        raise FcmError("--io half needs --precision fp16 or bf16")
    if options.precision != "fp32" and (options.int8 or options.dtype == "int8"):
        raise FcmError(f"--precision {options.precision} converts a float model; --int8 and --dtype int8 make an int8 one")
    if options.precision != "fp32" and options.samples < 1:
        raise FcmError(f"the verification needs at least one sample, not {options.samples}")
    if options.input_range is not None and not options.input_range[0] < options.input_range[1]:
        raise FcmError(f"the input range must be LO,HI with LO < HI, not {options.input_range}")
    return read_calibration(options.calibration) if options.calibration is not None else None


def convert(spec: Any, output: str | Path, options: ConvertOptions | None = None,
            progress: Progress = lambda message: None) -> ConvertResult:
    options = options or ConvertOptions()
    output = Path(output)
    if output.suffix != ".onnx":
        raise FcmError("the output must be an .onnx file", output)
    samples = check_options(options)
    target = resolve_target(options.gpu)
    names = [p.name for p in output_files(output).values()] + ([f"{output.stem}.tflite"] if options.int8 else [])
    check_writable(output.parent, tuple(names))

    progress(f"opening {spec if isinstance(spec, (str, Path)) else 'the model'}")
    source = open_model(spec, options.source)
    if options.int8:
        if source.kind == "keras":
            return convert_quantized(source, output, options, progress, target, samples)
        if source.kind == "savedmodel":
            raise FcmError("--int8 quantizes Keras models (keras:<Name>, .keras, .h5); for a SavedModel, quantize it "
                           "with TFLite's converter and give the full-integer .tflite", source.where)
        if options.calibration is not None:
            raise FcmError("--calibration applies to Keras models; this .tflite is quantized already or not at all",
                           source.where)
    progress("extracting the layer DAG")
    dag = source.dag()
    precision = precision_of(source, dag, options)
    if options.int8 and precision != "int8":
        raise FcmError("--int8 on a .tflite needs a full-integer model (a float .tflite is not quantized here: give "
                       "the Keras model it came from)", source.where)
    return run(PRECISIONS[precision], source, dag, output, options, progress, target)


def run(precision, source: OpenedModel, dag: Dag, output: Path, options: ConvertOptions, progress: Progress,
        target: Target, tflite: bytes | None = None, notes: list[str] | None = None) -> ConvertResult:
    """The conversion of an opened model in one precision (:mod:`fcm.pipeline.precisions`) for
    ``target``; ``tflite``: the model's bytes, written beside the outputs as ``<stem>.tflite``
    (``--int8``, where the model was quantized here)."""
    from planner import make_plan

    started = time.monotonic()
    notes = list(notes or [])
    if options.input_range is None:
        options = replace(options, input_range=source.input_range)
    prepared = precision.prepare(source, dag, progress)
    gpu = target.gpu
    dtype = options.dtype or getattr(precision, "plan_dtype", precision.name)
    progress(f"planning for {gpu.name}, batch {options.batch}, {dtype}")
    plan = make_plan(dag, gpu, options.batch, dtype, dag_path=f"{output.stem}.dag.json")
    lowered = precision.lower(prepared, dag, plan, options, progress, notes)
    for skipped in lowered.result.skipped:
        notes.append(f"group {skipped['group']} ({skipped['kind']} {skipped['layers']}) left unfused: {skipped['reason']}")

    checks: list = []
    if options.verify:
        checks = precision.verify(source, lowered, options, progress)
    else:
        notes.append("not verified (--no-verify)")

    files = output_files(output)
    if tflite is not None:
        files["tflite"] = output.with_name(f"{output.stem}.tflite")
    tunable = bool(lowered.result.fused) and precision.name == "fp32"
    advice = tune_advice(output, target) if tunable else None
    report_notes = notes + [tune_advice(Path(output.name), target)] if tunable else notes  # no folder in the report
    text = precision.report(source, dag, plan, lowered, checks, report_notes, options, time.monotonic() - started, files)
    progress(f"writing {output}")
    for model in (lowered.fused, lowered.unfused):
        record_input_range(model, options.input_range)
    write_outputs(files, lowered.fused, lowered.unfused, dag, plan.to_json(), text, tflite)
    summary = precision.summary(checks, options)
    return ConvertResult(output, files, dag, plan, lowered.result, checks, notes, summary, precision.name, target, advice)


def convert_quantized(source: OpenedModel, output: Path, options: ConvertOptions, progress: Progress, target: Target,
                      samples=None) -> ConvertResult:
    """``--int8`` on a Keras model: quantize it to a full-integer TFLite model (:mod:`fcm.pipeline.quantize`),
    convert that on the int8 path, and write the .tflite beside the outputs (``<stem>.tflite``),
    with them or not at all."""
    import tempfile

    from .quantize import quantize_keras

    what = f"{options.calibration}" if options.calibration is not None else "random data"
    progress(f"quantizing to a full-integer TFLite model ({options.io_dtype} input/output, calibrated on {what})")
    tflite = quantize_keras(source.keras_model, options.calibration, options.io_dtype, options.source.seed, samples)
    notes = [f"quantized by TFLite's post-training full-integer quantization ({options.io_dtype} input and output), "
             + (f"calibrated on the samples of {options.calibration}" if options.calibration is not None else
                "calibrated on random data: the quantization ranges, and so the accuracy, are meaningless for real inputs")]
    with tempfile.TemporaryDirectory(prefix="fcm-int8-") as scratch:
        path = Path(scratch) / f"{output.stem}.tflite"
        path.write_bytes(tflite)
        quantized = OpenedModel("tflite", f"{source.where} (quantized to int8)", path=path)
        progress("extracting the layer DAG of the quantized model")
        dag = quantized.dag()
        if precision_of(quantized, dag, ConvertOptions(dtype="int8")) != "int8":
            raise FcmError("TFLite's quantization did not give a full-integer model", source.where)  # pragma: no cover
        return run(PRECISIONS["int8"], quantized, dag, output, options, progress, target, tflite=tflite, notes=notes)


def output_files(output: Path) -> dict[str, Path]:
    """Where a conversion writes: OUT.onnx and its companions beside it."""
    stem = output.stem
    return {
        "fused": output,
        "unfused": output.with_name(f"{stem}.unfused.onnx"),
        "dag": output.with_name(f"{stem}.dag.json"),
        "weights": output.with_name(f"{stem}.weights.npz"),
        "plan": output.with_name(f"{stem}.plan.json"),
        "report": output.with_name(f"{stem}.report.md"),
    }


def write_outputs(files: dict[str, Path], fused: onnx.ModelProto, unfused: onnx.ModelProto, dag: Dag, plan_json: dict,
                  report: str, tflite: bytes | None = None) -> None:
    """Write every file of ``files`` (:func:`output_files`, plus ``"tflite"`` with ``tflite``) at once, or none.

    They are written into a scratch folder inside the output folder, then renamed into place, the
    fused model last; a failure takes back what was renamed and restores what it replaced. The
    fused model records the SHA-256 of the others (metadata ``fcm.companions``), so a set mixed by
    a process killed mid-rename shows (``fcm verify`` and ``fcm bench`` check it)."""
    with staged_directory(files["fused"].parent, last=files["fused"].name) as scratch:
        if tflite is not None:
            (scratch / files["tflite"].name).write_bytes(tflite)
        onnx.save(unfused, scratch / files["unfused"].name)
        dag_dir = scratch / "dag"
        dag.save(dag_dir)
        (dag_dir / "dag.json").rename(scratch / files["dag"].name)
        (dag_dir / "weights.npz").rename(scratch / files["weights"].name)
        dag_dir.rmdir()
        (scratch / files["plan"].name).write_text(json.dumps(plan_json, indent=1) + "\n")
        (scratch / files["report"].name).write_text(report)
        companions = {path.name: file_digest(scratch / path.name) for key, path in files.items() if key != "fused"}
        record_companions(fused, companions)
        onnx.save(fused, scratch / files["fused"].name)


def precision_of(source: OpenedModel, dag: Dag, options: ConvertOptions) -> str:
    """The precision ``dag`` converts in (int8, or the float precision asked for: fp32, fp16, bf16); an
    FcmError for what converts in none."""
    from ort_custom_ops.lowering.int8 import quantization

    kind = quantization(dag)
    if kind == "full" and source.kind == "tflite":
        if options.dtype == "fp32":
            raise FcmError("a full-integer model converts to int8 only (leave out --dtype, or give int8)", source.where)
        if options.precision != "fp32":
            raise FcmError(f"a full-integer model converts to int8 only: --precision {options.precision} takes a "
                           "float model (the Keras model, or a float .tflite)", source.where)
        return "int8"
    if kind == "hybrid":
        raise FcmError("the model mixes quantized and float tensors (dynamic-range or float-I/O quantization): "
                       "neither the fp32 nor the int8 path converts it; give a float model or a full-integer one",
                       source.where)
    if options.dtype == "int8":
        raise FcmError("--dtype int8 needs a full-integer .tflite model", source.where)
    return options.precision
