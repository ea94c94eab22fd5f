"""``fcm convert``: a Keras/TFLite model -> a verified fused ONNX model.

In: a model specification (as for ``fcm extract``), the output path, the GPU/batch/dtype to plan
for. Out: ``OUT.onnx`` (the fused model) and beside it ``<stem>.unfused.onnx`` (the same model,
exported and normalized, without fusion), ``<stem>.dag.json`` + ``<stem>.weights.npz``,
``<stem>.plan.json`` and ``<stem>.report.md``, all written only once the fused model has been
verified against the source model; on any failure nothing is written.

Steps: open the model; export it to ONNX (tf2onnx) and normalize it; extract the DAG and plan the
fusion; rewrite the ONNX graph; run the source model and the fused model (with the custom-op
library, and without it) on fresh random inputs and compare.

A full-integer TFLite model (int8/uint8 tensors throughout) takes the int8 path instead
(:mod:`fcm.convert_int8`): its ONNX model is built from the DAG with the int8 ops, no export.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from extractor.dag import Dag
from extractor.sources import OpenedModel, SourceOptions, open_model
from fcm.errors import FcmError
from fcm.fileio import staged_directory

FP32_TOLERANCE = 1e-4  # max |fused - reference| <= tolerance * max |reference| (DESIGN.md §6)


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
    int8: bool = False  # quantize a Keras model to a full-integer TFLite model first (fcm.quantize)
    calibration: str | Path | None = None  # with int8: a .npy of input samples; None: random (a warning)
    io_dtype: str = "int8"  # with int8: the quantized model's input and output type ("int8" or "uint8")
    source: SourceOptions = field(default_factory=SourceOptions)


@dataclass
class Check:
    name: str
    batch: int
    max_abs_error: float
    max_abs_reference: float

    @property
    def relative(self) -> float:
        return self.max_abs_error / self.max_abs_reference if self.max_abs_reference else self.max_abs_error

    def passed(self, tolerance: float) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.relative <= tolerance


@dataclass
class ConvertResult:
    output: Path
    files: dict[str, Path]
    dag: Dag
    plan: Any  # planner.Plan
    rewrite: Any  # ort_custom_ops.rewrite.RewriteResult
    checks: list[Check]
    notes: list[str]
    summary: list[str] = field(default_factory=list)  # lines saying how it was verified (int8)


Progress = Callable[[str], None]


def _gpu(name: str, notes: list[str], progress: Progress):
    from planner.gpus import detect_local, resolve

    if name != "auto":
        return resolve(name)
    try:
        return detect_local()
    except FcmError:
        notes.append("no local NVIDIA GPU found: planned for an H100 (choose with --gpu)")
        return resolve("H100")


def export(model: OpenedModel) -> onnx.ModelProto:
    from ort_custom_ops import export as exporter

    if model.kind == "keras":
        return exporter.from_keras(model.keras_model)
    if model.kind == "tflite":
        return exporter.from_tflite(model.path)
    return exporter.from_saved_model(model.path)


# --- running the source model -----------------------------------------------------------------

def reference_outputs(model: OpenedModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    if model.kind == "keras":
        result = model.keras_model.predict(inputs[0] if len(inputs) == 1 else inputs, verbose=0)
        return [np.asarray(r) for r in (result if isinstance(result, (list, tuple)) else [result])]
    if model.kind == "tflite":
        return interpreter_outputs(model.path, inputs, builtin=True)
    import tensorflow as tf

    function = tf.saved_model.load(str(model.path)).signatures["serving_default"]
    names = list(function.structured_input_signature[1])
    result = function(**{n: tf.constant(a) for n, a in zip(names, inputs)})
    return [np.asarray(v) for v in result.values()]


def interpreter_outputs(path: Path, inputs: list[np.ndarray], builtin: bool = True) -> list[np.ndarray]:
    """The TFLite interpreter's outputs: its builtin kernels, or the default resolver (XNNPACK)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else OpResolverType.AUTO
    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    for detail, array in zip(interpreter.get_input_details(), inputs):
        interpreter.resize_tensor_input(detail["index"], array.shape)
    interpreter.allocate_tensors()
    for detail, array in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def random_inputs(model: onnx.ModelProto, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    arrays = []
    initializers = {i.name for i in model.graph.initializer}
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        tensor_type = graph_input.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        shape = [batch if i == 0 else (d or 1) for i, d in enumerate(dims)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.uniform(-1.0, 1.0, shape).astype(dtype))
        else:
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype))
    return arrays


