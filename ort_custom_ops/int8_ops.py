"""The int8 operators of the FCM domain: op types, attributes, and node builders.

In: one layer's (or one fused chain's) integer weights, int32 biases, per-channel weight scales and
the quantization (scale, zero point) of its input and output tensors. Out: the ONNX node of domain
``ai.fcm`` that computes it as TFLite's int8 kernels do, with its weights as named arrays (the
initializers to add). Every tensor is NHWC int8; the kernels are ``csrc/int8_ops.h``.

Op types: ``QConv`` (one convolution, standard or depthwise), ``QFusedDwPw``, ``QFusedPwDw``,
``QFusedPwPw``, ``QFusedPwDwPw`` (a chain of stages, each requantized to int8 exactly as between
TFLite layers, optionally followed by the residual ADD of the chain's input), ``QAdd`` (TFLite's
int8 ADD), ``QMean`` (XNNPACK's int8 MEAN over H and W).

Weight layouts (TFLite's own): standard convolution W [F, KH, KW, C]; depthwise [KH, KW, C * M];
pointwise [F, C]; bias int32 [F].

Attributes: ``scheme`` (``fp32``: XNNPACK's float32 rescale, the interpreter's default; or
``fixed_point``: the builtin kernels' Q31 multiplier and rounding shift); the input's ``x_scale``
and ``x_zero_point``; per convolution ``w_scales`` (one per output channel), ``y_scale``,
``y_zero_point`` and ``clamp`` ([lo, hi], the fused activation's range in output integers), prefixed
``stage<i>_`` in a chain; QConv's ``kernel_shape``, ``strides``, ``dilations``, ``pads`` ([top, left,
bottom, right]) and ``depthwise``; a chain's ``dw_kernel``, ``dw_stride``, ``dw_pads`` and
``residual`` with ``residual_y_scale``, ``residual_y_zero_point``, ``residual_clamp``. Optionally per
convolution an activation ``table`` (256 int8 values, applied to the requantized value + 128: swish,
a function of the int8 output alone) with ``table_y_scale`` and ``table_y_zero_point``, the
quantization of its output (then the convolution's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import GraphProto, ModelProto, NodeProto, helper

from .schema import DOMAIN

SCHEMES = ("fp32", "fixed_point")
CHAIN_OP_TYPES = {"dwpw": "QFusedDwPw", "pwdw": "QFusedPwDw", "pwpw": "QFusedPwPw", "pwdwpw": "QFusedPwDwPw"}
KIND_STAGES = {"dwpw": ("dw", "pw"), "pwdw": ("pw", "dw"), "pwpw": ("pw", "pw"), "pwdwpw": ("pw", "dw", "pw")}
OP_TYPES = ("QConv", *CHAIN_OP_TYPES.values(), "QAdd", "QMean")
OPSET = 17  # the standard operators around them (Reshape, Pad, Softmax, QuantizeLinear, ...)
IR_VERSION = 10  # read by every onnxruntime this project supports


def make_model(graph: GraphProto) -> ModelProto:
    """A model of ``graph`` importing the standard opset and the FCM domain."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, 1)],
                              producer_name="fcm")
    model.ir_version = IR_VERSION
    return model


