"""The CUDA block kernels (channels_last nodes) against the CPU reference kernels (GPU machine only).

Every kind (the single pointwise stage too), depthwise kernels 3/5/7, strides 1 and 2 on odd sizes with H != W, channel counts that
are not multiples of 4 (the cp.async path) or of 32 (a ragged last chunk), batch 1, 3 and 32, all
activations, residual, channel scale; plans ("HxW,f_tile,split,stages[,groups]", or "dw+gemm": two passes) forced through the
nodes' cuda_plans so that tiles, output-channel slices, splits over a thread-block cluster, ring
depths and two computing warpgroups (sharing each unit's chunks) all run; outputs poisoned before each run. TF32 (the default) within 5e-3 of the largest output,
exact FP32 within 1e-4. Also: tuned plans (cuda_plans), plans refused with a reason, and CUDA-graph
capture and replay (the kernels are launched as programmatic dependents). Dynamic shapes and several
threads on one session: test_cuda_kernels.py, in both layouts.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from ort_custom_ops.ops.launch_plan import block_candidates_for
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import Activation
from ort_custom_ops.ops.standalone import fused_model
from tests.support.gpu import check_fused_on_gpu, check_graph_replays, compute_capability, cuda_providers, forced_plan, has_clusters, precision, require_cuda, run_poisoned  # noqa: F401
from tests.support.passes import SMALL_TILE_CASES, small_tile_spec
from tests.support.specs import random_feeds, random_spec, with_activations

pytestmark = pytest.mark.gpu

TF32_BOUND, FP32_BOUND = 5e-3, 1e-4


@pytest.fixture(autouse=True)
def _cuda():
    require_cuda()


def require_hopper():
    if (compute_capability() or (0, 0))[0] != 9:
        pytest.skip("two passes run CUTLASS's sm_90 GEMM")


def check_on_gpu(spec, rng, batch, height, width, bound, plan=None):
    check_fused_on_gpu(spec, rng, batch, height, width, bound, plan=plan)


CASES = [(kind, k, s) for kind in ("dwpw", "pwdw", "pwdwpw") for k in (3, 5, 7) for s in (1, 2)] + [("pwpw", 1, 1), ("pw", 1, 1)]


@pytest.mark.parametrize("kind, kernel, stride", CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_kinds_against_cpu(kind, kernel, stride, batch, precision, rng):
    bound = TF32_BOUND if precision == "tf32" else FP32_BOUND
    for channels in (int(rng.integers(3, 70)), 4 * int(rng.integers(1, 18))):  # any count, then one TMA can copy
        spec = random_spec(rng, kind, channels, kernel=max(kernel, 3), stride=stride, channels_last=True,
                           residual=kind in ("pwdwpw", "pwpw", "pw") and stride == 1 and rng.random() < 0.5,
                           scale=kind == "pw" or (kind != "dwpw" and rng.random() < 0.3))
        height, width = int(rng.integers(kernel, 30)), int(rng.integers(kernel, 30))
        check_on_gpu(spec, rng, batch, height, width, bound)


@pytest.mark.parametrize("pads", [(0, 0, 1, 1), (0, 0, 0, 0), (2, 1, 0, 2)])
def test_explicit_pads_odd_sizes(pads, precision, rng):
    spec = random_spec(rng, "pwdwpw", 16, kernel=3, stride=2, pads=pads, expand=36, out=28, channels_last=True)
    check_on_gpu(spec, rng, 3, 23, 17, TF32_BOUND if precision == "tf32" else FP32_BOUND)


def test_mobilenet_v2_blocks_at_batch_32(rng):
    """MobileNetV2's inverted-residual block shapes at batch 32, the kernels' own plans."""
    for c, e, f, size, stride in [(16, 96, 24, 112, 2), (24, 144, 24, 56, 1), (32, 192, 64, 28, 2), (64, 384, 64, 14, 1),
                                  (96, 576, 160, 14, 2), (160, 960, 320, 7, 1)]:
        spec = random_spec(rng, "pwdwpw", c, kernel=3, stride=stride, expand=e, out=f, residual=(c == f and stride == 1),
                           channels_last=True)
        check_on_gpu(spec, rng, 32, size, size, TF32_BOUND)


def test_squeeze_excitation_projections_at_batch_32(rng):
    """EfficientNetB0's projections after its squeeze-and-excitation scales (the ``pw`` kind: the
    scaled input streamed 32 channels a chunk into one pointwise stage) at batch 32, the kernels'
    own plans."""
    for c, f, size in [(96, 24, 56), (144, 40, 28), (240, 80, 14), (672, 112, 14), (672, 192, 7), (1152, 320, 7)]:
        spec = random_spec(rng, "pw", c, out=f, scale=True, channels_last=True)
        check_on_gpu(spec, rng, 32, size, size, TF32_BOUND)


@pytest.mark.parametrize("batch", [1, 32])
def test_network_heads(batch, rng):
    """The 1x1 heads as ``pw`` nodes without a scale (MobileNetV2's 320 -> 1280 with ReLU6,
    EfficientNetB0's with swish, MobileNetV3-Large's 160 -> 960 with hard-swish, at 7x7), the
    kernels' own plans."""
    for c, f, activation in [(320, 1280, Activation("clip", (0.0, 6.0))), (320, 1280, Activation("swish")),
                             (160, 960, Activation("hard_swish"))]:
        spec = random_spec(rng, "pw", c, out=f, channels_last=True)
        spec = with_activations(spec, last=activation)
        check_on_gpu(spec, rng, batch, 7, 7, TF32_BOUND)


@pytest.mark.parametrize("plan", ["7x7,64,1,3", "7x7,32,4,3", "4x14,64,8,4", "7x7,96,1,3,2", "2x14,16,2,3"])
def test_single_pointwise_stage_plans(plan, precision, rng):
    """The ``pw`` kind's plans: output-channel slices, splits of its input chunks over a cluster,
    ring depths 3 and 4, two computing warpgroups; a ragged last chunk (300 inputs), and a residual."""
    if int(plan.split(",")[2]) > 1 and not has_clusters():
        pytest.skip("splits need thread-block clusters (sm_90)")
    if precision == "fp32" and int(plan.split(",")[1]) not in (32, 64, 128, 192):
        pytest.skip("the exact FP32 kernels are compiled for output-channel slices of 32, 64, 128 and 192")
    bound = TF32_BOUND if precision == "tf32" else FP32_BOUND
    spec = random_spec(rng, "pw", 300, out=96, scale=True, channels_last=True)
    check_on_gpu(spec, rng, 3, 14, 14, bound, plan=plan)
    spec = random_spec(rng, "pw", 256, scale=True, residual=True, channels_last=True)
    check_on_gpu(spec, rng, 2, 14, 14, bound, plan=plan)