def verify(source: OpenedModel, fused: onnx.ModelProto, unfused: onnx.ModelProto, options: ConvertOptions,
           progress: Progress) -> list[Check]:
    """The fused model, with the library and without it (its function bodies inlined), and the
    unfused ONNX, against the source model, on fresh random inputs."""
    from ort_custom_ops.library import make_session

    rng = np.random.default_rng(options.seed)
    sessions = {
        "fused ONNX with the FCM library": make_session(fused, with_library=True),
        "fused ONNX without the library": make_session(fused, with_library=False),
        "unfused ONNX": make_session(unfused, with_library=False),
    }
    checks = []
    for batch in options.verify_batches:
        inputs = random_inputs(unfused, batch, rng)
        progress(f"verifying at batch {batch}")
        reference = reference_outputs(source, inputs)
        for name, session in sessions.items():
            feeds = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
            outputs = session.run(None, feeds)
            for ref, out in zip(reference, outputs):
                if np.shape(ref) != np.shape(out):
                    raise FcmError(f"{name}: output shape {np.shape(out)} differs from the source model's {np.shape(ref)}")
            error = max(float(np.abs(o.astype(np.float64) - r.astype(np.float64)).max()) for r, o in zip(reference, outputs))
            scale = max(float(np.abs(r.astype(np.float64)).max()) for r in reference)
            checks.append(Check(name, batch, error, scale))
    failed = [c for c in checks if c.name != "unfused ONNX" and not c.passed(options.tolerance)]
    if failed:
        worst = max(failed, key=lambda c: c.relative)
        raise FcmError(f"verification failed: {worst.name} at batch {worst.batch} is off by {worst.max_abs_error:.3g} "
                       f"({worst.relative:.3g} of the largest output, bound {options.tolerance:g}); nothing written")
    return checks


# --- the pipeline -------------------------------------------------------------------------------

def convert(spec: Any, output: str | Path, options: ConvertOptions | None = None,
            progress: Progress = lambda message: None) -> ConvertResult:
    from ort_custom_ops.normalize import normalize
    from ort_custom_ops.rewrite import rewrite
    from planner import make_plan

    options = options or ConvertOptions()
    output = Path(output)
    if output.suffix != ".onnx":
        raise FcmError("the output must be an .onnx file", output)
    notes: list[str] = []
    started = time.monotonic()

    progress(f"opening {spec if isinstance(spec, (str, Path)) else 'the model'}")
    source = open_model(spec, options.source)
    if (options.calibration is not None or options.io_dtype != "int8") and not options.int8:
        raise FcmError("--calibration and --io-dtype apply with --int8 only")
    if options.int8:
        if options.dtype == "fp32":
            raise FcmError("--int8 converts to int8: leave out --dtype fp32")
        if source.kind == "keras":
            return convert_quantized(source, output, options, progress)
        if source.kind == "savedmodel":
            raise FcmError("--int8 quantizes Keras models (keras:<Name>, .keras, .h5); for a SavedModel, quantize it "
                           "with TFLite's converter and give the full-integer .tflite", source.where)
        if options.calibration is not None:
            raise FcmError("--calibration applies to Keras models; this .tflite is quantized already or not at all",
                           source.where)
    progress("extracting the layer DAG")
    dag = source.dag()
    if options.int8 and not _int8_path(source, dag, options):
        raise FcmError("--int8 on a .tflite needs a full-integer model (a float .tflite is not quantized here: give "
                       "the Keras model it came from)", source.where)
    if _int8_path(source, dag, options):
        from fcm.convert_int8 import convert_int8

        return convert_int8(source, dag, output, options, progress)
    dtype = options.dtype or "fp32"
    progress("exporting to ONNX (tf2onnx)")
    exported = export(source)
    progress("normalizing the ONNX graph")
    unfused = normalize(exported)
    gpu = _gpu(options.gpu, notes, progress)
    progress(f"planning for {gpu.name}, batch {options.batch}, {dtype}")
    plan = make_plan(dag, gpu, options.batch, dtype, dag_path=f"{output.stem}.dag.json")
    plan_json = plan.to_json()
    progress(f"rewriting {len(plan.groups)} groups")
    result = rewrite(unfused, dag, plan_json)
    if not dag.convs() or not any(layer.type in ("dw", "pw") for layer in dag.convs()):
        notes.append("the model has no depthwise or pointwise convolutions: nothing to fuse, the graph is unchanged")
    elif not result.fused:
        notes.append("no fusion group applies: the graph is unchanged")
    for skipped in result.skipped:
        notes.append(f"group {skipped['group']} ({skipped['kind']} {skipped['layers']}) left unfused: {skipped['reason']}")

    checks: list[Check] = []
    if options.verify:
        checks = verify(source, result.model, unfused, options, progress)
    else:
        notes.append("not verified (--no-verify)")

    files = output_files(output)
    report = format_report(source.where, dag, plan, result, checks, notes, options, time.monotonic() - started, files)
    progress(f"writing {output}")
    write_outputs(files, result.model, unfused, dag, plan_json, report)
    return ConvertResult(output, files, dag, plan, result, checks, notes)