@dataclass(frozen=True)
class Quant:
    """A tensor's quantization: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    def attributes(self, prefix: str) -> dict:
        return {f"{prefix}scale": float(self.scale), f"{prefix}zero_point": int(self.zero_point)}

    def pair(self) -> tuple[float, int]:
        return float(self.scale), int(self.zero_point)


@dataclass
class Requant:
    """What a convolution's accumulators become: per-channel weight scales, the output tensor's
    quantization and the clamp of its fused activation (output integers)."""

    w_scales: np.ndarray
    y: Quant
    clamp: tuple[int, int] = (-128, 127)
    table: np.ndarray | None = None  # an activation on the int8 output: 256 int8 values, index value + 128
    table_y: Quant | None = None  # the quantization of the table's output

    def attributes(self, prefix: str) -> dict:
        attrs = {f"{prefix}w_scales": [float(s) for s in np.asarray(self.w_scales, np.float32).ravel()],
                 **self.y.attributes(f"{prefix}y_"), f"{prefix}clamp": [int(self.clamp[0]), int(self.clamp[1])]}
        if self.table is not None:
            attrs[f"{prefix}table"] = [int(v) for v in np.asarray(self.table).ravel()]
            attrs.update(self.table_y.attributes(f"{prefix}table_y_"))
        return attrs


def _check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown requantization scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    return scheme


def conv_node(name: str, x: str, y: str, x_quant: Quant, weights: np.ndarray, bias: np.ndarray | None,
              requant: Requant, *, depthwise: bool = False, strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0),
              scheme: str = "fp32") -> tuple[NodeProto, dict[str, np.ndarray]]:
    """One convolution layer as a ``QConv`` node; ``weights`` in the layout above, ``pads`` top,
    left, bottom, right."""
    weights = np.ascontiguousarray(weights, np.int8)
    kernel = weights.shape[:2] if depthwise else (weights.shape[1:3] if weights.ndim == 4 else (1, 1))
    arrays = {f"{name}_W": weights}
    inputs = [x, f"{name}_W"]
    if bias is not None:
        arrays[f"{name}_B"] = np.ascontiguousarray(bias, np.int32)
        inputs.append(f"{name}_B")
    node = helper.make_node(
        "QConv", inputs, [y], name=name, domain=DOMAIN, scheme=_check_scheme(scheme), depthwise=int(depthwise),
        kernel_shape=[int(k) for k in kernel], strides=[int(s) for s in strides], dilations=[int(d) for d in dilations],
        pads=[int(p) for p in pads], **x_quant.attributes("x_"), **requant.attributes(""))
    return node, arrays


@dataclass
class ChainStage:
    type: str  # "pw" [F, C] or "dw" [K, K, C]
    weights: np.ndarray
    bias: np.ndarray
    requant: Requant
    stride: int = 1  # dw
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # dw: top, left, bottom, right


@dataclass
class Chain:
    """A fused chain: its stages (a kind of ``KIND_STAGES``), its input's quantization, and the
    residual ADD (output quantization and clamp) when the chain adds its input to its output."""

    kind: str
    x: Quant
    stages: list[ChainStage] = field(default_factory=list)
    residual: Requant | None = None  # w_scales unused

    def node(self, name: str, x: str, y: str, scheme: str = "fp32") -> tuple[NodeProto, dict[str, np.ndarray]]:
        if tuple(s.type for s in self.stages) != KIND_STAGES[self.kind]:
            raise ValueError(f"a {self.kind} chain needs stages {KIND_STAGES[self.kind]}")
        attrs = {"scheme": _check_scheme(scheme), **self.x.attributes("x_")}
        inputs, arrays = [x], {}
        for index, stage in enumerate(self.stages, 1):
            attrs.update(stage.requant.attributes(f"stage{index}_"))
            if stage.type == "dw":
                attrs.update(dw_kernel=int(stage.weights.shape[0]), dw_stride=int(stage.stride),
                             dw_pads=[int(p) for p in stage.pads])
            arrays[f"{name}_W{index}"] = np.ascontiguousarray(stage.weights, np.int8)
            arrays[f"{name}_B{index}"] = np.ascontiguousarray(stage.bias, np.int32)
            inputs += [f"{name}_W{index}", f"{name}_B{index}"]
        if self.residual is not None:
            attrs.update(residual=1, **self.residual.y.attributes("residual_y_"),
                         residual_clamp=[int(c) for c in self.residual.clamp])
        return helper.make_node(CHAIN_OP_TYPES[self.kind], inputs, [y], name=name, domain=DOMAIN, **attrs), arrays


def add_node(name: str, a: str, b: str, y: str, a_quant: Quant, b_quant: Quant, y_quant: Quant,
             clamp: tuple[int, int] = (-128, 127)) -> NodeProto:
    """TFLite's int8 ADD of two tensors of one shape."""
    return helper.make_node("QAdd", [a, b], [y], name=name, domain=DOMAIN, **a_quant.attributes("a_"),
                            **b_quant.attributes("b_"), **y_quant.attributes("y_"), clamp=[int(c) for c in clamp])


def mean_node(name: str, x: str, y: str, x_quant: Quant, y_quant: Quant, keepdims: bool = False) -> NodeProto:
    """XNNPACK's int8 MEAN over H and W of [N, H, W, C]: [N, C] (or [N, 1, 1, C] with ``keepdims``)."""
    return helper.make_node("QMean", [x], [y], name=name, domain=DOMAIN, keepdims=int(keepdims),
                            **x_quant.attributes("x_"), **y_quant.attributes("y_"))
