"""The planner: candidates from the graph's edges, a globally best selection, the plan file."""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np
import pytest

from extractor.dag import Dag, Layer
from extractor.keras_reader import read_keras
from fcm.cli import main
from fcm_core.errors import FcmError
from planner import CostConstants, make_plan, resolve_gpu
from planner import select
from planner.groups import Graph, build_stages, lone_pointwise
from tests.support.fixtures import ROOT, SEED, keras_model, seed_dag_path

SEED_MODELS = ["mob_v1", "mob_v2", "xce_r", "gprox_3"]
SEED_GPUS = ["gtx1660", "orin", "rtxa4000"]


def _cfg(name: str):
    return SEED / "hw_configs" / f"{name}.cfg"


def assert_groups_are_closed(dag: Dag, plan) -> None:
    """No group crosses a branch or drops an operator: inside a group every entry's output goes
    only to entries of the same group, except the group's output; every entry it holds lies on
    the way from its input to its output."""
    graph = Graph(dag)
    seen_convs: set[int] = set()
    for group in plan.groups:
        entries = set(group.candidate.entries)
        output = group.candidate.output
        for entry in entries - {output}:
            assert entry not in graph.is_output
            assert set(graph.consumers[entry]) <= entries, f"group {group.id}: {entry} feeds outside the group"
        # every entry is reached from the group's input through the group
        source = group.candidate.input
        for entry in entries:
            outside = [t for t in graph.data_inputs(dag[entry]) if t != source and not (t[0] == "op" and t[1] in entries)]
            se = group.candidate.stages[0].se_scale
            assert all(t == se for t in outside), f"group {group.id}: {entry} reads {outside} from outside"
        convs = set(group.candidate.convs)
        assert not convs & seen_convs, "a convolution in two groups"
        seen_convs |= convs


@pytest.mark.parametrize("model, gpu", list(itertools.product(SEED_MODELS, SEED_GPUS)))
def test_seed_dags_and_configs(model, gpu):
    path = seed_dag_path(model)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    dag = Dag.load(path)
    plan = make_plan(dag, resolve_gpu(str(_cfg(gpu))), batch=1, dtype="int8")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before  # read as it is, unchanged
    assert plan.groups, "nothing fused"
    assert_groups_are_closed(dag, plan)
    absorbed = plan.absorbed()
    for layer in dag:
        if layer.name == "add" and layer.id in absorbed:
            # a residual add is inside a group only as that group's residual, its other operand
            # being the group's input
            (group,) = [g for g in plan.groups if layer.id in g.candidate.entries]
            assert group.candidate.residual_add == layer.id
            assert Graph(dag).data_inputs(layer).count(group.candidate.input) == 1
    # every convolution is in a group or has a reason
    in_groups = {c for g in plan.groups for c in g.candidate.convs}
    for layer in dag.convs():
        assert (layer.id in in_groups) != (layer.id in plan.unfused_reasons)


def test_mob_v2_residual_adds_are_in_groups_or_alone():
    dag = Dag.load(seed_dag_path("mob_v2"))
    plan = make_plan(dag, resolve_gpu("H100"), batch=32, dtype="fp32")
    adds = [layer.id for layer in dag if layer.name == "add"]
    assert len(adds) == 10
    residuals = {g.candidate.residual_add for g in plan.groups} - {None}
    assert residuals <= set(adds)
    for add in adds:
        if add not in residuals:
            assert add not in plan.absorbed()
    # the paper fused across these adds (pairs 10-12, 18-20, 22-24); no group of ours does
    for first, second in ((10, 12), (18, 20), (22, 24)):
        assert not any({first, second} <= set(g.candidate.convs) for g in plan.groups)


def _chain_dag(input_channels: int, hw: int, stages: list[tuple[str, int]]) -> Dag:
    """A chain of DW/PW layers (ReLU6 after each), as a DAG file would give it."""
    layers, channels = [], input_channels
    for index, (kind, out_channels) in enumerate(stages):
        out_channels = channels if kind == "dw" else out_channels
        layers.append(Layer(
            name="depthwise_conv_2d" if kind == "dw" else "conv_2d", id=index, activation="RELU6", type=kind,
            weights_shape=[channels, 3, 3] if kind == "dw" else [out_channels, channels],
            ifms_shape=[channels, hw, hw], ofms_shape=[out_channels, hw, hw], strides=1, strides_hw=[1, 1],
            kernel_size=[3, 3] if kind == "dw" else [1, 1], padding="SAME",
            pads=[1, 1, 1, 1] if kind == "dw" else [0, 0, 0, 0],
            parents=[index - 1] if index else [], children=[index + 1] if index < len(stages) - 1 else []))
        channels = out_channels
    return Dag(layers).validate()


