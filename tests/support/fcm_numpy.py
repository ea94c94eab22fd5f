"""An independent numpy reference of the FCM ops (for tests): direct loops over the math."""

from __future__ import annotations

import numpy as np

from extractor.ops import apply_activation
from fcm_core.vocabulary import ACTIVATIONS


def activate(x: np.ndarray, activation) -> np.ndarray:
    """The activation as the extractor's numpy executor applies its DAG spelling (written apart from
    the kernels' formulas, and checked against Keras and TFLite by the extractor's tests)."""
    spelling = next(iter(ACTIVATIONS[activation.name].dag))
    params = {"min": activation.clip[0], "max": activation.clip[1]} if activation.name == "clip" else None
    return apply_activation(x, spelling, params)


def pointwise(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("fc,nchw->nfhw", w.astype(np.float64), x) + b[None, :, None, None]


def depthwise(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pads) -> np.ndarray:
    top, left, bottom, right = pads
    n, c, h, wd = x.shape
    k = w.shape[1]
    xp = np.zeros((n, c, h + top + bottom, wd + left + right))
    xp[:, :, top:top + h, left:left + wd] = x
    out_h = (h + top + bottom - k) // stride + 1
    out_w = (wd + left + right - k) // stride + 1
    out = np.zeros((n, c, out_h, out_w)) + b[None, :, None, None]
    for kh in range(k):
        for kw in range(k):
            patch = xp[:, :, kh:kh + (out_h - 1) * stride + 1:stride, kw:kw + (out_w - 1) * stride + 1:stride]
            out += patch * w[None, :, kh, kw, None, None]
    return out


def round_to(values: np.ndarray, dtype) -> np.ndarray:
    """``values`` rounded to ``dtype`` (nearest, ties to even, from float32 as the kernels round), in float64;
    unchanged for None."""
    if dtype is None:
        return values
    return np.asarray(values, np.float32).astype(dtype).astype(np.float64)


def run_spec(spec, x: np.ndarray, scale: np.ndarray | None = None, dtype=None) -> np.ndarray:
    """What an FCM node with ``spec`` computes, in float64; with ``dtype`` (a half-precision numpy
    type) every input and every stage's output rounded to it, as the half-precision ops define."""
    x = round_to(x.astype(np.float64), dtype)
    current = x
    if spec.has_scale:
        current = current * round_to(scale, dtype)
    for stage in spec.stages:
        weight, bias = round_to(stage.weight, dtype), round_to(stage.bias, dtype)
        if stage.type == "pw":
            current = pointwise(current, weight, bias)
        else:
            current = depthwise(current, weight, bias, stage.stride, stage.pads)
        current = round_to(activate(current, stage.activation), dtype)
    if spec.residual:
        current = round_to(activate(current + x, spec.residual_activation), dtype)
    return current
