"""Verification: a converted model against its source, in the precision's own terms.

In: the source model (as opened by ``extractor.sources.open_model``), the fused model and its
unfused form, the options. Out: one record per comparison and batch, or an FcmError when one fails.

- fp32 (:func:`verify_fp32`): the fused model with the library and without it (its function
  bodies inlined) and the unfused ONNX against the source model (Keras, the TFLite interpreter or
  the SavedModel), on fresh random inputs: ``max |fused - reference| <= tolerance x max |reference|``.
- fp16, bf16 (:func:`verify_half`), on a few hundred random images (:func:`~fcm.pipeline.inputs.image_like_inputs`):
  against the fp32 source model, ``max |fused - reference| <= bound x max |reference|`` with the
  bound derived from the precision (:func:`derived_bound`, or the model's conditioning:
  :func:`half_bound`), and top-1 / top-5 agreement no worse than the precision's own; against
  ONNX Runtime's own operators in the same precision on the same provider, tight: each fused node
  against its definition, and the whole model against the unfused half model, over the roundings
  the two do not share.
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

from extractor.sources import DEFAULT_INPUT_RANGE, OpenedModel
from fcm_core.errors import FcmError
from fcm_core.vocabulary import DOMAIN, PRECISIONS
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.standalone import float_io

from .inputs import image_like_inputs, random_inputs

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
    try:
        interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
        for detail, array in zip(interpreter.get_input_details(), inputs):
            interpreter.resize_tensor_input(detail["index"], array.shape)
        interpreter.allocate_tensors()
        for detail, array in zip(interpreter.get_input_details(), inputs):
            interpreter.set_tensor(detail["index"], array)
        interpreter.invoke()
    except (ValueError, RuntimeError) as exc:  # the model the reader accepted, refused by TFLite's own checks
        detail = " ".join(str(exc).split())
        raise FcmError(f"the TFLite interpreter cannot run the model, so it cannot be verified: "
                       f"{detail[:300]}{'...' if len(detail) > 300 else ''}", str(path)) from None
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def verify_fp32(source: OpenedModel, fused: onnx.ModelProto, unfused: onnx.ModelProto, options,
                progress: Progress) -> list[Check]:
    """The fused model, with the library and without it (its function bodies inlined), and the
    unfused ONNX, against the source model, on fresh random inputs (uniform in ``options.input_range``)."""
    rng = np.random.default_rng(options.seed)
    sessions = {
        "fused ONNX with the FCM library": make_session(fused, with_library=True),
        "fused ONNX without the library": make_session(fused, with_library=False),
        "unfused ONNX": make_session(unfused, with_library=False),
    }
    checks = []
    for batch in options.verify_batches:
        inputs = random_inputs(unfused, batch, rng, options.input_range)
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


def model_precision(model: onnx.ModelProto) -> str:
    """The precision of a fused model's fused nodes and convolution layers (fp32 where it has none;
    int8 models: fp32)."""
    from fcm_core.vocabulary import kind_of, layer_of

    typed = [kind_of(n.op_type) or layer_of(n.op_type) for n in model.graph.node if n.domain == DOMAIN]
    found = {entry[1] for entry in typed if entry}
    if len(found) > 1:
        raise FcmError(f"the model's fused nodes mix precisions ({', '.join(sorted(found))})")
    return found.pop() if found else "fp32"


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


def metadata(model: onnx.ModelProto, key: str) -> str | None:
    """``model``'s metadata entry ``key``, or None."""
    return next((p.value for p in model.metadata_props if p.key == key), None)


def set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    """``model``'s metadata entry ``key`` set to ``value`` (replacing one there), the others kept."""
    props = {p.key: p.value for p in model.metadata_props if p.key != key}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {**props, key: value})


def record_companions(fused: onnx.ModelProto, companions: dict[str, str]) -> None:
    """Record in ``fused``'s metadata the SHA-256 of the files written with it (name -> digest)."""
    import json

    set_metadata(fused, COMPANIONS, json.dumps(companions, sort_keys=True))


#: The fused and unfused models' metadata key for the values their random test inputs take
#: ("LO,HI"), which fcm convert chose (the model's input range, or --input-range) and fcm verify and
#: fcm tune reuse.
INPUT_RANGE_KEY = "fcm.input_range"


def record_input_range(model: onnx.ModelProto, value_range: tuple[float, float]) -> None:
    set_metadata(model, INPUT_RANGE_KEY, f"{value_range[0]:g},{value_range[1]:g}")