@pytest.mark.parametrize("plan", ["8x8,64,1,3", "8x8,64,2,4", "4x16,32,4,3", "7x7,96,8,3", "2x14,64,1,4", "8x8,24,2,3",
                                  "1x7,16,1,3", "5x10,128,3,3"])
def test_forced_plans(plan, precision, rng):
    """Tiles, output-channel slices (f_tile below the 64 outputs), splits over a cluster of 2 to 8
    CTAs (the chunks' shares added in distributed shared memory), ring depths 3 and 4."""
    if int(plan.split(",")[2]) > 1 and not has_clusters():
        pytest.skip("splits need thread-block clusters (sm_90)")
    if precision == "fp32" and int(plan.split(",")[1]) not in (32, 64, 128, 192):
        pytest.skip("the exact FP32 kernels are compiled for output-channel slices of 32, 64, 128 and 192")
    bound = TF32_BOUND if precision == "tf32" else FP32_BOUND
    spec = random_spec(rng, "pwdwpw", 64, kernel=3, stride=1, expand=384, out=64, residual=True, channels_last=True)
    check_on_gpu(spec, rng, 3, 14, 14, bound, plan=plan)
    dwpw = random_spec(rng, "dwpw", 256, kernel=3, stride=1, out=100, channels_last=True)
    check_on_gpu(dwpw, rng, 2, 10, 10, bound, plan=plan)


@pytest.mark.parametrize("case", [
    # (kind, channels, expand, out, kernel, stride, residual, scale, batch, size, plan)
    ("pwdwpw", 64, 384, 64, 3, 1, True, False, 3, (14, 14), "4x14,64,1,4,2"),   # 12 chunks, two 64-row blocks
    ("pwdwpw", 64, 384, 96, 3, 1, False, False, 1, (14, 14), "2x14,96,1,3,2"),
    ("pwdwpw", 96, 576, 160, 3, 2, False, False, 3, (14, 14), "3x7,80,1,3,2"),  # two output-channel slices
    ("pwdwpw", 160, 960, 160, 3, 1, True, False, 3, (7, 7), "7x7,80,1,3,2"),    # MobileNetV2's 7x7 block
    ("pwdwpw", 40, 72, 80, 5, 1, False, False, 2, (13, 11), "2x11,80,1,3,2"),   # 3 chunks: one warpgroup has one more
    ("pwdwpw", 36, 100, 64, 7, 2, False, True, 3, (15, 9), "2x3,64,1,4,2"),     # 7x7 stride 2, channel scale, ragged chunk
    ("pwpw", 64, 144, 112, 1, 1, False, True, 3, (9, 7), "8x8,112,1,3,2"),      # squeeze-excitation's scale, no depthwise
    ("dwpw", 200, None, 128, 3, 1, False, False, 2, (10, 10), "8x8,128,1,4,2"),  # no first stage: the region per chunk
    ("dwpw", 24, None, 64, 3, 2, False, False, 3, (9, 9), "5x5,64,1,3,2"),       # one chunk: warpgroup 1 has none
    ("pwdwpw", 24, 96, 192, 3, 1, False, False, 32, (7, 7), "7x7,192,1,3,2"),
    # PW->DW: each warpgroup writes its own chunks' channels
    # EfficientNetB0's late block: with 192 input channels a 7x7 tile's region (104 KB), three ring
    # stages and two U buffers pass the 227 KB a CTA gets; 7x4 tiles (two per row, the second ragged) fit
    ("pwdw", 192, 1152, None, 5, 1, False, False, 3, (7, 7), "7x4,0,1,3,2"),
    ("pwdw", 40, 240, None, 5, 1, False, True, 2, (13, 11), "7x7,0,1,4,2"),     # channel scale, ragged tiles
    ("pwdw", 16, 72, None, 3, 2, False, False, 3, (15, 9), "3x4,0,1,3,2"),      # 3 chunks, the last ragged (72)
    ("pwdw", 24, 32, None, 3, 1, False, False, 2, (9, 9), "8x8,0,1,3,2"),       # one chunk: warpgroup 1 has none
    ("pwdw", 192, 1152, None, 5, 1, False, False, 3, (7, 7), "7x4,0,4,3,2"),    # split over 4 CTAs, 9 chunks each
    ("pwdw", 24, 200, None, 3, 1, False, False, 2, (9, 11), "3x11,0,3,4,2"),    # 7 chunks over 3 CTAs (3, 2, 2), ragged
])
def test_two_warpgroup_plans(case, rng):
    """Two computing warpgroups per CTA sharing each unit's chunks (every other chunk each, their sums
    added at the end, or without a last stage each writing its own channels): against the CPU kernels
    over the stage kinds, odd chunk counts, tiles and slices."""
    kind, c, e, f, kernel, stride, residual, scale, batch, (h, w), plan = case
    spec = random_spec(rng, kind, c, kernel=kernel, stride=stride, expand=e, out=f, residual=residual, scale=scale,
                       channels_last=True)
    check_on_gpu(spec, rng, batch, h, w, TF32_BOUND, plan=plan)


@pytest.mark.parametrize("case", [
    # (kind, channels, out, kernel, stride, residual, scale, batch, size, plan)
    ("dwpw", 200, 128, 3, 1, False, False, 2, (10, 10), "8x8,128,1,4,2"),   # 7 chunks: 4 and 3, the last ragged
    ("dwpw", 72, 96, 5, 1, False, False, 3, (14, 14), "2x14,96,1,3,2"),     # 3 chunks over a three-stage ring
    ("dwpw", 24, 64, 3, 2, False, False, 3, (9, 9), "5x5,64,1,3,2"),        # one chunk: warpgroup 1 has none
    ("dwpw", 728, 728, 3, 1, False, False, 2, (14, 14), "4x14,192,1,3,2"),  # Xception's middle flow, four slices
    ("pw", 300, 300, 1, 1, True, True, 3, (7, 7), "7x7,96,1,3,2"),          # a single pointwise stage, scale, residual
])
def test_two_warpgroups_without_a_first_stage(case, rng):
    """Two warpgroups sharing a DW->PW or single pointwise unit's chunks (every other chunk each,
    partial sums added at the end), against the CPU kernels."""
    kind, c, f, kernel, stride, residual, scale, batch, (h, w), plan = case
    spec = random_spec(rng, kind, c, kernel=kernel, stride=stride, out=f, residual=residual, scale=scale, channels_last=True)
    check_on_gpu(spec, rng, batch, h, w, TF32_BOUND, plan=plan)


