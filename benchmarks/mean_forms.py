"""The spatial mean of a channels-last map in its ONNX forms, timed in ONNX Runtime's CUDA provider.

In: [H, W, C] map shapes (default: EfficientNetB0's squeeze-and-excitation inputs) and batch sizes.
Out (stdout, ``--json``): per shape, batch and form, microseconds per mean. The forms:

- ``reduce``: ``ReduceMean`` over axes 1 and 2 of the [N, H, W, C] map (what the layout cleanup
  leaves);
- ``matmul``: the map viewed as [N, HW, C] times a [1, HW] row of 1/HW (one batched product);
- ``matmul2``: the map viewed as [N*H, W, C] times a [1, W] row of 1/W, then [N, H, C] times a
  [1, H] row of 1/H (two products with a short reduction each).

How: each model holds ``--copies`` independent means of its one input (graph optimizations off,
so that ONNX Runtime does not merge them), run under a CUDA graph with bound device buffers
(``fcm.measure.time_session``); a form's time per mean is the median run time over the copies: the
forms are compared with each other at equal copies, each run's fixed cost spread over them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fcm.measure import time_session  # noqa: E402

SHAPES = [(112, 112, 32), (56, 56, 96), (56, 56, 144), (28, 28, 144), (28, 28, 240), (14, 14, 240), (14, 14, 480),
          (14, 14, 672), (7, 7, 672), (7, 7, 1152)]
FORMS = ("reduce", "matmul", "matmul2")


def _const(name: str, values) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values), name)


def mean_nodes(form: str, x: str, out: str, h: int, w: int, c: int, tag: str) -> tuple[list, list]:
    """The nodes and initializers of one mean of ``x`` [N, H, W, C] into ``out`` [N, 1, 1, C]."""
    if form == "reduce":
        return [helper.make_node("ReduceMean", [x], [out], axes=[1, 2], keepdims=1)], []
    if form == "matmul":
        inits = [_const(f"{tag}_s1", np.array([-1, h * w, c], np.int64)),
                 _const(f"{tag}_row", np.full((1, h * w), 1.0 / (h * w), np.float32)),
                 _const(f"{tag}_s2", np.array([-1, 1, 1, c], np.int64))]
        nodes = [helper.make_node("Reshape", [x, f"{tag}_s1"], [f"{tag}_v"]),
                 helper.make_node("MatMul", [f"{tag}_row", f"{tag}_v"], [f"{tag}_m"]),
                 helper.make_node("Reshape", [f"{tag}_m", f"{tag}_s2"], [out])]
        return nodes, inits
    inits = [_const(f"{tag}_s1", np.array([-1, w, c], np.int64)),
             _const(f"{tag}_roww", np.full((1, w), 1.0 / w, np.float32)),
             _const(f"{tag}_s2", np.array([-1, h, c], np.int64)),
             _const(f"{tag}_rowh", np.full((1, h), 1.0 / h, np.float32)),
             _const(f"{tag}_s3", np.array([-1, 1, 1, c], np.int64))]
    nodes = [helper.make_node("Reshape", [x, f"{tag}_s1"], [f"{tag}_v"]),
             helper.make_node("MatMul", [f"{tag}_roww", f"{tag}_v"], [f"{tag}_m1"]),
             helper.make_node("Reshape", [f"{tag}_m1", f"{tag}_s2"], [f"{tag}_v2"]),
             helper.make_node("MatMul", [f"{tag}_rowh", f"{tag}_v2"], [f"{tag}_m2"]),
             helper.make_node("Reshape", [f"{tag}_m2", f"{tag}_s3"], [out])]
    return nodes, inits


def model_of(form: str, h: int, w: int, c: int, copies: int) -> onnx.ModelProto:
    nodes, inits, outputs = [], [], []
    for k in range(copies):
        more, consts = mean_nodes(form, "x", f"y{k}", h, w, c, f"m{k}")
        nodes += more
        inits += consts
        outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, ["n", 1, 1, c]))
    graph = helper.make_graph(nodes, f"mean_{form}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", h, w, c])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def time_form(model: onnx.ModelProto, x: np.ndarray, c: int, copies: int, runs: int, warmup: int) -> tuple[float, float]:
    """(microseconds per mean, max abs error against numpy's mean)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])
    timing, outs = time_session(session, {"x": x}, [[x.shape[0], 1, 1, c]] * copies, runs, warmup)
    expected = x.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    error = max(float(np.abs(o - expected).max()) for o in outs)
    return timing.median_ms * 1e3 / copies, error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", default="1,32", help="batch sizes, comma-separated (default: 1,32)")
    parser.add_argument("--shapes", help="HxWxC map shapes, comma-separated (default: EfficientNetB0's)")
    parser.add_argument("--copies", type=int, default=8, help="means per model (default: 8)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model (default: 200)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up runs per model (default: 20)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")] if args.shapes else SHAPES
    rows = []
    rng = np.random.default_rng(0)
    for batch in (int(b) for b in args.batch.split(",")):
        for h, w, c in shapes:
            x = rng.standard_normal((batch, h, w, c)).astype(np.float32)
            row = {"batch": batch, "shape": [h, w, c]}
            for form in FORMS:
                us, error = time_form(model_of(form, h, w, c, args.copies), x, c, args.copies, args.runs, args.warmup)
                row[form] = {"us": round(us, 2), "max_abs_error": error}
            rows.append(row)
            print(f"b{batch} {h}x{w}x{c}: " + "  ".join(f"{f} {row[f]['us']:.2f} us" for f in FORMS), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
