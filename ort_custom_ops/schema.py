"""The FCM operator set: domain, op types, inputs and attributes.

In: a description of one fused convolutional module (:class:`FcmSpec`: its stages with weights
in the layout the kernels take, activations, depthwise geometry, residual, tiling). Out: the ONNX
node of our domain that computes it (:meth:`FcmSpec.node`), and the same computation in standard
ONNX operators (:meth:`FcmSpec.reference_nodes`), which is what a model-local function body holds
when none is taken from a model.

Domain ``ai.fcm``, version 1. Op types by kind: ``FusedDwPw``, ``FusedPwDw``, ``FusedPwPw``,
``FusedPwDwPw``. Inputs: ``X`` [N, C, H, W], then per stage ``W`` and ``B`` (pointwise W [F, C],
depthwise W [C, K, K]), and an optional ``S`` [N, C, 1, 1] scaling X's channels (a pointwise first
stage only). Output ``Y`` [N, F, Ho, Wo]. The attributes are listed in :data:`ATTRIBUTES` (and
``csrc/spec.h``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from onnx import NodeProto, helper

DOMAIN = "ai.fcm"
DOMAIN_VERSION = 1
OP_TYPES = {"dwpw": "FusedDwPw", "pwdw": "FusedPwDw", "pwpw": "FusedPwPw", "pwdwpw": "FusedPwDwPw"}
KIND_STAGES = {"dwpw": ("dw", "pw"), "pwdw": ("pw", "dw"), "pwpw": ("pw", "pw"), "pwdwpw": ("pw", "dw", "pw")}
ACTIVATIONS = ("none", "relu", "relu6", "clip", "hard_swish", "swish", "sigmoid")
TILING_KEYS = ("tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch")

#: Every attribute an FCM node may carry (a function body must declare them all).
ATTRIBUTES = tuple(
    [f"stage{i}_{what}" for i in (1, 2, 3) for what in ("activation", "clip")]
    + ["dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "allow_tf32", "cuda_plans"]
    + list(TILING_KEYS)
)

#: DAG/plan activation names -> attribute spelling.
FROM_PLAN_ACTIVATION = {"0": "none", "RELU": "relu", "RELU6": "relu6", "RELU_N1_TO_1": "clip", "RELU_0_TO_1": "clip",
                        "CLIP": "clip", "HARD_SWISH": "hard_swish", "SWISH": "swish", "SIGMOID": "sigmoid"}
PLAN_CLIP_BOUNDS = {"RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0)}


@dataclass
class Activation:
    name: str = "none"  # one of ACTIVATIONS
    clip: tuple[float, float] | None = None  # bounds for "clip"

    def __post_init__(self):
        if self.name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.name!r}")
        if self.name == "relu6":
            self.name, self.clip = "clip", (0.0, 6.0)
        if self.name == "clip" and self.clip is None:
            raise ValueError("a clip activation needs its bounds")

    def attributes(self, prefix: str) -> dict:
        out = {f"{prefix}_activation": self.name}
        if self.name == "clip":
            out[f"{prefix}_clip"] = [float(self.clip[0]), float(self.clip[1])]
        return out


@dataclass
class StageSpec:
    type: str  # "pw" or "dw"
    weight: np.ndarray  # pw [F, C], dw [C, K, K]
    bias: np.ndarray
    activation: Activation = field(default_factory=Activation)
    stride: int = 1  # dw
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # dw: top, left, bottom, right (ONNX order)

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1] if self.type == "pw" else self.weight.shape[0])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[1]) if self.type == "dw" else 1


@dataclass
class FcmSpec:
    kind: str
    stages: list[StageSpec]
    residual: bool = False
    residual_activation: Activation = field(default_factory=Activation)
    has_scale: bool = False  # an S input multiplies X's channels
    tiling: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in OP_TYPES:
            raise ValueError(f"unknown FCM kind {self.kind!r}")
        if tuple(s.type for s in self.stages) != KIND_STAGES[self.kind]:
            raise ValueError(f"{self.kind} needs stages {KIND_STAGES[self.kind]}")

    @property
    def op_type(self) -> str:
        return OP_TYPES[self.kind]

    @property
    def depthwise(self) -> StageSpec | None:
        return next((s for s in self.stages if s.type == "dw"), None)

    def attributes(self) -> dict:
        attrs: dict = {}
        for index, stage in enumerate(self.stages, 1):
            attrs.update(stage.activation.attributes(f"stage{index}"))
        dw = self.depthwise
        if dw is not None:
            attrs.update(dw_kernel=dw.kernel, dw_stride=dw.stride, dw_pads=[int(p) for p in dw.pads])
        if self.residual:
            attrs["residual"] = 1
            attrs.update(self.residual_activation.attributes("residual"))
        for key in TILING_KEYS:
            if self.tiling.get(key):
                attrs[key] = int(self.tiling[key])
        return attrs

    def input_names(self, prefix: str, x: str, scale: str | None = None) -> list[str]:
        names = [x]
        for index in range(1, len(self.stages) + 1):
            names += [f"{prefix}W{index}", f"{prefix}B{index}"]
        if self.has_scale:
            names.append(scale or f"{prefix}S")
        return names

    def node(self, inputs: Sequence[str], output: str, name: str, overload: str | None = None) -> NodeProto:
        node = helper.make_node(self.op_type, list(inputs), [output], name=name, domain=DOMAIN, **self.attributes())
        if overload:
            node.overload = overload
        return node

    def weights(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = {}
        for index, stage in enumerate(self.stages, 1):
            arrays[f"{prefix}W{index}"] = np.ascontiguousarray(stage.weight, np.float32)
            arrays[f"{prefix}B{index}"] = np.ascontiguousarray(stage.bias, np.float32)
        return arrays

    def reference_nodes(self, x: str, weight_names: Sequence[str], y: str, scale: str | None = None, prefix: str = "r") -> list[NodeProto]:
        """The same computation in standard ONNX (opset >= 14): reshapes of the kernel-layout
        weights, Conv, the activations, the residual Add. ``weight_names``: W1, B1, W2, B2, ..."""
        nodes: list[NodeProto] = []
        current = x
        if self.has_scale:
            nodes.append(helper.make_node("Mul", [x, scale], [f"{prefix}_scaled"]))
            current = f"{prefix}_scaled"
        for index, stage in enumerate(self.stages, 1):
            w, b = weight_names[2 * index - 2], weight_names[2 * index - 1]
            shape = [stage.out_channels, stage.in_channels, 1, 1] if stage.type == "pw" else [stage.out_channels, 1, stage.kernel, stage.kernel]
            nodes.append(helper.make_node("Constant", [], [f"{prefix}_shape{index}"], value_ints=shape))
            nodes.append(helper.make_node("Reshape", [w, f"{prefix}_shape{index}"], [f"{prefix}_w{index}"]))
            conv_out = f"{prefix}_conv{index}"
            attrs = {}
            if stage.type == "dw":
                attrs = dict(group=stage.out_channels, kernel_shape=[stage.kernel, stage.kernel],
                             strides=[stage.stride, stage.stride], pads=[stage.pads[0], stage.pads[1], stage.pads[2], stage.pads[3]])
            nodes.append(helper.make_node("Conv", [current, f"{prefix}_w{index}", b], [conv_out], **attrs))
            current = activation_nodes(nodes, stage.activation, conv_out, f"{prefix}_act{index}")
        if self.residual:
            nodes.append(helper.make_node("Add", [current, x], [f"{prefix}_sum"]))
            current = activation_nodes(nodes, self.residual_activation, f"{prefix}_sum", f"{prefix}_ract")
        nodes.append(helper.make_node("Identity", [current], [y]))
        return nodes


def activation_nodes(nodes: list[NodeProto], activation: Activation, x: str, prefix: str) -> str:
    """Append standard ONNX nodes applying ``activation`` to ``x``; return the result's name."""
    name = activation.name
    if name == "none":
        return x
    out = f"{prefix}_out"
    if name == "relu":
        nodes.append(helper.make_node("Relu", [x], [out]))
    elif name == "clip":
        nodes.append(helper.make_node("Constant", [], [f"{prefix}_lo"], value_float=float(activation.clip[0])))
        nodes.append(helper.make_node("Constant", [], [f"{prefix}_hi"], value_float=float(activation.clip[1])))
        nodes.append(helper.make_node("Clip", [x, f"{prefix}_lo", f"{prefix}_hi"], [out]))
    elif name == "hard_swish":
        nodes.append(helper.make_node("HardSwish", [x], [out]))
    elif name == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", [x], [out]))
    elif name == "swish":
        nodes.append(helper.make_node("Sigmoid", [x], [f"{prefix}_sig"]))
        nodes.append(helper.make_node("Mul", [x, f"{prefix}_sig"], [out]))
    return out


def make_function(spec: FcmSpec, body: list[NodeProto], inputs: Sequence[str], output: str, overload: str,
                  opset: int):
    """A model-local function for one fused node: domain and op type of the node, its own body
    (told apart from other nodes' by ``overload``), every FCM attribute declared."""
    function = helper.make_function(DOMAIN, spec.op_type, list(inputs), [output], body,
                                    [helper.make_opsetid("", opset)], attributes=list(ATTRIBUTES))
    function.overload = overload
    return function
