"""Half precision: a model from the rewrite (or its unfused form) computed in fp16 or bf16.

In: an fp32 ONNX model, fused (``ai.fcm`` fp32 nodes with their function bodies) or not, a
precision (``fp16`` or ``bf16``) and whether its inputs and outputs become half too. Out
(:func:`to_half`): the same model in that precision:

- the standard operators through onnxconverter-common's float16 converter, the operators of
  :func:`kept_fp32` computed in fp32 between Casts (the converter's op block list); by default one
  Cast at each model input and output (``io_half``: none, the inputs and outputs in the precision);
- the fused nodes are kept out of the converter's handling of operators: it only types the tensors
  around them, and they are typed here: the precision's op type (``Fp16FusedPwDwPw``), weights
  rounded to it, the function body of :func:`ort_custom_ops.ops.schema.half_body`;
- bf16: the converter has no bf16 mode (onnxconverter-common issue 268), so its fp16 result is
  retyped as bf16, every converted tensor rounded again from its fp32 original. ONNX Runtime has no
  bf16 Conv on any provider and no bf16 arithmetic on the CPU: every operator but those that only
  move values (and the fused nodes) is kept in fp32.

What stays fp32 in fp16 (:data:`FP16_KEPT`): the converter's default block list, and the
reductions and the softmax, whose fp16 sums lose accuracy (the squeeze-and-excitation mean, the
global average pool). Two open bugs of the converter (1.16) are worked around here: an initializer
shared by a kept and a converted operator stays fp32 for both (issue 304, pull request 329: it is
copied first), and a Cast to fp32 in the source keeps ``to=float`` while its output is retyped fp16
(issue 320, pull request 326: such Casts are retargeted).

Also here: :func:`rounded_model`, the fp32 model with each operator's output rounded to a precision
(a Cast to it and back): what a correct half-precision computation of the model gives, on any
provider, for the conversion's verification bound.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fcm_core.vocabulary import DOMAIN, kind_of, expand, FUSED_ATTRIBUTES

from ..ops.schema import NUMPY_TYPES, ONNX_TYPES, VALUE_PRESERVING, half_body, rounded_nodes

HALF_PRECISIONS = ("fp16", "bf16")
#: Operators fp16 models keep in fp32, besides the converter's default block list.
FP16_KEPT = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "GlobalAveragePool", "Softmax", "LogSoftmax")


def kept_fp32(model: onnx.ModelProto, precision: str) -> list[str]:
    """The op types ``model`` computes in fp32 when converted to ``precision`` (see the module docstring)."""
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    if precision == "fp16":
        return sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_KEPT))
    present = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}
    return sorted(present - set(VALUE_PRESERVING))


def to_half(model: onnx.ModelProto, precision: str, io_half: bool = False) -> onnx.ModelProto:
    """``model`` computed in ``precision`` (see the module docstring)."""
    from onnxconverter_common import float16

    if precision not in HALF_PRECISIONS:
        raise ValueError(f"unknown half precision {precision!r} (one of {', '.join(HALF_PRECISIONS)})")
    kept = kept_fp32(model, precision)
    source = _unshared_initializers(model, set(kept))
    originals = {t.name: numpy_helper.to_array(t) for t in source.graph.initializer if t.data_type == TensorProto.FLOAT}
    source_casts = {n.output[0] for n in source.graph.node if n.op_type == "Cast"}
    with warnings.catch_warnings():  # it warns of each value it clamps to fp16's range (weights never reach it)
        warnings.simplefilter("ignore")
        half = float16.convert_float_to_float16(source, keep_io_types=not io_half, op_block_list=kept,
                                                check_fp16_ready=False)
    _retarget_source_casts(half, source_casts)
    if precision == "bf16":
        _retype_bf16(half, originals)
    _type_fused_nodes(half, precision)
    onnx.checker.check_model(half)
    return half


def rounded_model(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """The fp32 ``model`` (unfused) with its weights and each operator's output rounded to
    ``precision``, the operators :func:`kept_fp32` keeps for fp16 left exact."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    dtype = NUMPY_TYPES[precision]
    for tensor in copy.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            values = numpy_helper.to_array(tensor).astype(dtype).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    nodes = rounded_nodes(list(copy.graph.node), precision, keep=FP16_KEPT)
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    return copy


def _unshared_initializers(model: onnx.ModelProto, kept: set[str]) -> onnx.ModelProto:
    """A copy in which no float initializer feeds both a kept operator and a converted one: the kept
    ones read their own copy (the converter would leave a shared one fp32 for both)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    floats = {t.name: t for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    users: dict[str, set[bool]] = {}
    for node in graph.node:
        for name in node.input:
            if name in floats:
                users.setdefault(name, set()).add(node.op_type in kept)
    for name, kinds in users.items():
        if len(kinds) == 2:
            duplicate = onnx.TensorProto()
            duplicate.CopyFrom(floats[name])
            duplicate.name = f"{name}__fp32"
            graph.initializer.append(duplicate)
            for node in graph.node:
                if node.op_type in kept:
                    node.input[:] = [duplicate.name if i == name else i for i in node.input]
    return copy


def _retarget_source_casts(model: onnx.ModelProto, source_casts: set[str]) -> None:
    """The source's Casts to fp32 whose outputs the converter retyped fp16 cast to fp16."""
    half_values = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in source_casts and node.output[0] in half_values:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                    attribute.i = TensorProto.FLOAT16


def _retype_bf16(model: onnx.ModelProto, originals: dict[str, np.ndarray]) -> None:
    """The converter's fp16 model as bf16: every fp16 tensor type, Cast and initializer."""
    graph = model.graph
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT16:
            value.type.tensor_type.elem_type = TensorProto.BFLOAT16
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.BFLOAT16
            elif attribute.t.data_type == TensorProto.FLOAT16:
                raise ValueError(f"{node.name}: a converted constant in a bf16 model")  # none in the models here
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT16:
            values = originals[tensor.name].astype(NUMPY_TYPES["bf16"])
            graph.initializer[index].CopyFrom(numpy_helper.from_array(values, tensor.name))


def _type_fused_nodes(model: onnx.ModelProto, precision: str) -> None:
    """The fp32 fused nodes as nodes of ``precision``: op type, attributes, function bodies."""
    functions = {(f.domain, f.name, f.overload): f for f in model.functions}
    typed = []
    for node in model.graph.node:
        found = kind_of(node.op_type) if node.domain == DOMAIN else None
        if found is None or found[1] != "fp32":
            continue
        kind, _ = found
        function = functions.pop((node.domain, node.op_type, node.overload), None)
        node.op_type = kind.op_type(precision)
        allowed = set(expand(FUSED_ATTRIBUTES[precision]))
        kept = [a for a in node.attribute if a.name in allowed]
        del node.attribute[:]
        node.attribute.extend(kept)
        if function is not None:
            body = half_body(list(function.node), precision, list(function.input), function.output[0])
            half = helper.make_function(DOMAIN, node.op_type, list(function.input), list(function.output), body,
                                        list(function.opset_import), attributes=sorted(allowed))
            half.overload = function.overload
            typed.append(half)
    remaining = list(functions.values())
    del model.functions[:]
    model.functions.extend(remaining + typed)
