"""The fp16 and bf16 ops on the CUDA provider against their CPU reference kernels (GPU machine only).

channels_last nodes whose channel counts are multiples of 8 run the block kernels in their own type
(FP16 or BF16 tensor cores, FP32 accumulation, the depthwise stage in FP32); other half nodes (NCHW,
other channel counts) run the FP32 kernels on FP32 copies; one-pixel PW->PW nodes the pixel-chain
kernels. FCM_CUDA_VERBOSE says which ran, and the tests check that it is the one they mean. Inputs
and outputs are half tensors bound to device buffers, the output poisoned before the run. The bound
is the rounding bound of the reference kernels' tests (tests/support/half.py): each stage's output
may round the other way, carried through the later stages.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fcm_core.vocabulary import PRECISIONS
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import NUMPY_TYPES, Activation
from ort_custom_ops.ops.standalone import float_io, fused_model
from tests.support.gpu import compute_capability, cuda_providers, forced_plan, has_clusters, require_cuda
from tests.support.half import rounding_bound, run_poisoned_half
from tests.support.passes import SMALL_TILE_CASES, small_tile_spec
from tests.support.specs import random_feeds, random_spec, with_activations

pytestmark = pytest.mark.gpu

HALF = pytest.mark.parametrize("precision", ["fp16", "bf16"])


@pytest.fixture(autouse=True)
def _cuda():
    require_cuda()


def check_half_on_gpu(spec, rng, batch: int, height: int, width: int, plan: str | None = None) -> None:
    """One half node on the CUDA provider, output poisoned, against the CPU reference kernel."""
    feeds, x, scale = random_feeds(spec, rng, batch, height, width)
    dtype = NUMPY_TYPES[spec.precision]
    feeds = {k: v.astype(dtype).astype(np.float32) for k, v in feeds.items()}
    model = fused_model(spec)
    (cpu,) = make_session(float_io(model)).run(None, feeds)
    session = make_session(forced_plan(model, plan, batch), providers=cuda_providers())
    gpu = run_poisoned_half(session, feeds, cpu.shape, spec.precision)
    bound = rounding_bound(spec, x, scale)
    if spec.residual:
        bound += 2 * PRECISIONS[spec.precision].unit_roundoff * np.abs(cpu).max()
    error = float(np.abs(gpu - cpu).max())
    assert error <= bound, f"GPU vs CPU: {error:.3g}, bound {bound:.3g}, plan {plan}"


def _half(spec, precision):
    return dataclasses.replace(spec, precision=precision)


CASES = [(kind, k, s) for kind in ("dwpw", "pwdw", "pwdwpw") for k in (3, 5, 7) for s in (1, 2)] + [("pwpw", 1, 1), ("pw", 1, 1)]


@HALF
@pytest.mark.parametrize("kind, kernel, stride", CASES)
def test_block_kernels_in_half(precision, kind, kernel, stride, rng, capfd, monkeypatch):
    """Every kind, kernel and stride on odd map sizes, channel counts that are multiples of 8 (one
    of them not of 32: a ragged last chunk), batches 1 and 3, residual and channel scale: the block
    kernels in the node's type."""
    monkeypatch.setenv("FCM_CUDA_VERBOSE", "1")
    name = "FP16" if precision == "fp16" else "BF16"
    for batch, channels in ((1, 8 * int(rng.integers(1, 9))), (3, 8 * int(rng.integers(5, 13)))):
        spec = _half(random_spec(rng, kind, channels, kernel=max(kernel, 3), stride=stride, channels_last=True,
                                 expand=8 * int(rng.integers(2, 20)), out=8 * int(rng.integers(1, 12)),
                                 residual=kind in ("pwdwpw", "pwpw", "pw") and stride == 1 and rng.random() < 0.5,
                                 scale=kind == "pw" or (kind != "dwpw" and rng.random() < 0.3)), precision)
        # (at least 2 x 2 pixels: one pixel would run the pixel-chain kernels)
        check_half_on_gpu(spec, rng, batch, int(rng.integers(max(kernel, 2), 24)), int(rng.integers(max(kernel, 2), 24)))
    said = capfd.readouterr().err
    assert said.count(f", {name}),") == 2, said