def test_global_selection_beats_pairwise_greedy():
    """dw -> pw -> dw -> pw at 14x14: the single best candidate (PW->DW->PW in the middle) is not
    part of the best set (two DW->PW pairs); the planner finds the latter."""
    dag = _chain_dag(256, 14, [("dw", 0), ("pw", 128), ("dw", 0), ("pw", 64)])
    plan = make_plan(dag, resolve_gpu("H100"), batch=1, dtype="fp32")
    ((chain, found),) = plan.candidates
    windows = [(start, len(g.candidate.stages), g.saving) for start, g in found]
    greedy = select.total_saving(windows, select.select_greedy(windows))
    # the optimum by brute force over every subset of non-overlapping candidates
    best = 0.0
    for count in range(len(windows) + 1):
        for subset in itertools.combinations(range(len(windows)), count):
            cells = [c for i in subset for c in range(windows[i][0], windows[i][0] + windows[i][1])]
            if len(cells) == len(set(cells)):
                best = max(best, select.total_saving(windows, subset))
    planned = sum(g.saving for g in plan.groups)
    assert planned == pytest.approx(best)
    assert greedy < best * 0.95
    assert [g.candidate.kind for g in plan.groups] == ["dwpw", "dwpw"]


def test_selection_is_optimal_on_random_windows():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 8))
        windows = [(s, l, float(rng.normal())) for s in range(n) for l in (2, 3) if s + l <= n and rng.random() < 0.8]
        chosen = select.select_optimal(n, windows)
        cells = [c for i in chosen for c in range(windows[i][0], windows[i][0] + windows[i][1])]
        assert len(cells) == len(set(cells))
        best = 0.0
        for count in range(len(windows) + 1):
            for subset in itertools.combinations(range(len(windows)), count):
                cs = [c for i in subset for c in range(windows[i][0], windows[i][0] + windows[i][1])]
                if len(cs) == len(set(cs)):
                    best = max(best, sum(windows[i][2] for i in subset if windows[i][2] > 0))
        assert select.total_saving(windows, chosen) == pytest.approx(best)


def test_mobilenet_v2_batch32_h100_fuses_every_inverted_residual_block(tmp_path, capsys):
    dag = read_keras(keras_model("MobileNetV2", logits=True), "MobileNetV2")
    dag.save(tmp_path)
    assert main(["plan", str(tmp_path), "--gpu", "H100", "--batch", "32", "--dtype", "fp32", "--report",
                 "-o", str(tmp_path / "plan.json")]) == 0
    out = capsys.readouterr().out
    assert "predicted DRAM bytes:" in out and "MB unfused ->" in out
    assert "kernel launches:" in out
    plan = json.loads((tmp_path / "plan.json").read_text())
    # an inverted-residual block: expand PW -> DW -> project PW (+ residual add); the first
    # block has no expansion (DW -> PW)
    dws = [layer for layer in dag if layer.type == "dw"]
    blocks = []
    for dw in dws:
        pad_or_expand = dag[dw.parents[0]]
        expand = dag[pad_or_expand.parents[0]] if pad_or_expand.name == "pad" else pad_or_expand
        project = dag[dw.children[0]]
        blocks.append([expand.id, dw.id, project.id] if expand.type == "pw" else [dw.id, project.id])
    groups_by_layers = {tuple(g["layers"]): g for g in plan["groups"]}
    for block in blocks:
        assert tuple(block) in groups_by_layers, f"block {block} is not one group"
        group = groups_by_layers[tuple(block)]
        assert group["kind"] == ("pwdwpw" if len(block) == 3 else "dwpw")
        project = dag[block[-1]]
        if len(project.children) == 1 and dag[project.children[0]].name == "add":
            assert group["residual"]["add"] == project.children[0]
    totals = plan["totals"]
    assert totals["fused"]["launches"] < totals["unfused"]["launches"]
    assert totals["fused"]["dram_bytes"] < totals["unfused"]["dram_bytes"] / 3


