"""Cases for the separate passes' GEMM tiles, shared by the TF32 and the half-type GPU tests."""

from __future__ import annotations

from ort_custom_ops.ops.schema import Activation
from tests.support.specs import random_spec, with_activations

SMALL_TILE_CASES = [
    # (kind, channels, expand, out, kernel, stride, residual, scale, batch, size, plan)
    ("pwdwpw", 160, 960, 160, 3, 1, True, False, 32, (7, 7), "gemm+dw+gemm"),  # MobileNetV2's 7x7 block: both products on 64 x 64 tiles
    ("pwdwpw", 16, 96, 24, 3, 2, False, False, 2, (15, 13), "gemm+dw+gemm"),
    ("dwpw", 40, 0, 48, 5, 2, False, False, 3, (11, 9), "dw+gemm"),
    ("pwdw", 40, 120, 0, 7, 1, False, False, 1, (9, 10), "gemm+dw"),
    ("pw", 1152, 0, 320, 1, 1, False, True, 32, (7, 7), "gemm"),    # weights scaled per image: 32 products, 160 small tiles
    ("pw", 320, 0, 1280, 1, 1, False, False, 32, (7, 7), "gemm"),   # 130 large tiles: just under one wave
    ("pw", 64, 0, 96, 1, 1, True, False, 32, (28, 28), "gemm"),     # 196 large tiles: they stay
    ("dwpw", 32, 0, 16, 3, 1, False, False, 4, (56, 57), "dw+gemm"),   # 16 output channels: 128 x 32 tiles (MobileNetV2's first block)
    ("pwdw", 24, 56, 0, 3, 2, False, False, 5, (45, 47), "gemm+dw"),   # 56: 128 x 64 tiles
    ("pw", 32, 0, 24, 1, 1, False, True, 3, (60, 61), "gemm"),        # a scale per image, 24 channels: 128 x 32 tiles, batched
]


def small_tile_spec(rng, case):
    """(spec, batch, height, width, plan) of one case: ReLU6 after the last stage, or a residual."""
    kind, c, e, f, kernel, stride, residual, scale, batch, (h, w), plan = case
    spec = random_spec(rng, kind, c, kernel=max(kernel, 3), stride=stride, expand=e or None, out=f or None, residual=residual,
                       scale=scale, channels_last=True)
    last = Activation() if residual else Activation("clip", (0.0, 6.0))
    return with_activations(spec, last=last, residual=Activation("relu") if residual else Activation()), batch, h, w, plan
