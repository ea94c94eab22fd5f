"""Prepares the int8 MobileNetV2 check for the GPU machine (runs here, where TensorFlow is).

    python benchmarks/int8_prepare.py [-o .device/int8] [--tflite MODEL.tflite] [--gpu H100] [--plan-batch 1]
                                      [--no-wheels]

In: the int8 MobileNetV2 of the fixtures (``mob_v2_8.tflite``) and the fixture ImageNet image. Out,
in the output folder (``.device/int8`` is ignored by git), what ``benchmarks/int8_gpu.py`` reads on
the GPU machine, which has neither TensorFlow nor a TFLite parser:

- ``fused.onnx``: the fused int8 model (the planner's groups, ``fp32`` requantization), as
  ``fcm convert`` builds it (``ort_custom_ops.lowering.int8.build``);
- ``unfused.onnx``: the same with every convolution a one-stage ``QConv``;
- ``qdq.onnx``: tf2onnx's QDQ model of the .tflite (what ONNX Runtime runs without our ops), its
  batch dimension named ``N`` and any Reshape to a literal batch of 1 made batch-free;
- ``image.npy``: the fixture image resized as the model takes it, uint8 [1, 224, 224, 3];
- ``model.tflite``: the source model, for the interpreter there;
- ``wheels/``: ai-edge-litert (cp312) and the small packages it imports, to install there;
- ``manifest.json``: versions, the checks made here, each file's size and SHA-256.

Checks made here: the fused model equals the unfused one bit for bit and agrees with the local
TFLite interpreter (XNNPACK) on the image; the QDQ model at batch 4 equals, image by image, itself
at batch 1. The sizes are printed (everything sent to that machine at once must stay under 64 MiB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from fcm.pipeline.inputs import load_image

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("FCM_SHARED", ROOT.parent / "shared")) / "fixtures" / "seed_repo"
MOB_V2_TFLITE = FIXTURES / "mob_v2_8.tflite"

#: cp312 wheels for the GPU machine: the interpreter (the newest release for manylinux_2_17) and
#: the pure-Python packages it lists (tqdm and typing-extensions, also listed, are not imported by
#: the interpreter; numpy is there).
WHEELS = ("ai-edge-litert==1.4.0", "backports.strenum==1.2.8", "flatbuffers==25.12.19")
BATCH_DIM = "N"


def say(message: str) -> None:
    print(f"[int8-prepare] {message}", flush=True)


# --- the models ------------------------------------------------------------------------------------

def int8_models(tflite: Path, gpu: str, plan_batch: int):
    """(fused model, unfused model, the build's summary) as fcm convert builds them (fp32 scheme)."""
    from extractor import extract
    from ort_custom_ops.lowering.int8 import build, check_full_integer
    from planner import make_plan
    from planner.gpus import resolve

    dag = extract(tflite)
    check_full_integer(dag)
    plan = make_plan(dag, resolve(gpu), plan_batch, "int8")
    fused = build(dag, [g.candidate for g in plan.groups], "fp32")
    unfused = build(dag, [], "fp32")
    ops = [n.op_type for n in fused.model.graph.node if n.domain == "ai.fcm"]
    summary = {"gpu": plan.gpu.name, "plan_batch": plan_batch, "planned_groups": len(plan.groups),
               "fused_nodes": len(fused.fused), "skipped_groups": fused.skipped,
               "fcm_ops": {op: ops.count(op) for op in sorted(set(ops))}}
    return fused.model, unfused.model, summary


def batch_dynamic(model: onnx.ModelProto) -> list[str]:
    """Name the batch dimension of the graph's inputs and outputs ``N`` and make every constant
    Reshape target with a literal batch of 1 batch-free (-1, or 0 where -1 is already taken); drop
    the stored intermediate shapes (ONNX Runtime infers them). Returns what was changed."""
    changes = []
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and (dims[0].dim_param != BATCH_DIM or dims[0].HasField("dim_value")):
            was = dims[0].dim_param or dims[0].dim_value
            dims[0].dim_param = BATCH_DIM
            changes.append(f"{value.name}: batch dimension {was!r} -> {BATCH_DIM!r}")
    initializers = {i.name: i for i in model.graph.initializer}
    constants = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        name = node.input[1]
        if name in initializers:
            tensor = initializers[name]
        elif name in constants and constants[name].attribute and constants[name].attribute[0].name == "value":
            tensor = constants[name].attribute[0].t
        else:
            continue
        shape = numpy_helper.to_array(tensor).copy()
        if shape.ndim != 1 or not len(shape) or shape[0] != 1:
            continue
        shape[0] = 0 if -1 in shape[1:] else -1
        tensor.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), tensor.name))
        changes.append(f"Reshape {node.name}: target batch 1 -> {int(shape[0])}")
    if model.graph.value_info:
        changes.append(f"dropped {len(model.graph.value_info)} stored intermediate shapes")
        del model.graph.value_info[:]
    return changes


def qdq_model(tflite: Path) -> tuple[onnx.ModelProto, list[str]]:
    import tf2onnx

    model, _ = tf2onnx.convert.from_tflite(str(tflite), opset=17)
    return model, batch_dynamic(model)