@pytest.mark.parametrize("case", [
    # (channels, expand, kernel, stride, scale, batch, size, plan)
    (48, 288, 3, 1, False, 4, (7, 7), "7x7,0,9,3"),      # every chunk its own CTA (more than a cluster's 8)
    (48, 288, 5, 2, True, 3, (13, 13), "2x7,0,3,4"),     # three CTAs per unit, three chunks each
    (24, 200, 3, 1, False, 2, (9, 11), "3x11,0,5,3"),    # 7 chunks over 5 CTAs, the last ragged (200 = 6 x 32 + 8)
    (40, 240, 3, 2, False, 3, (14, 14), "3x7,0,8,0"),    # resident weights: each CTA holds its one chunk
])
def test_pwdw_splits_without_a_cluster(case, rng):
    """PW->DW has no sums to add: a split is plain CTAs each writing its own chunks' channels, any
    number of them up to one per chunk, on any GPU."""
    c, e, kernel, stride, scale, batch, (h, w), plan = case
    spec = random_spec(rng, "pwdw", c, kernel=kernel, stride=stride, expand=e, scale=scale, channels_last=True)
    check_on_gpu(spec, rng, batch, h, w, TF32_BOUND, plan=plan)


@pytest.mark.parametrize("case", [
    # (channels, out, kernel, stride, residual, batch, size, activation after the product)
    (64, 96, 3, 1, False, 3, (14, 14), Activation("relu")),
    (40, 24, 5, 2, False, 2, (13, 11), Activation()),
    (48, 48, 3, 1, True, 3, (9, 12), Activation()),             # y = res_act(acc + b + x)
    (32, 64, 7, 2, False, 1, (17, 15), Activation("clip", (0.0, 6.0))),
    (728, 728, 3, 1, False, 2, (14, 14), Activation()),         # Xception's middle flow
    (40, 48, 3, 1, False, 3, (11, 9), Activation("swish")),     # the node's activation in the GEMM's epilogue
    (24, 32, 5, 2, False, 2, (13, 15), Activation("hard_swish")),
])
def test_dwpw_in_two_passes(case, rng):
    """DW->PW as a depthwise pass into a workspace and CUTLASS's TF32 GEMM with the bias, the
    activation and the residual in its epilogue (the "dw+gemm" plan): kernels 3/5/7, strides 1 and
    2, odd sizes, every kind of activation, against the CPU kernels."""
    require_hopper()
    c, f, kernel, stride, residual, batch, (h, w), activation = case
    spec = random_spec(rng, "dwpw", c, kernel=kernel, stride=stride, out=f, residual=residual, channels_last=True)
    spec = with_activations(spec, last=Activation() if residual else activation,
                            residual=Activation("relu") if residual else Activation())
    check_on_gpu(spec, rng, batch, h, w, TF32_BOUND, plan="dw+gemm")


@pytest.mark.parametrize("case", [
    # (channels, out, residual, scale, batch, size, activation after the product)
    (320, 1280, False, False, 32, (7, 7), Activation("clip", (0.0, 6.0))),  # MobileNetV2's last 1x1 convolution at batch 32
    (64, 96, False, False, 3, (13, 11), Activation("relu")),
    (48, 48, True, False, 2, (9, 12), Activation()),                           # y = res_act(acc + b + x)
    (24, 40, False, False, 1, (5, 3), Activation()),                           # fewer rows than one 128-row tile
    (320, 1280, False, False, 32, (7, 7), Activation("swish")),                # EfficientNetB0's head: swish in the epilogue
    (1152, 320, False, True, 32, (7, 7), Activation()),   # EfficientNetB0's gated projection: weights scaled per image
    (200, 40, False, True, 3, (14, 13), Activation()),    # an image's rows not a whole number of tiles
    (48, 48, True, True, 2, (9, 12), Activation()),       # a scale and a residual (of the unscaled input)
])
def test_pw_in_one_pass(case, rng):
    """A lone PW as CUTLASS's TF32 GEMM with the bias, the clamp and the residual in its epilogue (the
    "gemm" plan); with a channel scale, the weights scaled per image and one product per image;
    against the CPU kernels."""
    require_hopper()
    c, f, residual, scale, batch, (h, w), activation = case
    spec = random_spec(rng, "pw", c, out=f, residual=residual, scale=scale, channels_last=True)
    spec = with_activations(spec, last=Activation() if residual else activation,
                            residual=Activation("relu") if residual else Activation())
    check_on_gpu(spec, rng, batch, h, w, TF32_BOUND, plan="gemm")


def test_pw_in_one_pass_with_one_scale_row(rng):
    """A channel scale of one row shared by every image: the weights scaled once, one product over
    all the images' rows, against the CPU kernels."""
    require_hopper()
    spec = random_spec(rng, "pw", 64, out=32, scale=True, channels_last=True)
    spec = with_activations(spec, last=Activation("relu"))
    model = fused_model(spec)
    feeds = {"X": rng.normal(size=(4, 9, 11, 64)).astype(np.float32), "S": rng.uniform(0, 1, (1, 64, 1, 1)).astype(np.float32)}
    (cpu,) = make_session(model).run(None, feeds)
    gpu = run_poisoned(make_session(forced_plan(model, "gemm", 4), providers=cuda_providers()), feeds, cpu.shape)
    assert np.abs(gpu - cpu).max() <= TF32_BOUND * max(1.0, float(np.abs(cpu).max()))


def test_separate_passes_refuse_what_they_do_not_take(rng):
    """The separate passes' plans ("gemm", "dw+gemm", "gemm+dw", "gemm+dw+gemm") forced where they
    cannot run: an ONNX Runtime error naming the reason."""
    require_hopper()
    for kind, channels, last, residual, scale, plan, reason in (
            ("pwdw", 16, Activation(), False, False, "gemm", "lone pointwise"),
            ("pwdwpw", 16, Activation(), False, False, "gemm", "lone pointwise"),
            ("pw", 18, Activation(), False, False, "gemm", "multiples of 4"),
            ("pwdwpw", 16, Activation(), False, False, "dw+gemm", "DW->PW"),
            ("pwdw", 16, Activation(), False, False, "dw+gemm", "dw\\+gemm takes DW->PW"),
            ("dwpw", 16, Activation(), False, False, "gemm+dw", "gemm\\+dw takes PW->DW"),
            ("dwpw", 16, Activation(), False, False, "gemm+dw+gemm", "PW->DW->PW"),
            ("dwpw", 18, Activation(), False, False, "dw+gemm", "multiples of 4"),
            ("pwdw", 18, Activation(), False, False, "gemm+dw", "multiples of 4"),
            ("pwdwpw", 18, Activation(), False, False, "gemm+dw+gemm", "multiples of 4"),
            ("pwdw", 16, Activation(), False, True, "gemm+dw", "no channel scale"),
            ("dwpw", 16, Activation("relu"), True, False, "dw+gemm", "residual only after a product without"),
            ("pw", 16, Activation("swish"), True, False, "gemm", "residual only after a product without")):
        spec = random_spec(rng, kind, channels, kernel=3, stride=1, expand=32, out=16, residual=residual, scale=scale,
                           channels_last=True)
        spec = with_activations(spec, last=last, residual=Activation("relu") if residual else None)
        feeds, _, _ = random_feeds(spec, rng, 1, 9, 9)
        with pytest.raises(Exception, match=reason):
            model = forced_plan(fused_model(spec), plan, 1)
            make_session(model, providers=cuda_providers()).run(None, feeds)


