"""Verification: a converted model against its source, in the precision's own terms.

In: the source model (as opened by ``extractor.sources.open_model``), the fused model and its
unfused form, the options. Out: one record per comparison and batch, or an FcmError when one fails.

- fp32 (:func:`verify_fp32`): the fused model with the library and without it (its function
  bodies inlined) and the unfused ONNX against the source model (Keras, the TFLite interpreter or
  the SavedModel), on fresh random inputs: ``max |fused - reference| <= tolerance x max |reference|``.
- int8 (:func:`verify_int8`): the fused model must equal the unfused one bit for bit (fusing
  changes no arithmetic) and agree with the TFLite interpreter running the scheme's arithmetic
  (XNNPACK for ``fp32``, the builtin kernels for ``fixed_point``): ``fp32`` all outputs within 1
  and at least 99.9% equal; ``fixed_point`` all within 2 (the builtin MEAN's rounding is not
  reproduced).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from extractor.sources import OpenedModel
from fcm_core.errors import FcmError
from ort_custom_ops.ops.library import make_session

from .inputs import random_inputs

Progress = Callable[[str], None]
FP32_TOLERANCE = 1e-4  # max |fused - reference| <= tolerance * max |reference| (DESIGN.md §6)
TF32_TOLERANCE = 5e-3  # the same with TF32 on both sides on a GPU: what the unfused model meets against FP32
COMPANIONS = "fcm.companions"  # a fused model's metadata: the SHA-256 of the files written with it


@dataclass
class Check:
    name: str
    batch: int
    max_abs_error: float
    max_abs_reference: float

    @classmethod
    def of(cls, name: str, batch: int, outputs: list[np.ndarray], reference: list[np.ndarray]) -> "Check":
        """The largest difference of ``outputs`` from ``reference`` and the largest reference value."""
        for ref, out in zip(reference, outputs):
            if np.shape(ref) != np.shape(out):
                raise FcmError(f"{name}: output shape {np.shape(out)} differs from the reference's {np.shape(ref)}")
        error = max((float(np.abs(o.astype(np.float64) - r.astype(np.float64)).max(initial=0.0))
                     for r, o in zip(reference, outputs)), default=0.0)
        scale = max((float(np.abs(r.astype(np.float64)).max(initial=0.0)) for r in reference), default=0.0)
        return cls(name, batch, error, scale)

    @property
    def relative(self) -> float:
        return self.max_abs_error / self.max_abs_reference if self.max_abs_reference else self.max_abs_error

    def passed(self, tolerance: float) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.relative <= tolerance


#: The least share of equal outputs and the largest difference each scheme must show against its
#: interpreter.
AGREEMENT = {"fp32": (0.999, 1), "fixed_point": (0.0, 2)}


@dataclass
class Agreement:
    name: str
    batch: int
    equal: float  # share of equal output values
    max_diff: int
    top5_same: bool | None  # the five largest outputs (as sets) of every row; None: not a classifier

    def line(self) -> str:
        top5 = "" if self.top5_same is None else f", top-5 {'the same' if self.top5_same else 'different'}"
        return f"{self.name} at batch {self.batch}: {self.equal:.2%} equal, largest difference {self.max_diff}{top5}"


def compare(name: str, got: np.ndarray, want: np.ndarray) -> Agreement:
    if got.shape != want.shape:
        raise FcmError(f"{name}: output shape {got.shape} differs from {want.shape}")
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    top5 = None
    if got.ndim == 2 and got.shape[1] >= 5:
        top5 = all(set(np.argsort(-g.astype(np.int64), kind="stable")[:5]) == set(np.argsort(-w.astype(np.int64), kind="stable")[:5])
                   for g, w in zip(got, want))
    return Agreement(name, int(got.shape[0]), float(np.mean(diff == 0)) if diff.size else 1.0,
                     int(diff.max()) if diff.size else 0, top5)


def reference_outputs(model: OpenedModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    if model.kind == "keras":
        result = model.keras_model.predict(inputs[0] if len(inputs) == 1 else inputs, verbose=0)
        return [np.asarray(r) for r in (result if isinstance(result, (list, tuple)) else [result])]
    if model.kind == "tflite":
        return interpreter_outputs(model.path, inputs, builtin=True)
    import tensorflow as tf

    function = tf.saved_model.load(str(model.path)).signatures["serving_default"]
    names = list(function.structured_input_signature[1])
    result = function(**{n: tf.constant(a) for n, a in zip(names, inputs)})
    return [np.asarray(v) for v in result.values()]


def interpreter_outputs(path: Path, inputs: list[np.ndarray], builtin: bool = True) -> list[np.ndarray]:
    """The TFLite interpreter's outputs: its builtin kernels, or the default resolver (XNNPACK)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else OpResolverType.AUTO
    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    for detail, array in zip(interpreter.get_input_details(), inputs):
        interpreter.resize_tensor_input(detail["index"], array.shape)
    interpreter.allocate_tensors()
    for detail, array in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def verify_fp32(source: OpenedModel, fused: onnx.ModelProto, unfused: onnx.ModelProto, options,
                progress: Progress) -> list[Check]:
    """The fused model, with the library and without it (its function bodies inlined), and the
    unfused ONNX, against the source model, on fresh random inputs."""
    rng = np.random.default_rng(options.seed)
    sessions = {
        "fused ONNX with the FCM library": make_session(fused, with_library=True),
        "fused ONNX without the library": make_session(fused, with_library=False),
        "unfused ONNX": make_session(unfused, with_library=False),
    }
    checks = []
    for batch in options.verify_batches:
        inputs = random_inputs(unfused, batch, rng)
        progress(f"verifying at batch {batch}")
        reference = reference_outputs(source, inputs)
        for name, session in sessions.items():
            feeds = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
            checks.append(Check.of(name, batch, session.run(None, feeds), reference))
    failed = [c for c in checks if c.name != "unfused ONNX" and not c.passed(options.tolerance)]
    if failed:
        worst = max(failed, key=lambda c: c.relative)
        raise FcmError(f"verification failed: {worst.name} at batch {worst.batch} is off by {worst.max_abs_error:.3g} "
                       f"({worst.relative:.3g} of the largest output, bound {options.tolerance:g}); nothing written")
    return checks


