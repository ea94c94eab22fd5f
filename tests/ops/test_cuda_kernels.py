"""The CUDA kernels of the FCM ops against the CPU reference kernels (GPU machine only).

Random specs over every kind, DW kernel 3/5/7, stride 1/2 on odd sizes, H != W, channel counts
that are not multiples of 4/8/32, batch 1 and 7, all activations, residual, channel scale, and
divisions of the work (forced through the nodes' cuda_plans) that force both block sizes,
output-channel tiles, split reductions, one or two buffers and first-stage weights from device
memory; outputs poisoned before each run. TF32 (the default) within 5e-3 of the largest output, exact FP32 within 1e-4.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.standalone import fused_model
from tests.support.fcm_numpy import run_spec
from tests.support.gpu import (check_fused_on_gpu, check_graph_replays, cuda_providers, forced_plan, has_clusters, precision, require_cuda, run_in_threads,  # noqa: F401
                               run_poisoned)
from tests.support.specs import random_feeds, random_spec

pytestmark = pytest.mark.gpu

TF32_BOUND, FP32_BOUND = 5e-3, 1e-4


@pytest.fixture(autouse=True)
def _cuda():
    require_cuda()


def random_plan(rng, kind: str, channels: int, kernel: int, stride: int) -> str:
    """A random division of the work to force (pixels,HxW,f_tile,split,buffers,w1_direct),
    so every code path runs: both block sizes, narrow and wide tiles, output-channel tiles, split
    reductions, one or two buffers, first-stage weights staged or read from device memory. Drawn
    again until its shared memory (as the kernels lay it out, bounded from above) fits an sm_80+
    block: a forced plan that does not fit is an error by design."""
    while True:
        pixels = int(rng.choice([64, 128]))
        tile_w = int(rng.integers(1, 20))
        tile_h = int(rng.integers(1, max(1, pixels // tile_w) + 1))
        f_tile = int(rng.choice([16, 32, 48, 64, 128] + ([256] if pixels == 64 else [])))
        split = int(rng.choice([1, 1, 2, 3]))
        buffers, w1_direct = int(rng.choice([1, 2])), int(rng.integers(0, 2))
        depthwise = "dw" in kind
        region = ((tile_h - 1) * stride + kernel) * ((tile_w - 1) * stride + kernel) if depthwise else tile_h * tile_w
        ld = region + 40  # padded to 8 (mod 32)
        padded = -(-channels // 8) * 8
        floats = (padded * ld + 32 * ld) if kind.startswith("pw") else buffers * 32 * ld
        floats += 32 * (pixels + 40) + buffers * 32 * (padded + 4) * (1 - w1_direct) + buffers * f_tile * 36
        if 4 * floats + ld + 16 <= 160 * 1024:
            return f"{pixels},{tile_h}x{tile_w},{f_tile},{split},{buffers},{w1_direct}"


CASES = [(kind, k, s) for kind in ("dwpw", "pwdw", "pwdwpw") for k in (3, 5, 7) for s in (1, 2)] + [("pwpw", 3, 1)]


@pytest.mark.parametrize("kind, kernel, stride", CASES)
@pytest.mark.parametrize("batch", [1, 7])
def test_kinds_against_cpu(kind, kernel, stride, batch, precision, rng):
    bound = TF32_BOUND if precision == "tf32" else FP32_BOUND
    for _ in range(3):
        channels = int(rng.integers(3, 70))
        spec = random_spec(rng, kind, channels, kernel=kernel, stride=stride,
                           residual=kind in ("pwdwpw", "pwpw") and stride == 1 and rng.random() < 0.5,
                           scale=kind != "dwpw" and rng.random() < 0.3)
        height, width = int(rng.integers(kernel, 30)), int(rng.integers(kernel, 30))
        check_fused_on_gpu(spec, rng, batch, height, width, bound, plan=random_plan(rng, kind, channels, kernel, stride))


@pytest.mark.parametrize("pads", [(0, 0, 1, 1), (0, 0, 0, 0), (2, 1, 0, 2)])
def test_explicit_pads_odd_sizes(pads, precision, rng):
    spec = random_spec(rng, "pwdwpw", 13, kernel=3, stride=2, pads=pads, expand=37, out=29)
    check_fused_on_gpu(spec, rng, 3, 23, 17, TF32_BOUND if precision == "tf32" else FP32_BOUND)


def test_mobilenet_like_shapes(precision, rng):
    """Shapes of real inverted-residual blocks and large channel counts: the kernels' own plans,
    then fixed ones (split reductions over many shares, output-channel tiles, one buffer)."""
    bound = TF32_BOUND if precision == "tf32" else FP32_BOUND
    for c, e, f, size, stride, plan in [
        (16, 96, 24, 112, 2, None),
        (32, 192, 32, 28, 1, None),
        (160, 960, 160, 7, 1, None),
        (160, 960, 320, 7, 1, None),
        (32, 192, 32, 28, 1, "128,4x28,32,4,2,0"),
        (160, 960, 160, 7, 1, "64,7x7,48,16,1,1"),
        (160, 960, 320, 7, 1, "64,7x7,256,8,2,0"),
    ]:
        spec = random_spec(rng, "pwdwpw", c, kernel=3, stride=stride, expand=e, out=f, residual=(c == f and stride == 1))
        check_fused_on_gpu(spec, rng, 2, size, size, bound, plan=plan)


def test_plan_override_is_checked(rng):
    """A division that cannot run is an ONNX Runtime error naming the reason, not a launch."""
    spec = random_spec(rng, "pwdwpw", 16, kernel=3, stride=1)
    model = fused_model(spec)
    x = rng.normal(size=(1, 16, 9, 9)).astype(np.float32)
    for plan, reason in (("96,8x8,16,1,2,0", "64 or 128"), ("64,16x16,16,1,2,0", "tile larger"), ("64,8x8", "must read")):
        with pytest.raises(Exception, match=reason):
            make_session(forced_plan(model, plan, 1), providers=cuda_providers()).run(None, {"X": x})


def test_plan_environment_variable_overrides_the_attributes(rng, monkeypatch):
    """FCM_CUDA_PLAN, the debugging override, comes before a node's cuda_plans: here a plan that
    cannot run, over a tuned plan that can."""
    spec = random_spec(rng, "pwdwpw", 16, kernel=3, stride=1)
    model = forced_plan(fused_model(spec), "64,8x8,16,1,2,0", 1)
    x = rng.normal(size=(1, 16, 9, 9)).astype(np.float32)
    make_session(model, providers=cuda_providers()).run(None, {"X": x})
    monkeypatch.setenv("FCM_CUDA_PLAN", "96,8x8,16,1,2,0")
    with pytest.raises(Exception, match="64 or 128"):
        make_session(model, providers=cuda_providers()).run(None, {"X": x})


def test_tuned_plans_attribute(rng, capfd, monkeypatch):
    """A node's cuda_plans (from fcm tune) is the plan at its batch sizes, the kernels' own plan at
    others, and one that does not fit this GPU gives way to the kernels' own; results as the CPU's."""
    monkeypatch.setenv("FCM_CUDA_VERBOSE", "1")
    monkeypatch.delenv("FCM_CUDA_PLAN", raising=False)
    spec = random_spec(rng, "pwdwpw", 24, kernel=3, stride=1, expand=96, out=40)
    for plans, batch, expected in (("3:64,4x8,16,2,1,0;5:128,8x16,32,1,2,0", 3, "64 px/block (4x8), f_tile 16, split 2, 1 buffer(s)"),
                                   ("3:64,4x8,16,2,1,0;5:128,8x16,32,1,2,0", 5, "128 px/block (8x16), f_tile 32, split 1, 2 buffer(s)"),
                                   ("3:64,4x8,16,2,1,0", 2, None),
                                   ("2:96,8x8,16,1,2,0", 2, "tuned plan not used")):
        model = fused_model(spec)
        node = model.graph.node[0]
        node.attribute.append(onnx.helper.make_attribute("cuda_plans", plans))
        capfd.readouterr()
        feeds = {"X": rng.normal(size=(batch, 24, 19, 21)).astype(np.float32)}
        (cpu,) = make_session(model).run(None, feeds)
        gpu = run_poisoned(make_session(model, providers=cuda_providers()), feeds, cpu.shape)
        said = capfd.readouterr().err
        assert "px/block" in said, said
        if expected is not None:
            assert expected in said and ("not used" not in expected or "64 or 128" in said), said
        else:  # not listed: the kernels' own plan, whatever it is, and no complaint
            assert "tuned plan" not in said, said
        assert np.abs(gpu - cpu).max() <= TF32_BOUND * max(1.0, float(np.abs(cpu).max()))


@pytest.mark.parametrize("kind", ["dwpw", "pwdwpw", "pwpw"])
def test_every_kernel_width(kind, precision, rng):
    """Each output-channel capacity the kernels are compiled for (32, 64 and full width, picked from
    the plan's f_tile), at both block sizes, on a ragged output-channel count (100: the last tile
    partly filled)."""
    bound = TF32_BOUND if precision == "tf32" else FP32_BOUND
    spec = random_spec(rng, kind, 21, kernel=3, stride=2, expand=70, out=100, scale=kind != "dwpw")
    for pixels, tile in ((64, "4x16"), (128, "8x16")):
        for f_tile in (16, 32, 48, 64, 112):
            check_fused_on_gpu(spec, rng, 2, 13, 19, bound, plan=f"{pixels},{tile},{f_tile},2,2,0")


@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_region_in_16_byte_pieces(stride, precision, rng):
    """DW->PW on images whose rows are 16-byte aligned (width a multiple of 4) with tile widths
    that keep every block's region at one offset from a 4-aligned column: the region is copied in
    16-byte pieces, shifted by the left padding (0 to 3); beside them a width and a tile that take
    the per-float copies. All against the CPU reference."""
    bound = TF32_BOUND if precision == "tf32" else FP32_BOUND
    for kernel, left in ((3, 0), (3, 1), (5, 2), (5, 3)):
        spec = random_spec(rng, "dwpw", 37, kernel=kernel, stride=stride, pads=(kernel // 2, left, kernel // 2, 1))
        for width, tile_w in ((32, 8), (20, 16), (28, 4 // stride), (30, 8), (32, 5)):
            tile_h = 64 // tile_w
            check_fused_on_gpu(spec, rng, 2, 11, width, bound, plan=f"64,{tile_h}x{tile_w},32,1,2,0")


def test_split_shares_in_a_cluster_and_through_the_workspace(rng, capfd, monkeypatch):
    """A split's shares are added through a workspace and a second kernel, or, when the plan asks
    for a cluster (a seventh field of 1; sm_90 and later, splits of 2 to 16, above 8 a non-portable
    cluster size, kernels below full output-channel width), in a thread-block cluster. Both add the
    shares in the same order: the same bits, and the CPU's result. Both block sizes, a ragged last
    chunk and output-channel tile, residual. A cluster plan the kernels cannot run (before sm_90, a
    split above 16, a full-width kernel) is an error naming the reason."""
    monkeypatch.setenv("FCM_CUDA_VERBOSE", "1")
    cluster_device = has_clusters()
    cases = [("pwdwpw", 40, 500, 40, (2, 3, 6, 8, 16), ("64,8x8,48,{},2,0", "64,4x16,16,{},1,0")),
             ("pwdwpw", 40, 600, 40, (19,), ("64,8x8,48,{},2,0",)),
             ("pwdwpw", 40, 200, 100, (2,), ("64,8x8,128,{},2,0", "128,8x16,32,{},2,0")),  # full width
             ("dwpw", 100, None, 40, (2, 4), ("128,8x16,32,{},2,0", "64,4x16,16,{},2,0"))]
    for kind, channels, expand, out, splits, plans in cases:
        spec = random_spec(rng, kind, channels, kernel=3, stride=1, expand=expand, out=out,
                           residual=kind == "pwdwpw" and out == channels)
        model = fused_model(spec)
        feeds = {"X": rng.normal(size=(2, channels, 19, 21)).astype(np.float32)}
        (cpu,) = make_session(model).run(None, feeds)
        for split in splits:
            for plan in (p.format(split) for p in plans):
                capfd.readouterr()
                session = make_session(forced_plan(model, plan, 2), providers=cuda_providers())
                workspace = run_poisoned(session, feeds, cpu.shape)
                said = capfd.readouterr().err
                assert f"split {split}," in said and "cluster" not in said, said
                assert np.abs(workspace - cpu).max() <= TF32_BOUND * max(1.0, float(np.abs(cpu).max())), plan
                full_width = int(plan.split(",")[2]) > 64 or (kind == "pwdwpw" and plan.startswith("128,"))
                if not cluster_device or split > 16 or full_width:
                    with pytest.raises(Exception, match="cluster"):
                        make_session(forced_plan(model, plan + ",1", 2), providers=cuda_providers()).run(None, feeds)
                    continue
                session = make_session(forced_plan(model, plan + ",1", 2), providers=cuda_providers())
                clustered = run_poisoned(session, feeds, cpu.shape)
                said = capfd.readouterr().err
                assert f"split {split}," in said and "shares added in a cluster" in said, said
                assert np.array_equal(clustered, workspace), plan


def test_small_cases_for_the_sanitizer(rng):
    """A handful of tiny cases per kind (run under compute-sanitizer memcheck and racecheck)."""
    for kind, stride in (("dwpw", 2), ("pwdw", 1), ("pwpw", 1), ("pwdwpw", 2), ("pwdwpw", 1)):
        spec = random_spec(rng, kind, 9, kernel=3, stride=stride, residual=kind == "pwpw", scale=kind == "pwdw")
        check_fused_on_gpu(spec, rng, 2, 7, 5, TF32_BOUND, plan=random_plan(rng, kind, 9, 3, stride))
    # the depthwise input region in 16-byte pieces (width a multiple of 4), left pads 1 and 2
    for left, stride in ((1, 1), (2, 2)):
        spec = random_spec(rng, "dwpw", 9, kernel=5, stride=stride, pads=(2, left, 2, 2))
        check_fused_on_gpu(spec, rng, 2, 6, 8, TF32_BOUND, plan="64,4x8,32,1,2,0")
    # a split's shares through the workspace and (sm_90) in a cluster
    spec = random_spec(rng, "pwdwpw", 9, kernel=3, stride=1, expand=70, out=20, residual=False)
    for cluster in ([",0", ",1"] if has_clusters() else [",0"]):
        check_fused_on_gpu(spec, rng, 2, 7, 5, TF32_BOUND, plan="64,4x8,16,3,2,0" + cluster)
    # each compiled output-channel capacity (f_tile 16, 48, 112 on 100 output channels)
    for kind in ("dwpw", "pwdwpw", "pwpw"):
        spec = random_spec(rng, kind, 9, kernel=3, stride=2, expand=40, out=100)
        for f_tile in (16, 48, 112):
            check_fused_on_gpu(spec, rng, 1, 7, 5, TF32_BOUND, plan=f"64,4x8,{f_tile},1,2,0")


@pytest.mark.parametrize("channels_last", [False, True])
def test_one_pixel_pwpw_runs_the_pixel_chain(channels_last, precision, rng, capfd, monkeypatch):
    """Squeeze-and-excitation branches (PW->PW on 1x1 maps) run the pixel-chain kernels (as
    FCM_CUDA_VERBOSE says): channel counts up to EfficientNetB0's 1152 and odd ones (rows read as
    16-byte vectors, or a value at a time: 13 and 5 channels, EfficientNetB0's 28 hidden ones in the
    half types), batches past a CTA's 8 images and ragged against them, residual and channel scale."""
    monkeypatch.setenv("FCM_CUDA_VERBOSE", "1")
    cases = [(16, 8, 1, False, False), (96, 24, 3, True, False), (672, 168, 32, False, False), (1152, 48, 9, True, True),
             (13, 5, 17, False, True), (2000, 40, 2, False, False), (672, 28, 32, False, True)]
    for channels, hidden, batch, residual, scale in cases:
        spec = random_spec(rng, "pwpw", channels, expand=hidden, out=channels, residual=residual, scale=scale,
                           channels_last=channels_last)
        check_fused_on_gpu(spec, rng, batch, 1, 1, TF32_BOUND if precision == "tf32" else FP32_BOUND)
    said = capfd.readouterr().err
    assert said.count("pixel-chain kernels") == len(cases), said