def test_squeeze_excitation_projections_are_one_stage_groups():
    """EfficientNetB0 at batch 32: each projection after a squeeze-and-excitation scale is a ``pw``
    group (one pointwise stage holding the scale's MUL, which no longer kind can take: the scale
    needs the whole depthwise output first), and no ``pw`` group is made without a scale."""
    dag = Dag.load(ROOT / "converted_models" / "efficientnet_b0" / "efficientnet_b0.dag.json")
    plan = make_plan(dag, resolve_gpu("H100"), batch=32, dtype="fp32")
    assert_groups_are_closed(dag, plan)
    _, stages = build_stages(dag)
    scaled = sorted(s.conv for s in stages.values() if s.type == "pw" and s.se_scale is not None)
    assert len(scaled) == 16
    single = [g.candidate for g in plan.groups if g.candidate.kind == "pw"]
    with_scale = [c for c in single if c.stages[0].se_scale is not None]
    assert sorted(c.convs[0] for c in with_scale) == scaled
    for candidate in with_scale:
        assert len(candidate.stages) == 1
        assert [dag[e].name for e in candidate.entries if dag[e].name == "mul"] == ["mul"]
    # and the head convolution (320 -> 1280, swish), a pointwise stage no group took, with an
    # activation that would be passes of its own (logistic and mul) after a library convolution
    head = max(s.conv for s in stages.values() if s.type == "pw")
    assert [(c.convs[0], c.stages[0].activation) for c in single if c.stages[0].se_scale is None] == [(head, "SWISH")]
    assert {g.candidate.kind for g in plan.groups} == {"pw", "pwdw", "pwpw"}


def test_a_lone_pointwise_stage_with_an_activation_is_a_group_only_outside_longer_ones():
    """MobileNetV2 at batch 32: its 1x1 head (320 -> 1280, ReLU6), which no block takes, is a one-stage
    group; the blocks stay whole (a lone stage never competes with a longer window); a stage whose
    activation the library convolution fuses (ReLU) or that has none is left to the library."""
    dag = read_keras(keras_model("MobileNetV2", logits=True), "MobileNetV2")
    plan = make_plan(dag, resolve_gpu("H100"), batch=32, dtype="fp32")
    kinds = [g.candidate.kind for g in plan.groups]
    assert kinds.count("pwdwpw") == 16 and kinds.count("dwpw") == 1
    (head,) = [g.candidate for g in plan.groups if g.candidate.kind == "pw"]
    assert head.stages[0].activation == "RELU6" and dag[head.convs[0]].weights_shape[:2] == [1280, 320]
    graph, stages = build_stages(dag)
    assert lone_pointwise(graph, stages, [head.convs[0]], set(), ("RELU", "RELU6")) == []
    assert lone_pointwise(graph, stages, [head.convs[0]], {head.convs[0]}, ("RELU",)) == []


def test_plan_file_schema(tmp_path):
    dag = Dag.load(seed_dag_path("mob_v1"))
    plan = make_plan(dag, resolve_gpu("A100"), batch=8, dtype="fp16", dag_path="mob_v1")
    plan.save(tmp_path / "plan.json")
    data = json.loads((tmp_path / "plan.json").read_text())
    assert data["format"] == "fcm-plan" and data["version"] == 1
    assert data["gpu"]["name"] == "A100" and data["batch"] == 8 and data["dtype"] == "fp16"
    for group in data["groups"]:
        assert set(group) >= {"id", "kind", "layers", "names", "entries", "input", "output", "stages", "residual",
                              "tiling", "predicted"}
        assert set(group["predicted"]) == {"fused", "unfused", "saved_time_us"}
        assert group["predicted"]["saved_time_us"] > 0
        assert group["tiling"]["tile_h"] >= 1 and group["tiling"]["tile_f"] >= 1
        assert [s["layer"] for s in group["stages"]] == group["layers"]
    for entry in data["unfused"]:
        assert entry["reason"]
    assert set(data["totals"]) >= {"unfused", "fused", "groups", "convs", "convs_fused", "dw_convs", "dw_fused"}


def test_unfused_convolutions_carry_reasons():
    dag = Dag.load(seed_dag_path("xce_r"))
    plan = make_plan(dag, resolve_gpu("H100"), batch=1, dtype="int8")
    reasons = plan.unfused_reasons
    assert reasons[1].startswith("standard convolution")
    # xce_r's stride-2 1x1 shortcut convs (ids 8, 16; the seed's DAG wrongly says stride 1, so
    # they are only caught by their shapes) are not in groups: each reads a tensor another
    # branch reads too
    for layer_id in (8, 16, 24, 96):
        assert layer_id in reasons


