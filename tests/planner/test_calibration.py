"""Fitting the cost constants (planner/calibration.py): recovery from synthetic
measurements made by the model itself, the constants' JSON through ``CostConstants.load``, and
reading the measurements from ``fcm bench`` and ``fcm tune`` reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from extractor.dag import Dag
from ort_custom_ops.ops.schema import OP_TYPES
from planner import CostConstants, make_plan, resolve_gpu
from planner import calibration as fitting
from planner import groups

ROOT = Path(__file__).resolve().parents[2]

MODEL = "mobilenet"


def synthetic_model(true: CostConstants, overhead_us: float) -> tuple[fitting.Model, fitting.Predictor]:
    """Every group of the model's plan at batch 1 and 32, "measured" as the model predicts it with
    ``true`` plus a per-run overhead."""
    dag = Dag.load(ROOT / "converted_models" / MODEL / f"{MODEL}.dag.json")
    graph = groups.Graph(dag)
    candidates = fitting.candidates_by_convs(dag, graph)
    gpu = resolve_gpu("H200")
    plan = make_plan(dag, gpu, batch=32)
    assert plan.groups
    rows = [fitting.Measured(MODEL, batch, f"fcm{g.id}", candidates[tuple(g.candidate.convs)], 0.0, 0.0, {})
            for batch in (1, 32) for g in plan.groups]
    model = fitting.Model(MODEL, dag, graph, {}, rows)
    predictor = fitting.Predictor([model], gpu, "fp32")
    truth = predictor(true)
    for row, fused, unfused in zip(rows, truth.fused_us, truth.unfused_us):
        row.fused_us, row.unfused_us = fused + overhead_us, unfused + overhead_us
    return model, predictor


def test_fit_recovers_synthetic_measurements():
    knobs = [fitting.Knob("fused_efficiency"), fitting.Knob("library_efficiency", "dw"),
             fitting.Knob("library_efficiency", "pw"), fitting.Knob("dram_efficiency", low=0.05)]
    true = fitting.with_values(CostConstants(), knobs, [0.2, 0.15, 0.9, 0.6])
    model, predictor = synthetic_model(true, overhead_us=6.0)
    fused = np.array([r.fused_us for r in model.rows])
    unfused = np.array([r.unfused_us for r in model.rows])

    before = predictor(CostConstants())
    start_error = np.max(np.abs(np.log(before.fused_us / fused)))
    result = fitting.fit(predictor, CostConstants(), knobs)
    after = predictor(result.constants)
    fitted_fused = after.fused_us + result.overhead_us
    fitted_unfused = after.unfused_us + result.overhead_us

    assert start_error > math.log(1.5)  # the defaults are far off: there is something to recover
    # the fit rounds to 3 digits and steps by 2%, so predictions agree closely, not exactly
    assert np.max(np.abs(fitted_fused / fused - 1)) < 0.03
    assert np.max(np.abs(fitted_unfused / unfused - 1)) < 0.03
    assert result.loss < 1e-3
    assert abs(result.overhead_us - 6.0) < 1.0
    # decisions agree wherever the true times differ by more than the fit's tolerance
    clear = np.abs(np.log(fused / unfused)) > 0.06
    assert clear.sum() > len(clear) // 2
    assert np.array_equal((after.fused_us < after.unfused_us)[clear], (fused < unfused)[clear])


def test_fixed_tilings_price_like_the_planner():
    model, predictor = synthetic_model(CostConstants(), overhead_us=0.0)
    searched = predictor(CostConstants(fused_efficiency=0.3))
    fixed = predictor(CostConstants(fused_efficiency=0.3), searched.tilings)
    np.testing.assert_allclose(fixed.fused_us, searched.fused_us, rtol=1e-12)
    np.testing.assert_allclose(fixed.unfused_us, searched.unfused_us, rtol=1e-12)


def test_coordinate_descent_finds_a_bounded_minimum():
    target = np.log([0.3, 2.0])

    def objective(x):
        return float(np.sum((x - target) ** 2))

    x, value = fitting.coordinate_descent(objective, np.zeros(2), np.log([0.01, 0.01]), np.log([1.5, 1.5]))
    assert abs(x[0] - target[0]) < 0.02
    assert x[1] == pytest.approx(np.log(1.5))  # the unconstrained minimum lies outside the bounds


def test_fitted_constants_round_trip(tmp_path):
    knobs = fitting.default_knobs("fp32")
    constants = fitting.with_values(CostConstants(), knobs, [0.5 + 0.01 * i for i in range(len(knobs))])
    path = tmp_path / "constants.json"
    path.write_text(json.dumps(fitting.fitted_json(constants, knobs)))
    assert CostConstants.load(path) == constants


@pytest.mark.parametrize("name", ["h200_v4.json", "h200_staging.json"])
def test_shipped_constants_load_and_plan(name):
    path = ROOT / "planner" / "constants" / name
    if not path.exists():
        pytest.skip(f"no {name} in this checkout")
    fitted = json.loads(path.read_text())
    constants = CostConstants.load(path)
    for knob in fitting.default_knobs("fp32"):
        if knob.field in fitted:  # constants fitted before a knob existed keep its default
            assert knob.low <= knob.get(constants) <= knob.high
    plan = make_plan(Dag.load(ROOT / "converted_models" / MODEL / f"{MODEL}.dag.json"), resolve_gpu("H200"), 32,
                     constants=constants)
    assert plan.to_json()["cost_constants"] == constants.to_json()


def plan_groups() -> list[dict]:
    plan = json.loads((ROOT / "converted_models" / MODEL / f"{MODEL}.plan.json").read_text())
    return plan["groups"]


def test_tune_reports_give_the_best_plan_and_the_subgraph_at_each_batch(tmp_path):
    planned = plan_groups()
    report = {"groups": {}}
    for group in planned:
        node = f"fcm{group['id']}_{group['kind']}"
        report["groups"][node] = {"op": OP_TYPES[group["kind"]], "keep_fused": True, "batches": {
            "1": {"fused_ms": 0.02, "own_plan_ms": 0.03, "unfused_ms": 0.025},
            "32": {"fused_ms": 0.1, "own_plan_ms": 0.1, "unfused_ms": 0.05}}}
    first = f"fcm{planned[0]['id']}_{planned[0]['kind']}"
    report["groups"][first]["batches"]["32"] = {"error": "out of memory"}  # an untimed batch is left out
    (tmp_path / f"{MODEL}.tune.json").write_text(json.dumps(report))

    (model,) = fitting.load_models(tmp_path, ROOT / "converted_models")
    assert model.name == MODEL
    assert len(model.rows) == 2 * len(planned) - 1
    by_key = {(r.node, r.batch): r for r in model.rows}
    assert (first, 32) not in by_key
    row = by_key[(first, 1)]
    assert (row.fused_us, row.unfused_us) == pytest.approx((20.0, 25.0))  # the best plan, not the kernels' own
    assert row.candidate.convs == planned[0]["layers"]
    assert not row.stored and fitting.reproduction([model]) == []  # a tune report stores no prediction


def test_tune_report_nodes_must_be_the_plans_groups(tmp_path):
    group = plan_groups()[0]
    node = f"fcm{group['id']}_{group['kind']}"
    path = tmp_path / f"{MODEL}.tune.json"
    path.write_text(json.dumps({"groups": {node: {"op": "FusedPwDwPw", "batches": {}}}}))
    with pytest.raises(ValueError, match="not the plan's"):
        fitting.load_models(path, ROOT / "converted_models")
    path.write_text(json.dumps({"groups": {"fcm999_dwpw": {"op": "FusedDwPw", "batches": {}}}}))
    with pytest.raises(ValueError, match="not a group of the plan"):
        fitting.load_models(path, ROOT / "converted_models")


def test_bench_reports_still_read_and_a_model_is_measured_once(tmp_path):
    group = plan_groups()[0]
    bench = tmp_path / f"bench_{MODEL}" / "bench.json"
    bench.parent.mkdir()
    bench.write_text(json.dumps({"groups": {"1": [
        {"node": f"fcm{group['id']}_{group['kind']}", "fused_ms": 0.02, "unfused_ms": 0.03,
         "planner": {"layers": group["layers"], "plan_batch": 32, "time_us": 1.0, "unfused_time_us": 2.0}},
        {"node": "fcm_unplanned", "fused_ms": 0.02, "unfused_ms": 0.03}]}}))
    (model,) = fitting.load_models(tmp_path, ROOT / "converted_models")
    assert [(r.batch, r.fused_us, r.unfused_us) for r in model.rows] == [(1, pytest.approx(20.0), pytest.approx(30.0))]
    assert model.rows[0].stored["time_us"] == 1.0

    (tmp_path / f"{MODEL}.tune.json").write_text(json.dumps({"groups": {}}))
    with pytest.raises(ValueError, match="measured twice"):
        fitting.load_models(tmp_path, ROOT / "converted_models")