def recorded_input_range(model: onnx.ModelProto) -> tuple[float, float]:
    """The range :func:`record_input_range` left in ``model``, else [-1, 1] (models converted
    before it was recorded, or by other tools)."""
    recorded = metadata(model, INPUT_RANGE_KEY)
    if recorded is not None:
        try:
            low, high = (float(v) for v in recorded.split(","))
        except ValueError:
            return DEFAULT_INPUT_RANGE
        if low < high:
            return low, high
    return DEFAULT_INPUT_RANGE


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

    recorded = metadata(fused, COMPANIONS)
    if recorded is None or Path(companion).resolve().parent != Path(fused_path).resolve().parent:
        return
    digest = json.loads(recorded).get(Path(companion).name)
    if digest is not None and file_digest(companion) != digest:
        raise FcmError(f"not the file {Path(fused_path).name} was converted with (a later or interrupted conversion "
                       "wrote it): convert again", companion)


#: How many standard deviations of the accumulated rounding error a half-precision bound allows
#: (:func:`derived_bound`).
CONFIDENCE = 5.0
#: How many points of top-1 / top-5 agreement the fused model may lose against the precision's own
#: computation: at least this, and four standard errors of a share measured on that many inputs (two
#: estimates from the same few hundred random images; a random-weight model whose logits lie close
#: together changes its top-1 under any rounding on many of them). The standard error is Agresti and
#: Coull's (two successes and two failures added), so that a share measured as 100% on few inputs
#: keeps its uncertainty: one miss in 16 is within it, where the plain estimate's zero allowed none.
AGREEMENT_MARGIN = 0.05
#: The precision's own computation: the unfused fp32 model with its weights and each operator's
#: output rounded to the precision (Casts to it and back), on ONNX Runtime's CPU kernels.
PRECISION_REFERENCE = "unfused, each operator rounded"


def derived_bound(precision: str, depth: int) -> float:
    """The largest error, relative to the largest output, of a model computed in ``precision`` with
    fp32 accumulation whose longest path rounds ``depth`` times (weights, then each operator's
    output; ``ort_custom_ops.lowering.half.rounding_depth``): ``CONFIDENCE x sqrt(depth) x u``.

    Why: rounding to nearest changes a value x by a relative delta with |delta| <= u (the unit
    roundoff, 2^-11 for fp16, 2^-8 for bf16); the fp32 sums add errors of order 2^-24, negligible
    beside it. An error introduced at one rounding reaches the output scaled by the gain of the layers
    after it, about 1 in networks whose normalization keeps activations at one scale. Worst case the
    depth's roundings add up (depth x u, which for bf16 allows nothing); as independent zero-mean
    errors (the usual probabilistic model of rounding, Higham and Mary 2019) their sum has a standard
    deviation of at most sqrt(depth) x u, and CONFIDENCE of those cover the largest of the thousands
    of outputs compared. Where a model amplifies errors more (gains above 1), the precision's own
    computation of it shows it, and :func:`half_bound` allows that.
    """
    return CONFIDENCE * float(np.sqrt(max(depth, 1))) * PRECISIONS[precision].unit_roundoff


def half_bound(precision: str, depth: int, own_error: float, own: str) -> tuple[float, str]:
    """A bound and which rule set it: :func:`derived_bound`, or twice ``own_error`` (how far the
    precision's own computation of the model, ``own``, moves its outputs, measured on the same
    inputs) where the model's conditioning makes that larger (layers of gain above 1)."""
    derived = derived_bound(precision, depth)
    if 2 * own_error <= derived:
        return derived, f"derived: {CONFIDENCE:g} x sqrt({depth} roundings) x u"
    return 2 * own_error, f"twice the {own_error:.3g} by which {own} (above the derived {derived:.3g})"


def conditioning(spread: float, spread_what: str, rounded: float, rounded_what: str) -> tuple[float, str]:
    """How far roundings the fused model and ONNX Runtime's unfused half model do not share can move
    a model's outputs: the larger of the unfused model's own spread (it against itself computed in
    fp32) and of how far rounding every operator's output moves them, with what it is. ONNX Runtime
    may compute much of its half model in fp32 (its CPU provider casts the operators it has no half
    kernel for, drops the Casts between them and fuses them in fp32: EfficientNetB1's unfused fp16
    model ran its 115 Convs as fp32 NCHWc kernels, with 49 Casts left), so that model's own spread
    understates what the fused nodes' rounding of each output (the op contract) does to a poorly
    conditioned model: 0.002-0.013 against 0.179."""
    return (spread, spread_what) if spread >= rounded else (rounded, rounded_what)