@HALF
@pytest.mark.parametrize("plan", ["8x8,64,1,3", "8x8,64,2,4", "4x16,32,4,3", "7x7,96,8,3", "2x14,64,1,4,2", "8x8,160,1,3,2",
                                  "5x10,128,3,3", "8x8,64,1,0"])
def test_forced_plans_in_half(precision, plan, rng):
    """Output-channel slices, splits over a cluster (shares added in distributed shared memory),
    ring depths, resident weights, two computing warpgroups."""
    if int(plan.split(",")[2]) > 1 and not has_clusters():
        pytest.skip("splits need thread-block clusters (sm_90)")
    spec = _half(random_spec(rng, "pwdwpw", 64, kernel=3, stride=1, expand=384, out=64, residual=True, channels_last=True),
                 precision)
    check_half_on_gpu(spec, rng, 3, 14, 14, plan=plan)


@HALF
def test_a_split_over_a_cluster_of_16_in_half(precision, rng):
    """18 chunks of 64 channels (EfficientNetB0's 7x7 1152) split over a cluster of 16 CTAs at batch 1,
    two output-channel slices, in the node's type."""
    if not has_clusters():
        pytest.skip("clusters need sm_90")
    spec = random_spec(rng, "pwdwpw", 192, kernel=3, stride=1, expand=1152, out=192, residual=True, channels_last=True)
    check_half_on_gpu(_half(spec, precision), rng, 1, 7, 7, plan="7x7,96,16,3")


@HALF
@pytest.mark.parametrize("stride", [1, 2])
def test_two_warpgroups_on_a_narrow_output_in_half(precision, stride, rng):
    """Two computing warpgroups on 24 outputs (one 64-wide slice, the rest dropped), the tune's
    candidates for MobileNetV2's 56x56 and 112x112 blocks, in the node's type."""
    spec = random_spec(rng, "pwdwpw", 24, kernel=3, stride=stride, expand=144, out=24, residual=stride == 1, channels_last=True)
    tile = "8x8" if stride == 1 else "4x4"  # (a region of at most 128 pixels for two warpgroups)
    check_half_on_gpu(_half(spec, precision), rng, 3, 23, 21, plan=f"{tile},64,1,3,2")


@HALF
def test_mobilenet_v2_blocks_at_batch_32_in_half(precision, rng):
    for c, e, f, size, stride in [(16, 96, 24, 112, 2), (24, 144, 24, 56, 1), (64, 384, 64, 14, 1), (160, 960, 320, 7, 1)]:
        spec = _half(random_spec(rng, "pwdwpw", c, kernel=3, stride=stride, expand=e, out=f, residual=(c == f and stride == 1),
                                 channels_last=True), precision)
        check_half_on_gpu(spec, rng, 32, size, size)


def _hopper() -> bool:
    return (compute_capability() or (0, 0))[0] == 9


@HALF
@pytest.mark.parametrize("case", [
    # (channels, out, kernel, stride, residual, batch, size, activation after the product)
    (64, 96, 3, 1, False, 3, (14, 14), Activation("relu")),
    (48, 48, 5, 1, True, 2, (9, 12), Activation()),             # y = res_act(acc + b + x)
    (40, 24, 7, 2, False, 1, (17, 15), Activation("clip", (0.0, 6.0))),
    (728, 728, 3, 1, False, 2, (14, 14), Activation()),         # Xception's middle flow
])
def test_dwpw_in_two_passes_in_half(precision, case, rng):
    """The "dw+gemm" plan in the node's type: the depthwise pass in FP32 with its output rounded to
    the type, then CUTLASS's FP16 / BF16 GEMM (FP32 accumulation) with the bias, clamp and residual."""
    if not _hopper():
        pytest.skip("two passes run CUTLASS's sm_90 GEMM")
    c, f, kernel, stride, residual, batch, (h, w), activation = case
    spec = random_spec(rng, "dwpw", c, kernel=kernel, stride=stride, out=f, residual=residual, channels_last=True)
    spec = with_activations(spec, last=Activation() if residual else activation,
                            residual=Activation("relu") if residual else Activation())
    check_half_on_gpu(_half(spec, precision), rng, batch, h, w, plan="dw+gemm")


