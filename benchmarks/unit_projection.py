"""A pointwise projection of pooled rows ([N, C] values at 1x1) in its three ONNX forms, timed in
ONNX Runtime's CUDA provider.

    python3 benchmarks/unit_projection.py [--batch 1,32] [--lengths 4,20] [--runs 300] [--json OUT.json]

Why: the conversion computes a 1x1 Conv between channels-last neighbours as ``MatMul(x [N, 1, 1, C],
W^T [C, F])``; on MobileNetV3-Small's classifier head at batch 1 cuBLAS ran that product 2-4x slower
than the source's Conv (``benchmarks/2026-12-03-h200-chunk64-pdl-modes``). The forms:

- ``conv``: ``Conv(x [N, C, 1, 1], W [F, C, 1, 1], b)``, as the source model has it;
- ``matmul``: ``MatMul(x [N, 1, 1, C], W^T [C, F])`` then ``Add(b)``, as the conversion writes it;
- ``gemm``: ``Reshape(x, [N, C])``, ``Gemm(., W [F, C], b, transB=1)``, ``Reshape(., [N, 1, 1, F])``;
- ``dense``: ``MatMul(x [N, C], W^T [C, F])`` then ``Add(b)``, as a Keras Dense layer exports (a
  classifier on flattened features; ONNX Runtime may fuse the two into a Gemm of its own).

In: batch sizes and shapes (C -> F pairs; by default MobileNetV3-Small's head, MobileNetV2's
classifier and a squeeze-and-excitation projection pair). Out: per form, shape and batch, the
median time of chains of projections (C -> F -> C -> ...) at two lengths, CUDA graphs and
``prefer_nhwc`` on, and the slope: the time of one projection without the run's fixed cost. Each
chain runs in its own session.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORMS = ("conv", "matmul", "gemm", "dense")
SHAPES = ((576, 1024), (1024, 1000), (1280, 1000), (96, 24), (24, 96))


def layout(form: str, batch, channels: int) -> list:
    """The shape of a ``form`` chain's tensor of ``channels`` values per image."""
    if form == "conv":
        return [batch, channels, 1, 1]
    return [batch, channels] if form == "dense" else [batch, 1, 1, channels]


def chain(form: str, c: int, f: int, length: int, rng):
    """``length`` projections alternating C -> F and F -> C, in ``form``, from X to Y."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights = [], []
    current, width = "X", c
    for i in range(length):
        out_width = f if width == c else c
        kernel = rng.normal(0, width ** -0.5, (out_width, width)).astype(np.float32)
        bias = rng.normal(0, 0.1, out_width).astype(np.float32)
        out = "Y" if i == length - 1 else f"h{i}"
        if form == "conv":
            weights += [numpy_helper.from_array(kernel[:, :, None, None], f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
            nodes.append(helper.make_node("Conv", [current, f"w{i}", f"b{i}"], [out], name=f"conv{i}"))
        elif form in ("matmul", "dense"):  # the same nodes; the layouts differ (see layout)
            weights += [numpy_helper.from_array(np.ascontiguousarray(kernel.T), f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
            nodes += [helper.make_node("MatMul", [current, f"w{i}"], [f"p{i}"], name=f"matmul{i}"),
                      helper.make_node("Add", [f"p{i}", f"b{i}"], [out], name=f"add{i}")]
        else:
            weights += [numpy_helper.from_array(kernel, f"w{i}"), numpy_helper.from_array(bias, f"b{i}"),
                        numpy_helper.from_array(np.array([-1, width], np.int64), f"rows{i}"),
                        numpy_helper.from_array(np.array([-1, 1, 1, out_width], np.int64), f"map{i}")]
            nodes += [helper.make_node("Reshape", [current, f"rows{i}"], [f"r{i}"], name=f"rows{i}"),
                      helper.make_node("Gemm", [f"r{i}", f"w{i}", f"b{i}"], [f"g{i}"], name=f"gemm{i}", transB=1),
                      helper.make_node("Reshape", [f"g{i}", f"map{i}"], [out], name=f"map{i}")]
        current, width = out, out_width
    graph = helper.make_graph(nodes, form, [helper.make_tensor_value_info("X", TensorProto.FLOAT, layout(form, "N", c))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, layout(form, "N", width))], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model, width


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", default="1,32", help="batch sizes, comma-separated (default: 1,32)")
    parser.add_argument("--shapes", default=",".join(f"{c}x{f}" for c, f in SHAPES),
                        help="C x F pairs, comma-separated (default: two heads, a classifier and a squeeze-and-excitation pair)")
    parser.add_argument("--lengths", default="4,20", help="two chain lengths (default: 4,20)")
    parser.add_argument("--runs", type=int, default=300, help="timed runs per chain (default: 300)")
    parser.add_argument("--warmup", type=int, default=30, help="warm-up runs per chain (default: 30)")
    parser.add_argument("--json", default="", help="write the rows here")
    args = parser.parse_args()
    try:
        batches = [int(b) for b in args.batch.split(",") if b]
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
        lengths = sorted({int(n) for n in args.lengths.split(",") if n})
    except ValueError:
        parser.error("--batch, --shapes (CxF) and --lengths take integers")
    if len(lengths) != 2 or lengths[0] < 1 or any(len(s) != 2 or min(s) < 1 for s in shapes) or not batches:
        parser.error("--lengths takes two different positive lengths; --shapes pairs C x F of positive sizes")

    from fcm.measure import cuda_session, providers, time_session

    rng = np.random.default_rng(0)
    rows = []
    print("shape, batch, form: median ms per chain length; us per projection (slope)")
    for c, f in shapes:
        for batch in batches:
            for form in FORMS:
                row = {"c": c, "f": f, "batch": batch, "form": form, "ms": {}}
                for length in lengths:
                    model, width = chain(form, c, f, length, rng)
                    x_shape, y_shape = layout(form, batch, c), layout(form, batch, width)
                    session = cuda_session(model, False, providers(True, True))
                    timing, _ = time_session(session, {"X": rng.normal(size=x_shape).astype(np.float32)}, [y_shape],
                                             args.runs, args.warmup)
                    row["ms"][length] = round(timing.median_ms, 4)
                    del session
                row["us_per_projection"] = round((row["ms"][lengths[1]] - row["ms"][lengths[0]]) /
                                                 (lengths[1] - lengths[0]) * 1e3, 2)
                rows.append(row)
                times = " ".join(f"{n}: {ms:.4f}" for n, ms in row["ms"].items())
                print(f"  {c}x{f} b{batch} {form:6} {times}  {row['us_per_projection']:.2f} us", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"lengths": lengths, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
