"""The CPU reference kernels of the FCM ops against a numpy reference: every kind, DW kernel 3/5/7,
stride 1 and 2, SAME/VALID/explicit pads, odd channel counts, H != W, all activations, residual,
channel scale, batches 1 and > 1, in both layouts (NCHW, and NHWC with channels_last=1); and the
function bodies (the path without the library) too."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import FcmSpec
from ort_custom_ops.ops.standalone import fused_model, reference_model
from tests.support.fcm_numpy import run_spec
from tests.support.specs import random_feeds, random_spec


LAYOUTS = pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])


def _check(spec: FcmSpec, rng, batch: int, height: int, width: int, scale_nhwc: bool = False) -> None:
    feeds, x, scale = random_feeds(spec, rng, batch, height, width, scale_nhwc)
    expected = run_spec(spec, x, scale)
    if spec.channels_last:
        expected = expected.transpose(0, 2, 3, 1)
    bound = 1e-4 * max(1.0, np.abs(expected).max())
    model = fused_model(spec)
    if scale_nhwc:  # S declared [N, 1, 1, C]
        model.graph.input[1].CopyFrom(helper.make_tensor_value_info("S", TensorProto.FLOAT, ["N", 1, 1, feeds["S"].shape[3]]))
    for with_library in (True, False):  # our kernel, then the function body (ONNX Runtime's own ops)
        session = make_session(model, with_library=with_library)
        (y,) = session.run(None, feeds)
        assert y.shape == expected.shape
        np.testing.assert_allclose(y, expected, rtol=0, atol=bound, err_msg=f"library={with_library}")


GEOMETRIES = [(kind, kernel, stride) for kind in ("dwpw", "pwdw", "pwdwpw") for kernel in (3, 5, 7) for stride in (1, 2)]


@LAYOUTS
@pytest.mark.parametrize("kind, kernel, stride", GEOMETRIES + [("pwpw", 3, 1)])
def test_kinds_kernels_strides(kind, kernel, stride, channels_last, rng):
    channels = int(rng.integers(3, 37))
    spec = random_spec(rng, kind, channels, kernel=kernel, stride=stride, channels_last=channels_last)
    height, width = int(rng.integers(kernel, 24)), int(rng.integers(kernel, 24))
    _check(spec, rng, batch=int(rng.integers(1, 4)), height=height, width=width)


@LAYOUTS
@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (0, 0, 1, 1), (1, 1, 1, 1), (2, 0, 1, 2)])
@pytest.mark.parametrize("stride", [1, 2])
def test_explicit_and_valid_padding_on_odd_sizes(pads, stride, channels_last, rng):
    spec = random_spec(rng, "pwdwpw", 13, kernel=3 if max(pads) < 3 else 5, stride=stride, pads=pads,
                       channels_last=channels_last)
    _check(spec, rng, batch=2, height=17, width=11)


def test_tensorflow_same_padding_stride2_even_size(rng):
    """TensorFlow's SAME for stride 2 on an even size puts the extra row/column after: (0, 0, 1, 1)."""
    spec = random_spec(rng, "dwpw", 24, kernel=3, stride=2, pads=(0, 0, 1, 1))
    _check(spec, rng, batch=1, height=28, width=28)


@LAYOUTS
@pytest.mark.parametrize("kind", ["pwdwpw", "pwpw"])
def test_residual(kind, channels_last, rng):
    spec = random_spec(rng, kind, 19, residual=True, channels_last=channels_last)
    _check(spec, rng, batch=3, height=9, width=14)


@LAYOUTS
@pytest.mark.parametrize("kind", ["pwdw", "pwpw", "pwdwpw"])
def test_channel_scale(kind, channels_last, rng):
    spec = random_spec(rng, kind, 21, scale=True, channels_last=channels_last)
    _check(spec, rng, batch=3, height=7, width=7)