def test_cost_constants_calibrate_the_model(tmp_path):
    dag = Dag.load(seed_dag_path("mob_v2"))
    gpu = resolve_gpu("H100")
    base = make_plan(dag, gpu, batch=1, dtype="fp32")
    path = tmp_path / "constants.json"
    path.write_text(json.dumps({"dram_efficiency": 0.5, "cuda_graphs": False, "library_efficiency": {"dw": 0.3}}))
    constants = CostConstants.load(path)
    assert constants.dram_efficiency == 0.5 and constants.library_efficiency["pw"] == CostConstants().library_efficiency["pw"]
    slower = make_plan(dag, gpu, batch=1, dtype="fp32", constants=constants)
    assert slower.totals()["unfused"]["time_us"] > base.totals()["unfused"]["time_us"]
    path.write_text(json.dumps({"dram_eficiency": 0.5}))
    with pytest.raises(FcmError, match="unknown cost constants"):
        CostConstants.load(path)


def test_gpus():
    h100 = resolve_gpu("H100")
    assert h100.sm_count == 132 and h100.l2_bytes == 50 * 2**20
    assert resolve_gpu("NVIDIA H100 80GB HBM3") if False else True
    from planner.gpus import lookup

    assert lookup("NVIDIA H100 80GB HBM3").name == "H100 SXM"
    assert lookup("NVIDIA A100-SXM4-80GB").name == "A100"
    assert lookup("NVIDIA L40S") is None  # not an L4
    for name in ("H100", "H100-PCIe", "H200", "A100", "L4", "RTX 4090", "RTX A4000", "GTX 1660", "Jetson Orin"):
        spec = resolve_gpu(name)
        assert spec.dram_bandwidth > 0 and spec.peak_flops["fp32"] > 0 and spec.smem_per_block <= spec.smem_per_sm
    cfg = resolve_gpu(str(_cfg("gtx1660")))
    assert cfg.sm_count == 22 and cfg.smem_per_sm == 64 * 1024 and "dram_gbps" in cfg.defaulted