def check_qdq_batches(path: Path, images: np.ndarray) -> dict:
    """The QDQ model (ONNX Runtime, CPU) on ``images`` at once and one by one: the same rows."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    (together,) = session.run(None, {name: images})
    alone = np.concatenate([session.run(None, {name: images[i:i + 1]})[0] for i in range(len(images))])
    equal = bool(together.shape == alone.shape and np.array_equal(together, alone))
    return {"batch": len(images), "rows_equal_to_batch_1": equal, "output_shape": list(together.shape)}


def check_int8(fused: onnx.ModelProto, unfused: onnx.ModelProto, tflite: Path, images: np.ndarray) -> dict:
    """Fused vs unfused (bit for bit) and fused vs the local interpreter (XNNPACK), on ``images``."""
    from fcm.pipeline.verify import interpreter_outputs
    from fcm.pipeline.verify import AGREEMENT, compare
    from ort_custom_ops.ops.library import make_session

    got = make_session(fused).run(None, {"input": images})[0]
    plain = make_session(unfused).run(None, {"input": images})[0]
    want = interpreter_outputs(tflite, [images], builtin=False)[0]
    rows = [compare(f"image {i}", got[i:i + 1], want[i:i + 1]) for i in range(len(images))]
    least_equal, largest = AGREEMENT["fp32"]
    return {"fused_equals_unfused": bool(np.array_equal(got, plain)),
            "vs_interpreter": [{"equal": round(r.equal, 5), "max_diff": r.max_diff, "top5_same": r.top5_same}
                               for r in rows],
            "within_bound": all(r.equal >= least_equal and r.max_diff <= largest and r.top5_same for r in rows)}


# --- files ---------------------------------------------------------------------------------------

def download_wheels(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", "--platform", "manylinux_2_17_x86_64", "-d", str(folder), *WHEELS]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return sorted(p.name for p in folder.glob("*.whl"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=ROOT / ".device" / "int8")
    parser.add_argument("--tflite", type=Path, default=MOB_V2_TFLITE)
    parser.add_argument("--gpu", default="H100", help="the GPU the planner plans for (default H100)")
    parser.add_argument("--plan-batch", type=int, default=1, help="the batch the planner plans for (default 1)")
    parser.add_argument("--no-wheels", action="store_true", help="keep the wheels already in OUT/wheels")
    args = parser.parse_args(argv)
    import onnxruntime as ort
    import tf2onnx
    from ai_edge_litert import __version__ as litert_version

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    versions = {"onnxruntime": ort.__version__, "tf2onnx": tf2onnx.__version__, "ai_edge_litert": litert_version,
                "onnx": onnx.__version__}
    manifest: dict = {"source": args.tflite.name, "versions": versions}

    say(f"building the int8 models of {args.tflite.name} (planned for {args.gpu}, batch {args.plan_batch})")
    fused, unfused, manifest["int8"] = int8_models(args.tflite, args.gpu, args.plan_batch)
    onnx.save(fused, out / "fused.onnx")
    onnx.save(unfused, out / "unfused.onnx")

    image = load_image(FIXTURES / "ILSVRC2012_val_00000932.JPEG")
    np.save(out / "image.npy", image)
    shutil.copyfile(args.tflite, out / "model.tflite")
    rng = np.random.default_rng(0)
    images = np.concatenate([image, rng.integers(0, 256, (3, 224, 224, 3)).astype(np.uint8)])

    say("checking the int8 models here (fused vs unfused, vs the local interpreter)")
    manifest["int8"]["checks_here"] = check_int8(fused, unfused, args.tflite, images)

    say("converting to QDQ ONNX with tf2onnx")
    qdq, changes = qdq_model(args.tflite)
    onnx.save(qdq, out / "qdq.onnx")
    manifest["qdq"] = {"changes": changes, "input": qdq.graph.input[0].name, "output": qdq.graph.output[0].name,
                       "batch_check": check_qdq_batches(out / "qdq.onnx", images)}

    if not args.no_wheels:
        say("downloading the interpreter's cp312 wheels")
        download_wheels(out / "wheels")
    manifest["wheels"] = sorted(p.name for p in (out / "wheels").glob("*.whl"))

    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest["files"] = {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": digest(p)} for p in files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")

    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    for p in files + [out / "manifest.json"]:
        print(f"  {p.stat().st_size / 2**20:8.2f} MiB  {p.relative_to(out)}")
    print(f"  {total / 2**20:8.2f} MiB  total in {out}")
    checks = manifest["int8"]["checks_here"]
    print(f"int8: {manifest['int8']['fused_nodes']} fused nodes; fused == unfused: {checks['fused_equals_unfused']}; "
          f"vs the local interpreter: " + ", ".join(f"{r['equal']:.2%} equal, max diff {r['max_diff']}"
                                                   for r in checks["vs_interpreter"]))
    batch_check = manifest["qdq"]["batch_check"]
    print(f"QDQ: {'; '.join(changes) or 'unchanged'}; batch {batch_check['batch']} equals batch 1 row by row: "
          f"{batch_check['rows_equal_to_batch_1']}")
    ok = checks["fused_equals_unfused"] and checks["within_bound"] and batch_check["rows_equal_to_batch_1"]
    if not ok:
        print("a check failed (see manifest.json)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
