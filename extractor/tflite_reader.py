"""TFLite flatbuffer -> :class:`~extractor.dag.Dag`.

In: the bytes of a ``.tflite`` file (fp32, or full-integer int8 with per-channel int8 weights,
int32 biases and uint8/int8 model input/output). Out: one DAG entry per operator of the main
subgraph, in the interpreter's execution order, with weights in the seed's layouts
(``s``: [F,C,KH,KW], ``dw``: [C,KH,KW], ``pw``/``fc``: [F,C]) and per-channel quantization.

Everything is read from the flatbuffer itself (schema from ``ai_edge_litert``): operator codes,
options (fused activation, padding, stride, dilation, depth multiplier, ...), tensor shapes, types
and quantization. Nothing is inferred from tensor names, and no interpreter is run.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np

from fcm_core.errors import FcmError, FcmWarning

from . import ops
from .dag import Dag, Layer, json_float
from .entry import describe, link

try:  # the flatbuffer schema (generated code, pure Python) ships with ai-edge-litert
    from ai_edge_litert import schema_py_generated as tfl
except ImportError:  # pragma: no cover - depends on the installation
    tfl = None

_BUILTIN_NAMES = {} if tfl is None else {v: k.lower() for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
_TENSOR_TYPES = {} if tfl is None else {v: k.lower() for k, v in vars(tfl.TensorType).items() if not k.startswith("_")}
_NUMPY_TYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "float64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "bool": np.bool_,
}
_PADDING = {0: "SAME", 1: "VALID"}
_FUSED_ACTIVATION = {0: ops.NO_ACTIVATION, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_MIRROR_PAD_MODE = {0: "REFLECT", 1: "SYMMETRIC"}


def _require_schema() -> None:
    if tfl is None:
        raise FcmError("reading .tflite files needs the 'ai-edge-litert' package (pip install ai-edge-litert)")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _options_dict(options: Any) -> dict[str, Any]:
    """An operator's builtin options as a plain JSON-able dict with readable enum values."""
    if options is None:
        return {}
    out: dict[str, Any] = {}
    for key, value in vars(options).items():
        key = _snake(key)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, (np.integer, np.floating, np.bool_)):
            value = value.item()
        if key == "padding" and isinstance(value, int):
            value = _PADDING.get(value, value)
        elif key == "fused_activation_function" and isinstance(value, int):
            value = _FUSED_ACTIVATION.get(value, value)
        elif key == "mode" and type(options).__name__ == "MirrorPadOptionsT":
            value = _MIRROR_PAD_MODE.get(value, value)
        elif isinstance(value, float):
            value = float(np.float32(value))
        if isinstance(value, (int, float, str, bool, list)) or value is None:
            out[key] = value
    return out