@HALF
@pytest.mark.parametrize("case", [
    # (channels, expand, out, kernel, stride, residual, batch, size, plan): regions of 129-256 pixels
    (16, 96, 24, 3, 2, False, 3, (29, 31), "4x8,24,1,3"),     # 9 x 17
    (24, 144, 32, 3, 2, False, 2, (25, 27), "7x8,32,1,3"),    # 15 x 17 = 255: four row blocks
    (24, 72, 24, 5, 1, True, 2, (19, 21), "8x8,24,1,4"),      # 12 x 12, a residual
])
def test_wide_regions_in_half(precision, case, rng):
    """Tiles whose input region is more than 128 pixels (the first stage in two halves), forced, in
    the node's type."""
    c, e, f, kernel, stride, residual, batch, (h, w), plan = case
    spec = random_spec(rng, "pwdwpw", c, kernel=kernel, stride=stride, expand=e, out=f, residual=residual, channels_last=True)
    check_half_on_gpu(_half(spec, precision), rng, batch, h, w, plan=plan)


@HALF
@pytest.mark.parametrize("case", [
    # (channels, expand, out, kernel, stride, residual, batch, size)
    (16, 96, 24, 3, 2, False, 2, (15, 13)),
    (24, 144, 24, 5, 1, True, 3, (9, 12)),      # y = res_act(acc + b + x)
    (160, 960, 160, 3, 1, True, 32, (7, 7)),    # MobileNetV2's 7x7 block at batch 32
])
def test_pwdwpw_in_three_passes_in_half(precision, case, rng):
    """The "gemm+dw+gemm" plan in the node's type: CUTLASS's FP16 / BF16 GEMMs (FP32 accumulation,
    the first's output rounded to the type) around the depthwise pass."""
    if not _hopper():
        pytest.skip("three passes run CUTLASS's sm_90 GEMM")
    c, e, f, kernel, stride, residual, batch, (h, w) = case
    spec = random_spec(rng, "pwdwpw", c, kernel=kernel, stride=stride, expand=e, out=f, residual=residual, channels_last=True)
    spec = with_activations(spec, first=Activation("clip", (0.0, 6.0)), last=Activation() if residual else Activation("relu"),
                            residual=Activation("relu") if residual else Activation())
    check_half_on_gpu(_half(spec, precision), rng, batch, h, w, plan="gemm+dw+gemm")


@HALF
@pytest.mark.parametrize("case", [
    # (channels, out, residual, scale, batch, size, activation after the product)
    (320, 1280, False, False, 32, (7, 7), Activation("clip", (0.0, 6.0))),  # MobileNetV2's last 1x1 convolution at batch 32
    (48, 48, True, False, 2, (9, 12), Activation()),                           # y = res_act(acc + b + x)
    (24, 40, False, False, 1, (5, 3), Activation("relu")),
    (1152, 320, False, True, 32, (7, 7), Activation()),   # EfficientNetB0's gated projection: weights scaled per image
    (200, 40, True, True, 3, (14, 13), Activation()),
    (320, 1280, False, False, 32, (7, 7), Activation("swish")),   # EfficientNetB0's head: swish in the epilogue
])
def test_pw_in_one_pass_in_half(precision, case, rng):
    """The "gemm" plan in the node's type: a lone PW as CUTLASS's FP16 / BF16 GEMM (FP32
    accumulation) with the bias, clamp and residual; a channel scale folded into per-image weights
    rounded to the type."""
    if not _hopper():
        pytest.skip("one pass runs CUTLASS's sm_90 GEMM")
    c, f, residual, scale, batch, (h, w), activation = case
    spec = random_spec(rng, "pw", c, out=f, residual=residual, scale=scale, channels_last=True)
    spec = with_activations(spec, last=Activation() if residual else activation,
                            residual=Activation("relu") if residual else Activation())
    check_half_on_gpu(_half(spec, precision), rng, batch, h, w, plan="gemm")