@pytest.mark.parametrize("case", [
    # (channels, expand, kernel, stride, batch, size, activation after the product, the depthwise stage's)
    (40, 240, 3, 1, 32, (28, 28), Activation("swish"), Activation("swish")),   # EfficientNetB0's 28x28 expand + depthwise at batch 32
    (16, 96, 3, 2, 2, (15, 13), Activation("swish"), Activation("swish")),
    (24, 72, 5, 2, 3, (13, 11), Activation("relu"), Activation("relu")),
    (40, 120, 7, 1, 1, (9, 10), Activation("hard_swish"), Activation("hard_swish")),
    (160, 960, 3, 1, 2, (7, 7), Activation("clip", (0.0, 6.0)), Activation("clip", (0.0, 6.0))),
])
def test_pwdw_in_two_passes(case, rng):
    """PW->DW as CUTLASS's GEMM with the first stage's bias and activation into a workspace, then the
    depthwise pass into the output (the "gemm+dw" plan): kernels 3/5/7, strides 1 and 2, odd sizes,
    swish, hard swish, ReLU and ReLU6, against the CPU kernels."""
    require_hopper()
    c, e, kernel, stride, batch, (h, w), first, depthwise = case
    spec = random_spec(rng, "pwdw", c, kernel=kernel, stride=stride, expand=e, channels_last=True)
    spec = with_activations(spec, first=first, last=depthwise)
    check_on_gpu(spec, rng, batch, h, w, TF32_BOUND, plan="gemm+dw")


@pytest.mark.parametrize("case", [
    # (channels, expand, out, kernel, stride, residual, batch, size)
    (16, 96, 24, 3, 2, False, 2, (15, 13)),     # MobileNetV2's first expanding block, odd sizes
    (24, 144, 24, 3, 1, True, 3, (9, 12)),      # y = res_act(acc + b + x)
    (32, 64, 40, 5, 1, False, 1, (11, 11)),
    (40, 120, 48, 7, 2, False, 2, (17, 15)),
    (160, 960, 160, 3, 1, True, 32, (7, 7)),    # MobileNetV2's 7x7 block at batch 32
    (64, 1024, 48, 3, 1, False, 32, (7, 7), "large"),  # a sum of 32 steps over 26 tiles: the last product stream-K
    (24, 72, 40, 3, 1, False, 2, (11, 13)),     # MobileNetV3's hard swish after the first product
])
def test_pwdwpw_in_three_passes(case, rng, monkeypatch):
    """PW->DW->PW as CUTLASS's GEMM with the first stage's bias and activation (ReLU6; hard swish on a
    stride-1 case), a depthwise pass, and a GEMM with the last stage's bias, activation and residual
    (the "gemm+dw+gemm" plan; FCM_CUDA_GEMM_TILES=large where a case names it), against the CPU
    kernels."""
    require_hopper()
    c, e, f, kernel, stride, residual, batch, (h, w), *tiles = case
    if tiles:
        monkeypatch.setenv("FCM_CUDA_GEMM_TILES", tiles[0])
    spec = random_spec(rng, "pwdwpw", c, kernel=kernel, stride=stride, expand=e, out=f, residual=residual, channels_last=True)
    first = Activation("hard_swish") if (stride, residual, batch) == (1, False, 2) else Activation("clip", (0.0, 6.0))
    spec = with_activations(spec, first=first, last=Activation() if residual else Activation("relu"),
                            residual=Activation("relu") if residual else Activation())
    check_on_gpu(spec, rng, batch, h, w, TF32_BOUND, plan="gemm+dw+gemm")


@pytest.mark.parametrize("case", [
    # (channels, expand, out, kernel, stride, residual, batch, size, plan): regions of 129-256 pixels
    (16, 96, 24, 3, 2, False, 3, (29, 31), "4x8,24,1,3"),     # MobileNetV2's first expanding block: 9 x 17 = 153
    (24, 144, 32, 3, 2, False, 1, (25, 27), "7x8,32,1,3"),    # 15 x 17 = 255: four row blocks, the last one short
    (24, 72, 24, 5, 1, True, 2, (19, 21), "8x8,24,1,4"),      # 12 x 12, y = res_act(acc + b + x)
    (32, 192, 32, 7, 1, False, 2, (16, 16), "8x8,32,2,3"),    # 14 x 14, the chunks split over a cluster
    (20, 100, 28, 3, 2, False, 32, (23, 25), "6x8,32,1,3"),   # 13 x 17, a ragged last chunk, batch 32
])
def test_wide_regions(case, precision, rng):
    """Tiles whose input region is more than 128 pixels (the first stage in two halves), forced:
    stride-2 tiles of 32-56 pixels where the kernels' own plans take 16-25, against the CPU kernels."""
    c, e, f, kernel, stride, residual, batch, (h, w), plan = case
    spec = random_spec(rng, "pwdwpw", c, kernel=kernel, stride=stride, expand=e, out=f, residual=residual, channels_last=True)
    if precision == "fp32" and int(plan.split(",")[1]) not in (32, 64):
        pytest.skip("no exact-FP32 wide-region kernel is compiled for this plan's output-channel width")
    if int(plan.split(",")[2]) > 1 and not has_clusters():
        pytest.skip("a split with a last pointwise stage needs thread-block clusters")
    check_on_gpu(spec, rng, batch, h, w, TF32_BOUND if precision == "tf32" else FP32_BOUND, plan=plan)


def test_wide_regions_are_refused_elsewhere(rng):
    """A region of more than 128 pixels is for PW->DW->PW with one computing warpgroup, up to 256
    pixels: an ONNX Runtime error naming the limit elsewhere, not a launch."""
    x = rng.normal(size=(1, 40, 40, 16)).astype(np.float32)
    for kind, plan, reason in (("pwdwpw", "8x8,24,1,3", "more than 256 pixels"),  # 17 x 17 = 289
                               ("pwdw", "4x8,0,1,3", "more than 128 pixels"),
                               ("dwpw", "4x8,24,1,3", "more than 128 pixels")):
        spec = random_spec(rng, kind, 16, kernel=3, stride=2, expand=48, out=24, channels_last=True)
        with pytest.raises(Exception, match=reason):
            make_session(forced_plan(fused_model(spec), plan, 1), providers=cuda_providers()).run(None, {"X": x})