def test_small_pixel_chain_for_the_sanitizer(rng):
    """The pixel-chain kernels on tiny and ragged cases (run under compute-sanitizer)."""
    for channels, hidden, batch, residual in ((5, 3, 1, True), (33, 7, 9, False)):
        spec = random_spec(rng, "pwpw", channels, expand=hidden, out=channels, residual=residual, scale=batch > 1)
        check_fused_on_gpu(spec, rng, batch, 1, 1, TF32_BOUND)


def _input(rng, channels_last: bool, batch: int, channels: int, height: int, width: int) -> np.ndarray:
    shape = (batch, height, width, channels) if channels_last else (batch, channels, height, width)
    return rng.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("channels_last", [False, True])
def test_dynamic_batch_and_sizes(channels_last, rng):
    """One session, new batch sizes and image sizes (a plan per shape), in both layouts (NCHW nodes
    run the chain kernels, channels_last ones the block kernels)."""
    spec = random_spec(rng, "pwdwpw", 24, stride=2, expand=64, out=32, channels_last=channels_last)
    model = fused_model(spec)
    session = make_session(model, providers=cuda_providers())
    cpu = make_session(model)
    for batch, height, width in ((1, 9, 9), (7, 16, 31), (2, 3, 5)):
        x = _input(rng, channels_last, batch, 24, height, width)
        (expected,) = cpu.run(None, {"X": x})
        got = run_poisoned(session, {"X": x}, expected.shape)
        assert np.abs(got - expected).max() <= TF32_BOUND * max(1, np.abs(expected).max())


