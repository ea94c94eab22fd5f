"""What a squeeze-and-excitation pool costs on ONNX Runtime's CUDA provider in each layout.

    python benchmarks/se_pool_layout.py MODEL.onnx [--batch 1,32] [--runs 200] [--json OUT.json]

In: a fused model (its ReduceMean nodes over the spatial axes give the shapes). Out: per shape and
batch, the time of one pooling in three forms, each as the difference between a model with 9 of
them and a model with 1, all summed into one output (CUDA graph, inputs and outputs bound on the
device, median of RUNS):

- nchw: ReduceMean over axes [2, 3] of [n, c, h, w] (how the unfused model pools);
- nhwc: ReduceMean over axes [1, 2] of [n, h, w, c] (how a channels-last fused model pools);
- nhwc_matmul: [n, h, w, c] reshaped to [n, h*w, c], multiplied by a [1, h*w] row of 1 / (h*w),
  reshaped to [n, 1, 1, c].

Without a GPU (or with --cpu) the three forms are only checked to agree on ONNX Runtime's CPU
provider. Why: a fused MobileNetV3-Small whose groups each beat their subgraphs ran slower than the
unfused model (benchmarks/2026-12-03-h200-retune-se), and its pools are the nhwc form.
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

FORMS = ("nchw", "nhwc", "nhwc_matmul")


def pool_shapes(model: onnx.ModelProto) -> list[tuple[int, int, int]]:
    """(h, w, c) of every spatial ReduceMean's input, in order, without repeats."""
    from fcm.measure import value_shapes

    shapes = value_shapes(model, 1)
    found = []
    for node in model.graph.node:
        if node.op_type != "ReduceMean":
            continue
        axes = next((list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "axes"), None)
        shape = shapes.get(node.input[0])
        if shape is None or len(shape) != 4 or axes not in ([1, 2], [2, 3]):
            continue
        h, w, c = (shape[1], shape[2], shape[3]) if axes == [1, 2] else (shape[2], shape[3], shape[1])
        if (h, w, c) not in found and h * w > 1:
            found.append((h, w, c))
    return found


def pooling_model(form: str, batch: int, h: int, w: int, c: int, copies: int) -> onnx.ModelProto:
    """`copies` poolings of one input, summed into one [batch, c] output."""
    shape = [batch, c, h, w] if form == "nchw" else [batch, h, w, c]
    nodes, inits, pooled = [], [], []
    if form == "nhwc_matmul":
        inits.append(numpy_helper.from_array(np.array([batch, h * w, c], np.int64), "rows_shape"))
        inits.append(numpy_helper.from_array(np.full((1, h * w), 1.0 / (h * w), np.float32), "mean_row"))
        nodes.append(helper.make_node("Reshape", ["x", "rows_shape"], ["rows"]))
    inits.append(numpy_helper.from_array(np.array([batch, c], np.int64), "out_shape"))
    for i in range(copies):
        if form == "nhwc_matmul":
            nodes.append(helper.make_node("MatMul", ["mean_row", "rows"], [f"m{i}"]))
        else:
            axes = [2, 3] if form == "nchw" else [1, 2]
            nodes.append(helper.make_node("ReduceMean", ["x"], [f"m{i}"], axes=axes, keepdims=1))
        nodes.append(helper.make_node("Reshape", [f"m{i}", "out_shape"], [f"p{i}"]))
        pooled.append(f"p{i}")
    total = pooled[0]
    for i, name in enumerate(pooled[1:]):
        nodes.append(helper.make_node("Add", [total, name], [f"s{i}"]))
        total = f"s{i}"
    nodes.append(helper.make_node("Identity", [total], ["y"]))
    graph = helper.make_graph(nodes, f"pool_{form}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, c])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def layout_input(form: str, nhwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)) if form == "nchw" else nhwc


def check_on_cpu(shapes: list[tuple[int, int, int]], batches: list[int]) -> None:
    """The three forms give the same means (ONNX Runtime's CPU provider)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    for batch in batches:
        for h, w, c in shapes:
            x = rng.standard_normal((batch, h, w, c), dtype=np.float32)
            want = x.mean(axis=(1, 2))
            for form in FORMS:
                session = ort.InferenceSession(pooling_model(form, batch, h, w, c, 1).SerializeToString(),
                                               providers=["CPUExecutionProvider"])
                got = session.run(None, {"x": layout_input(form, x)})[0]
                if not np.allclose(got, want, rtol=1e-5, atol=1e-6):
                    raise SystemExit(f"{form} {h}x{w}x{c} batch {batch}: max error {np.abs(got - want).max()}")
    print(f"the three forms agree on the CPU ({len(shapes)} shapes, batches {batches})")


def time_on_gpu(shapes: list[tuple[int, int, int]], batches: list[int], runs: int) -> list[dict]:
    from fcm.measure import cuda_session, providers, time_session

    rng = np.random.default_rng(0)
    rows = []
    for batch in batches:
        for h, w, c in shapes:
            x = rng.standard_normal((batch, h, w, c), dtype=np.float32)
            row = {"batch": batch, "h": h, "w": w, "c": c}
            for form in FORMS:
                best = None
                for nhwc in (False, True):
                    times = []
                    for copies in (1, 9):
                        # ONNX Runtime's common-subexpression elimination would merge the identical poolings into
                        # one (the first run of this script measured about 1 us for every shape)
                        session = cuda_session(pooling_model(form, batch, h, w, c, copies), False, providers(True, nhwc),
                                               disabled_optimizers=["CommonSubexpressionElimination"])
                        timing, _ = time_session(session, {"x": layout_input(form, x)}, [[batch, c]], runs, 20)
                        times.append(timing.median_ms)
                    per = (times[1] - times[0]) / 8 * 1e3
                    best = per if best is None else min(best, per)
                row[f"{form}_us"] = round(best, 2)
            rows.append(row)
            print(f"batch {batch:3d} {h:3d}x{w:<3d} {c:4d} ch: " + ", ".join(f"{f} {row[f + '_us']:.2f} us" for f in FORMS),
                  flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a fused .onnx model whose spatial ReduceMean nodes give the shapes")
    parser.add_argument("--batch", default="1,32", help="batch sizes, comma-separated (default: 1,32)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model (default: 200)")
    parser.add_argument("--cpu", action="store_true", help="only check that the forms agree, on the CPU")
    parser.add_argument("--json", default="", help="write the timings here")
    args = parser.parse_args()
    model = onnx.load(args.model, load_external_data=False)
    shapes = pool_shapes(model)
    if not shapes:
        raise SystemExit(f"{args.model}: no ReduceMean over spatial axes")
    batches = [int(b) for b in args.batch.split(",")]
    check_on_cpu(shapes, batches)
    import onnxruntime as ort

    if args.cpu or "CUDAExecutionProvider" not in ort.get_available_providers():
        print("no CUDA provider: timings skipped")
        return 0
    rows = time_on_gpu(shapes, batches, args.runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