def test_kernels_choose_two_passes_for_wide_products():
    """The kernels' own estimate takes "dw+gemm" for Xception's middle flow at batch 32 (on an H100:
    59.6 us against the fused kernels' 103.9, benchmarks/2026-12-06-h100-two-pass), and never where
    it cannot run (exact FP32)."""
    require_hopper()
    # n, h, w, c, m, f, kernel, stride, pad_top, pad_left, out_h, out_w, scale_batch, pw1, dw, pwl, residual, tf32
    middle_flow = [32, 14, 14, 728, 728, 728, 3, 1, 1, 1, 14, 14, 0, 0, 1, 1, 0, 1]
    assert block_candidates_for(middle_flow, top=1)[:1] == ["dw+gemm"]  # (then the unranked plans)
    exact = [*middle_flow[:-1], 0]
    assert "dw+gemm" not in block_candidates_for(exact, top=1000)
    assert block_candidates_for(exact, top=1)


def test_kernels_choose_three_passes_for_deep_7x7_blocks():
    """MobileNetV2's 7x7 160-960-320 block: three passes at batch 32 (on an H100: 34.4 us against
    the fused kernels' 51.4, benchmarks/2026-12-06-h100-three-pass), the fused kernels at batch 1
    (27.4 against 16.3)."""
    require_hopper()
    # n, h, w, c, m, f, kernel, stride, pad_top, pad_left, out_h, out_w, scale_batch, pw1, dw, pwl, residual, tf32
    block = [32, 7, 7, 160, 960, 320, 3, 1, 1, 1, 7, 7, 0, 1, 1, 1, 0, 1]
    assert block_candidates_for(block, top=1)[:1] == ["gemm+dw+gemm"]  # (then the unranked plans)
    single = [1, *block[1:]]
    assert block_candidates_for(single, top=1000)[0] not in ("gemm+dw+gemm", "dw+gemm")


def test_tune_candidates_end_with_the_plans_the_estimate_does_not_rank():
    """fcm tune times, after the best estimates, the separate passes and the wide-region plans (the
    kernels never choose a wide region nor one pass): on MobileNetV2's first expanding block, three passes and
    stride-2 tiles whose input region is 129-256 pixels, the forced sweep's winner among them (6x8
    at batch 32: 96.1 us against 113.7 for the kernels' own, benchmarks/2026-12-06-h100-wide-regions);
    no wide region on a stride-1 block; a lone PW's one GEMM pass after them."""
    require_hopper()

    def region(plan: str, stride: int) -> int:
        th, tw = (int(v) for v in plan.split(",")[0].split("x"))
        return ((th - 1) * stride + 3) * ((tw - 1) * stride + 3)

    # n, h, w, c, m, f, kernel, stride, pad_top, pad_left, out_h, out_w, scale_batch, pw1, dw, pwl, residual, tf32
    block = [32, 112, 112, 16, 96, 24, 3, 2, 0, 0, 56, 56, 0, 1, 1, 1, 0, 1]
    plans = block_candidates_for(block, top=4)
    ranked, unranked = plans[:4], plans[4:]
    assert "gemm+dw+gemm" in plans and len(set(plans)) == len(plans)
    assert all(region(p, 2) <= 128 for p in ranked if "+" not in p)
    # (besides the wide regions: two warpgroups on one 64-wide slice of its 24 outputs, or a split over 16)
    wide = [p for p in unranked if "+" not in p and not p.endswith(",64,1,3,2") and p.split(",")[2] != "16"]
    assert wide and all(128 < region(p, 2) <= 256 for p in wide)
    assert "6x8,24,1,3" in wide
    stride_one = [32, 56, 56, 24, 144, 24, 3, 1, 1, 1, 56, 56, 0, 1, 1, 1, 1, 1]
    assert all(region(p, 1) <= 128 for p in block_candidates_for(stride_one, top=1000) if "+" not in p)
    # two computing warpgroups on its 24 outputs (one 64-wide slice): after the ranked ones
    plans = block_candidates_for(stride_one, top=4)
    halves = [p for p in plans[4:] if p.endswith(",64,1,3,2")]
    assert 1 <= len(halves) <= 3 and not any(p.endswith(",2") for p in plans[:4])
    # a lone PW (MobileNetV2's last 1x1 convolution): its one GEMM pass is timed, never ranked
    head = [32, 7, 7, 320, 320, 1280, 1, 1, 0, 0, 7, 7, 0, 0, 0, 1, 0, 1]
    plans = block_candidates_for(head, top=4)
    assert plans.count("gemm") == 1 and plans.index("gemm") >= 4


def test_a_split_over_a_cluster_of_16(precision, rng):
    """sm_90's non-portable cluster size: MobileNetV2's 7x7 block at batch 1 with its 30 chunks split
    over 16 CTAs (2 each), their shares of the sums added in distributed shared memory; a residual;
    fcm tune's candidate where the best estimates split over 8."""
    if not has_clusters():
        pytest.skip("clusters need sm_90")
    if precision == "fp32":
        pytest.skip("the exact FP32 kernels are compiled for output-channel slices of 32, 64, 128 and 192")
    spec = random_spec(rng, "pwdwpw", 160, kernel=3, stride=1, expand=960, out=160, residual=True, channels_last=True)
    check_on_gpu(spec, rng, 1, 7, 7, TF32_BOUND, plan="7x7,80,16,3")
    # n, h, w, c, m, f, kernel, stride, pad_top, pad_left, out_h, out_w, scale_batch, pw1, dw, pwl, residual, tf32
    block = [1, 7, 7, 160, 960, 160, 3, 1, 1, 1, 7, 7, 0, 1, 1, 1, 1, 1]
    plans = block_candidates_for(block, top=8)
    if any(p.split(",")[2] == "8" for p in plans[:8] if "+" not in p):
        assert any(p.split(",")[2] == "16" for p in plans[8:] if "+" not in p), plans


def test_split_shares_sent_to_the_adding_cta(rng):
    """A split's shares, each stored into the shared memory of the CTA that adds its rows and counted
    on that CTA's barrier: clusters of 2 to 16, splits that do not divide the tile's 64 rows (3, 12),
    one unit per cluster and several (batch 32: a cluster barrier between a unit's shares and the
    next's), one CTA per unit, TMA and cp.async copies, two nodes captured in a CUDA graph."""
    if not has_clusters():
        pytest.skip("clusters need sm_90")
    spec = random_spec(rng, "pwdwpw", 64, kernel=3, stride=1, expand=384, out=64, residual=True, channels_last=True)
    # (splits of 3 and 12: the rows each CTA adds do not divide the tile's 64)
    for plan in ("8x8,64,1,3", "4x16,32,4,3", "7x7,96,8,3", "2x14,64,2,4", "8x8,64,3,3"):
        check_on_gpu(spec, rng, 3, 14, 14, TF32_BOUND, plan=plan)
    seven = random_spec(rng, "pwdwpw", 160, kernel=3, stride=1, expand=960, out=160, residual=True, channels_last=True)
    for plan in ("7x7,80,16,3", "7x7,80,12,3"):
        check_on_gpu(seven, rng, 1, 7, 7, TF32_BOUND, plan=plan)
    # more units than clusters: each cluster's CTAs send several units' shares into the same slots
    for plan in ("7x7,64,8,3", "8x8,64,3,0"):
        check_on_gpu(spec, rng, 32, 14, 14, TF32_BOUND, plan=plan)
    dwpw = random_spec(rng, "dwpw", 256, kernel=3, stride=1, out=100, channels_last=True)
    check_on_gpu(dwpw, rng, 2, 10, 10, TF32_BOUND, plan="8x8,64,2,4")
    odd = random_spec(rng, "dwpw", 37, kernel=5, stride=2, out=50, channels_last=True)  # (37 channels: cp.async copies)
    check_on_gpu(odd, rng, 2, 13, 11, TF32_BOUND)
    first = random_spec(rng, "pwdwpw", 32, expand=192, out=32, residual=True, channels_last=True)
    check_graph_replays(twice(fused_model(first)), rng, (4, 14, 14, 32), "Y2", "7x7,32,4,3", 4, TF32_BOUND)


