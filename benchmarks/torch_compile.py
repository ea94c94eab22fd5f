"""PyTorch's own compiler on the torchvision versions of the reference architectures, timed the way
``fcm bench`` times ONNX Runtime (GPU machine; needs torch and torchvision, no ONNX Runtime).

In: model names (torchvision's: mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large,
efficientnet_b0), batch sizes. Out: a JSON file (and a markdown table beside it) with, per model
and batch, the median wall-clock time of one inference (input and output on the device, the host
waiting for the result, as ``fcm bench`` waits for ``run_with_iobinding``) for eager PyTorch and for
``torch.compile(mode="max-autotune")`` (Inductor with autotuned kernels and CUDA graphs), and the
compile time. Weights are random (the machine cannot download torchvision's; the times do not
depend on them). FP32 with TF32 allowed in matrix products and convolutions, as ONNX Runtime's
CUDA provider allows it by default. Each model and batch runs in its own process, under a time
limit, so that one slow compile costs only its own row.

MobileNet (v1) and Xception have no torchvision version: they are listed as such.

    python3 benchmarks/torch_compile.py --batch 1,32 -o torch_compile.json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fcm.anchors import timed_calls

TORCHVISION = {
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3_small": "mobilenet_v3_small",
    "mobilenet_v3_large": "mobilenet_v3_large",
    "efficientnet_b0": "efficientnet_b0",
}
NOT_IN_TORCHVISION = ("mobilenet", "xception")


def measure_one(model_name: str, batch: int, runs: int, warmup: int) -> dict:
    """Eager and max-autotune times of one torchvision model at one batch size (run in a child)."""
    import torch
    import torchvision

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    model = getattr(torchvision.models, TORCHVISION[model_name])(weights=None).eval().cuda()
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    row: dict = {"model": model_name, "torchvision": TORCHVISION[model_name], "batch": batch,
                 "torch": torch.__version__, "torchvision_version": torchvision.__version__,
                 "gpu": torch.cuda.get_device_name()}
    with torch.inference_mode():
        row["eager"] = timed_calls(lambda: model(x), runs, warmup).to_json()
        compiled = torch.compile(model, mode="max-autotune")
        started = time.perf_counter()
        reference = model(x)
        out = compiled(x)
        torch.cuda.synchronize()
        row["compile_s"] = round(time.perf_counter() - started, 1)
        # the compiled model must compute the same function (TF32 on both sides); with random
        # weights the outputs are small, so the difference is reported beside their size
        row["max_abs_diff_vs_eager"] = float((out.float() - reference.float()).abs().max())
        row["max_abs_output"] = float(reference.float().abs().max())
        row["max_autotune"] = timed_calls(lambda: compiled(x), runs, warmup).to_json()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(TORCHVISION), help="comma-separated (default: all four)")
    parser.add_argument("--batch", default="1,32", help="comma-separated batch sizes (default 1,32)")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per measurement (default 100)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up runs (default 20)")
    parser.add_argument("--limit-s", type=int, default=300, help="time limit per model and batch (default 300 s)")
    parser.add_argument("-o", "--output", type=Path, default=Path("torch_compile.json"))
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args.runs, args.warmup)))
        return 0

    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in TORCHVISION and m not in NOT_IN_TORCHVISION]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(list(TORCHVISION) + list(NOT_IN_TORCHVISION))}")
    rows: list[dict] = []

    def write() -> None:  # after every row: a run cut short keeps what it measured
        args.output.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
        lines = ["| model | batch | eager (ms) | max-autotune (ms) | compile (s) |", "|---|---|---|---|---|"]
        for row in rows:
            if "error" in row:
                lines.append(f"| {row['model']} | {row['batch']} | | {row['error']} | |")
            else:
                lines.append(f"| {row['model']} | {row['batch']} | {row['eager']['median_ms']} | "
                             f"{row['max_autotune']['median_ms']} | {row['compile_s']} |")
        args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")

    for model in models:
        for batch in [int(b) for b in args.batch.split(",")]:
            if model in NOT_IN_TORCHVISION:
                rows.append({"model": model, "batch": batch, "error": "no torchvision version"})
                continue
            print(f"{model} batch {batch}: compiling and timing ...", file=sys.stderr, flush=True)
            command = [sys.executable, __file__, "--one", model, str(batch), "--runs", str(args.runs),
                       "--warmup", str(args.warmup)]
            # its own process group: a compile cut short takes its compile workers with it
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
            try:
                stdout, stderr = child.communicate(timeout=args.limit_s)
                done = subprocess.CompletedProcess(command, child.returncode, stdout, stderr)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.communicate()
                rows.append({"model": model, "batch": batch, "error": f"over the {args.limit_s} s limit"})
                write()
                continue
            if done.returncode != 0:
                rows.append({"model": model, "batch": batch, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]})
                write()
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            write()
            print(f"  eager {row['eager']['median_ms']} ms, max-autotune {row['max_autotune']['median_ms']} ms "
                  f"(compiled in {row['compile_s']} s)", file=sys.stderr, flush=True)
    write()
    print(args.output.with_suffix(".md").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
