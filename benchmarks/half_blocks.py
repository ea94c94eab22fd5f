"""One fused node per MobileNetV2 block shape on ONNX Runtime's CUDA provider, in fp32 (TF32), fp16
and bf16: the time of each precision's kernels on the same shapes.

    python benchmarks/half_blocks.py [--batch 32] [--runs 200] [--json OUT.json]

In: the FCM library with CUDA kernels, onnxruntime-gpu. Out: per block, the median time of one run
of a one-node model (a channels-last FusedPwDwPw, random weights, inputs and output bound to device
buffers, CUDA graph), per precision, and the half precisions' speedups over fp32. A run's time
includes ONNX Runtime's per-run overhead (the same for every precision: compare, don't read as a
kernel's time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (size, c, m, f, stride): MobileNetV2's inverted-residual blocks at 224x224
BLOCKS = [(112, 16, 96, 24, 2), (56, 24, 144, 24, 1), (56, 24, 144, 32, 2), (28, 32, 192, 32, 1), (28, 32, 192, 64, 2),
          (14, 64, 384, 64, 1), (14, 96, 576, 96, 1), (14, 96, 576, 160, 2), (7, 160, 960, 160, 1), (7, 160, 960, 320, 1)]
ONNX_TYPES = {"fp32": 1, "fp16": 10, "bf16": 16}


def block_spec(c: int, m: int, f: int, stride: int, precision: str, rng):
    from ort_custom_ops.ops.schema import Activation, FcmSpec, StageSpec

    relu6 = Activation("clip", (0.0, 6.0))
    stages = [StageSpec("pw", rng.normal(0, 1 / np.sqrt(c), (m, c)).astype(np.float32), rng.normal(0, 0.1, m).astype(np.float32), relu6),
              StageSpec("dw", rng.normal(0, 1 / 3, (m, 3, 3)).astype(np.float32), rng.normal(0, 0.1, m).astype(np.float32), relu6,
                        stride=stride, pads=(1, 1, 1, 1) if stride == 1 else (0, 0, 1, 1)),
              StageSpec("pw", rng.normal(0, 1 / np.sqrt(m), (f, m)).astype(np.float32), rng.normal(0, 0.1, f).astype(np.float32),
                        Activation())]
    spec = FcmSpec("pwdwpw", stages, residual=stride == 1 and c == f, channels_last=True)
    return dataclasses.replace(spec, precision=precision)


def time_node(spec, batch: int, size: int, runs: int) -> float:
    """Median ms of one run, inputs and output bound to device buffers, CUDA graph on."""
    import onnxruntime as ort

    from ort_custom_ops.ops.library import make_session
    from ort_custom_ops.ops.standalone import fused_model

    element = ONNX_TYPES[spec.precision]
    session = make_session(fused_model(spec), providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"}), "CPUExecutionProvider"],
                           reference_kernels=False)
    c, f = spec.stages[0].weight.shape[1], spec.stages[-1].weight.shape[0]
    stride = spec.stages[1].stride
    out = (size + stride - 1) // stride
    x = np.random.default_rng(0).normal(size=(batch, size, size, c)).astype(np.float32)
    bits = x if spec.precision == "fp32" else x.astype(np.float16 if spec.precision == "fp16" else np.float32)
    if spec.precision == "bf16":  # the upper halves of the float32 patterns
        bits = (x.view(np.uint32) >> 16).astype(np.uint16)
    elif spec.precision == "fp16":
        bits = bits.view(np.uint16)
    x_dev = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(bits), "cuda", 0)
    y_dev = ort.OrtValue.ortvalue_from_numpy(np.zeros((batch, out, out, f), np.float32 if spec.precision == "fp32" else np.uint16),
                                             "cuda", 0)
    binding = session.io_binding()
    binding.bind_input("X", "cuda", 0, element, list(x.shape), x_dev.data_ptr())
    binding.bind_output(session.get_outputs()[0].name, "cuda", 0, element, [batch, out, out, f], y_dev.data_ptr())
    for _ in range(20):
        session.run_with_iobinding(binding)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run_with_iobinding(binding)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="batch size (default: 32)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per node (default: 200)")
    parser.add_argument("--json", default="", help="write the timings here")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    rows = []
    print(f"batch {args.batch}: block, fp32 (TF32) ms, fp16 ms, bf16 ms, fp16 / bf16 speedup over fp32")
    for size, c, m, f, stride in BLOCKS:
        row = {"block": f"{size}x{size} {c}-{m}-{f} s{stride}"}
        for precision in ("fp32", "fp16", "bf16"):
            row[precision] = round(time_node(block_spec(c, m, f, stride, precision, rng), args.batch, size, args.runs), 4)
        rows.append(row)
        print(f"  {row['block']:24s} {row['fp32']:.4f} {row['fp16']:.4f} {row['bf16']:.4f}  "
              f"{row['fp32'] / row['fp16']:.2f}x {row['fp32'] / row['bf16']:.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"batch": args.batch, "runs": args.runs, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