def test_splits_that_divide_the_chunks_among_the_candidates(precision, rng):
    """MobileNetV2's 14x14 64-384-64 block at batch 1 (12 chunks): each of the six best-estimated
    plans whose split leaves some CTAs a chunk short (8: four with two, four with one) has among fcm
    tune's candidates a split by a divisor of 12 next to it (6 or 12), on its tile, slice and stages;
    a split of 6 computes what the CPU kernels do."""
    if not has_clusters():
        pytest.skip("clusters need sm_90")
    if precision == "fp32":
        pytest.skip("the exact FP32 kernels are compiled for output-channel slices of 32, 64, 128 and 192")
    # n, h, w, c, m, f, kernel, stride, pad_top, pad_left, out_h, out_w, scale_batch, pw1, dw, pwl, residual, tf32
    block = [1, 14, 14, 64, 384, 64, 3, 1, 1, 1, 14, 14, 0, 1, 1, 1, 1, 1]
    plans = block_candidates_for(block, top=6)
    fields = [p.split(",") for p in plans]
    divisors = [d for d in range(2, 13) if 12 % d == 0]
    for best in fields[:6]:
        if len(best) < 4 or len(best) > 4 and best[4] != "1" or int(best[2]) < 2 or 12 % int(best[2]) == 0:
            continue
        split = int(best[2])  # (above 12, a cluster of up to 16: only a divisor below it)
        nearest = [s for s in (max((d for d in divisors if d < split), default=0), min((d for d in divisors if d > split), default=0)) if s]
        # (one of the two at least: the other may not fit, a cluster of 12 needing a few more rows of shares)
        assert any([best[0], best[1], str(s), best[3]] in [f[:4] for f in fields] for s in nearest), (best, plans)
    spec = random_spec(rng, "pwdwpw", 64, kernel=3, stride=1, expand=384, out=64, residual=True, channels_last=True)
    check_on_gpu(spec, rng, 1, 14, 14, TF32_BOUND, plan="4x8,32,6,3")


def _check_alone_and_in_a_graph(plan: str, rng, batch: int, graph_batch: int) -> None:
    """A 14x14 64-384-64 PW->DW->PW node with a residual, forced to ``plan``, against the CPU kernels:
    alone at ``batch``, and as two nodes in a CUDA graph at ``graph_batch`` (the second's copies
    issued while the first may still run)."""
    if int(plan.split(",")[2]) > 1 and not has_clusters():
        pytest.skip("splits need thread-block clusters (sm_90)")
    spec = random_spec(rng, "pwdwpw", 64, kernel=3, stride=1, expand=384, out=64, residual=True, channels_last=True)
    check_on_gpu(spec, rng, batch, 14, 14, TF32_BOUND, plan=plan)
    check_graph_replays(twice(fused_model(spec)), rng, (graph_batch, 14, 14, 64), "Y2", plan, 4, TF32_BOUND)


@pytest.mark.parametrize("plan", ["8x8,64,1,3", "7x7,96,8,3", "8x8,64,3,0", "8x8,64,1,4,2"])
def test_weights_copied_before_the_wait_for_the_previous_kernel(plan, rng, monkeypatch):
    """FCM_CUDA_WEIGHTS_FIRST=1 (the default at batch 1, forced here at batch 2 and 3): the first
    unit's weight copies issued before griddepcontrol.wait and the region's after it, with a ring
    (stages fewer than the CTA's chunks), a clustered split, resident weights and two computing
    warpgroups; PW->DW and DW->PW (whose copies all wait); two nodes in a CUDA graph, the second's
    weights copied while the first may still run."""
    monkeypatch.setenv("FCM_CUDA_WEIGHTS_FIRST", "1")
    _check_alone_and_in_a_graph(plan, rng, batch=3, graph_batch=2)
    check_on_gpu(random_spec(rng, "pwdw", 40, kernel=5, stride=2, expand=160, channels_last=True), rng, 2, 17, 15, TF32_BOUND)
    check_on_gpu(random_spec(rng, "dwpw", 48, kernel=3, stride=1, out=72, channels_last=True), rng, 2, 12, 12, TF32_BOUND)


@pytest.mark.parametrize("plan", ["8x8,64,1,3", "7x7,96,8,3", "8x8,64,3,0"])
def test_weights_copied_after_the_wait_at_batch_1_when_asked(plan, rng, monkeypatch):
    """FCM_CUDA_WEIGHTS_FIRST=0 at batch 1, where the early copies are the default: every copy after
    griddepcontrol.wait, a ring, a clustered split and resident weights, alone and as two nodes in a
    CUDA graph."""
    monkeypatch.setenv("FCM_CUDA_WEIGHTS_FIRST", "0")
    _check_alone_and_in_a_graph(plan, rng, batch=1, graph_batch=1)


@pytest.mark.parametrize("kind, stride", [("pwdwpw", 1), ("pwdwpw", 2), ("dwpw", 1)])
def test_two_warpgroups_on_a_narrow_output(kind, stride, precision, rng):
    """The tune's two-warpgroup candidates for outputs under 64 channels (MobileNetV2's 56x56 block:
    24 out): one 64-wide slice, the channels past the output's computed and dropped; a residual,
    odd sizes, against the CPU kernels."""
    if precision == "fp32":
        pytest.skip("two computing warpgroups run the tensor cores only")
    spec = random_spec(rng, kind, 24, kernel=3, stride=stride, expand=144, out=24, residual=stride == 1 and kind == "pwdwpw",
                       channels_last=True)
    # (two computing warpgroups take a region of at most 128 pixels: 10x10 at stride 1, 9x9 at 2)
    tile = "8x8" if stride == 1 else "4x4"
    check_on_gpu(spec, rng, 3, 23, 21, TF32_BOUND, plan=f"{tile},64,1,3,2")