@pytest.mark.parametrize("channels_last", [False, True])
def test_four_threads_share_one_session(channels_last, rng):
    spec = random_spec(rng, "pwdwpw", 32, expand=96, out=32, residual=True, channels_last=channels_last)
    model = fused_model(spec)
    session = make_session(model, providers=cuda_providers())
    cpu = make_session(model)
    inputs = [_input(rng, channels_last, int(rng.integers(1, 6)), 32, 20, 20) for _ in range(8)]
    expected = [cpu.run(None, {"X": x})[0] for x in inputs]
    errors = run_in_threads(session, "X", inputs, lambda i, got: np.abs(got - expected[i]).max()
                            <= TF32_BOUND * max(1, np.abs(expected[i]).max()))
    assert not errors, errors[:5]


@pytest.mark.parametrize("cluster", [0, 1])
def test_cuda_graph_capture_and_replay(cluster, rng):
    """Capture and replays, the split plan's shares added through the workspace (taken on the runs
    before the capture) or in a cluster (sm_90)."""
    if cluster and not has_clusters():
        pytest.skip("thread-block clusters need sm_90")
    spec = random_spec(rng, "pwdwpw", 32, expand=96, out=32, residual=True)
    # a split plan, planned at the first run, before the capture
    check_graph_replays(fused_model(spec), rng, (4, 32, 14, 14), "Y", f"64,7x7,32,3,2,0,{cluster}", 3, TF32_BOUND)
