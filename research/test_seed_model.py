"""The re-implemented seed planner (research/seed_model.py) against the paper's own outputs.

The reference is what the paper's FusePlanner printed for 4 models x 3 GPUs
(fixtures/seed_repo/planner_outputs) and the golden numbers of seed_repo_notes.md §3.5.
Every printed pair and layer is compared; the ones we do not reproduce are listed in
KNOWN_DEVIATIONS with the reason, so any change in either direction fails a test.
"""

from __future__ import annotations

import dataclasses

import pytest

from extractor.dag import Dag
from fcm_core.errors import FcmError
from research.seed_model import (
    CORRECTED,
    PAPER,
    PATTERNS,
    Limits,
    PairEstimate,
    Quirks,
    candidate_pairs,
    decide,
    estimate_dw,
    filter_tile_sizes,
    paper_plan,
    parse_planner_output,
    read_seed_cfg,
    tile_count,
)
from tests.support.fixtures import SEED, seed_dag_path

MODELS = ("mob_v1", "mob_v2", "xce_r", "gprox_3")
GPUS = ("gtx1660", "orin", "rtxa4000")
SECTIONS = PATTERNS + ("not_fused",)

#: (model, gpu, section, key) -> (our tile, the paper's tile, why they differ)
KNOWN_DEVIATIONS = {
    ("mob_v2", "rtxa4000", "dwpw", (26, 27)): (
        (16, 6, 12),
        (8, 12, 12),
        "Both fuse the pair, with different tiles. By the §3.2 DW->PW formula the paper's tile costs "
        "464832 accesses and ours 398400. Ours is reached from 16 filters x 6x6, which has "
        "F_t*N_t = 4*25 = 100 tiles for 96 SMs (the paper accepts 100 tiles elsewhere on this GPU, "
        "e.g. mob_v1 2-3 at 32 filters x 12x24), and its footprint is smaller than the paper's own "
        "tile's in every term but the weight tile (3072 vs 1536 elements). No tile-count or memory "
        "rule consistent with the other 563 pairs rejects it.",
    ),
}


@pytest.fixture(scope="module")
def dags():
    return {model: Dag.load(seed_dag_path(model)) for model in MODELS}


@pytest.fixture(scope="module")
def cfgs():
    return {gpu: read_seed_cfg(SEED / "hw_configs" / f"{gpu}.cfg") for gpu in GPUS}


@pytest.fixture(scope="module")
def plans(dags, cfgs):
    return {(m, g): paper_plan(dags[m], cfgs[g]) for m in MODELS for g in GPUS}


def mismatches(plan: dict, printed: dict) -> dict:
    """{(section, key): (ours, paper's)} for every fused pair or not-fused layer that differs."""
    found = {}
    for section in SECTIONS:
        for key in set(plan[section]) | set(printed[section]):
            ours, theirs = plan[section].get(key), printed[section].get(key)
            if ours != theirs:
                found[(section, key)] = (ours, theirs)
    return found


# --- inputs ------------------------------------------------------------------------------------


def test_read_seed_cfg(cfgs):
    assert cfgs["gtx1660"] == {"sms": 22, "l1": 96, "shmem": 64, "warp_size": 32}
    assert cfgs["orin"] == {"sms": 16, "l1": 192, "shmem": 164, "warp_size": 32}
    assert cfgs["rtxa4000"] == {"sms": 96, "l1": 128, "shmem": 100, "warp_size": 32}


@pytest.mark.parametrize(
    "text, words",
    [
        ("SMs::22\nL1 96\nshmem::64\n", "line 2: expected KEY::VALUE"),
        ("SMs::22\nL1::96KB\nshmem::64\n", "line 2: L1 must be a positive integer"),
        ("SMs::0\nL1::96\nshmem::64\n", "line 1: SMs must be a positive integer"),
        ("SMs::22\nL1::96\n", "missing key(s): shmem"),
        ("::5\nSMs::22\nL1::96\nshmem::64\n", "line 1: expected KEY::VALUE"),
    ],
)
def test_read_seed_cfg_rejects_malformed_files(tmp_path, text, words):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(FcmError, match=r"bad\.cfg: ") as caught:
        read_seed_cfg(path)
    assert words in str(caught.value)