def verify_int8(source: OpenedModel, fused: onnx.ModelProto, unfused: onnx.ModelProto, scheme: str, batches, seed,
                progress: Progress) -> list[Agreement]:
    rng = np.random.default_rng(seed)
    sessions = {"fused": make_session(fused), "unfused": make_session(unfused)}
    interpreter = "TFLite builtin kernels" if scheme == "fixed_point" else "TFLite (XNNPACK)"
    least_equal, largest = AGREEMENT[scheme]
    checks = []
    for batch in batches:
        progress(f"verifying at batch {batch}")
        inputs = random_inputs(unfused, batch, rng)
        outputs = {name: s.run(None, {i.name: a for i, a in zip(s.get_inputs(), inputs)}) for name, s in sessions.items()}
        reference = interpreter_outputs(source.path, inputs, builtin=scheme == "fixed_point")
        for k, (got, plain, want) in enumerate(zip(outputs["fused"], outputs["unfused"], reference)):
            same = compare("fused vs unfused ONNX", got, plain)
            if same.max_diff:
                raise FcmError(f"verification failed: the fused int8 model differs from the unfused one at batch {batch} "
                               f"({1 - same.equal:.2%} of output {k}); nothing written")
            check = compare(f"fused ONNX vs {interpreter}", got, want)
            if check.max_diff > largest or check.equal < least_equal:
                raise FcmError(f"verification failed: {check.line()} (bound: {least_equal:.1%} equal, within {largest}); "
                               "nothing written")
            checks.append(check)
    return checks


def is_fp32_fused(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds fp32 fused nodes (whose pointwise stages may run on TF32 on a GPU)."""
    from ort_custom_ops.ops.schema import DOMAIN, OP_TYPES

    fp32 = set(OP_TYPES.values())
    return any(node.domain == DOMAIN and node.op_type in fp32 for node in model.graph.node)


def file_digest(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_companions(fused: onnx.ModelProto, companions: dict[str, str]) -> None:
    """Record in ``fused``'s metadata the SHA-256 of the files written with it (name -> digest)."""
    import json

    kept = [p for p in fused.metadata_props if p.key != COMPANIONS]
    del fused.metadata_props[:]
    fused.metadata_props.extend(kept)
    onnx.helper.set_model_props(fused, {**{p.key: p.value for p in kept},
                                        COMPANIONS: json.dumps(companions, sort_keys=True)})


def load_model(path: Path) -> onnx.ModelProto:
    """An ONNX model the user gives, or an FcmError saying it is not one."""
    try:
        return onnx.load(path)
    except Exception as exc:
        raise FcmError(f"not an ONNX model ({type(exc).__name__})", path) from None


def check_companion(fused: onnx.ModelProto, fused_path: Path, companion: Path) -> None:
    """An FcmError when ``fused`` was written with a file of ``companion``'s name, in the same
    folder, and ``companion`` is not that file (a conversion killed while it wrote its outputs)."""
    import json

    recorded = next((p.value for p in fused.metadata_props if p.key == COMPANIONS), None)
    if recorded is None or Path(companion).resolve().parent != Path(fused_path).resolve().parent:
        return
    digest = json.loads(recorded).get(Path(companion).name)
    if digest is not None and file_digest(companion) != digest:
        raise FcmError(f"not the file {Path(fused_path).name} was converted with (a later or interrupted conversion "
                       "wrote it): convert again", companion)
