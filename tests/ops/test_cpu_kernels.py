"""The CPU reference kernels of the FCM ops against a numpy reference: every kind, DW kernel 3/5/7,
stride 1 and 2, SAME/VALID/explicit pads, odd channel counts, H != W, all activations, residual,
channel scale, batches 1 and > 1; and the function bodies (the path without the library) too."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import FcmSpec
from ort_custom_ops.ops.standalone import fused_model, reference_model
from tests.support.fcm_numpy import run_spec
from tests.support.specs import random_feeds, random_spec


def _check(spec: FcmSpec, rng, batch: int, height: int, width: int) -> None:
    feeds, x, scale = random_feeds(spec, rng, batch, height, width)
    expected = run_spec(spec, x, scale)
    bound = 1e-4 * max(1.0, np.abs(expected).max())
    for with_library in (True, False):  # our kernel, then the function body (ONNX Runtime's own ops)
        session = make_session(fused_model(spec), with_library=with_library)
        (y,) = session.run(None, feeds)
        assert y.shape == expected.shape
        np.testing.assert_allclose(y, expected, rtol=0, atol=bound, err_msg=f"library={with_library}")


GEOMETRIES = [(kind, kernel, stride) for kind in ("dwpw", "pwdw", "pwdwpw") for kernel in (3, 5, 7) for stride in (1, 2)]


@pytest.mark.parametrize("kind, kernel, stride", GEOMETRIES + [("pwpw", 3, 1)])
def test_kinds_kernels_strides(kind, kernel, stride, rng):
    channels = int(rng.integers(3, 37))
    spec = random_spec(rng, kind, channels, kernel=kernel, stride=stride)
    height, width = int(rng.integers(kernel, 24)), int(rng.integers(kernel, 24))
    _check(spec, rng, batch=int(rng.integers(1, 4)), height=height, width=width)


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (0, 0, 1, 1), (1, 1, 1, 1), (2, 0, 1, 2)])
@pytest.mark.parametrize("stride", [1, 2])
def test_explicit_and_valid_padding_on_odd_sizes(pads, stride, rng):
    spec = random_spec(rng, "pwdwpw", 13, kernel=3 if max(pads) < 3 else 5, stride=stride, pads=pads)
    _check(spec, rng, batch=2, height=17, width=11)


def test_tensorflow_same_padding_stride2_even_size(rng):
    """TensorFlow's SAME for stride 2 on an even size puts the extra row/column after: (0, 0, 1, 1)."""
    spec = random_spec(rng, "dwpw", 24, kernel=3, stride=2, pads=(0, 0, 1, 1))
    _check(spec, rng, batch=1, height=28, width=28)


@pytest.mark.parametrize("kind", ["pwdwpw", "pwpw"])
def test_residual(kind, rng):
    spec = random_spec(rng, kind, 19, residual=True)
    _check(spec, rng, batch=3, height=9, width=14)


@pytest.mark.parametrize("kind", ["pwdw", "pwpw", "pwdwpw"])
def test_channel_scale(kind, rng):
    spec = random_spec(rng, kind, 21, scale=True)
    _check(spec, rng, batch=3, height=7, width=7)


def test_batch_and_size_change_between_runs(rng):
    spec = random_spec(rng, "pwdwpw", 8, stride=2)
    session = make_session(fused_model(spec))
    for batch, height, width in ((1, 9, 9), (5, 16, 7), (2, 3, 3)):
        x = rng.normal(size=(batch, 8, height, width)).astype(np.float32)
        (y,) = session.run(None, {"X": x})
        np.testing.assert_allclose(y, run_spec(spec, x), atol=1e-4 * max(1, np.abs(y).max()), rtol=0)


def test_larger_feature_map_crosses_row_blocks(rng):
    """Big enough that the kernel cuts the output into several row blocks (halo recomputation)."""
    spec = random_spec(rng, "pwdwpw", 16, expand=96, out=16, stride=1, residual=True)
    _check(spec, rng, batch=1, height=112, width=96)
    spec = random_spec(rng, "pwdwpw", 16, expand=96, out=24, stride=2)
    _check(spec, rng, batch=2, height=57, width=61)


def test_matches_the_standard_onnx_reference(rng):
    spec = random_spec(rng, "pwdwpw", 12, stride=2, scale=True)
    x = rng.normal(size=(2, 12, 15, 10)).astype(np.float32)
    s = rng.uniform(size=(2, 12, 1, 1)).astype(np.float32)
    (fused,) = make_session(fused_model(spec)).run(None, {"X": x, "S": s})
    (ref,) = ort.InferenceSession(reference_model(spec).SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x, "S": s})
    np.testing.assert_allclose(fused, ref, atol=1e-4 * np.abs(ref).max(), rtol=0)
