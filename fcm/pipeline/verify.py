"""Verification: a converted model against its source, in the precision's own terms.

In: the source model (as opened by ``extractor.sources.open_model``), the fused model and its
unfused form, the options. Out: one record per comparison and batch, or an FcmError when one fails.

- fp32 (:func:`verify_fp32`): the fused model with the library and without it (its function
  bodies inlined) and the unfused ONNX against the source model (Keras, the TFLite interpreter or
  the SavedModel), on fresh random inputs: ``max |fused - reference| <= tolerance x max |reference|``.
- fp16, bf16 (:func:`verify_half`), on a few hundred random images (:func:`~fcm.pipeline.inputs.image_like_inputs`):
  against the fp32 source model, ``max |fused - reference| <= bound x max |reference|`` with the
  bound derived from the precision (:func:`half_bound`), and top-1 / top-5 agreement no worse than
  the precision's own; against ONNX Runtime's own operators in the same precision on the same
  provider (the fused model without the library, and for fp16 the unfused fp16 model), tight.
- int8 (:func:`verify_int8`): the fused model must equal the unfused one bit for bit (fusing
  changes no arithmetic) and agree with the TFLite interpreter running the scheme's arithmetic
  (XNNPACK for ``fp32``, the builtin kernels for ``fixed_point``): ``fp32`` all outputs within 1
  and at least 99.9% equal; ``fixed_point`` all within 2 (the builtin MEAN's rounding is not
  reproduced).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from extractor.sources import OpenedModel
from fcm_core.errors import FcmError
from fcm_core.vocabulary import DOMAIN, PRECISIONS
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.standalone import float_io

from .inputs import image_like_inputs, random_inputs

Progress = Callable[[str], None]
FP32_TOLERANCE = 1e-4  # max |fused - reference| <= tolerance * max |reference| (DESIGN.md §6)


@dataclass
class Check:
    name: str
    batch: int
    max_abs_error: float
    max_abs_reference: float

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
            outputs = session.run(None, feeds)
            for ref, out in zip(reference, outputs):
                if np.shape(ref) != np.shape(out):
                    raise FcmError(f"{name}: output shape {np.shape(out)} differs from the source model's {np.shape(ref)}")
            error = max(float(np.abs(o.astype(np.float64) - r.astype(np.float64)).max()) for r, o in zip(reference, outputs))
            scale = max(float(np.abs(r.astype(np.float64)).max()) for r in reference)
            checks.append(Check(name, batch, error, scale))
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


#: Half precision against the fp32 source: the bound is at least this many units of rounding of the
#: precision (2^-11 for fp16, 2^-8 for bf16) of the largest output: a few dozen roundings in a row,
#: each carried on by the layers after it, as in ONNX Runtime's own half-precision models.
HALF_ROUNDINGS = 64
#: How many points of top-1 / top-5 agreement the fused model may lose against the precision's own:
#: at least this, and four standard errors of a share measured on that many inputs (two estimates
#: from the same few hundred random images; a random-weight model whose logits are close together
#: changes its top-1 under any rounding on many of them).
AGREEMENT_MARGIN = 0.05


def agreement_margin(share: float, samples: int) -> float:
    return max(AGREEMENT_MARGIN, 4 * float(np.sqrt(share * (1 - share) / max(samples, 1))))
#: A fused node against its function body (ONNX Runtime's own operators in the same precision, on the
#: same inputs): units of rounding of the precision, of the node output's largest value. Each stage
#: rounds once; where the two computations' fp32 sums fall on either side of a rounding boundary a
#: stage output differs by one unit, which the later stages of the node carry on.
NODE_ROUNDINGS = 16


@dataclass
class HalfCheck:
    """One model run on the verification inputs, against the fp32 source model."""

    name: str
    samples: int
    max_abs_error: float
    max_abs_reference: float
    top1: float | None  # share of inputs whose largest output is the source model's; None: not a classifier
    top5: float | None  # share of inputs whose source top-1 is among the five largest outputs

    @property
    def relative(self) -> float:
        return self.max_abs_error / self.max_abs_reference if self.max_abs_reference else self.max_abs_error

    def line(self) -> str:
        agreement = "" if self.top1 is None else f", top-1 {self.top1:.1%}, top-5 {self.top5:.1%}"
        return f"{self.name}: relative error {self.relative:.3g}{agreement} ({self.samples} inputs)"


@dataclass
class HalfVerification:
    precision: str
    bound: float  # against the source model, relative to its largest output
    tight: float  # against ONNX Runtime's own operators in the precision, relative to the largest value
    checks: list[HalfCheck]  # the source comparisons
    pairs: list[tuple[str, float]]  # (what against what, relative difference), each within `tight`
    value_range: tuple[float, float]
    model_pairs: list[tuple[str, float]] = field(default_factory=list)  # half model against half model, within `bound`

    def passed(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        by_name = {c.name: c for c in self.checks}
        own = by_name[PRECISION_REFERENCE]
        out = []
        for check in self.checks:
            if check.name == PRECISION_REFERENCE or check.name.startswith("unfused"):
                continue
            if not (np.isfinite(check.max_abs_error) and check.relative <= self.bound):
                out.append(f"{check.name} is off by {check.relative:.3g} of the largest output (bound {self.bound:.3g})")
            for label, got, want in (("top-1", check.top1, own.top1), ("top-5", check.top5, own.top5)):
                if got is not None and want is not None and got < want - agreement_margin(want, check.samples):
                    out.append(f"{check.name} agrees on {label} for {got:.1%} of the inputs, {PRECISION_REFERENCE} "
                               f"for {want:.1%}")
        out += [f"{what} differ by {value:.3g} of the largest value (bound {self.tight:.3g})"
                for what, value in self.pairs if not (np.isfinite(value) and value <= self.tight)]
        out += [f"{what} differ by {value:.3g} of the largest output (bound {self.bound:.3g})"
                for what, value in self.model_pairs if not (np.isfinite(value) and value <= self.bound)]
        return out


#: The precision's own computation: the unfused fp32 model with each operator's output rounded.
PRECISION_REFERENCE = "unfused, each operator rounded"


def half_bound(precision: str, own_error: float) -> float:
    """The bound against the source: :data:`HALF_ROUNDINGS` units of rounding, or twice the error of
    the precision's own computation of the model (:data:`PRECISION_REFERENCE`), whichever is larger
    (a model whose layers amplify rounding errors gets the bound its precision allows it)."""
    return max(HALF_ROUNDINGS * PRECISIONS[precision].unit_roundoff, 2 * own_error)


def _outputs(session, inputs: list[np.ndarray]) -> np.ndarray:
    feeds = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
    return np.asarray(session.run(None, feeds)[0], np.float64)


def _agreement(got: np.ndarray, want: np.ndarray) -> tuple[float | None, float | None]:
    if got.ndim != 2 or got.shape[1] < 5:
        return None, None
    first = want.argmax(axis=1)
    top5 = np.argsort(-got, axis=1, kind="stable")[:, :5]
    return float(np.mean(got.argmax(axis=1) == first)), float(np.mean((top5 == first[:, None]).any(axis=1)))


def verify_half(source: OpenedModel, precision: str, models: dict[str, onnx.ModelProto], samples: int,
                value_range: tuple[float, float], seed, progress: Progress, chunk: int = 32) -> HalfVerification:
    """``models``: "fused" (the half model), "fused_fp32" (the same before its conversion), "unfused"
    (ONNX Runtime's half model, the same conversion without fusion) and "rounded"
    (:data:`PRECISION_REFERENCE`), each run through
    float Casts at its inputs and outputs; compared with the source model on ``samples`` random images
    in ``value_range`` (``seed`` None: fresh ones). An FcmError when a check fails."""
    rng = np.random.default_rng(seed)
    runs = {
        "fused ONNX with the FCM library": make_session(float_io(models["fused"]), with_library=True),
        "fused ONNX without the library": make_session(float_io(models["fused"]), with_library=False),
        f"unfused {precision} ONNX": make_session(float_io(models["unfused"]), with_library=False),
        PRECISION_REFERENCE: make_session(models["rounded"], with_library=False),
    }
    template = float_io(models["unfused"])
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in runs}
    reference: list[np.ndarray] = []
    done = 0
    while done < samples:
        count = min(chunk, samples - done)
        progress(f"verifying {precision} on random images {done + 1}-{done + count} of {samples}")
        inputs = image_like_inputs(template, count, rng, value_range)
        inputs = [a.astype(np.float32) for a in inputs]
        reference.append(np.asarray(reference_outputs(source, inputs)[0], np.float64))
        for name, session in runs.items():
            outputs[name].append(_outputs(session, inputs))
        done += count
    want = np.concatenate(reference)
    got = {name: np.concatenate(parts) for name, parts in outputs.items()}
    scale = float(np.abs(want).max())
    checks = []
    for name, values in got.items():
        if values.shape != want.shape:
            raise FcmError(f"{name}: output shape {values.shape} differs from the source model's {want.shape}")
        top1, top5 = _agreement(values, want)
        checks.append(HalfCheck(name, samples, float(np.abs(values - want).max()), scale, top1, top5))
    own = next(c for c in checks if c.name == PRECISION_REFERENCE)
    bound = half_bound(precision, own.relative)
    tight = NODE_ROUNDINGS * PRECISIONS[precision].unit_roundoff
    progress(f"verifying each fused {precision} node against its function body")
    pairs = node_pairs(models["fused"], models["fused_fp32"], precision,
                       image_like_inputs(template, min(samples, 4), rng, value_range))
    model_pairs = [(f"the fused model with the library and ONNX Runtime's unfused {precision} model",
                    float(np.abs(got["fused ONNX with the FCM library"] - got[f"unfused {precision} ONNX"]).max()) / scale)]
    result = HalfVerification(precision, bound, tight, checks, pairs, value_range, model_pairs)
    problems = result.problems()
    if problems:
        raise FcmError(f"verification failed ({precision}): {problems[0]}; nothing written")
    return result


def node_pairs(fused: onnx.ModelProto, fused_fp32: onnx.ModelProto, precision: str,
               inputs: list[np.ndarray]) -> list[tuple[str, float]]:
    """Each fused node of ``fused`` (a half model) on the inputs it gets when the model (with the
    library) runs on ``inputs``: its kernel against the op's definition in ONNX Runtime's operators
    (the node's fp32 body from ``fused_fp32`` on the same rounded weights, each operator's output
    rounded to ``precision``), relative to the largest value of its output; one entry, the worst node."""
    from onnx import TensorProto, helper, numpy_helper

    from ort_custom_ops.ops.schema import rounded_nodes

    nodes = [n for n in fused.graph.node if n.domain == DOMAIN]
    if not nodes:
        return []
    initializers = {t.name: t for t in fused.graph.initializer}
    probe = onnx.ModelProto()
    probe.CopyFrom(fused)
    watched = sorted({name for n in nodes for name in n.input if name and name not in initializers})
    for name in watched:  # every data input of a fused node, as fp32 (exact: the values are half)
        probe.graph.node.append(helper.make_node("Cast", [name], [f"{name}__probe"], to=TensorProto.FLOAT))
        probe.graph.output.append(helper.make_tensor_value_info(f"{name}__probe", TensorProto.FLOAT, None))
    session = make_session(float_io(probe))
    values = dict(zip([o.name for o in session.get_outputs()],
                      session.run(None, {i.name: a for i, a in zip(session.get_inputs(), inputs)})))
    half_functions = {(f.name, f.overload): f for f in fused.functions}
    fp32_functions = {f.overload: f for f in fused_fp32.functions}
    element = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(fused).graph.value_info}
    element.update({v.name: v.type.tensor_type.elem_type for v in fused.graph.input})
    worst = ("", 0.0)
    for node in nodes:
        data = [name for name in node.input if name and name not in initializers]
        weights = [initializers[name] for name in node.input if name in initializers]
        feeds = {name: values[f"{name}__probe"] for name in data}
        graph = helper.make_graph([node], "node", [helper.make_tensor_value_info(n, element[n], None) for n in data],
                                  [helper.make_tensor_value_info(node.output[0], element[data[0]], None)], weights)
        single = helper.make_model(graph, opset_imports=list(fused.opset_import),
                                   functions=[half_functions[(node.op_type, node.overload)]])
        single.ir_version = fused.ir_version
        kernel = make_session(float_io(single)).run(None, feeds)[0]
        function = fp32_functions[node.overload]
        rename = dict(zip(function.input, node.input))
        rename[function.output[0]] = node.output[0]
        body = []
        for body_node in rounded_nodes(list(function.node), precision, outputs=[function.output[0]]):
            body_node.input[:] = [rename.get(n, n) for n in body_node.input]
            body_node.output[:] = [rename.get(n, n) for n in body_node.output]
            body.append(body_node)
        body.append(helper.make_node("Cast", [node.output[0]], [f"{node.output[0]}__fp32"], to=TensorProto.FLOAT))
        wide = [numpy_helper.from_array(numpy_helper.to_array(w).astype(np.float32), w.name) for w in weights]
        reference = helper.make_model(
            helper.make_graph(body, "definition", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in data],
                              [helper.make_tensor_value_info(f"{node.output[0]}__fp32", TensorProto.FLOAT, None)], wide),
            opset_imports=[o for o in fused.opset_import if o.domain in ("", "ai.onnx")])
        reference.ir_version = fused.ir_version
        want = make_session(reference, with_library=False).run(None, feeds)[0]
        scale = float(np.abs(want).max()) or 1.0
        difference = float(np.abs(kernel.astype(np.float64) - want).max()) / scale
        if not difference <= worst[1]:
            worst = (node.name, difference)
    return [(f"each fused node's kernel and the op's definition in ONNX Runtime's operators, on the node's "
             f"inputs (worst: {worst[0]})", worst[1])]