@dataclass
class UnfusedHalfReference:
    """The unfused model in a half precision as the reference of a model made from it (the fused model,
    or a tuned one): its outputs on random images, and the bound a model that computes the same
    function with other roundings must come within (:func:`half_bound` over the roundings the two do
    not share, or twice the spread of its own roundings where its conditioning makes that larger)."""

    inputs: list[np.ndarray]  # float32, for float_io's models
    expected: list[np.ndarray]
    bound: float
    rule: str

    @classmethod
    def of(cls, precision: str, unfused: onnx.ModelProto, batch: int, rng: np.random.Generator,
           value_range: tuple[float, float], run: Callable[[onnx.ModelProto, list[np.ndarray]], list[np.ndarray]]
           ) -> "UnfusedHalfReference":
        """``run(model, inputs)``: a model's outputs where the reference runs (the caller's provider)."""
        from ort_custom_ops.lowering.half import rounded_model, rounding_depth, widened

        inputs = [a.astype(np.float32) for a in image_like_inputs(float_io(unfused), batch, rng, value_range)]
        wide = widened(unfused)
        expected = run(float_io(unfused), inputs)
        exact = run(wide, inputs)
        spread = Check.of("spread", batch, expected, exact).relative
        rounded = Check.of("rounded", batch, run(rounded_model(wide, precision), inputs), exact).relative
        bound, rule = half_bound(precision, rounding_depth(wide, shared=False), *conditioning(
            spread, "the unfused model's own roundings move its outputs",
            rounded, f"rounding each operator's output to {precision} moves them"))
        return cls(inputs, expected, bound, rule)


def agreement_margin(share: float, samples: int) -> float:
    adjusted_n = max(samples, 0) + 4
    adjusted = (share * max(samples, 0) + 2) / adjusted_n
    return max(AGREEMENT_MARGIN, 4 * float(np.sqrt(adjusted * (1 - adjusted) / adjusted_n)))


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
class NodeCheck:
    """A fused node's kernel against its definition in ONNX Runtime's operators on the same inputs."""

    name: str
    op_type: str
    difference: float  # relative to the largest value of the node's output
    depth: int  # roundings on the longest path of the node's body

    def bound(self, precision: str) -> float:
        return derived_bound(precision, self.depth)


@dataclass
class HalfVerification:
    precision: str
    depth: int  # roundings on the model's longest path
    bound: float  # against the source model, relative to its largest output
    rule: str  # what set the bound (half_bound)
    checks: list[HalfCheck]  # the source comparisons
    nodes: list[NodeCheck]  # each fused node against ONNX Runtime's operators in the precision
    value_range: tuple[float, float]
    pair_depth: int = 0  # roundings on the longest path that two half computations with the same weights differ in
    pair_bound: float = 0.0  # the fused half model against the unfused half model, relative to its largest output
    pair_rule: str = ""
    model_pairs: list[tuple[str, float]] = field(default_factory=list)  # half model against half model, within pair_bound

    def passed(self) -> bool:
        return not self.problems()

    def worst_node(self) -> NodeCheck | None:
        return max(self.nodes, key=lambda n: n.difference / n.bound(self.precision), default=None)

    def problems(self) -> list[str]:
        own = next(c for c in self.checks if c.name == PRECISION_REFERENCE)
        # The agreement a fused model is held to: the precision's own computation's, or ONNX Runtime's
        # own half model's where that is lower (its half kernels may accumulate in half precision: a
        # random-weight model with close logits then flips classes the emulation keeps; the fused
        # model need not beat the alternative a user has). That model's own agreement is not checked.
        alternative = next((c for c in self.checks if c.name == f"unfused {self.precision} ONNX"), None)
        out = []
        for check in self.checks:
            if check.name == PRECISION_REFERENCE:
                continue
            if not (np.isfinite(check.max_abs_error) and check.relative <= self.bound):
                out.append(f"{check.name} is off by {check.relative:.3g} of the largest output (bound {self.bound:.3g})")
            if check is alternative:
                continue
            for label, got, mine, theirs in (("top-1", check.top1, own.top1, alternative and alternative.top1),
                                             ("top-5", check.top5, own.top5, alternative and alternative.top5)):
                want, whose = mine, PRECISION_REFERENCE
                if want is not None and theirs is not None and theirs < want:
                    want, whose = theirs, alternative.name
                if got is not None and want is not None and got < want - agreement_margin(want, check.samples):
                    out.append(f"{check.name} agrees on {label} for {got:.1%} of the inputs, {whose} for {want:.1%}")
        for node in self.nodes:
            bound = node.bound(self.precision)
            if not (np.isfinite(node.difference) and node.difference <= bound):
                out.append(f"fused node {node.name} ({node.op_type}) differs from its definition in ONNX Runtime's "
                           f"operators by {node.difference:.3g} of its largest output (bound {bound:.3g})")
        out += [f"{what} differ by {value:.3g} of the largest output (bound {self.pair_bound:.3g})"
                for what, value in self.model_pairs if not (np.isfinite(value) and value <= self.pair_bound)]
        return out