def convert_quantized(source: OpenedModel, output: Path, options: ConvertOptions, progress: Progress) -> ConvertResult:
    """``--int8`` on a Keras model: quantize it to a full-integer TFLite model (:mod:`fcm.quantize`),
    convert that on the int8 path, and write the .tflite beside the outputs (``<stem>.tflite``),
    with them or not at all."""
    import tempfile

    from fcm.convert_int8 import convert_int8
    from fcm.quantize import quantize_keras

    what = f"{options.calibration}" if options.calibration is not None else "random data"
    progress(f"quantizing to a full-integer TFLite model ({options.io_dtype} input/output, calibrated on {what})")
    tflite = quantize_keras(source.keras_model, options.calibration, options.io_dtype, options.source.seed)
    notes = [f"quantized by TFLite's post-training full-integer quantization ({options.io_dtype} input and output), "
             + (f"calibrated on the samples of {options.calibration}" if options.calibration is not None else
                "calibrated on random data: the quantization ranges, and so the accuracy, are meaningless for real inputs")]
    with tempfile.TemporaryDirectory(prefix="fcm-int8-") as scratch:
        path = Path(scratch) / f"{output.stem}.tflite"
        path.write_bytes(tflite)
        quantized = OpenedModel("tflite", f"{source.where} (quantized to int8)", path=path)
        progress("extracting the layer DAG of the quantized model")
        dag = quantized.dag()
        if not _int8_path(quantized, dag, ConvertOptions(dtype="int8")):
            raise FcmError("TFLite's quantization did not give a full-integer model", source.where)  # pragma: no cover
        return convert_int8(quantized, dag, output, options, progress, tflite=tflite, notes=notes)


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
    """Write every file of ``files`` (:func:`output_files`, plus ``"tflite"`` with ``tflite``) at once, or none."""
    with staged_directory(files["fused"].parent) as scratch:
        if tflite is not None:
            (scratch / files["tflite"].name).write_bytes(tflite)
        onnx.save(fused, scratch / files["fused"].name)
        onnx.save(unfused, scratch / files["unfused"].name)
        dag_dir = scratch / "dag"
        dag.save(dag_dir)
        (dag_dir / "dag.json").rename(scratch / files["dag"].name)
        (dag_dir / "weights.npz").rename(scratch / files["weights"].name)
        dag_dir.rmdir()
        (scratch / files["plan"].name).write_text(json.dumps(plan_json, indent=1) + "\n")
        (scratch / files["report"].name).write_text(report)