class _Tensors:
    """The main subgraph's tensors: shapes, types, quantization and constant data."""

    def __init__(self, model: Any, subgraph: Any, data: bytes, where: str):
        self.model, self.subgraph, self.data, self.where = model, subgraph, data, where
        self.tensors = subgraph.tensors or []
        self.buffers = model.buffers or []

    def __len__(self) -> int:
        return len(self.tensors)

    def dtype(self, index: int) -> str:
        return _TENSOR_TYPES.get(self.tensors[index].type, f"type{self.tensors[index].type}")

    def shape(self, index: int) -> list[int]:
        shape = self.tensors[index].shape
        return [] if shape is None else [int(d) for d in shape]

    def quant(self, index: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        q = self.tensors[index].quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        zero_points = q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else np.zeros(len(q.scale), np.int64)
        scales = np.asarray(q.scale, np.float32)
        if not np.isfinite(scales).all():
            raise FcmError(f"tensor {index} has a quantization scale that is not a finite number (corrupt file?)", self.where)
        return scales, np.asarray(zero_points, np.int64), int(q.quantizedDimension)

    def per_tensor_quant(self, index: int) -> tuple[float, int] | None:
        q = self.quant(index)
        if q is None:
            return None
        return json_float(q[0][0]), int(q[1][0])

    def constant(self, index: int) -> np.ndarray | None:
        """The tensor's constant data, or None if it is computed at run time."""
        buffer_index = self.tensors[index].buffer
        if not 0 < buffer_index < len(self.buffers):
            return None
        buffer = self.buffers[buffer_index]
        raw = buffer.data
        if raw is None and buffer.offset > 1:  # large models keep buffers after the flatbuffer
            if buffer.offset + buffer.size > len(self.data):
                raise FcmError(f"tensor {index} points past the end of the file (truncated?)", self.where)
            raw = np.frombuffer(self.data, np.uint8, buffer.size, buffer.offset)
        if raw is None or len(raw) == 0:
            return None
        dtype = _NUMPY_TYPES.get(self.dtype(index))
        if dtype is None:
            raise FcmError(f"tensor {index} has unsupported constant type {self.dtype(index)}", self.where)
        raw = np.asarray(raw, np.uint8)
        count = int(np.prod(self.shape(index))) if self.shape(index) else 1
        if raw.nbytes != count * np.dtype(dtype).itemsize:
            raise FcmError(f"tensor {index}: constant holds {raw.nbytes} bytes, its shape needs {count * np.dtype(dtype).itemsize}", self.where)
        return raw.view(dtype).reshape(self.shape(index)).copy()


def parse_tflite(data: bytes, where: str = "<tflite>") -> tuple[Any, Any]:
    """Unpack the flatbuffer; any structural damage becomes a clear :class:`FcmError`."""
    _require_schema()
    if len(data) == 0:
        raise FcmError("the file is empty", where)
    if len(data) < 8 or not tfl.Model.ModelBufferHasIdentifier(data, 0):
        raise FcmError("not a TFLite model (no 'TFL3' flatbuffer identifier)", where)
    try:
        model = tfl.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # flatbuffers raises whatever a bad offset leads to
        detail = "offsets point past the end of the file" if "unpack_from" in str(exc) else f"{type(exc).__name__}: {exc}"
        raise FcmError(f"corrupt or truncated TFLite file ({detail})", where) from None
    if model.version != 3:  # what TFLite itself reads
        raise FcmError(f"TFLite schema version {model.version}, where only version 3 exists (corrupt file?)", where)
    if not model.subgraphs:
        raise FcmError("the TFLite model has no subgraph", where)
    subgraph = model.subgraphs[0]
    n_tensors = len(subgraph.tensors or [])
    n_codes = len(model.operatorCodes or [])
    for position, op in enumerate(subgraph.operators or []):
        if not 0 <= op.opcodeIndex < n_codes:
            raise FcmError(f"operator {position} has an invalid operator code (corrupt file?)", where)
        for t in list(op.inputs if op.inputs is not None else []) + list(op.outputs if op.outputs is not None else []):
            if not -1 <= t < n_tensors:
                raise FcmError(f"operator {position} refers to tensor {t}, which does not exist (corrupt file?)", where)
    for t in list(subgraph.inputs if subgraph.inputs is not None else []) + list(subgraph.outputs if subgraph.outputs is not None else []):
        if not 0 <= t < n_tensors:
            raise FcmError(f"the model's inputs/outputs refer to tensor {t}, which does not exist", where)
    return model, subgraph


def _op_name(model: Any, op: Any) -> tuple[str, str | None]:
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = _BUILTIN_NAMES.get(builtin, f"builtin_{builtin}")
    custom = None
    if name == "custom":
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
    return name, custom


def read_tflite(data: bytes, where: str = "<tflite>") -> Dag:
    """Read a TFLite model into a DAG (see module docstring)."""
    from .executor import SUPPORTED_OPS

    model, subgraph = parse_tflite(data, where)
    tensors = _Tensors(model, subgraph, data, where)
    graph_inputs = {int(t): k for k, t in enumerate(subgraph.inputs if subgraph.inputs is not None else [])}
    graph_outputs = {int(t): k for k, t in enumerate(subgraph.outputs if subgraph.outputs is not None else [])}
    producer: dict[int, tuple[int, int]] = {}
    layers: list[Layer] = []
    weights: dict[str, np.ndarray] = {}

    for op_id, op in enumerate(subgraph.operators or []):
        name, custom_code = _op_name(model, op)
        in_tensors = [int(t) for t in (op.inputs if op.inputs is not None else [])]
        out_tensors = [int(t) for t in (op.outputs if op.outputs is not None else [])]
        options = _options_dict(op.builtinOptions)
        if custom_code is not None:
            options["custom_code"] = custom_code
        layer = Layer(name=name, id=op_id, options=options or None, source={"format": "tflite", "operator_index": op_id})

        # Operands in order: the output of an earlier operator, a model input, or a constant.
        operands: list[dict[str, Any] | None] = []
        for position, t in enumerate(in_tensors):
            if t < 0:
                operands.append(None)
                continue
            operand: dict[str, Any]
            if t in producer:
                parent, out_index = producer[t]
                operand = {"op": parent}
                if out_index:
                    operand["output"] = out_index
            elif t in graph_inputs:
                operand = {"graph_input": graph_inputs[t]}
            else:
                key = _const_key(name, position)
                value = tensors.constant(t)
                if value is None:
                    raise FcmError(f"operator {op_id} ({name}) reads tensor {t}, which is neither computed, a model input nor a constant", where)
                _store_const(weights, op_id, key, value, tensors.quant(t), name)
                operand = {"const": key, "shape": list(weights[f"{op_id}/{key}"].shape)}
            operand.setdefault("shape", tensors.shape(t))
            operand["dtype"] = tensors.dtype(t)
            q = tensors.per_tensor_quant(t)
            if q is not None and "const" not in operand:
                operand["scale"], operand["zero_point"] = q
            operands.append(operand)
        layer.inputs = operands

        outputs = []
        for index, t in enumerate(out_tensors):
            producer[t] = (op_id, index)
            out: dict[str, Any] = {"shape": tensors.shape(t), "dtype": tensors.dtype(t)}
            q = tensors.per_tensor_quant(t)
            if q is not None:
                out["scale"], out["zero_point"] = q
            if t in graph_outputs:
                out["model_output"] = graph_outputs[t]
            outputs.append(out)
        layer.outputs = outputs

        describe(layer)
        if name in ("pad", "padv2", "mirror_pad") and f"{op_id}/input1" in weights:
            amounts = pad_amounts(weights[f"{op_id}/input1"])
            if amounts is not None:
                layer.padding_top, layer.padding_bottom, layer.padding_left, layer.padding_right = amounts
        if name not in SUPPORTED_OPS:
            layer.opaque = True
            label = f"custom operator '{custom_code}'" if custom_code else f"operator '{name}'"
            warnings.warn(f"{where}: {label} (id {op_id}) is not understood by the extractor; kept as an opaque entry", FcmWarning, stacklevel=2)
        layers.append(layer)

    link(layers)
    return Dag(layers, weights)


def _const_key(op_name: str, position: int) -> str:
    if op_name in ("conv_2d", "depthwise_conv_2d", "fully_connected"):
        return {0: "input", 1: "weights", 2: "bias"}.get(position, f"input{position}")
    return f"input{position}"


def _store_const(weights: dict, op_id: int, key: str, value: np.ndarray, quant, op_name: str) -> None:
    """Store a constant in the seed's layout, with its (per-channel) quantization."""
    channel_axis = quant[2] if quant else 0
    if key == "weights":
        if op_name == "conv_2d":  # OHWI -> OIHW, or [F, C] for 1x1
            value = value[:, 0, 0, :] if value.shape[1:3] == (1, 1) else value.transpose(0, 3, 1, 2)
            channel_axis = 0
        elif op_name == "depthwise_conv_2d":  # [1, KH, KW, C*M] -> [C*M, KH, KW]
            value = value[0].transpose(2, 0, 1)
            channel_axis = 0
    weights[f"{op_id}/{key}"] = np.ascontiguousarray(value)
    if quant is not None:
        scales, zero_points, _ = quant
        weights[f"{op_id}/{key}_scales"] = scales.astype(np.float32)
        weights[f"{op_id}/{key}_zero_points"] = zero_points.astype(np.int32)
        if len(scales) > 1 and key == "weights" and channel_axis != 0:
            raise FcmError(f"operator {op_id}: per-channel weights quantized along axis {channel_axis} are not supported")


def pad_amounts(paddings: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of an NHWC ``paddings`` tensor; None if it is not 4-D."""
    paddings = np.asarray(paddings).reshape(-1, 2)
    if paddings.shape[0] != 4:
        return None
    return int(paddings[1, 0]), int(paddings[1, 1]), int(paddings[2, 0]), int(paddings[2, 1])