def test_gpu_auto_without_a_gpu(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(FcmError, match="no NVIDIA GPU found"):
        resolve_gpu("auto")


@pytest.mark.parametrize(
    "content, words",
    [("SMs::22\nshmem\n", "expected KEY::VALUE"), ("SMs::22\n", "missing shmem"), ("SMs::abc\nshmem::64\n", "not a number"),
     ("SMs::22\nshmem::64\ncolour::blue\n", "unknown key"), ("SMs::-3\nshmem::64\n", "must be positive")],
)
def test_malformed_cfg(tmp_path, content, words):
    path = tmp_path / "bad.cfg"
    path.write_text(content)
    with pytest.raises(FcmError, match=words) as info:
        resolve_gpu(str(path))
    assert str(path) in str(info.value)


def test_unknown_gpu_name():
    with pytest.raises(FcmError, match="unknown GPU 'H300'"):
        resolve_gpu("H300")


def test_html_view(tmp_path, capsys):
    dag_path = seed_dag_path("xce_r")
    plan_path = tmp_path / "plan.json"
    assert main(["-q", "plan", str(dag_path), "--gpu", "H100", "-o", str(plan_path)]) == 0
    html_path = tmp_path / "dag.html"
    assert main(["inspect", str(dag_path), "--html", str(html_path), "--plan", str(plan_path)]) == 0
    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    plan = json.loads(plan_path.read_text())
    for group in plan["groups"]:
        assert f"group {group['id']}: {group['kind']}" in page
    assert page.count("<text") >= 106  # a label per entry
    import xml.dom.minidom

    svg = page[page.index("<svg"): page.index("</svg>") + 6]
    xml.dom.minidom.parseString(svg)  # well-formed


def test_plan_for_another_dag_is_refused(tmp_path):
    plan_path = tmp_path / "plan.json"
    assert main(["-q", "plan", str(seed_dag_path("mob_v1")), "--gpu", "H100", "-o", str(plan_path)]) == 0
    assert main(["inspect", str(seed_dag_path("mob_v2")), "--html", str(tmp_path / "x.html"), "--plan", str(plan_path)]) == 2
    assert not (tmp_path / "x.html").exists()


def _paper_pairs(dtype: str, model: str) -> list[tuple[int, int]]:
    lines = (SEED / "fusion_configs" / f"{dtype}__{model}.cfg").read_text().split()
    return [(int(a), int(b)) for a, b, _ in (line.split(",") for line in lines)]


@pytest.mark.parametrize(
    "dtype, model, inside, dw_fused",
    [("int8", "mob_v1", 3, 13), ("int8", "mob_v2", 9, 17), ("int8", "xce_r", 0, 34), ("int8", "gprox_3", 11, 14),
     ("fp32", "mob_v1", 0, 13), ("fp32", "mob_v2", 12, 17), ("fp32", "xce_r", 1, 33), ("fp32", "gprox_3", 11, 14)],
)
def test_against_the_paper_fusion_configs(dtype, model, inside, dw_fused):
    """The figures of docs/seed_compat.md, "Our planner vs the paper's fusion configs"."""
    dag = Dag.load(seed_dag_path(model))
    plan = make_plan(dag, resolve_gpu(str(_cfg("gtx1660"))), batch=1, dtype=dtype)
    pairs = _paper_pairs(dtype, model)
    chains = [g.candidate.convs for g in plan.groups]
    found = [p for p in pairs if any(p[0] in c and p[1] in c and c.index(p[1]) == c.index(p[0]) + 1 for c in chains)]
    assert len(found) == inside
    assert plan.totals()["dw_fused"] == dw_fused
    across_adds = [p for p in pairs if any(dag[i].name == "add" for i in range(p[0] + 1, p[1]))]
    assert across_adds == ([(10, 12), (18, 20), (22, 24)] if (dtype, model) == ("int8", "mob_v2") else [])
    for first, second in across_adds:  # never one of ours
        assert not any(first in c and second in c for c in chains)


def test_chains_no_block_kernel_plan_takes_are_not_planned():
    """A float chain whose least fused-block launch plan needs more shared memory than a block gets
    (MobileNetV2's 960 -> 320 -> 1280 head pair in fp16 on an H100) is not fused: its node would run
    a slow fallback. Inverted-residual blocks and one-pixel squeeze-and-excitation pairs are."""
    from planner.costs import Device, StageShape, Tiling, block_kernel_shared_bytes, fused_cost

    gpu = resolve_gpu("H100")
    head = [StageShape("pw", 960, 320, (7, 7), (7, 7)), StageShape("pw", 320, 1280, (7, 7), (7, 7))]
    block = [StageShape("pw", 160, 960, (7, 7), (7, 7)), StageShape("dw", 960, 960, (7, 7), (7, 7), kernel=3),
             StageShape("pw", 960, 160, (7, 7), (7, 7))]
    squeeze = [StageShape("pw", 1152, 48, (1, 1), (1, 1)), StageShape("pw", 48, 1152, (1, 1), (1, 1))]
    assert block_kernel_shared_bytes(head, 2) > gpu.smem_per_block
    assert block_kernel_shared_bytes(block, 2) < gpu.smem_per_block / 2
    assert block_kernel_shared_bytes(squeeze, 4) == 0
    # Xception's exit PW->DW (1024 -> 1536, 3x3, fp32): the kernels' least plan, a one-pixel tile with
    # three ring stages of 32 x 1024 weights, passes a block's shared memory (on an H100 the library
    # found no launch plan for it, 2026-12-05); EfficientNetB0's widest PW->DW (192 -> 1152, 5x5) fits
    exit_flow = [StageShape("pw", 1024, 1536, (7, 7), (7, 7)), StageShape("dw", 1536, 1536, (7, 7), (7, 7), kernel=3)]
    assert block_kernel_shared_bytes(exit_flow, 4) > gpu.smem_per_block
    assert block_kernel_shared_bytes([StageShape("pw", 192, 1152, (7, 7), (7, 7)),
                                      StageShape("dw", 1152, 1152, (7, 7), (7, 7), kernel=5)], 4) < gpu.smem_per_block
    assert block_kernel_shared_bytes([StageShape("dw", 64, 64, (7, 7), (7, 7), kernel=3),
                                      StageShape("pw", 64, 4000, (7, 7), (7, 7))], 4) is None  # 4000 > 16 slices of 192
    device = Device(gpu, CostConstants(), "fp16", 32)
    tiling = Tiling(tile_h=1, tile_w=1, tile_f=16)
    assert fused_cost(device, head, tiling) is None
    assert fused_cost(device, block, tiling) is not None
    # the same tiling on a GPU the block kernels do not run on (a .cfg without a compute capability,
    # with less shared memory): the older model alone decides, and takes it
    seed = resolve_gpu(str(_cfg("gtx1660")))
    assert fused_cost(Device(seed, CostConstants(), "fp16", 32), head, tiling) is not None
    # what the planner fuses on an H100 fits
    from planner.plan import stage_shapes

    dag = Dag.load(seed_dag_path("mob_v2"))
    for dtype, elem in (("fp32", 4), ("fp16", 2)):
        plan = make_plan(dag, gpu, batch=32, dtype=dtype)
        assert plan.groups
        for group in plan.groups:
            assert block_kernel_shared_bytes(stage_shapes(dag, group.candidate), elem) <= gpu.smem_per_block