def test_read_seed_cfg_missing_file(tmp_path):
    with pytest.raises(FcmError, match="cannot read hw config"):
        read_seed_cfg(tmp_path / "nope.cfg")


def test_parse_planner_output():
    printed = parse_planner_output(SEED / "planner_outputs" / "mob_v1__gtx1660.txt")
    assert list(printed["pwdw"]) == [(3, 5), (6, 7), (8, 10), (11, 12), (13, 15), (16, 17), (29, 30)]
    assert printed["dwpw"][(2, 3)] == (32, 24, 48)
    assert printed["pwpw"] == {}
    assert printed["not_fused"][19] == (1, 16, 16)
    assert printed["not_fused"][33] == (32, 1, 1)  # printed as "32 1.0 1.0"


def test_parse_planner_output_rejects_other_text(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("**********pwdw***********\nlayers: 3 5\ntile dims: 32 32\n")
    with pytest.raises(FcmError, match="line 3: unexpected"):
        parse_planner_output(path)


def test_candidates_follow_list_order_not_edges(dags):
    """The paper pairs the next conv in list order: siblings (xce_r 6-8) and across adds (mob_v2 10-12)."""
    xce = {kind: [(a.id, b.id) for a, b in pairs] for kind, pairs in candidate_pairs(dags["xce_r"]).items()}
    assert (6, 8) in xce["pwpw"] and (8, 11) in xce["pwdw"]
    mob_v2 = {kind: [(a.id, b.id) for a, b in pairs] for kind, pairs in candidate_pairs(dags["mob_v2"]).items()}
    assert (10, 12) in mob_v2["pwpw"]


# --- golden numbers (seed_repo_notes.md §3.5, mob_v1 on gtx1660) --------------------------------


def test_golden_layer_by_layer(plans):
    layers = plans[("mob_v1", "gtx1660")]["layers"]
    assert (layers[2].gma, layers[2].tile) == (803104, (1, 128, 128))
    assert (layers[3].gma, layers[3].tile) == (1622016, (32, 32, 64))
    assert (layers[16].gma, layers[16].tile) == (763904, (64, 8, 16))
    assert layers[17].gma == 205312


def test_golden_pairs(plans):
    pairs = plans[("mob_v1", "gtx1660")]["pairs"]
    pwdw = pairs["pwdw"][(16, 17)]
    assert (pwdw.gma, pwdw.avoided, pwdw.fused) == (787456, 181760, True)
    # The golden table's "ratio 0.1427" is the §3.2 redundant_comp; §3.4 thresholds it over avoided.
    assert pwdw.redundant_comp == pytest.approx(0.1427, abs=5e-5)
    assert pwdw.ratio == pytest.approx(pwdw.redundant_comp / 181760)
    rejected = pairs["pwdw"][(18, 19)]
    assert (rejected.avoided, rejected.fused) == (-394752, False)
    dwpw = pairs["dwpw"][(2, 3)]
    assert (dwpw.gma, dwpw.avoided, dwpw.fused) == (1239264, 1185856, True)


# --- the paper's outputs for 4 models x 3 GPUs ---------------------------------------------------


@pytest.mark.parametrize("gpu", GPUS)
@pytest.mark.parametrize("model", MODELS)
def test_reproduces_planner_output(plans, model, gpu):
    printed = parse_planner_output(SEED / "planner_outputs" / f"{model}__{gpu}.txt")
    expected = {
        (section, key): (ours, theirs)
        for (m, g, section, key), (ours, theirs, _why) in KNOWN_DEVIATIONS.items()
        if (m, g) == (model, gpu)
    }
    assert mismatches(plans[(model, gpu)], printed) == expected


def test_every_fuse_decision_is_reproduced(plans):
    """All 564 candidate pairs: fused exactly when the paper printed them (the deviation is a tile)."""
    total = 0
    for (model, gpu), plan in plans.items():
        printed = parse_planner_output(SEED / "planner_outputs" / f"{model}__{gpu}.txt")
        for kind in PATTERNS:
            for key, pair in plan["pairs"][kind].items():
                assert pair.fused == (key in printed[kind]), (model, gpu, kind, key)
                total += 1
    assert total == 564


def test_a_layer_can_be_in_pairs_of_several_kinds(plans):
    plan = plans[("mob_v1", "gtx1660")]
    assert (2, 3) in plan["dwpw"] and (3, 5) in plan["pwdw"]


# --- the defects, one at a time (docs/seed_compat.md, "Which defects matter") ---------------------

#: quirk -> fuse decisions that flip over the 12 runs when only that defect is corrected
DECISION_FLIPS = {
    "pw_stride_as_dw_stride": 0,
    "dwpw_halo_always_zero": 17,
    "dwpw_swapped_fms": 30,
    "dw_halo_not_per_channel": 0,
    "fractional_tile_counts": 35,
    "no_full_filter_tile": 1,
    "stale_tile_checks": 18,
    "dw_input_tile_never_updated": 0,
    "elements_as_bytes": 120,  # with fp32 elements (4 bytes); with int8 it changes nothing
    "redundant_comp_width_for_channels": 0,
    "halo_checks_height_only": 0,
    "paper_footprints": 9,
}


def test_decision_flips_per_defect(dags, cfgs, plans):
    assert set(DECISION_FLIPS) == {field.name for field in dataclasses.fields(Quirks)}
    for name, expected in DECISION_FLIPS.items():
        quirks = dataclasses.replace(PAPER, **{name: False})
        flips = 0
        for (model, gpu), plan in plans.items():
            other = paper_plan(dags[model], cfgs[gpu], quirks=quirks, bytes_per_element=4)
            flips += sum(
                plan["pairs"][kind][key].fused != other["pairs"][kind][key].fused
                for kind in PATTERNS
                for key in plan["pairs"][kind]
            )
        assert flips == expected, name


# --- the corrected model -----------------------------------------------------------------------


def test_corrected_tile_counts_and_filter_tiles():
    assert tile_count(112, 16, False, PAPER) == 8  # 1 + 112 // 16: one tile too many
    assert tile_count(112, 16, False, CORRECTED) == 7
    assert tile_count(113, 4, True, PAPER) == pytest.approx(28.25)  # the first tile: a fraction
    assert filter_tile_sizes(64, PAPER) == [1, 2, 4, 8, 16, 32]
    assert filter_tile_sizes(96, CORRECTED) == [1, 2, 4, 8, 16, 32, 64, 96]


def test_corrected_dw_halo_counts_every_channel(dags, cfgs):
    layer = dags["mob_v1"][2]  # chooses 64x128 tiles on the RTX A4000: one halo row per channel
    limits = Limits.from_cfg(cfgs["rtxa4000"], 1)
    paper = estimate_dw(layer, limits, PAPER)
    fixed = estimate_dw(layer, limits, dataclasses.replace(PAPER, dw_halo_not_per_channel=False))
    assert (paper.gma, fixed.gma) == (803840, 817728)  # 2*O_v = 2*224, then 2*224*32 (+ the same weights)


def test_corrected_limits_count_bytes(cfgs):
    assert Limits.from_cfg(cfgs["gtx1660"], 4) == Limits(sms=22, shmem=16384, l1=24576)


def test_zero_avoided_is_not_fused_rather_than_an_error():
    pair = PairEstimate("pwdw", 1, 2, gma=300.0, tile=(1, 4, 4), redundant_comp=0.5)
    decided = decide(pair, 100.0, 200.0)
    assert (decided.avoided, decided.fused) == (0.0, False)


def test_corrected_plan_runs_on_every_model(dags, cfgs):
    for model in MODELS:
        for gpu in GPUS:
            plan = paper_plan(dags[model], cfgs[gpu], paper_compatible=False, bytes_per_element=4)
            assert len(plan["layers"]) == sum(layer.type in ("dw", "pw") for layer in dags[model])
            for kind in PATTERNS:
                for pair in plan["pairs"][kind].values():
                    assert pair.gma is None or pair.gma > 0