@pytest.mark.parametrize("case", SMALL_TILE_CASES)
def test_separate_passes_on_small_tiles(case, rng, capfd, monkeypatch):
    """Tiles by shape (the default): the passes' products whose 128 x 128 tiles would not fill the SMs
    once run CUTLASS's 64 x 64 tiles (one consumer warpgroup), narrow outputs 128 x 32 or 128 x 64
    tiles, the others the large ones; every plan and kind, per-image scaled weights (a batched
    product), a residual, against the CPU kernels."""
    require_hopper()
    monkeypatch.delenv("FCM_CUDA_GEMM_TILES", raising=False)
    monkeypatch.setenv("FCM_CUDA_VERBOSE", "1")
    spec, batch, h, w, plan = small_tile_spec(rng, case)
    check_on_gpu(spec, rng, batch, h, w, TF32_BOUND, plan=plan)
    assert "GEMM tiles by shape" in capfd.readouterr().err


def test_fused_kernel_when_the_passes_workspace_cannot_be_had(rng, capfd, monkeypatch):
    """Xception's middle flow at batch 32, where the kernels choose two passes, in a session whose
    CUDA arena is capped below their 18 MB workspace (inputs and outputs bound outside it): the node
    runs the fused kernel's best plan instead, says so with FCM_CUDA_VERBOSE, and computes the same."""
    require_hopper()
    monkeypatch.setenv("FCM_CUDA_VERBOSE", "1")
    spec = random_spec(rng, "dwpw", 728, kernel=3, stride=1, out=728, channels_last=True)
    spec = with_activations(spec, last=Activation("relu"))
    feeds = {"X": rng.normal(size=(32, 14, 14, 728)).astype(np.float32)}
    model = fused_model(spec)
    (cpu,) = make_session(model).run(None, feeds)
    providers = cuda_providers(gpu_mem_limit=12 << 20, arena_extend_strategy="kSameAsRequested")
    gpu = run_poisoned(make_session(model, providers=providers), feeds, cpu.shape)
    said = capfd.readouterr().err
    assert "dw+gemm" in said and "the fused kernel instead" in said, said
    assert float(np.abs(gpu - cpu).max()) <= TF32_BOUND * max(1.0, float(np.abs(cpu).max()))


def test_plan_override_is_checked(rng):
    """A division that cannot run is an ONNX Runtime error naming the reason, not a launch."""
    spec = random_spec(rng, "pwdwpw", 16, kernel=3, stride=1, channels_last=True)
    model = fused_model(spec)
    x = rng.normal(size=(1, 9, 9, 16)).astype(np.float32)
    for plan, reason in (("9x9,16,1,3", "1 to 64 output pixels"), ("8x8,16,1,2", "3 or 4 stages"),
                         ("8x8,20,1,3", "no kernel is compiled"), ("8x8,16", "must read|reads"),
                         ("8x8,16,1,3,2", "no kernel is compiled for f_tile 16 with two warpgroups"),
                         ("8x8,16,1,3,3", "groups is 1 or 2")):
        with pytest.raises(Exception, match=reason):
            make_session(forced_plan(model, plan, 1), providers=cuda_providers()).run(None, {"X": x})
    wide = fused_model(random_spec(rng, "pwdwpw", 16, kernel=3, stride=1, expand=96, out=64, channels_last=True))
    with pytest.raises(Exception, match="two warpgroups take no split"):
        make_session(forced_plan(wide, "8x8,64,2,3,2", 1), providers=cuda_providers()).run(None, {"X": x})
    pwdw = fused_model(random_spec(rng, "pwdw", 16, kernel=3, stride=1, expand=64, channels_last=True))
    with pytest.raises(Exception, match="two warpgroups take no resident weights"):
        make_session(forced_plan(pwdw, "8x8,0,1,0,2", 1), providers=cuda_providers()).run(None, {"X": x})
    with pytest.raises(Exception, match="more than the intermediate's 32-channel chunks"):
        make_session(forced_plan(pwdw, "8x8,0,3,3", 1), providers=cuda_providers()).run(None, {"X": x})
    deep = fused_model(random_spec(rng, "pwdwpw", 16, kernel=3, stride=1, expand=576, out=16, channels_last=True))
    with pytest.raises(Exception, match="split is 1 to 16 with a last pointwise stage"):
        make_session(forced_plan(deep, "8x8,16,17,3", 1), providers=cuda_providers()).run(None, {"X": x})


def test_tuned_plans_attribute(rng, capfd, monkeypatch):
    """A node's cuda_plans (block plans on a channels_last node) is the plan at its batch sizes, the
    kernels' own plan at others, and one that does not fit gives way to the kernels' own."""
    monkeypatch.setenv("FCM_CUDA_VERBOSE", "1")
    monkeypatch.delenv("FCM_CUDA_PLAN", raising=False)
    spec = random_spec(rng, "pwdwpw", 24, kernel=3, stride=1, expand=96, out=40, channels_last=True)

    def plan_lines(said: str) -> list[str]:
        return [line for line in said.splitlines() if line.startswith("FCM CUDA fcm0 [")]

    for plans, batch, expected in (("3:4x8,16,2,3;5:8x8,48,1,4", 3, "4x8,16,2,3 ("),
                                   ("3:4x8,16,2,3;5:8x8,48,1,4", 5, "8x8,48,1,4 ("),
                                   ("3:4x8,16,2,3", 2, None),
                                   ("2:9x9,16,1,3", 2, "tuned plan not used")):
        feeds = {"X": rng.normal(size=(batch, 19, 21, 24)).astype(np.float32)}
        kernels_own = expected in (None, "tuned plan not used")
        if kernels_own:
            # the kernels' own plan at this batch, from the node without cuda_plans (a fused block or,
            # with clamps after the products, separate passes: the activations are drawn at random)
            capfd.readouterr()
            make_session(fused_model(spec), providers=cuda_providers()).run(None, feeds)
            own = plan_lines(capfd.readouterr().err)
            assert len(own) == 1, own
        model = fused_model(spec)
        model.graph.node[0].attribute.append(onnx.helper.make_attribute("cuda_plans", plans))
        (cpu,) = make_session(model).run(None, feeds)
        capfd.readouterr()
        gpu = run_poisoned(make_session(model, providers=cuda_providers()), feeds, cpu.shape)
        said = capfd.readouterr().err
        if kernels_own:
            assert plan_lines(said) == own, said
        else:
            assert "units on" in said, said  # the tuned plan, a fused block's
        if expected is not None:
            assert expected in said, said
        else:
            assert "tuned plan" not in said, said
        assert np.abs(gpu - cpu).max() <= TF32_BOUND * max(1.0, float(np.abs(cpu).max()))


