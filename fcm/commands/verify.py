"""``fcm verify``: a fused model run against its unfused version.

In: a fused .onnx (and its unfused form). Out: per comparison the largest difference and the bound
it was held to, the time per run; an error beyond a bound, or when the asked provider cannot run.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from fcm_core.errors import FcmError

from .common import Reporter, input_range, onnxruntime_errors, positive_int

HALF_TYPES = {"fp16": 10, "bf16": 16}  # onnx.TensorProto.FLOAT16, BFLOAT16


HELP = "run a fused model and compare it with its unfused version"
DESCRIPTION = " ".join("""
Run a fused model in onnxruntime with the FCM library registered and the unfused model beside it
on the same random inputs, and print the difference and the time per run. On the CPU both sides
compute in FP32 and are held to --tolerance. On the CUDA provider an fp32 model is compared twice:
with TF32 off on both sides (the fused nodes' allow_tf32=0, the provider's use_tf32=0), held to
--tolerance, and as deployed, TF32 on both sides, held to --tf32-tolerance (TF32 rounds the
pointwise stages' inputs to 10 bits, on both sides: the bound the unfused model itself meets
against FP32). Where the model's conditioning makes its own outputs move more (two FP32
implementations of the unfused model, ONNX Runtime's on CUDA and on the CPU, differ by more than a
tenth of --tolerance; TF32 moves them by more than half of --tf32-tolerance), the bound is 10x
(2x) that, and the line says so. A half-precision model (fcm convert --precision fp16|bf16) is
compared on random images with the unfused model in the same precision on the same provider, held
to a bound derived from the precision: 5 x sqrt(R) x u, with u the precision's unit roundoff and R
the most roundings on one path that the two models do not share, or twice the spread of the
unfused model's own roundings (it against itself computed in fp32) where the model's conditioning
makes that larger; on CUDA as deployed, on the library's CUDA kernels (where the library has none
for the model's ops, a user's session runs their function bodies, and the library's CPU reference
kernels are checked too). (The comparison with the fp32 source model is fcm convert's.) --provider
cuda where the CUDA provider cannot run is an error.
""".split())

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fcm.pipeline.verify import FP32_TOLERANCE, TF32_TOLERANCE

    parser.add_argument("model", help="a fused .onnx file (from fcm convert)")
    parser.add_argument("--against", metavar="ONNX", help="the model to compare with (default: <stem>.unfused.onnx beside it)")
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size (default: 1)")
    parser.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto",
                        help="execution provider (default: CUDA when this onnxruntime has it and the FCM library "
                        "has CUDA kernels, else the CPU)")
    parser.add_argument("--runs", type=positive_int, default=10, help="runs to time (default: 10)")
    parser.add_argument("--tolerance", type=float, default=FP32_TOLERANCE,
                        help=f"largest allowed difference in FP32 (the CPU, or TF32 off on the GPU), relative to the "
                        f"largest output (default: {FP32_TOLERANCE:g})")
    parser.add_argument("--tf32-tolerance", type=float, default=TF32_TOLERANCE,
                        help=f"the same with TF32 on, on the GPU (default: {TF32_TOLERANCE:g})")
    parser.add_argument("--input-range", metavar="LO,HI",
                        help="the values of the random inputs, as the model expects them (default: those fcm convert "
                        "verified it on, recorded in the model; else -1,1)")


def widened(bound: float, factor: float, spread: float, what: str) -> tuple[float, str]:
    """``bound``, or ``factor`` x ``spread`` where the model's conditioning makes that larger (with
    the reason, for the output line)."""
    if factor * spread <= bound:
        return bound, ""
    return factor * spread, f": {factor:g}x the {spread:.3g} by which {what}"


def check_tolerance(value: float, option: str) -> None:
    if not math.isfinite(value) or value < 0:
        raise FcmError(f"{option} must be a number at least 0, not {value:g}")


def run(args: argparse.Namespace, report: Reporter) -> int:
    import numpy as np

    from fcm.measure import with_allow_tf32
    from fcm.pipeline.convert import output_files
    from fcm.pipeline.inputs import random_inputs
    from fcm.pipeline.verify import Check, check_companion, is_fp32_fused, load_model, model_precision, recorded_input_range
    from ort_custom_ops.ops.library import cuda_unavailable_reason, make_session

    check_tolerance(args.tolerance, "--tolerance")
    value_range = input_range(args.input_range)
    check_tolerance(args.tf32_tolerance, "--tf32-tolerance")
    fused_path = Path(args.model)
    against = Path(args.against) if args.against else output_files(fused_path)["unfused"]
    for path in (fused_path, against):
        if not path.is_file():
            raise FcmError("no such file" + ("" if args.against or path == fused_path else " (give --against)"), path)
    reason = cuda_unavailable_reason()
    if args.provider == "cuda" and reason:
        raise FcmError(f"--provider cuda cannot run here: {reason}")
    on_cuda = args.provider == "cuda" or (args.provider == "auto" and not reason)
    fused_model = load_model(fused_path)
    check_companion(fused_model, fused_path, against)

    def run_model(model, where: Path, tf32: bool | None, inputs: list, timed: bool = False,
                  reference_kernels: bool = True):
        """``model``'s outputs on ``inputs`` (and the times of ``args.runs`` runs where ``timed``):
        on the CPU (``tf32`` None), or on CUDA with TF32 on or off (the fp32 fused nodes' allow_tf32
        and the provider's use_tf32); with the library's CPU reference kernels, or as a user's
        session registers it. An int8 model's ops are all FCM ops: the library is always
        registered."""
        if tf32 is None:
            providers = [CPU]
        else:
            providers = [(CUDA, {"device_id": "0", "use_tf32": "1" if tf32 else "0"}), CPU]
            model = model if tf32 or not is_fp32_fused(model) else with_allow_tf32(model, False)
        with onnxruntime_errors(where):
            session = make_session(model, providers=providers, reference_kernels=reference_kernels)
            if tf32 is not None and CUDA not in session.get_providers():
                raise FcmError("--provider cuda: ONNX Runtime could not start its CUDA provider (no usable GPU?)")
            feeds = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
            times = []
            for _ in range(args.runs if timed else 1):
                started = time.perf_counter()
                outputs = session.run(None, feeds)
                times.append(time.perf_counter() - started)
        return outputs, times

    report.progress(f"running {fused_path.name} and {against.name} at batch {args.batch} "
                    + ("on the CPU" if not on_cuda else "on CUDAExecutionProvider"))
    precision = model_precision(fused_model)
    unfused_model = load_model(against)
    checks = []  # (label, check, bound, why the bound is wider than asked, times)
    value_range = value_range or recorded_input_range(fused_model)
    inputs = random_inputs(fused_model, args.batch, np.random.default_rng(), value_range)
    if precision in ("fp16", "bf16"):
        checks = half_checks(precision, fused_model, fused_path, unfused_model, against, args.batch, value_range,
                             on_cuda, run_model)
    elif not on_cuda:
        outputs, times = run_model(fused_model, fused_path, None, inputs, timed=True)
        expected, _ = run_model(unfused_model, against, None, inputs)
        checks.append(("on the CPU, FP32", Check.of("cpu", args.batch, outputs, expected), args.tolerance, "", times))
    elif not is_fp32_fused(fused_model):  # int8: no TF32 in it
        outputs, times = run_model(fused_model, fused_path, False, inputs, timed=True)
        expected, _ = run_model(unfused_model, against, False, inputs)
        checks.append(("on CUDA", Check.of("cuda", args.batch, outputs, expected), args.tolerance, "", times))
    else:
        # The model's own sensitivity, measured on the unfused model: how far two FP32
        # implementations (CUDA without TF32, the CPU) and TF32 move its outputs. A badly conditioned
        # model widens the bounds to 10x and 2x of these, and the line says so.
        exact, _ = run_model(unfused_model, against, False, inputs)
        cpu, _ = run_model(unfused_model, against, None, inputs)
        deployed, _ = run_model(unfused_model, against, True, inputs)
        fp32_spread = Check.of("fp32", args.batch, exact, cpu).relative
        tf32_spread = Check.of("tf32", args.batch, deployed, exact).relative
        outputs, _ = run_model(fused_model, fused_path, False, inputs)
        bound, why = widened(args.tolerance, 10, fp32_spread, "the unfused model's CUDA and CPU outputs differ")
        checks.append(("on CUDA, TF32 off on both sides (exact FP32)", Check.of("exact", args.batch, outputs, exact),
                       bound, why, None))
        outputs, times = run_model(fused_model, fused_path, True, inputs, timed=True)
        bound, why = widened(args.tf32_tolerance, 2, tf32_spread, "TF32 moves the unfused model's outputs")
        checks.append(("on CUDA, TF32 on on both sides (as deployed)", Check.of("tf32", args.batch, outputs, deployed),
                       bound, why, times))
    failed = []
    for label, check, bound, why, times in checks:
        ok = check.passed(bound)
        timing = "" if not times else (f"; {sorted(times)[len(times) // 2] * 1e3:.2f} ms per run (median of "
                                        f"{len(times)}, wall clock, not a benchmark)")
        print(f"{fused_path}: {label}: largest difference from {against.name} {check.max_abs_error:.3g} "
              f"({check.relative:.3g} of the largest output; bound {bound:.3g}{why}){'' if ok else ': FAILED'}{timing}")
        if not ok:
            failed.append((label, check, bound))
    if failed:
        label, check, bound = failed[0]
        raise FcmError(f"{label}: the outputs differ by {check.relative:.3g} of the largest output, more than {bound:.3g}",
                       fused_path)
    return 0



def half_checks(precision: str, fused, fused_path: Path, unfused, against: Path, batch: int,
                value_range: tuple[float, float], on_cuda: bool, run_model) -> list:
    """A half-precision model against the unfused one in the same precision on ``batch`` random
    images (see the command's description): (label, check, bound, why, times) as ``run``'s."""
    import numpy as np

    from fcm.pipeline.verify import Check, UnfusedHalfReference, model_precision
    from ort_custom_ops.ops.library import library_cuda_float_ops
    from ort_custom_ops.ops.schema import DOMAIN
    from ort_custom_ops.ops.standalone import float_io

    element = HALF_TYPES[precision]
    in_precision = any(t.data_type == element for t in unfused.graph.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == element for a in n.attribute) for n in unfused.graph.node)
    if model_precision(unfused) != "fp32" or any(n.domain == "ai.fcm" for n in unfused.graph.node) or not in_precision:
        raise FcmError(f"--against must be the unfused {precision} model (fcm convert's <stem>.unfused.onnx)", against)
    where = False if on_cuda else None  # on CUDA with TF32 off: the fp32 side of the spread must be fp32
    reference = UnfusedHalfReference.of(precision, unfused, batch, np.random.default_rng(), value_range,
                                        lambda model, inputs: run_model(model, against, where, inputs)[0])
    inputs, expected, bound, rule = reference.inputs, reference.expected, reference.bound, reference.rule
    provider = "on CUDA" if on_cuda else "on the CPU"
    sides = [(f"{provider}, {precision}, the library's CPU reference kernels", True)]
    if on_cuda and {n.op_type for n in fused.graph.node if n.domain == DOMAIN} <= library_cuda_float_ops():
        # both settings register the CUDA kernels, and they take every half node: one check
        sides = [(f"{provider}, {precision}, the library's CUDA kernels (as deployed)", False)]
    elif on_cuda:  # a library without CUDA kernels for these ops: a user's session runs their function bodies
        sides.insert(0, (f"{provider}, {precision}, as deployed", False))
    checks = []
    for label, reference_kernels in sides:
        outputs, times = run_model(float_io(fused), fused_path, where, inputs, timed=True,
                                   reference_kernels=reference_kernels)
        checks.append((label, Check.of(precision, batch, outputs, expected), bound, f": {rule}", times))
    return checks
