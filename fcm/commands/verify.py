"""``fcm verify``: a fused model run against its unfused version.

In: a fused .onnx (and its unfused form). Out: the largest difference and the time per run; an error
beyond the bound.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fcm_core.errors import FcmError

from .common import Reporter


HELP = "run a fused model and compare it with its unfused version"
DESCRIPTION = " ".join("""
Run a fused model in onnxruntime with the FCM library registered (on the CUDA provider when this
onnxruntime has it, else the CPU) and the unfused model beside it on the same random inputs; print
the difference and the time per run.
""".split())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a fused .onnx file (from fcm convert)")
    parser.add_argument("--against", metavar="ONNX", help="the model to compare with (default: <stem>.unfused.onnx beside it)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    parser.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto",
                        help="execution provider (default: CUDA when available)")
    parser.add_argument("--runs", type=int, default=10, help="runs to time (default: 10)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest allowed difference, relative to the largest output (default: 1e-4; 5e-3 for TF32 on GPUs)")


def run(args: argparse.Namespace, report: Reporter) -> int:
    import numpy as np
    import onnx

    from fcm.pipeline.inputs import random_inputs
    from ort_custom_ops.ops.library import default_providers, make_session

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
