"""What a conversion does differently per precision: how it lowers, verifies and reports.

In: the opened source model, its DAG and the fusion plan. Out (:meth:`lower`): the fused model,
its unfused form and the lowering's record of fused and skipped groups; (:meth:`verify`) the
verification records; (:meth:`report`) the report's text. :func:`fcm.pipeline.convert.convert`
runs the same steps for every precision and takes these three from :data:`PRECISIONS`.

- fp32: the source exported to ONNX (tf2onnx) and normalized, each planned group rewritten into
  one fused node (``ort_custom_ops.lowering.rewrite``), verified against the source model;
- fp16, bf16: the fp32 lowering, then the fused model and its unfused form computed in half
  precision (``ort_custom_ops.lowering.half``), verified against the source model within a bound
  derived from the precision, with top-1 / top-5 agreement, and against ONNX Runtime's own
  operators in the same precision;
- int8: a full-integer TFLite model built from its DAG as int8 ops (``ort_custom_ops.lowering.int8``),
  each planned group one fused int8 node, verified bit for bit against its unfused form and
  against the TFLite interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import onnx

from extractor.dag import Dag
from extractor.sources import OpenedModel

from . import report, verify

Progress = Callable[[str], None]


@dataclass
class Lowered:
    fused: onnx.ModelProto
    unfused: onnx.ModelProto
    result: Any  # RewriteResult or the int8 BuildResult: .fused and .skipped groups
    extra: dict = field(default_factory=dict)  # what a precision's verification needs besides (half: the fp32 models)


class Fp32:
    name = "fp32"

    def prepare(self, source: OpenedModel, dag: Dag, progress: Progress) -> onnx.ModelProto:
        """The exported and normalized ONNX model (before planning, as the lowering reads it)."""
        from ort_custom_ops.lowering import export as exporter
        from ort_custom_ops.lowering.normalize import normalize

        progress("exporting to ONNX (tf2onnx)")
        if source.kind == "keras":
            exported = exporter.from_keras(source.keras_model)
        elif source.kind == "tflite":
            exported = exporter.from_tflite(source.path)
        else:
            exported = exporter.from_saved_model(source.path)
        progress("normalizing the ONNX graph")
        return normalize(exported)

    def lower(self, prepared: onnx.ModelProto, dag: Dag, plan, options, progress: Progress, notes: list[str]) -> Lowered:
        from ort_custom_ops.lowering.rewrite import rewrite

        progress(f"rewriting {len(plan.groups)} groups ({options.layout.upper()} fused nodes)")
        result = rewrite(prepared, dag, plan.to_json(), options.layout, mean_layers=options.mean_layers)
        if not dag.convs() or not any(layer.type in ("dw", "pw") for layer in dag.convs()):
            notes.append("the model has no depthwise or pointwise convolutions: nothing to fuse, the graph is unchanged")
        elif not result.fused:
            notes.append("no fusion group applies: the graph is unchanged")
        return Lowered(result.model, prepared, result)

    def verify(self, source: OpenedModel, lowered: Lowered, options, progress: Progress) -> list:
        return verify.verify_fp32(source, lowered.fused, lowered.unfused, options, progress)

    def report(self, source: OpenedModel, dag: Dag, plan, lowered: Lowered, checks: list, notes: list[str], options,
               seconds: float, files: dict[str, Path]) -> str:
        return report.fp32_report(source.where, dag, plan, lowered.result, checks, notes, options.tolerance, seconds, files,
                                  options.input_range)

    def summary(self, checks: list, options) -> list[str]:
        return []


class Half(Fp32):
    """fp16 or bf16: the fp32 lowering, then both models converted (the inputs and outputs fp32
    with one Cast at each, unless ``options.io_half``)."""

    def __init__(self, name: str):
        self.name = name
        self.plan_dtype = "fp16"  # the planner's bytes and tensor-core peak are the same for bf16

    def lower(self, prepared: onnx.ModelProto, dag: Dag, plan, options, progress: Progress, notes: list[str]) -> Lowered:
        from ort_custom_ops.lowering.half import fp32_mean_nodes, kept_fp32, to_half

        lowered = super().lower(prepared, dag, plan, options, progress, notes)
        how = "onnxconverter-common's float16 converter" if self.name == "fp16" else "fp32 operators between bf16 Casts"
        progress(f"converting to {self.name} ({how})" + (", half-precision inputs and outputs" if options.io_half else ""))
        fused = to_half(lowered.fused, self.name, options.io_half)
        unfused = to_half(lowered.unfused, self.name, options.io_half)
        if self.name == "bf16":
            notes.append("bf16: the fused nodes compute in bf16 with fp32 accumulation; the ONNX operators between them "
                         "compute in fp32 on bf16 tensors (a Cast widens each input and rounds each output to bf16), "
                         "since ONNX Runtime has no bf16 Conv on any provider nor bf16 arithmetic on the CPU")
        else:
            kept = sorted({n.op_type for n in fused.graph.node} & set(kept_fp32(lowered.fused, self.name)))
            wide_means = set(fp32_mean_nodes(lowered.fused, self.name))
            means = sum(n.op_type == "MatMul" and n.name in wide_means for n in lowered.fused.graph.node)
            if means:
                kept.append(f"MatMul and Transpose ({means} spatial mean{'s' * (means > 1)} of NHWC maps over more "
                            "than 2^14 pixels)")
            if kept:
                notes.append(f"kept in fp32 between Casts: {', '.join(kept)} (reductions and softmax lose accuracy "
                             "in fp16)")
        return Lowered(fused, unfused, lowered.result,
                       {"unfused_fp32": lowered.unfused, "fused_fp32": lowered.fused})

    def verify(self, source: OpenedModel, lowered: Lowered, options, progress: Progress) -> list:
        models = {"fused": lowered.fused, "unfused": lowered.unfused, **lowered.extra}
        return [verify.verify_half(source, self.name, models, options.samples, options.input_range, options.seed, progress)]

    def report(self, source: OpenedModel, dag: Dag, plan, lowered: Lowered, checks: list, notes: list[str], options,
               seconds: float, files: dict[str, Path]) -> str:
        return report.half_report(source.where, dag, plan, lowered.result, checks, notes, self.name, options.io_half,
                                  seconds, files)

    def summary(self, checks: list, options) -> list[str]:
        return [report.half_summary(c) for c in checks]


class Int8:
    name = "int8"

    def prepare(self, source: OpenedModel, dag: Dag, progress: Progress) -> None:
        from ort_custom_ops.lowering.int8 import check_full_integer

        check_full_integer(dag, source.where)

    def lower(self, prepared: None, dag: Dag, plan, options, progress: Progress, notes: list[str]) -> Lowered:
        from ort_custom_ops.lowering.int8 import build

        progress(f"building the int8 model: {len(plan.groups)} fused groups, {options.scheme} requantization")
        result = build(dag, [g.candidate for g in plan.groups], options.scheme)
        return Lowered(result.model, build(dag, [], options.scheme).model, result)

    def verify(self, source: OpenedModel, lowered: Lowered, options, progress: Progress) -> list:
        return verify.verify_int8(source, lowered.fused, lowered.unfused, options.scheme, options.verify_batches,
                                  options.seed, progress)

    def report(self, source: OpenedModel, dag: Dag, plan, lowered: Lowered, checks: list, notes: list[str], options,
               seconds: float, files: dict[str, Path]) -> str:
        return report.int8_report(source.where, dag, plan, lowered.result, checks, notes, options.scheme, seconds, files)

    def summary(self, checks: list, options) -> list[str]:
        return [f"int8 ({options.scheme} requantization); verified: " + c.line() for c in checks]


PRECISIONS = {p.name: p for p in (Fp32(), Half("fp16"), Half("bf16"), Int8())}
