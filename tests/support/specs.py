"""Random operator descriptions for the kernel tests (CPU and CUDA share them).

In: a random generator and the shape wanted. Out: fp32 fused-op specs and feeds
(:func:`random_spec`, :func:`random_feeds`, :func:`with_activations`), int8 quantizations, tensors and activation tables
(:func:`random_quant`, :func:`random_int8`, :func:`swish_table`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from extractor.integer import FP32, logistic_table, mul
from ort_custom_ops.ops.schema import ACTIVATIONS, Activation, FcmSpec, KIND_STAGES, Quant, StageSpec


def _activation(rng: np.random.Generator) -> Activation:
    name = ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]
    if name == "clip":
        lo = float(rng.uniform(-1, 0))
        return Activation("clip", (lo, lo + float(rng.uniform(0.5, 4))))
    return Activation(name)


def random_spec(rng, kind: str, channels: int, *, kernel=3, stride=1, pads=None, residual=False, scale=False,
                expand=None, out=None, channels_last=False) -> FcmSpec:
    stages, c = [], channels
    types = KIND_STAGES[kind]
    for index, kind_of_stage in enumerate(types):
        last = index == len(types) - 1
        if kind_of_stage == "pw":
            f = (channels if residual else out or int(rng.integers(3, 40))) if last else (expand or int(rng.integers(3, 50)))
            w = rng.normal(0, 1 / np.sqrt(c), (f, c)).astype(np.float32)
        else:
            f = c
            w = rng.normal(0, 1 / kernel, (c, kernel, kernel)).astype(np.float32)
        b = rng.normal(0, 0.3, f).astype(np.float32)
        geometry = {}
        if kind_of_stage == "dw":
            half = (kernel - 1) // 2
            geometry = dict(stride=stride, pads=tuple(pads) if pads is not None else (half, half, half, half))
        stages.append(StageSpec(kind_of_stage, w, b, _activation(rng), **geometry))
        c = f
    return FcmSpec(kind, stages, residual=residual, residual_activation=_activation(rng) if residual else Activation(),
                   has_scale=scale, channels_last=channels_last)


def with_activations(spec: FcmSpec, *, first: Activation | None = None, last: Activation | None = None,
                     residual: Activation | None = None) -> FcmSpec:
    """``spec`` with the activation after its first stage, after its last stage and after the
    residual set where given (random_spec draws them at random; some kernels take only some)."""
    stages = list(spec.stages)
    if first is not None:
        stages[0] = dataclasses.replace(stages[0], activation=first)
    if last is not None:
        stages[-1] = dataclasses.replace(stages[-1], activation=last)
    if residual is None:
        return dataclasses.replace(spec, stages=stages)
    return dataclasses.replace(spec, stages=stages, residual_activation=residual)


def random_feeds(spec: FcmSpec, rng, batch: int, height: int, width: int, scale_nhwc: bool = False):
    """(feeds, x, scale): a normal input X and, when the spec has one, a channel scale S in [0, 1);
    ``x`` and ``scale`` NCHW, the feeds in the spec's layout (``scale_nhwc``: S as [N, 1, 1, C])."""
    x = rng.normal(size=(batch, spec.stages[0].in_channels, height, width)).astype(np.float32)
    feeds = {"X": np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if spec.channels_last else x}
    scale = None
    if spec.has_scale:
        scale = rng.uniform(0, 1, (batch, x.shape[1], 1, 1)).astype(np.float32)
        feeds["S"] = scale.reshape(batch, 1, 1, -1) if scale_nhwc else scale
    return feeds, x, scale


def random_quant(rng) -> Quant:
    return Quant(float(np.float32(rng.uniform(0.01, 0.5))), int(rng.integers(-100, 100)))


def random_int8(rng, shape) -> np.ndarray:
    return rng.integers(-128, 128, shape).astype(np.int8)


def swish_table(rng, t: Quant) -> tuple[np.ndarray, Quant]:
    """int8 swish (LOGISTIC, then MUL of the two) on values of quantization ``t``, as a table, as
    extractor.integer computes the two layers (XNNPACK's arithmetic), and its output quantization."""
    s, y = Quant(1 / 256, -128), Quant(float(np.float32(t.scale * rng.uniform(0.3, 0.8))), int(rng.integers(-100, -50)))
    sigmoid = logistic_table(t.pair(), s.pair(), "int8", FP32)
    codes = np.arange(-128, 128).astype(np.int8)
    return mul(codes, sigmoid, t.pair(), s.pair(), y.scale, y.zero_point, (-128, 127), "int8", FP32), y