@HALF
@pytest.mark.parametrize("case", [
    # (channels, expand, kernel, stride, batch, size, activation after the product, the depthwise stage's)
    (40, 240, 3, 1, 32, (28, 28), Activation("swish"), Activation("swish")),   # EfficientNetB0's 28x28 expand + depthwise at batch 32
    (16, 96, 3, 2, 2, (15, 13), Activation("swish"), Activation("swish")),
    (40, 120, 5, 1, 1, (9, 10), Activation("hard_swish"), Activation("relu")),
])
def test_pwdw_in_two_passes_in_half(precision, case, rng):
    """The "gemm+dw" plan in the node's type: CUTLASS's FP16 / BF16 GEMM (FP32 accumulation, its
    output rounded to the type) with the first stage's bias and activation, then the depthwise pass
    into the output."""
    if not _hopper():
        pytest.skip("two passes run CUTLASS's sm_90 GEMM")
    c, e, kernel, stride, batch, (h, w), first, depthwise = case
    spec = random_spec(rng, "pwdw", c, kernel=kernel, stride=stride, expand=e, channels_last=True)
    spec = with_activations(spec, first=first, last=depthwise)
    check_half_on_gpu(_half(spec, precision), rng, batch, h, w, plan="gemm+dw")


@HALF
@pytest.mark.parametrize("case", SMALL_TILE_CASES)
def test_separate_passes_on_small_tiles_in_half(case, precision, rng, capfd, monkeypatch):
    """Tiles by shape (the default) in the node's type: CUTLASS's FP16 / BF16 64 x 64 tiles for the
    products that would not fill the SMs once, 128 x 32 and 128 x 64 for narrow outputs, the large
    ones for the others."""
    if not _hopper():
        pytest.skip("the passes run CUTLASS's sm_90 GEMM")
    monkeypatch.delenv("FCM_CUDA_GEMM_TILES", raising=False)
    monkeypatch.setenv("FCM_CUDA_VERBOSE", "1")
    spec, batch, h, w, plan = small_tile_spec(rng, case)
    check_half_on_gpu(_half(spec, precision), rng, batch, h, w, plan=plan)
    assert "GEMM tiles by shape" in capfd.readouterr().err


@HALF
def test_two_passes_in_half_need_16_byte_rows(precision, rng):
    """A half node of 12 channels (rows of 24 bytes) forced onto "dw+gemm": an ONNX Runtime error
    naming the reason."""
    if not _hopper():
        pytest.skip("two passes run CUTLASS's sm_90 GEMM")
    spec = _half(random_spec(rng, "dwpw", 12, kernel=3, stride=1, out=16, channels_last=True), precision)
    with pytest.raises(Exception, match="multiples of 8"):
        check_half_on_gpu(spec, rng, 1, 9, 9, plan="dw+gemm")


@HALF
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_other_half_nodes_run_on_fp32_copies(precision, channels_last, rng, capfd, monkeypatch):
    """NCHW nodes, and channel counts that are not multiples of 8, run the FP32 kernels on FP32
    copies of the tensors (as FCM_CUDA_VERBOSE says), within the same bound."""
    monkeypatch.setenv("FCM_CUDA_VERBOSE", "1")
    cases = [("pwdwpw", 13, 3, 2, False), ("dwpw", 21, 5, 1, False), ("pwdw", 8, 3, 1, True), ("pwpw", 11, 1, 1, True)]
    for kind, channels, kernel, stride, scale in cases:
        spec = _half(random_spec(rng, kind, channels, kernel=kernel, stride=stride, channels_last=channels_last, scale=scale,
                                 expand=24 if kind == "pwdw" else None), precision)
        check_half_on_gpu(spec, rng, 2, 11, 9)
    said = capfd.readouterr().err
    widened = said.count("FP32 kernels on FP32 copies")
    assert widened == (len(cases) if not channels_last else len(cases) - 1), said  # (NHWC pwdw on 8 channels: its own type)


