"""The peers a benchmark compares with besides ONNX Runtime on the unfused model: PyTorch's own
compiler on the torchvision version of the architecture, in the same precision.

In: a torchvision architecture name (``mobilenet_v2``, ...), a precision (fp32, fp16, bf16), batch
sizes, the input size. Out (:func:`torch_compile_anchor`): per batch, eager PyTorch and
``torch.compile`` in each mode (``max-autotune``, ``reduce-overhead``), channels-last, the model and
its input in the precision (fp32 with TF32 allowed, as ONNX Runtime's CUDA provider allows it), the
median wall-clock time of one inference (input and output on the device, the host waiting for the
result, as ``fcm bench`` waits for ONNX Runtime), the best mode, and the versions; or why there is
no such anchor (no torchvision version, torch absent on this machine, the compile failed or ran out
of time). Each measurement runs in its own process under a time limit (``python -m fcm.anchors
--one ...``), so that a slow compile costs only its own row and leaves nothing behind. Weights are
random: the times do not depend on them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # (imported where timed: fcm bench's command line reads MODES without onnx)
    from .measure import Timing

#: torchvision's versions of the reference architectures (MobileNet v1 and Xception have none).
TORCHVISION = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")
MODES = ("max-autotune", "reduce-overhead")
Runner = Callable[[list[str], int], tuple[int, str, str]]  # (command, time limit) -> (status, stdout, stderr)


def run_child(command: list[str], limit_s: int) -> tuple[int, str, str]:
    """``command`` in its own process group, killed with its compile workers past ``limit_s``."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return -signal.SIGKILL, "", f"over the {limit_s} s limit"
    return child.returncode, stdout, stderr


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None and importlib.util.find_spec("torchvision") is not None


def torch_compile_anchor(arch: str | None, precision: str, batches: list[int], size: int, runs: int, warmup: int,
                         limit_s: int = 600, runner: Runner = run_child, available: Callable[[], bool] = torch_available,
                         modes: tuple[str, ...] = MODES) -> dict:
    """``{"arch", "precision", "modes", "batches": {batch: row}}`` or ``{"absent": reason}`` (see the
    module docstring); ``modes``: the compile modes timed (some of :data:`MODES`)."""
    if arch is None:
        return {"absent": "no torchvision version of this architecture"}
    if arch not in TORCHVISION:
        return {"absent": f"{arch} is not a torchvision architecture here ({', '.join(TORCHVISION)})"}
    if not available():
        return {"absent": "torch and torchvision are not installed on this machine"}
    out: dict = {"arch": arch, "precision": precision, "modes": list(modes), "batches": {}}
    for batch in batches:
        command = [sys.executable, "-m", "fcm.anchors", "--one", arch, precision, str(batch), str(size),
                   "--runs", str(runs), "--warmup", str(warmup), "--modes", ",".join(modes)]
        status, stdout, stderr = runner(command, limit_s)
        lines = stdout.strip().splitlines()
        if status != 0 or not lines:
            out["batches"][str(batch)] = {"error": (stderr.strip().splitlines() or ["failed"])[-1][:200]}
            continue
        out["batches"][str(batch)] = best_mode(json.loads(lines[-1]))
    return out


def best_mode(row: dict) -> dict:
    """``row`` with ``best``: the compile mode with the smallest median (modes that failed left out)."""
    timed = {mode: entry for mode, entry in row.get("modes", {}).items() if "median_ms" in entry}
    if timed:
        mode = min(timed, key=lambda m: timed[m]["median_ms"])
        row["best"] = {"mode": mode, "median_ms": timed[mode]["median_ms"]}
    return row


def timed_calls(fn, runs: int, warmup: int) -> Timing:
    """Wall-clock times of ``fn()`` on the GPU (synchronized after each call), after ``warmup`` calls."""
    import torch

    from .measure import Timing

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1e3)
    return Timing.of(times)


def measure(arch: str, precision: str, batch: int, size: int, runs: int, warmup: int,
            modes: tuple = MODES) -> dict:  # pragma: no cover (GPU)
    """Eager and compiled times of one torchvision model at one batch size (in a child process)."""
    import torch
    import torchvision

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    model = getattr(torchvision.models, arch)(weights=None).eval().to("cuda", dtype).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
    row: dict = {"arch": arch, "precision": precision, "batch": batch, "size": size, "channels_last": True,
                 "torch": torch.__version__, "torchvision": torchvision.__version__, "gpu": torch.cuda.get_device_name(),
                 "modes": {}}
    with torch.inference_mode():
        row["eager"] = timed_calls(lambda: model(x), runs, warmup).to_json()
        for mode in modes:
            torch._dynamo.reset()
            try:
                compiled = torch.compile(model, mode=mode)
                started = time.perf_counter()
                compiled(x)
                torch.cuda.synchronize()
                compile_s = round(time.perf_counter() - started, 1)
                row["modes"][mode] = {**timed_calls(lambda: compiled(x), runs, warmup).to_json(), "compile_s": compile_s}
            except Exception as exc:  # one mode failing leaves the other
                row["modes"][mode] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"}
    return row


def main(argv: list[str] | None = None) -> int:  # pragma: no cover (the child process, GPU)
    parser = argparse.ArgumentParser(prog="python -m fcm.anchors", description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", nargs=4, metavar=("ARCH", "PRECISION", "BATCH", "SIZE"), required=True)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"compile modes, comma-separated (default: {','.join(MODES)}; max-autotune compiles for minutes)")
    args = parser.parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes takes {', '.join(MODES)}")
    arch, precision, batch, size = args.one[0], args.one[1], int(args.one[2]), int(args.one[3])
    print(json.dumps(measure(arch, precision, batch, size, args.runs, args.warmup, modes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
