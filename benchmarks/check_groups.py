"""Each fused node of converted models alone on the GPU against the CPU reference kernels (GPU machine).

    python3 benchmarks/check_groups.py ZOO_DIR MODEL [MODEL ...] [--batch N]

For every fused node: the node as a one-node model (random inputs of its shapes), run by the CUDA
kernels in exact FP32 and in TF32 and by the CPU kernels; prints the largest difference relative
to the output's largest magnitude. Set FCM_CUDA_VERBOSE=1 to see each node's launch plan.
"""

import argparse
import os
from pathlib import Path

import numpy as np
import onnx

from fcm.measure import cuda_session, group_models, providers, value_shapes
from ort_custom_ops.ops.library import make_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("zoo", type=Path)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--in-model", action="store_true",
                        help="compare every fused node's output inside the whole model (CUDA vs CPU kernels, same input)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    if args.in_model:
        for name in args.models:
            in_model(args.zoo / name / f"{name}.onnx", args.batch, rng)
        return
    for name in args.models:
        model = onnx.load(args.zoo / name / f"{name}.onnx")
        shapes = value_shapes(model, args.batch)
        for node in model.graph.node:
            if node.domain != "ai.fcm":
                continue
            alone, _, data_inputs = group_models(model, node, shapes)
            feeds = {k: rng.uniform(-1, 1, shapes[k]).astype(np.float32) for k in data_inputs}
            (cpu,) = make_session(alone, providers=["CPUExecutionProvider"]).run(None, feeds)
            scale = float(np.abs(cpu).max()) or 1.0
            errors = {}
            for mode in ("fp32", "tf32"):
                os.environ["FCM_CUDA_FP32"] = "1" if mode == "fp32" else "0"
                (gpu,) = cuda_session(alone, True, providers(False, False, mode == "tf32")).run(None, feeds)
                errors[mode] = float(np.abs(gpu - cpu).max()) / scale
            flag = "  <-- WRONG" if errors["fp32"] > 1e-4 else ""
            print(f"{name} {node.name} {node.op_type} fp32 {errors['fp32']:.2e} tf32 {errors['tf32']:.2e}{flag}", flush=True)


def in_model(path: Path, batch: int, rng: np.random.Generator) -> None:
    model = onnx.load(path)
    fused = [n for n in model.graph.node if n.domain == "ai.fcm"]
    for node in fused:
        model.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    cpu = make_session(model, providers=["CPUExecutionProvider"])
    x = rng.uniform(-1, 1, (batch,) + tuple(cpu.get_inputs()[0].shape[1:])).astype(np.float32)
    feeds = {cpu.get_inputs()[0].name: x}
    reference = cpu.run(None, feeds)
    for mode in ("fp32", "tf32"):
        os.environ["FCM_CUDA_FP32"] = "1" if mode == "fp32" else "0"
        outputs = cuda_session(model, True, providers(False, False, mode == "tf32")).run(None, feeds)
        for i, (ref, out) in enumerate(zip(reference, outputs)):
            label = "model output" if i == 0 else fused[i - 1].name
            scale = float(np.abs(ref).max()) or 1.0
            print(f"{path.stem} {mode} {label}: {float(np.abs(out - ref).max()) / scale:.2e} of {scale:.3g}", flush=True)


if __name__ == "__main__":
    main()