@HALF
def test_one_pixel_pwpw_in_half(precision, rng, capfd, monkeypatch):
    """Squeeze-and-excitation branches in half: the pixel-chain kernels, rows as 16-byte vectors (96,
    672, 1152 channels; 24, 168 and 48 hidden) and a value at a time (13 and 5; EfficientNetB0's 28
    hidden), images ragged against a CTA's 8."""
    monkeypatch.setenv("FCM_CUDA_VERBOSE", "1")
    cases = [(96, 24, 3, True, False), (672, 168, 32, False, True), (13, 5, 9, False, True), (672, 28, 32, False, True),
             (1152, 48, 17, True, False)]
    for channels, hidden, batch, residual, scale in cases:
        spec = _half(random_spec(rng, "pwpw", channels, expand=hidden, out=channels, residual=residual, scale=scale,
                                 channels_last=True), precision)
        check_half_on_gpu(spec, rng, batch, 1, 1)
    assert capfd.readouterr().err.count("pixel-chain kernels") == len(cases)


@HALF
def test_small_half_cases_for_the_sanitizer(precision, rng, monkeypatch):
    """Tiny half cases of every path (run under compute-sanitizer memcheck and racecheck)."""
    for kind, stride, channels in (("dwpw", 2, 8), ("pwdw", 1, 16), ("pwpw", 1, 8), ("pwdwpw", 2, 16), ("pwdwpw", 1, 9),
                                   ("pw", 1, 40)):
        spec = _half(random_spec(rng, kind, channels, kernel=3, stride=stride, expand=40, out=24, channels_last=True,
                                 scale=kind in ("pwdw", "pw")), precision)
        check_half_on_gpu(spec, rng, 2, 7, 5)
    spec = _half(random_spec(rng, "pwdwpw", 16, kernel=3, stride=1, expand=72, out=16, residual=True, channels_last=True), precision)
    for plan in (["4x8,16,2,3", "4x8,16,1,0"] if has_clusters() else ["4x8,16,1,0"]):
        check_half_on_gpu(spec, rng, 2, 7, 5, plan=plan)
    if _hopper():
        spec = random_spec(rng, "dwpw", 16, kernel=3, stride=2, out=24, channels_last=True)
        spec = with_activations(spec, last=Activation("relu"))
        check_half_on_gpu(_half(spec, precision), rng, 2, 7, 5, plan="dw+gemm")
        spec = random_spec(rng, "pwdwpw", 8, kernel=3, stride=1, expand=2048, out=8, residual=True, channels_last=True)
        spec = with_activations(spec, first=Activation("relu"), last=Activation(), residual=Activation())
        for tiles in ("large", "by shape"):  # (the large tiles' last product stream-K; by shape 64 x 64)
            monkeypatch.setenv("FCM_CUDA_GEMM_TILES", tiles)
            check_half_on_gpu(_half(spec, precision), rng, 2, 7, 5, plan="gemm+dw+gemm")
        monkeypatch.delenv("FCM_CUDA_GEMM_TILES")
        for scale in (False, True):
            spec = with_activations(random_spec(rng, "pw", 16, out=24, scale=scale, channels_last=True), last=Activation("swish"))
            check_half_on_gpu(_half(spec, precision), rng, 2, 7, 5, plan="gemm")
        spec = with_activations(random_spec(rng, "pwdw", 16, kernel=3, stride=2, expand=24, channels_last=True),
                                first=Activation("swish"), last=Activation("hard_swish"))
        check_half_on_gpu(_half(spec, precision), rng, 2, 7, 5, plan="gemm+dw")