def _outputs(session, inputs: list[np.ndarray]) -> np.ndarray:
    feeds = {i.name: a for i, a in zip(session.get_inputs(), inputs)}
    return np.asarray(session.run(None, feeds)[0], np.float64)


def _agreement(got: np.ndarray, want: np.ndarray) -> tuple[float | None, float | None]:
    if got.ndim != 2 or got.shape[1] < 5:
        return None, None
    first = want.argmax(axis=1)
    top5 = np.argsort(-got, axis=1, kind="stable")[:, :5]
    return float(np.mean(got.argmax(axis=1) == first)), float(np.mean((top5 == first[:, None]).any(axis=1)))


FUSED_WITH_LIBRARY = "fused ONNX with the FCM library"
#: The unfused half model computed in fp32 on its own (half) weights and inputs.
WIDENED = "unfused, computed in fp32"


def verify_half(source: OpenedModel, precision: str, models: dict[str, onnx.ModelProto], samples: int,
                value_range: tuple[float, float], seed, progress: Progress, chunk: int = 32) -> HalfVerification:
    """``models``: "fused" (the half model), "fused_fp32" (the same before its conversion), "unfused"
    (the same conversion without fusion: ONNX Runtime's own half model) and "unfused_fp32" (the
    same before its conversion); each half model run through float Casts at its inputs and outputs.
    Compared with the source model on ``samples`` random images in ``value_range`` (``seed`` None:
    fresh ones): within :func:`half_bound`, top-1 / top-5 agreement within :func:`agreement_margin`
    of the precision's own; each fused node against its definition within :func:`derived_bound` of
    its body's depth; the fused model against the unfused half model within :func:`half_bound` of the
    roundings they do not share (the unfused model against itself computed in fp32, :data:`WIDENED`,
    measures the model's conditioning for those). An FcmError when a check fails."""
    from ort_custom_ops.lowering.half import rounded_model, rounding_depth, widened

    rng = np.random.default_rng(seed)
    unfused = f"unfused {precision} ONNX"
    runs = {
        FUSED_WITH_LIBRARY: make_session(float_io(models["fused"]), with_library=True),
        "fused ONNX without the library": make_session(float_io(models["fused"]), with_library=False),
        unfused: make_session(float_io(models["unfused"]), with_library=False),
        PRECISION_REFERENCE: make_session(rounded_model(models["unfused_fp32"], precision), with_library=False),
        WIDENED: make_session(widened(models["unfused"]), with_library=False),
    }
    template = float_io(models["unfused"])
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in runs}
    reference: list[np.ndarray] = []
    done = 0
    while done < samples:
        count = min(chunk, samples - done)
        progress(f"verifying {precision} on random images {done + 1}-{done + count} of {samples}")
        inputs = [a.astype(np.float32) for a in image_like_inputs(template, count, rng, value_range)]
        reference.append(np.asarray(reference_outputs(source, inputs)[0], np.float64))
        for name, session in runs.items():
            outputs[name].append(_outputs(session, inputs))
        done += count
    want = np.concatenate(reference)
    got = {name: np.concatenate(parts) for name, parts in outputs.items()}
    scale = float(np.abs(want).max())
    checks = []
    for name, values in got.items():
        if name == WIDENED:
            continue
        if values.shape != want.shape:
            raise FcmError(f"{name}: output shape {values.shape} differs from the source model's {want.shape}")
        top1, top5 = _agreement(values, want)
        checks.append(HalfCheck(name, samples, float(np.abs(values - want).max()), scale, top1, top5))
    own = next(c for c in checks if c.name == PRECISION_REFERENCE)
    depth = rounding_depth(models["unfused_fp32"])
    bound, rule = half_bound(precision, depth, own.relative, f"{precision}'s own computation of the model errs")
    pair_depth = rounding_depth(models["unfused_fp32"], shared=False)
    pair_scale = float(np.abs(got[unfused]).max()) or 1.0
    spread = float(np.abs(got[unfused] - got[WIDENED]).max()) / pair_scale
    pair_bound, pair_rule = half_bound(precision, pair_depth, *conditioning(
        spread, f"the unfused {precision} model's own roundings move its outputs",
        own.relative, f"{precision}'s own computation of the model (each operator's output rounded) errs"))
    progress(f"verifying each fused {precision} node against its definition in ONNX Runtime's operators")
    nodes = node_checks(models["fused"], models["fused_fp32"], precision,
                        [a.astype(np.float32) for a in image_like_inputs(template, min(samples, 4), rng, value_range)])
    model_pairs = [(f"the fused model with the library and ONNX Runtime's unfused {precision} model",
                    float(np.abs(got[FUSED_WITH_LIBRARY] - got[unfused]).max()) / pair_scale)]
    result = HalfVerification(precision, depth, bound, rule, checks, nodes, value_range, pair_depth, pair_bound,
                              pair_rule, model_pairs)
    problems = result.problems()
    if problems:
        raise FcmError(f"verification failed ({precision}): {'; '.join(problems[:3])}"
                       + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "") + "; nothing written")
    return result


