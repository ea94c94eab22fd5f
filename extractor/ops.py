"""The operator vocabulary shared by the readers, the executor and the planner.

Operators are named as TFLite names its builtins, lower-cased (``conv_2d``, ``depthwise_conv_2d``,
``add``, ``pad``, ``mean``, ...), whichever format the model came from. Activations are the
upper-case strings of the seed's DAG files (``"RELU6"``, ``"RELU"``, ``"0"`` for none) plus the
ones the seed never met (``"HARD_SWISH"``, ``"SIGMOID"``, ...).
"""

from __future__ import annotations

import math

import numpy as np

NO_ACTIVATION = "0"

#: Activations TFLite can fuse into the operator that produces their input
#: (its ``fused_activation_function`` option).
FUSABLE_ACTIVATIONS = ("RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "TANH")

#: Operators whose options carry a fused activation in TFLite.
OPS_WITH_FUSED_ACTIVATION = frozenset(
    {
        "conv_2d",
        "depthwise_conv_2d",
        "fully_connected",
        "add",
        "sub",
        "mul",
        "div",
        "max_pool_2d",
        "average_pool_2d",
        "concatenation",
    }
)

#: Standalone activation operators and the function each computes. On these entries the DAG's
#: ``activation`` field names that function (as in the seed's files, e.g. ``relu`` -> ``"RELU"``).
ACTIVATION_OPS = {
    "relu": "RELU",
    "relu6": "RELU6",
    "relu_n1_to_1": "RELU_N1_TO_1",
    "relu_0_to_1": "RELU_0_TO_1",
    "logistic": "SIGMOID",
    "tanh": "TANH",
    "hard_swish": "HARD_SWISH",
    "leaky_relu": "LEAKY_RELU",
    "gelu": "GELU",
}

CONV_OPS = frozenset({"conv_2d", "depthwise_conv_2d"})
ELEMENTWISE_BINARY_OPS = frozenset({"add", "sub", "mul", "div", "maximum", "minimum", "squared_difference"})


def conv_type(op_name: str, kernel_hw: tuple[int, int]) -> str:
    """The seed's ``type`` of a convolution: ``dw``, ``pw`` (1x1 kernel) or ``s`` (standard)."""
    if op_name == "depthwise_conv_2d":
        return "dw"
    return "pw" if tuple(kernel_hw) == (1, 1) else "s"


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def apply_activation(x: np.ndarray, activation: str, params: dict | None = None) -> np.ndarray:
    """Apply a named activation (fused or standalone) with numpy."""
    params = params or {}
    if activation in (NO_ACTIVATION, "NONE", "LINEAR"):
        return x
    if activation == "RELU":
        return np.maximum(x, 0)
    if activation == "RELU6":
        return np.clip(x, 0, 6)
    if activation == "RELU_N1_TO_1":
        return np.clip(x, -1, 1)
    if activation == "RELU_0_TO_1":
        return np.clip(x, 0, 1)
    if activation == "CLIP":
        return np.clip(x, params["min"], params["max"])
    if activation == "TANH":
        return np.tanh(x)
    if activation == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-x))
    if activation == "HARD_SWISH":
        return x * np.clip(x + 3.0, 0, 6) / 6.0
    if activation == "HARD_SIGMOID":
        return np.clip(x + 3.0, 0, 6) / 6.0
    if activation == "SWISH":
        return x / (1.0 + np.exp(-x))
    if activation == "LEAKY_RELU":
        return np.where(x >= 0, x, x * params.get("alpha", 0.2))
    if activation == "GELU":
        if params.get("approximate"):
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    raise ValueError(f"unknown activation {activation!r}")


def same_pads(in_size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: (before, after), the extra one after."""
    out = -(-in_size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - in_size, 0)
    return total // 2, total - total // 2


def conv_out_size(in_size: int, kernel: int, stride: int, pad_before: int, pad_after: int, dilation: int = 1) -> int:
    effective = (kernel - 1) * dilation + 1
    return (in_size + pad_before + pad_after - effective) // stride + 1


def explicit_pads(
    padding: str, in_hw: tuple[int, int], kernel_hw: tuple[int, int], strides_hw: tuple[int, int], dilation_hw=(1, 1)
) -> list[int]:
    """``[top, bottom, left, right]`` for a ``SAME`` or ``VALID`` padding mode."""
    if padding == "VALID":
        return [0, 0, 0, 0]
    if padding != "SAME":
        raise ValueError(f"unknown padding mode {padding!r}")
    top, bottom = same_pads(in_hw[0], kernel_hw[0], strides_hw[0], dilation_hw[0])
    left, right = same_pads(in_hw[1], kernel_hw[1], strides_hw[1], dilation_hw[1])
    return [top, bottom, left, right]