def test_small_cases_for_the_sanitizer(rng, monkeypatch):
    """A handful of tiny cases per kind and copy path (run under compute-sanitizer memcheck and
    racecheck): TMA and cp.async, a split over a cluster, a ragged chunk, a PW->DW split without one,
    two and three passes."""
    for kind, stride, channels in (("dwpw", 2, 12), ("pwdw", 1, 9), ("pwpw", 1, 8), ("pwdwpw", 2, 9), ("pwdwpw", 1, 16),
                                   ("pw", 1, 44), ("pw", 1, 9)):
        spec = random_spec(rng, kind, channels, kernel=3, stride=stride, expand=40, out=20, residual=False,
                           scale=kind in ("pwdw", "pw"), channels_last=True)
        check_on_gpu(spec, rng, 2, 7, 5, TF32_BOUND)
    spec = random_spec(rng, "pw", 72, out=24, scale=True, channels_last=True)  # a single pointwise stage split over a cluster
    check_on_gpu(spec, rng, 2, 7, 5, TF32_BOUND, plan="4x5,24,2,3" if has_clusters() else "4x5,24,1,3")
    spec = random_spec(rng, "pwdwpw", 16, kernel=3, stride=1, expand=72, out=24, channels_last=True)
    check_on_gpu(spec, rng, 2, 7, 5, TF32_BOUND, plan="4x5,24,2,3" if has_clusters() else "4x5,24,1,3")
    # two warpgroups sharing each unit: three chunks (one has two), and one chunk (one has none)
    spec = random_spec(rng, "pwdwpw", 16, kernel=3, stride=1, expand=72, out=24, residual=True, channels_last=True)
    check_on_gpu(spec, rng, 3, 7, 5, TF32_BOUND, plan="3x5,64,1,3,2")
    spec = random_spec(rng, "dwpw", 12, kernel=3, stride=2, out=20, channels_last=True)
    check_on_gpu(spec, rng, 2, 7, 5, TF32_BOUND, plan="4x3,64,1,3,2")
    # PW->DW split into plain CTAs, one per chunk (the last one ragged); and two warpgroups on its chunks
    spec = random_spec(rng, "pwdw", 12, kernel=3, stride=1, expand=72, channels_last=True)
    check_on_gpu(spec, rng, 2, 7, 5, TF32_BOUND, plan="7x5,0,3,3")
    check_on_gpu(spec, rng, 2, 7, 5, TF32_BOUND, plan="4x5,0,1,3,2")
    if (compute_capability() or (0, 0))[0] == 9:  # DW->PW in two passes (with a residual), PW->DW->PW in three
        spec = random_spec(rng, "dwpw", 12, kernel=3, stride=1, out=12, residual=True, channels_last=True)
        spec = with_activations(spec, last=Activation(), residual=Activation("relu"))
        check_on_gpu(spec, rng, 2, 7, 5, TF32_BOUND, plan="dw+gemm")
        # (a deep sum over few tiles: the last product on the large tiles runs stream-K, its partial
        # sums through the workspace; by shape, 64 x 64 tiles)
        spec = random_spec(rng, "pwdwpw", 8, kernel=3, stride=2, expand=1024, out=16, channels_last=True)
        spec = with_activations(spec, first=Activation("relu"), last=Activation())
        for tiles in ("large", "by shape"):
            monkeypatch.setenv("FCM_CUDA_GEMM_TILES", tiles)
            check_on_gpu(spec, rng, 2, 7, 5, TF32_BOUND, plan="gemm+dw+gemm")


def twice(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (one fused node) with the same node again after it: Y of the first feeds the
    second, whose output Y2 is the model's."""
    graph = model.graph
    second = onnx.NodeProto()
    second.CopyFrom(graph.node[0])
    second.input[0] = graph.node[0].output[0]
    second.output[0] = "Y2"
    second.name = graph.node[0].name + "_again"
    graph.node.append(second)
    graph.output[0].name = "Y2"
    return model


@pytest.mark.parametrize("split", [1, 4])
def test_cuda_graph_capture_and_replay(split, rng):
    """Two channels_last nodes in a row captured in a CUDA graph (the second a programmatic
    dependent of the first), then replays with new inputs: each replay's output is the CPU's."""
    if split > 1 and not has_clusters():
        pytest.skip("thread-block clusters need sm_90")
    first = random_spec(rng, "pwdwpw", 32, expand=192, out=32, residual=True, channels_last=True)
    check_graph_replays(twice(fused_model(first)), rng, (4, 14, 14, 32), "Y2", f"7x7,32,{split},3", 4, TF32_BOUND)


@pytest.mark.parametrize("tiles", ["large", "by shape"])
@pytest.mark.parametrize("kind, plan", [("dwpw", "dw+gemm"), ("pwdwpw", "gemm+dw+gemm")])
def test_separate_passes_in_a_cuda_graph(kind, plan, tiles, rng, monkeypatch):
    """Two nodes in a row on the "dw+gemm" or "gemm+dw+gemm" plan captured in a CUDA graph (each its
    GEMMs and depthwise pass, the workspace from ONNX Runtime's allocator; FCM_CUDA_GEMM_TILES=large:
    the three passes' last product stream-K, its workspace zeroed in the graph; by shape, the
    default: 64 x 64 tiles), then replays with new inputs: each replay's output is the CPU's."""
    require_hopper()
    if tiles == "large":
        monkeypatch.setenv("FCM_CUDA_GEMM_TILES", "large")
    else:
        monkeypatch.delenv("FCM_CUDA_GEMM_TILES", raising=False)
    spec = random_spec(rng, kind, 32, kernel=3, stride=1, expand=1024, out=32, channels_last=True)  # (three: stream-K)
    spec = with_activations(spec, first=Activation("relu") if kind == "pwdwpw" else None, last=Activation("relu"))
    model = twice(fused_model(spec))
    check_graph_replays(model, rng, (4, 14, 14, 32), "Y2", plan, 4, TF32_BOUND)


def test_squeeze_excitation_branch_at_one_pixel(rng):
    """A squeeze-and-excitation branch (PW->PW on one pixel per image, 960 channels in): too wide for
    the block kernels' staged first-stage weights; on one pixel NHWC is NCHW, and the chain kernels
    take it."""
    spec = random_spec(rng, "pwpw", 960, expand=240, out=960, channels_last=True)
    for batch in (1, 32):
        check_on_gpu(spec, rng, batch, 1, 1, TF32_BOUND)


@pytest.mark.parametrize("kind, expand", [("pwdw", 96), ("pwdwpw", 64)])
def test_nodes_too_wide_for_the_block_kernels(kind, expand, rng):
    """1024 input channels on a 10x10 map (as in Xception's exit flow): no block-kernel plan holds
    the first-stage weights and the input region in shared memory, so the node runs the chain
    kernels on NCHW copies of its input and output; the results must still be the CPU kernel's."""
    spec = random_spec(rng, kind, 1024, kernel=3, stride=1, expand=expand, out=48, residual=False, channels_last=True)
    for batch in (1, 3):
        check_on_gpu(spec, rng, batch, 10, 10, TF32_BOUND)
