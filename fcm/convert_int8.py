"""``fcm convert`` for full-integer TFLite models: a fused int8 ONNX model, verified.

In: the opened .tflite model and its DAG (int8 weights, per-channel scales, every tensor int8/uint8),
the output path and the options (GPU and batch to plan for, the requantization ``scheme``). Out:
``OUT.onnx`` (each planned group one fused int8 node of the ``ai.fcm`` domain, every other layer an
int8 op: :mod:`ort_custom_ops.int8_model`), beside it ``<stem>.unfused.onnx`` (the same model with
every convolution a one-stage int8 node), ``<stem>.dag.json`` + ``<stem>.weights.npz``,
``<stem>.plan.json`` and ``<stem>.report.md``; all written only once verified, nothing on failure.

Verification, on fresh random inputs at each verification batch: the fused model must equal the
unfused one bit for bit (fusing changes no arithmetic), and agree with the TFLite interpreter
running the scheme's arithmetic (XNNPACK, the default delegate, for ``fp32``; the builtin kernels
for ``fixed_point``): ``fp32`` all outputs within 1 and at least 99.9% equal (only SOFTMAX is
computed in float); ``fixed_point`` all within 2 (the builtin MEAN's rounding is not reproduced).
The int8 model needs the FCM library: its int8 ops have no exact standard-ONNX equivalent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from extractor.dag import Dag
from extractor.sources import OpenedModel
from fcm.errors import FcmError

#: The least share of equal outputs and the largest difference each scheme must show against its
#: interpreter.
AGREEMENT = {"fp32": (0.999, 1), "fixed_point": (0.0, 2)}


@dataclass
class Agreement:
    name: str
    batch: int
    equal: float  # share of equal output values
    max_diff: int
    top5_same: bool | None  # the five largest outputs (as sets) of every row; None: not a classifier

    def line(self) -> str:
        top5 = "" if self.top5_same is None else f", top-5 {'the same' if self.top5_same else 'different'}"
        return f"{self.name} at batch {self.batch}: {self.equal:.2%} equal, largest difference {self.max_diff}{top5}"


def compare(name: str, got: np.ndarray, want: np.ndarray) -> Agreement:
    if got.shape != want.shape:
        raise FcmError(f"{name}: output shape {got.shape} differs from {want.shape}")
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    top5 = None
    if got.ndim == 2 and got.shape[1] >= 5:
        top5 = all(set(np.argsort(-g.astype(np.int64), kind="stable")[:5]) == set(np.argsort(-w.astype(np.int64), kind="stable")[:5])
                   for g, w in zip(got, want))
    return Agreement(name, int(got.shape[0]), float(np.mean(diff == 0)) if diff.size else 1.0,
                     int(diff.max()) if diff.size else 0, top5)


def verify(source: OpenedModel, fused: onnx.ModelProto, unfused: onnx.ModelProto, scheme: str, batches, seed,
           progress) -> list[Agreement]:
    from fcm.convert import interpreter_outputs, random_inputs
    from ort_custom_ops.library import make_session

    rng = np.random.default_rng(seed)
    sessions = {"fused": make_session(fused), "unfused": make_session(unfused)}
    interpreter = "TFLite builtin kernels" if scheme == "fixed_point" else "TFLite (XNNPACK)"
    least_equal, largest = AGREEMENT[scheme]
    checks = []
    for batch in batches:
        progress(f"verifying at batch {batch}")
        inputs = random_inputs(unfused, batch, rng)
        outputs = {name: s.run(None, {i.name: a for i, a in zip(s.get_inputs(), inputs)}) for name, s in sessions.items()}
        reference = interpreter_outputs(source.path, inputs, builtin=scheme == "fixed_point")
        for k, (got, plain, want) in enumerate(zip(outputs["fused"], outputs["unfused"], reference)):
            same = compare("fused vs unfused ONNX", got, plain)
            if same.max_diff:
                raise FcmError(f"verification failed: the fused int8 model differs from the unfused one at batch {batch} "
                               f"({1 - same.equal:.2%} of output {k}); nothing written")
            check = compare(f"fused ONNX vs {interpreter}", got, want)
            if check.max_diff > largest or check.equal < least_equal:
                raise FcmError(f"verification failed: {check.line()} (bound: {least_equal:.1%} equal, within {largest}); "
                               "nothing written")
            checks.append(check)
    return checks


def convert_int8(source: OpenedModel, dag: Dag, output: Path, options, progress, tflite: bytes | None = None,
                 notes: list[str] | None = None):
    """The int8 pipeline of :func:`fcm.convert.convert` (its docstring and this module's say what
    is written); ``tflite``: the model's bytes, written beside the outputs as ``<stem>.tflite``
    (``fcm convert --int8``, where the model was quantized here)."""
    from fcm.convert import ConvertResult, _gpu, output_files, write_outputs
    from ort_custom_ops.int8_model import build, check_full_integer
    from planner import make_plan

    started = time.monotonic()
    notes = list(notes or [])
    check_full_integer(dag, source.where)
    gpu = _gpu(options.gpu, notes, progress)
    progress(f"planning for {gpu.name}, batch {options.batch}, int8")
    plan = make_plan(dag, gpu, options.batch, "int8", dag_path=f"{output.stem}.dag.json")
    plan_json = plan.to_json()
    progress(f"building the int8 model: {len(plan.groups)} fused groups, {options.scheme} requantization")
    result = build(dag, [g.candidate for g in plan.groups], options.scheme)
    unfused = build(dag, [], options.scheme).model
    for skipped in result.skipped:
        notes.append(f"group {skipped['group']} ({skipped['kind']} {skipped['layers']}) left unfused: {skipped['reason']}")

    checks: list[Agreement] = []
    if options.verify:
        checks = verify(source, result.model, unfused, options.scheme, options.verify_batches, options.seed, progress)
    else:
        notes.append("not verified (--no-verify)")

    files = output_files(output)
    if tflite is not None:
        files["tflite"] = output.with_name(f"{output.stem}.tflite")
    report = format_report(source.where, dag, plan, result, checks, notes, options.scheme, time.monotonic() - started, files)
    progress(f"writing {output}")
    write_outputs(files, result.model, unfused, dag, plan_json, report, tflite)
    summary = [f"int8 ({options.scheme} requantization); verified: " + c.line() for c in checks]
    return ConvertResult(output, files, dag, plan, result, [], notes, summary=summary)


def format_report(where: str, dag: Dag, plan, result, checks: list[Agreement], notes: list[str], scheme: str,
                  seconds: float, files: dict[str, Path]) -> str:
    fused_convs = [c for f in result.fused for c in f["layers"]]
    lines = [f"# Conversion report (int8): {where}", "",
             f"Full-integer model; int8 ops of the ai.fcm domain with **{scheme}** requantization; planned for "
             f"**{plan.gpu.name}**, batch {plan.batch}.", "",
             f"- fused int8 nodes: {len(result.fused)} (of {len(plan.groups)} planned groups), holding "
             f"{len(fused_convs)} of {len(dag.convs())} convolutions",
             "- files: " + ", ".join(f"`{p.name}`" for p in files.values()),
             f"- conversion took {seconds:.1f} s", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Fused groups", "", "| group | kind | DAG layers replaced | node |", "|---|---|---|---|"]
    lines += [f"| {f['group']} | {f['kind']}{' + residual' if f['residual'] else ''} | "
              f"{', '.join(map(str, f['replaced']))} | `{f['node']}` |" for f in result.fused]
    lines.append("")
    if checks:
        lines += ["## Verification", "", "Fresh random inputs; the fused model equals the unfused one bit for bit.", ""]
        lines += [f"- {c.line()}" for c in checks] + [""]
    return "\n".join(lines)