@pytest.mark.parametrize("residual", [False, True])
def test_single_pointwise_stage_with_a_channel_scale(residual, rng):
    """The ``pw`` kind (a squeeze-and-excitation projection: one pointwise stage, its input scaled
    per channel; channels-last only), with the residual its epilogue can add, the scale as
    [N, C, 1, 1] and as [N, 1, 1, C]."""
    spec = random_spec(rng, "pw", 23, scale=True, residual=residual, channels_last=True)
    _check(spec, rng, batch=3, height=7, width=9)
    _check(spec, rng, batch=2, height=5, width=4, scale_nhwc=True)


@pytest.mark.parametrize("kind", ["pwdw", "pwpw", "pwdwpw"])
def test_channels_last_scale_may_be_nhwc(kind, rng):
    """A channels-last node takes its N x C scale values as [N, 1, 1, C] too (kernel and function body)."""
    spec = random_spec(rng, kind, 11, scale=True, channels_last=True, stride=2)
    _check(spec, rng, batch=3, height=9, width=6, scale_nhwc=True)


@pytest.mark.parametrize("kind, kernel, stride, residual, scale, batch", [
    ("dwpw", 3, 2, False, False, 1), ("dwpw", 7, 1, False, False, 3), ("pwdw", 5, 2, False, True, 3),
    ("pwpw", 3, 1, True, True, 1), ("pwdwpw", 3, 1, True, True, 3), ("pwdwpw", 7, 2, False, True, 1)])
def test_channels_last_equals_nchw_on_transposed_data(kind, kernel, stride, residual, scale, batch, rng):
    """The NHWC kernel computes exactly what the NCHW one does on the same values: bit for bit."""
    nchw = random_spec(rng, kind, 13, kernel=kernel, stride=stride, residual=residual, scale=scale)
    nhwc = dataclasses.replace(nchw, channels_last=True)
    feeds, x, _ = random_feeds(nchw, rng, batch, 15, 10)
    (want,) = make_session(fused_model(nchw)).run(None, feeds)
    (got,) = make_session(fused_model(nhwc)).run(None, {**feeds, "X": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})
    assert got.shape == (batch, *want.shape[2:], want.shape[1])
    assert np.array_equal(got, want.transpose(0, 2, 3, 1))


@LAYOUTS
def test_batch_and_size_change_between_runs(channels_last, rng):
    spec = random_spec(rng, "pwdwpw", 8, stride=2, channels_last=channels_last)
    session = make_session(fused_model(spec))
    for batch, height, width in ((1, 9, 9), (5, 16, 7), (2, 3, 3)):
        x = rng.normal(size=(batch, 8, height, width)).astype(np.float32)
        expected = run_spec(spec, x)
        if channels_last:
            x, expected = x.transpose(0, 2, 3, 1).copy(), expected.transpose(0, 2, 3, 1)
        (y,) = session.run(None, {"X": x})
        np.testing.assert_allclose(y, expected, atol=1e-4 * max(1, np.abs(y).max()), rtol=0)


@LAYOUTS
def test_larger_feature_map_crosses_row_blocks(channels_last, rng):
    """Big enough that the kernel cuts the output into several row blocks (halo recomputation)."""
    spec = random_spec(rng, "pwdwpw", 16, expand=96, out=16, stride=1, residual=True, channels_last=channels_last)
    _check(spec, rng, batch=1, height=112, width=96)
    spec = random_spec(rng, "pwdwpw", 16, expand=96, out=24, stride=2, channels_last=channels_last)
    _check(spec, rng, batch=2, height=57, width=61)


def test_matches_the_standard_onnx_reference(rng):
    spec = random_spec(rng, "pwdwpw", 12, stride=2, scale=True)
    x = rng.normal(size=(2, 12, 15, 10)).astype(np.float32)
    s = rng.uniform(size=(2, 12, 1, 1)).astype(np.float32)
    (fused,) = make_session(fused_model(spec)).run(None, {"X": x, "S": s})
    (ref,) = ort.InferenceSession(reference_model(spec).SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x, "S": s})
    np.testing.assert_allclose(fused, ref, atol=1e-4 * np.abs(ref).max(), rtol=0)