def _int8_path(source: OpenedModel, dag: Dag, options: ConvertOptions) -> bool:
    """Whether ``dag`` converts on the int8 path; an FcmError for what converts on neither."""
    from ort_custom_ops.int8_model import quantization

    kind = quantization(dag)
    if options.dtype not in (None, "fp32", "int8"):
        raise FcmError(f"unknown dtype {options.dtype!r} (fp32 or int8)")
    if kind == "full" and source.kind == "tflite":
        if options.dtype == "fp32":
            raise FcmError("a full-integer model converts to int8 only (leave out --dtype, or give int8)", source.where)
        return True
    if kind == "hybrid":
        raise FcmError("the model mixes quantized and float tensors (dynamic-range or float-I/O quantization): "
                       "neither the fp32 nor the int8 path converts it; give a float model or a full-integer one",
                       source.where)
    if options.dtype == "int8":
        raise FcmError("--dtype int8 needs a full-integer .tflite model", source.where)
    return False


# --- the report ---------------------------------------------------------------------------------

def format_report(where: str, dag: Dag, plan, result, checks: list[Check], notes: list[str], options: ConvertOptions,
                  seconds: float, files: dict[str, Path]) -> str:
    totals = plan.totals()
    fused_groups = {f["group"]: f for f in result.fused}
    lines = [
        f"# Conversion report: {where}",
        "",
        f"Planned for **{plan.gpu.name}** ({plan.gpu.source}), batch {plan.batch}, {plan.dtype}.",
        "",
        "## Summary",
        "",
        f"- fused nodes: {len(result.fused)} (of {len(plan.groups)} planned groups)",
        f"- convolutions in fused nodes: {sum(len(g.candidate.convs) for g in plan.groups if g.id in fused_groups)} of "
        f"{totals['convs']}; depthwise: "
        f"{sum(1 for g in plan.groups if g.id in fused_groups for c in g.candidate.convs if dag[c].type == 'dw')} of {totals['dw_convs']}",
        f"- predicted: {totals['unfused']['time_us'] / 1e3:.3f} ms unfused -> {totals['fused']['time_us'] / 1e3:.3f} ms fused, "
        f"{totals['unfused']['dram_bytes'] / 1e6:.1f} MB -> {totals['fused']['dram_bytes'] / 1e6:.1f} MB of DRAM traffic, "
        f"{totals['unfused']['launches']} -> {totals['fused']['launches']} kernel launches",
        f"- files: " + ", ".join(f"`{p.name}`" for p in files.values()),
        f"- conversion took {seconds:.1f} s",
        "",
    ]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Fused groups", "",
              "| group | kind | DAG layers | source layers | ONNX nodes replaced | tiling | predicted unfused -> fused (us) |",
              "|---|---|---|---|---|---|---|"]
    for group in plan.groups:
        if group.id not in fused_groups:
            continue
        layers = group.candidate.convs
        names = ", ".join((dag[i].source or {}).get("layers", [str(i)])[0] for i in layers)
        t = group.tiling
        tiling = f"{t.tile_h}x{t.tile_w}x{t.tile_f}" + (f" split {t.split}" if t.split > 1 else "")
        kind = group.candidate.kind + (" + residual" if group.candidate.residual_add is not None else "")
        lines.append(f"| {group.id} | {kind} | {', '.join(map(str, layers))} | {names} | "
                     f"{len(fused_groups[group.id]['replaced'])} | {tiling} | "
                     f"{group.unfused.time * 1e6:.1f} -> {group.fused.time * 1e6:.1f} |")
    lines.append("")
    if plan.unfused_reasons:
        lines += ["## Convolutions left unfused", "", "| layer | type | reason |", "|---|---|---|"]
        lines += [f"| {i} | {dag[i].type} | {reason} |" for i, reason in sorted(plan.unfused_reasons.items())]
        lines.append("")
    if checks:
        lines += ["## Verification", "",
                  f"Fresh random inputs (uniform in [-1, 1]); bound: max |error| <= {options.tolerance:g} x max |reference|.", "",
                  "| compared with the source model | batch | max abs error | max abs reference | relative |",
                  "|---|---|---|---|---|"]
        lines += [f"| {c.name} | {c.batch} | {c.max_abs_error:.3g} | {c.max_abs_reference:.3g} | {c.relative:.3g} |" for c in checks]
        lines.append("")
    return "\n".join(lines)
