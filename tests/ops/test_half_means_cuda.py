"""fp16 spatial means on ONNX Runtime's CUDA provider (GPU machine only): the fp16 product of the
transposed map by the column of 1/(H*W) sums in fp32 (cuBLAS's compute type for fp16 products in
ONNX Runtime), so the mean is the exact mean of the fp16 map rounded once, at the widest map whose
column is still a normal fp16 value."""

from __future__ import annotations

import numpy as np
import pytest

from fcm_core.vocabulary import PRECISIONS
from ort_custom_ops.lowering.half import fp32_mean_nodes, to_half
from ort_custom_ops.ops.library import make_session
from tests.support.gpu import cuda_providers, require_cuda, run_poisoned
from tests.support.means import fp16_mean_reference, spatial_mean_model

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("h, w, batch", [(112, 112, 4), (7, 7, 32), (13, 9, 3)])
def test_an_fp16_spatial_mean_sums_in_fp32_on_cuda(h, w, batch, rng):
    require_cuda()
    model = spatial_mean_model(h, w, 24, batch)
    assert fp32_mean_nodes(model, "fp16") == []  # 112 x 112 = 12544 pixels: 1/12544 is a normal fp16
    half = to_half(model, "fp16")
    session = make_session(half, providers=cuda_providers(), with_library=False)
    # all-positive pixels (Relu passes them): an fp16 running sum of 12544 of them would stall far from the mean
    x = rng.uniform(0, 6, size=(batch, h, w, 24)).astype(np.float32)
    got = run_poisoned(session, {"x": x}, (batch, 24))
    np.testing.assert_allclose(got, fp16_mean_reference(x), rtol=0, atol=2 * PRECISIONS["fp16"].unit_roundoff)
