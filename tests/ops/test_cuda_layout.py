"""Channels-last fused nodes on the CUDA execution provider (GPU machine only): the CUDA kernels
either compute them as the CPU reference kernels do (TF32 bound, poisoned outputs), or refuse them
when the kernel is created, with an ONNX Runtime error that names the layout; never NHWC tensors
read as NCHW."""

from __future__ import annotations

import numpy as np
import pytest

from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.standalone import fused_model
from tests.support.gpu import cuda_providers, require_cuda, run_poisoned
from tests.support.specs import random_feeds, random_spec

pytestmark = pytest.mark.gpu

TF32_BOUND = 5e-3
REFUSAL = "channels_last=1: this execution provider's kernels take NCHW only"


@pytest.mark.parametrize("kind, kernel, stride, residual, scale, batch", [
    ("dwpw", 3, 2, False, False, 1), ("pwdw", 5, 1, False, True, 3), ("pwpw", 3, 1, True, True, 3),
    ("pwdwpw", 7, 2, False, True, 1), ("pwdwpw", 3, 1, True, False, 3)])
def test_channels_last_nodes_compute_as_on_the_cpu_or_are_refused(kind, kernel, stride, residual, scale, batch, rng):
    require_cuda()
    spec = random_spec(rng, kind, 19, kernel=kernel, stride=stride, residual=residual, scale=scale, channels_last=True)
    model = fused_model(spec)
    feeds, _, _ = random_feeds(spec, rng, batch, 13, 10)
    (want,) = make_session(model).run(None, feeds)
    try:
        session = make_session(model, providers=cuda_providers())
    except Exception as exc:  # the kernels that take NCHW only
        assert type(exc).__module__.startswith("onnxruntime") and REFUSAL in str(exc), str(exc)
        return
    got = run_poisoned(session, feeds, want.shape)
    assert np.abs(got - want).max() <= TF32_BOUND * max(1.0, float(np.abs(want).max()))