def node_checks(fused: onnx.ModelProto, fused_fp32: onnx.ModelProto, precision: str,
                inputs: list[np.ndarray], providers: list | None = None) -> list[NodeCheck]:
    """Each fused node of ``fused`` (a half model) on the inputs it gets when the model (with the
    library) runs on ``inputs``: its kernel against the op's definition in ONNX Runtime's operators
    (the node's fp32 body from ``fused_fp32`` on the same rounded weights, each operator's output
    rounded to ``precision``), relative to the largest value of its output."""
    from onnx import TensorProto, helper, numpy_helper

    from ort_custom_ops.lowering.half import path_roundings
    from ort_custom_ops.ops.schema import NUMPY_TYPES, ONNX_TYPES, rounded_nodes

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
    session = make_session(float_io(probe), providers=providers)
    values = dict(zip([o.name for o in session.get_outputs()],
                      session.run(None, {i.name: a for i, a in zip(session.get_inputs(), inputs)})))
    half_functions = {(f.name, f.overload): f for f in fused.functions}
    fp32_functions = {f.overload: f for f in fused_fp32.functions}
    element = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(fused).graph.value_info}
    element.update({v.name: v.type.tensor_type.elem_type for v in fused.graph.input})
    out = []
    for node in nodes:
        data = [name for name in node.input if name and name not in initializers]
        weights = [initializers[name] for name in node.input if name in initializers]
        feeds = {name: values[f"{name}__probe"] for name in data}
        # (the output is of the node's type: a stem may read the fp32 model input, fold_input_casts)
        graph = helper.make_graph([node], "node", [helper.make_tensor_value_info(n, element[n], None) for n in data],
                                  [helper.make_tensor_value_info(node.output[0], ONNX_TYPES[precision], None)], weights)
        single = helper.make_model(graph, opset_imports=list(fused.opset_import),
                                   functions=[half_functions[(node.op_type, node.overload)]])
        single.ir_version = fused.ir_version
        kernel = make_session(float_io(single), providers=providers).run(None, feeds)[0]
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
        # (the definition reads its inputs in the node's type: an fp32 input rounded to it, as the node rounds it)
        rounded = {name: (v.astype(NUMPY_TYPES[precision]).astype(np.float32) if element[name] == TensorProto.FLOAT else v)
                   for name, v in feeds.items()}
        want = make_session(reference, with_library=False, providers=providers).run(None, rounded)[0]
        scale = float(np.abs(want).max()) or 1.0
        difference = float(np.abs(kernel.astype(np.float64) - want).max()) / scale
        # the two sides read the same half inputs and weights: they differ in the operators' roundings
        out.append(NodeCheck(node.name, node.op_type, difference,
                             path_roundings(function.node, {}, [function.output[0]])))
    return out
