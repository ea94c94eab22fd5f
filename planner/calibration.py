"""Fits the planner's cost constants to measured group times, and reports how well they predict
(``python -m planner.calibration``, or ``benchmarks/fit_cost_constants.py``).

In: per model, either an `fcm bench` result (``bench_<model>/bench.json``: per fused group and batch
size, the fused node's measured time under the kernels' own launch plan, its unfused subgraph's,
and the planner's prediction for the plan's batch size) or an `fcm tune` report
(``<model>.tune.json``: per fused node and batch size, the best timed launch plan's time and the
subgraph's; nodes are matched to the plan's groups by name); and the converted models
(``<models>/<model>/<model>.{dag,plan}.json``, the plans the measured models were converted with).
Out: the fitted :class:`~planner.costs.CostConstants` fields as a partial JSON object
(``fcm plan --constants FILE``), and a markdown report (stdout, and ``--report``):

- which measurements went in, and whether the planner's own cost functions, with the plan's GPU,
  batch, dtype and constants, reproduce the predictions stored in bench files;
- for the default and the fitted constants on ``--gpu``, per batch size: the Spearman rank
  correlation of predicted and measured times (fused kernel, unfused subgraph, speedup), the median
  measured/predicted ratio, and how often the predicted decision (fused faster than its subgraph)
  matches the measured one;
- the same decisions under leave-one-model-out cross-validation (fit on the other models).

Predictions are the planner's: each group's candidate is rebuilt from the DAG and priced by
``planner.plan`` (the best tiling under the constants being evaluated). The fit minimises the
squared log error of predicted against measured times, fused and subgraph, by coordinate descent
over log-spaced steps; while it searches, each group keeps the tiling the planner chose for the
constants of the previous round (the tiling search is the slow part), and rounds repeat until the
planner's choice of tilings no longer changes.

Each micro-benchmark times one ONNX Runtime run from the host, which adds a fixed overhead per run
that no kernel inside a whole model pays; it is fitted as one number added to both sides of every
measurement (it cancels out of the decisions and the time rank correlations) and is not a
constant of the model.

    python benchmarks/fit_cost_constants.py benchmarks/2026-11-21-h200-cuda-v4 --gpu H200 \\
        -o planner/constants/h200_v4.json --report benchmarks/2026-11-21-h200-cuda-v4/cost_constants_fit.md
    python benchmarks/fit_cost_constants.py benchmarks/2026-11-22-h200-staging/tune --gpu H200 \\
        -o planner/constants/h200_staging.json --report benchmarks/2026-11-22-h200-staging/cost_constants_fit.md
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extractor.dag import Dag
from fcm_core.vocabulary import KINDS

from . import costs, groups
from . import plan as planning
from .gpus import GpuSpec, resolve

ROOT = Path(__file__).resolve().parents[1]
OP_TYPES = {name: kind.op_type("fp32") for name, kind in KINDS.items()}


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (what Spearman's coefficient takes)."""
    order = np.argsort(values, kind="stable")
    result = np.empty(len(values))
    result[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        tied = values == value
        result[tied] = result[tied].mean()
    return result


def spearman(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


# --- the measurements ----------------------------------------------------------------------------

@dataclass
class Measured:
    """One fused group at one batch size: measured times and the candidate the planner prices."""

    model: str
    batch: int
    node: str
    candidate: groups.Candidate
    fused_us: float
    unfused_us: float
    stored: dict  # the bench row's "planner": prediction at plan_batch


@dataclass
class Model:
    name: str
    dag: Dag
    graph: groups.Graph
    plan: dict
    rows: list[Measured]

    @property
    def has_predictions(self) -> bool:
        """Rows from ``fcm bench``, each carrying the planner's stored prediction."""
        return bool(self.rows) and all(r.stored for r in self.rows)


def candidates_by_convs(dag: Dag, graph: groups.Graph) -> dict[tuple[int, ...], groups.Candidate]:
    """Every fusable window of the DAG, by its convolutions (what a plan's group lists as layers)."""
    _, stages = groups.build_stages(dag)
    found = {}
    for chain in groups.chains(stages, groups.link(graph, stages)):
        for _, candidate in groups.windows(graph, stages, chain):
            if not isinstance(candidate, str):
                found[tuple(candidate.convs)] = candidate
    return found


def measurement_files(sources: list[Path]) -> dict[str, Path]:
    """Model name -> its measurement file, from files and folders (a folder gives its
    ``bench_<model>/bench.json`` and ``<model>.tune.json`` files)."""
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(source.glob("bench_*/bench.json")) + sorted(source.glob("*.tune.json"))
        elif source.is_file():
            files.append(source)
        else:
            raise FileNotFoundError(source)
    found: dict[str, Path] = {}
    for path in files:
        name = path.name.removesuffix(".tune.json") if path.name.endswith(".tune.json") else path.parent.name.removeprefix("bench_")
        if name in found:
            raise ValueError(f"{name} is measured twice: {found[name]} and {path}")
        found[name] = path
    return found


def bench_rows(name: str, report: dict, plan: dict, candidates: dict) -> list[Measured]:
    """The group rows of an ``fcm bench`` report that carry the planner's prediction."""
    rows = []
    for batch, group_rows in report.get("groups", {}).items():
        for row in group_rows:
            stored = row.get("planner")
            if "fused_ms" not in row or not stored:
                continue
            candidate = candidates[tuple(stored["layers"])]
            rows.append(Measured(name, int(batch), row["node"], candidate, 1e3 * row["fused_ms"], 1e3 * row["unfused_ms"],
                                 stored))
    return rows


def tune_rows(name: str, report: dict, plan: dict, candidates: dict) -> list[Measured]:
    """The groups of an ``fcm tune`` report at each batch size: the fused time is the best timed
    launch plan (what a tuned model runs), the subgraph's its unfused time. Fused nodes are named
    ``fcm<id>_<kind>`` after the plan's groups (as ``fcm bench`` matches them); the report stores
    no prediction."""
    planned = {f"fcm{g['id']}_{g['kind']}": g for g in plan.get("groups", [])}
    rows = []
    for node, group in report.get("groups", {}).items():
        if node not in planned:
            raise ValueError(f"{name}: fused node {node} is not a group of the plan")
        if group.get("op") != OP_TYPES[planned[node]["kind"]]:
            raise ValueError(f"{name}: fused node {node} runs {group.get('op')}, not the plan's {planned[node]['kind']}")
        candidate = candidates[tuple(planned[node]["layers"])]
        for batch, entry in group.get("batches", {}).items():
            if "error" in entry or "fused_ms" not in entry or "unfused_ms" not in entry:
                continue
            rows.append(Measured(name, int(batch), node, candidate, 1e3 * entry["fused_ms"], 1e3 * entry["unfused_ms"], {}))
    return rows


def load_models(sources: Path | list[Path], models_root: Path) -> list[Model]:
    """The measured models: ``sources`` are folders or files of ``fcm bench`` or ``fcm tune``
    reports (see :func:`measurement_files`)."""
    models = []
    for name, path in sorted(measurement_files(sources if isinstance(sources, list) else [sources]).items()):
        dag = Dag.load(models_root / name / f"{name}.dag.json")
        plan = json.loads((models_root / name / f"{name}.plan.json").read_text())
        graph = groups.Graph(dag)
        candidates = candidates_by_convs(dag, graph)
        read = tune_rows if path.name.endswith(".tune.json") else bench_rows
        models.append(Model(name, dag, graph, plan, read(name, json.loads(path.read_text()), plan, candidates)))
    return models


# --- the planner's predictions -------------------------------------------------------------------

@dataclass
class Prediction:
    fused_us: np.ndarray
    unfused_us: np.ndarray
    tilings: list[costs.Tiling]


class Predictor:
    """The planner's predicted fused and unfused-subgraph times of measured groups."""

    def __init__(self, models: list[Model], gpu: GpuSpec, dtype: str, rows: list[Measured] | None = None,
                 batch: int | None = None):
        """``batch``: predict every row at this batch size (the plan's) instead of its own."""
        self.models = {m.name: m for m in models}
        self.rows = rows if rows is not None else [r for m in models for r in m.rows]
        self.gpu, self.dtype, self.batch = gpu, dtype, batch
        self.by_device: dict[tuple[str, int], list[int]] = {}
        for index, row in enumerate(self.rows):
            self.by_device.setdefault((row.model, batch or row.batch), []).append(index)

    def __call__(self, constants: costs.CostConstants, tilings: list[costs.Tiling] | None = None) -> Prediction:
        """With ``tilings`` None, each group's best tiling (as the planner prices it); else those."""
        fused = np.zeros(len(self.rows))
        unfused = np.zeros(len(self.rows))
        chosen: list[costs.Tiling] = [None] * len(self.rows)  # type: ignore[list-item]
        for (name, batch), indices in self.by_device.items():
            model = self.models[name]
            device = planning.make_device(model.dag, self.gpu, batch, self.dtype, constants)
            entries = {i: planning.entry_cost(device, model.dag, model.graph, model.dag[i])
                       for index in indices for i in self.rows[index].candidate.entries}
            for index in indices:
                candidate = self.rows[index].candidate
                if tilings is None:
                    group = planning.price(device, model.dag, candidate, entries)
                    if group is None:
                        raise ValueError(f"{name} {self.rows[index].node}: no tiling fits {self.gpu.name}")
                    fused_time, unfused_time, chosen[index] = group.fused.time, group.unfused.time, group.tiling
                else:
                    fused_time = fused_with_tiling(device, model.dag, candidate, tilings[index])
                    unfused_time = sum((entries[i] for i in candidate.entries), costs.ZERO).time
                    chosen[index] = tilings[index]
                fused[index], unfused[index] = 1e6 * fused_time, 1e6 * unfused_time
        return Prediction(fused, unfused, chosen)


def fused_with_tiling(device: costs.Device, dag: Dag, candidate: groups.Candidate, tiling: costs.Tiling) -> float:
    """A group's fused time for a given tiling, with the arguments ``planner.plan`` prices it with."""
    shapes = planning.stage_shapes(dag, candidate)
    side = shapes[0].in_channels if candidate.stages[0].se_scale is not None else 0.0
    estimate = costs.fused_cost(device, shapes, tiling, side_inputs=side, residual=candidate.residual_add is not None)
    return estimate.cost.time


def reproduction(models: list[Model]) -> list[tuple[Model, float, float]]:
    """Per model with stored predictions (``fcm bench`` rows): (model, largest relative difference
    of the recomputed fused and unfused predictions from those stored), under the plan's own settings."""
    out = []
    for model in models:
        if not model.has_predictions:
            continue
        plan = model.plan
        spec = plan["gpu"]
        gpu = GpuSpec(**{**spec, "defaulted": tuple(spec.get("defaulted", ()))})
        constants = costs.CostConstants.from_json(plan["cost_constants"])
        predicted = Predictor([model], gpu, plan["dtype"], batch=plan["batch"])(constants)
        stored_fused = np.array([r.stored["time_us"] for r in model.rows])
        stored_unfused = np.array([r.stored["unfused_time_us"] for r in model.rows])
        out.append((model, float(np.max(np.abs(predicted.fused_us / stored_fused - 1))),
                    float(np.max(np.abs(predicted.unfused_us / stored_unfused - 1)))))
    return out


# --- the fit -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Knob:
    """One fitted number of CostConstants: a field, or one key of a dict field."""

    field: str
    key: str | None = None
    low: float = 0.01
    high: float = 1.5

    @property
    def label(self) -> str:
        return f"{self.field}[{self.key}]" if self.key else self.field

    def get(self, constants: costs.CostConstants) -> float:
        value = getattr(constants, self.field)
        return value[self.key] if self.key else value


def default_knobs(dtype: str) -> list[Knob]:
    pointwise = "pw_cuda" if dtype == "fp32" else "pw_tensor"
    return [
        Knob("fused_efficiency"),
        Knob("dram_efficiency", low=0.05),
        Knob("compute_efficiency", "dw"),
        Knob("compute_efficiency", pointwise),
        Knob("library_efficiency", "dw"),
        Knob("library_efficiency", "pw"),
        Knob("library_efficiency", "elementwise"),
        Knob("min_kernel_time", low=1e-7, high=1e-4),
        Knob("blocks_per_sm_to_saturate", low=0.25, high=64.0),
    ]


def with_values(constants: costs.CostConstants, knobs: list[Knob], values) -> costs.CostConstants:
    data = constants.to_json()
    for knob, value in zip(knobs, values):
        if knob.key:
            data[knob.field] = {**data[knob.field], knob.key: float(value)}
        else:
            data[knob.field] = float(value)
    return costs.CostConstants.from_json(data)


def fitted_json(constants: costs.CostConstants, knobs: list[Knob]) -> dict:
    """The fitted fields only, as a partial CostConstants object."""
    out: dict = {}
    for knob in knobs:
        if knob.key:
            out.setdefault(knob.field, {})[knob.key] = knob.get(constants)
        else:
            out[knob.field] = knob.get(constants)
    return out


def round_significant(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}")


def best_overhead(prediction: Prediction, fused: np.ndarray, unfused: np.ndarray) -> tuple[float, float]:
    """(overhead in us, loss): the per-run overhead added to both predictions that fits best."""
    # below the fastest measurement, so that every prediction stays positive
    grid = np.linspace(0.0, min(fused.min(), unfused.min()), 100, endpoint=False)[:, None]
    losses = (np.mean((np.log(prediction.fused_us + grid) - np.log(fused)) ** 2, axis=1)
              + np.mean((np.log(prediction.unfused_us + grid) - np.log(unfused)) ** 2, axis=1)) / 2
    best = int(np.argmin(losses))
    return float(grid[best, 0]), float(losses[best])


def loss_of(prediction: Prediction, rows: list[Measured], overhead: bool) -> tuple[float, float]:
    fused = np.array([r.fused_us for r in rows])
    unfused = np.array([r.unfused_us for r in rows])
    if overhead:
        return best_overhead(prediction, fused, unfused)
    return 0.0, float((np.mean((np.log(prediction.fused_us / fused)) ** 2)
                       + np.mean((np.log(prediction.unfused_us / unfused)) ** 2)) / 2)


def coordinate_descent(objective, x: np.ndarray, low: np.ndarray, high: np.ndarray, step: float = math.log(2.0),
                       min_step: float = math.log(1.02)) -> tuple[np.ndarray, float]:
    """Minimise ``objective`` over log-values ``x`` in [low, high]: each coordinate in turn tries
    steps of one and two ``step`` either way and keeps any improvement; ``step`` halves when a
    whole sweep finds none."""
    x = np.clip(x, low, high)
    best = objective(x)
    while step >= min_step:
        improved = False
        for i in range(len(x)):
            for delta in (-2 * step, -step, step, 2 * step):
                trial = x.copy()
                trial[i] = np.clip(x[i] + delta, low[i], high[i])
                if trial[i] == x[i]:
                    continue
                value = objective(trial)
                if value < best - 1e-12:
                    x, best, improved = trial, value, True
        if not improved:
            step /= 2
    return x, best


@dataclass
class Fit:
    constants: costs.CostConstants
    overhead_us: float
    loss: float
    best_round: int  # the round (of re-searched tilings) that gave it


def fit(predictor: Predictor, start: costs.CostConstants, knobs: list[Knob], overhead: bool = True,
        max_rounds: int = 5) -> Fit:
    """Constants that minimise the squared log error of the planner's predictions over
    ``predictor``'s rows (see the module's docstring); the knobs' values rounded to 3 digits."""
    low = np.log([k.low for k in knobs])
    high = np.log([k.high for k in knobs])
    x = np.log([max(k.get(start), k.low) for k in knobs])  # a term off (0) starts at its lower bound
    searched = predictor(start)
    tilings = searched.tilings
    # the fixed-tiling path must price exactly as the planner does
    if not np.allclose(predictor(start, tilings).fused_us, searched.fused_us, rtol=1e-9):
        raise RuntimeError("fused_with_tiling no longer prices groups as planner.plan does")
    best: Fit | None = None
    for round_number in range(1, max_rounds + 1):
        def objective(values: np.ndarray) -> float:
            return loss_of(predictor(with_values(start, knobs, np.exp(values)), tilings), predictor.rows, overhead)[1]

        x, _ = coordinate_descent(objective, x, low, high)
        constants = with_values(start, knobs, [round_significant(v) for v in np.exp(x)])
        searched = predictor(constants)  # the planner's own tilings for these constants
        extra, value = loss_of(searched, predictor.rows, overhead)
        if best is None or value < best.loss:
            best = Fit(constants, extra, value, round_number)
        if searched.tilings == tilings:
            break
        tilings = searched.tilings
    return best  # type: ignore[return-value]  # max_rounds >= 1


# --- scores --------------------------------------------------------------------------------------

@dataclass
class Scores:
    n: int
    rank_fused: float
    rank_unfused: float
    rank_speedup: float
    ratio_fused: float  # median measured / predicted
    ratio_unfused: float
    right: int  # predicted decision (fuse when predicted faster) matches the measured one
    fused_slower: int  # predicted faster fused, measured slower
    measured_faster: int  # groups measured faster fused (always fusing is right this often)

    @property
    def accuracy(self) -> float:
        return self.right / self.n


def score(rows: list[Measured], fused_pred: np.ndarray, unfused_pred: np.ndarray, overhead_us: float = 0.0) -> Scores:
    fused = np.array([r.fused_us for r in rows])
    unfused = np.array([r.unfused_us for r in rows])
    pf, pu = fused_pred + overhead_us, unfused_pred + overhead_us
    predict_fuse = fused_pred < unfused_pred
    measured_fuse = fused < unfused
    return Scores(len(rows), spearman(pf, fused), spearman(pu, unfused), spearman(pu / pf, unfused / fused),
                  float(np.median(fused / pf)), float(np.median(unfused / pu)), int(np.sum(predict_fuse == measured_fuse)),
                  int(np.sum(predict_fuse & ~measured_fuse)), int(np.sum(measured_fuse)))


def select(rows: list[Measured], values: np.ndarray, keep) -> tuple[list[Measured], np.ndarray]:
    mask = np.array([bool(keep(r)) for r in rows])
    return [r for r, k in zip(rows, mask) if k], values[mask]


def score_rows(label: str, rows: list[Measured], fused: np.ndarray, unfused: np.ndarray, overhead_us: float) -> list[str]:
    lines = []
    for batch in sorted({r.batch for r in rows}) + [None]:
        keep = (lambda r, b=batch: b is None or r.batch == b)
        subset, f = select(rows, fused, keep)
        _, u = select(rows, unfused, keep)
        s = score(subset, f, u, overhead_us)
        lines.append(f"| {label} | {batch or 'both'} | {s.n} | {s.rank_fused:.2f} | {s.rank_unfused:.2f} | {s.rank_speedup:.2f} | "
                     f"{s.ratio_fused:.2f}x | {s.ratio_unfused:.2f}x | {s.right} ({100 * s.accuracy:.0f}%) | "
                     f"{s.fused_slower} | {s.measured_faster} ({100 * s.measured_faster / s.n:.0f}%) |")
    return lines


TARGET_RANK = 0.9  # the performance issue's targets
TARGET_RIGHT = 0.95

SCORE_HEADER = ["| constants | batch | groups | rank corr. fused | rank corr. subgraph | rank corr. speedup | "
                "measured / predicted, fused | measured / predicted, subgraph | decision right | "
                "predicted faster fused, measured slower | measured faster fused |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]


# --- the report ----------------------------------------------------------------------------------

def report(models: list[Model], gpu: GpuSpec, dtype: str, knobs: list[Knob], command: str, overhead: bool = True,
           compare: dict[str, costs.CostConstants] | None = None) -> tuple[str, dict]:
    """(markdown, fitted partial constants JSON). ``compare``: other constants (by label) scored on
    the same measurements, unfitted (each with its best per-run overhead)."""
    rows = [r for m in models for r in m.rows]
    predictor = Predictor(models, gpu, dtype)
    default = costs.CostConstants()
    lines = [f"# Cost constants fitted to measured group times ({gpu.name}, {dtype})", "", f"Command: `{command}`", ""]

    lines += ["## The measurements", "",
              "`fcm bench` rows: the fused node's time under the kernels' own launch plan. `fcm tune` rows: the best timed "
              "launch plan (what a tuned model runs). Both against the group's unfused subgraph on ONNX Runtime's CUDA "
              "provider, each as a standalone micro-benchmark.", "",
              "| model | source | groups | batch sizes | measured faster fused | plan | DAG as planned |", "|---|---|---|---|---|---|---|"]
    for model in models:
        plan = model.plan
        same_dag = plan["dag"]["sha256"] == planning.dag_digest(model.dag)
        defaults = costs.CostConstants.from_json(plan["cost_constants"]) == default
        source = "bench" if model.has_predictions else "tune"
        lines.append(f"| {model.name} | {source} | {len({r.node for r in model.rows})} | "
                     f"{', '.join(str(b) for b in sorted({r.batch for r in model.rows}))} | "
                     f"{sum(r.fused_us < r.unfused_us for r in model.rows)} of {len(model.rows)} | "
                     f"{plan['gpu']['name']}, batch {plan['batch']}, {plan['dtype']}"
                     f"{', default constants' if defaults else ', own constants'} | {'yes' if same_dag else 'no'} |")
    lines.append("")
    reproduced = reproduction(models)
    if reproduced:
        lines += ["## The planner's cost functions reproduce the stored predictions", "",
                  "Each group's candidate rebuilt from the DAG and priced by `planner.plan` with its plan's GPU, batch, dtype "
                  "and constants, against `planner.time_us` / `planner.unfused_time_us` of the bench rows (stored to 3 "
                  "decimals):", "",
                  "| model | rows | max rel. diff. fused | max rel. diff. subgraph |", "|---|---|---|---|"]
        for model, fused_diff, unfused_diff in reproduced:
            lines.append(f"| {model.name} | {len(model.rows)} | {fused_diff:.1e} | {unfused_diff:.1e} |")
        lines.append("")

    start = predictor(default)
    default_overhead, default_loss = loss_of(start, rows, overhead)
    print(f"fitting {len(knobs)} constants to {len(rows)} measurements", file=sys.stderr)
    result = fit(predictor, default, knobs, overhead)
    fitted = predictor(result.constants)
    fastest = min(min(r.fused_us, r.unfused_us) for r in rows)
    at_bound = " (at its bound, the fastest measurement)" if overhead and result.overhead_us >= 0.98 * fastest else ""
    lines += [f"## Default and fitted constants on {gpu.name}, every group at its measured batch size", "",
              f"Fitted over {len(rows)} measurements ({len({(r.model, r.node) for r in rows})} groups of {len(models)} models): "
              f"squared log error {default_loss:.3f} with the defaults, {result.loss:.3f} fitted "
              f"(best at round {result.best_round} of re-searching the tilings). Per-run overhead of the micro-benchmark "
              f"{'fitted' if overhead else 'not fitted'}: {default_overhead:.1f} us with the defaults, "
              f"{result.overhead_us:.1f} us fitted{at_bound}; ratios and the speedup's rank correlation include it, "
              "\"as planned\" is the defaults without it (what `planner_calibration.py` compares). Only the "
              "products of an efficiency and `dram_efficiency` (memory-bound kernels) are pinned down by times, so single "
              "values trade against each other: compare the folds below.", "",
              "Decision: fuse when the predicted fused time is below the predicted subgraph time; right when the measured "
              "times agree. \"measured faster fused\" is how often always fusing would be right.", ""]
    lines += SCORE_HEADER
    lines += score_rows("defaults, as planned", rows, start.fused_us, start.unfused_us, 0.0)
    if overhead:
        lines += score_rows("defaults", rows, start.fused_us, start.unfused_us, default_overhead)
    for label, constants in (compare or {}).items():
        other = predictor(constants)
        lines += score_rows(label, rows, other.fused_us, other.unfused_us, loss_of(other, rows, overhead)[0])
    lines += score_rows("fitted", rows, fitted.fused_us, fitted.unfused_us, result.overhead_us)
    lines.append("")

    lines += ["## Fitted constants", "", "| constant | default | fitted | bounds |", "|---|---|---|---|"]
    for knob in knobs:
        value = knob.get(result.constants)
        bound = " (bound)" if value <= knob.low * 1.0001 or value >= knob.high * 0.9999 else ""
        lines.append(f"| `{knob.label}` | {knob.get(default):.3g} | {value:.3g}{bound} | {knob.low:.3g} to {knob.high:.3g} |")
    lines.append("")

    lines += ["## Leave-one-model-out cross-validation", "",
              "Constants fitted on the other models (from the defaults), then the held-out model's groups predicted with them.", "",
              "| held out | measurements | decision right, defaults | decision right, cross-validated | "
              "predicted faster fused, measured slower | " + " | ".join(f"`{k.label}`" for k in knobs) + " |",
              "|---|---|---|---|---|" + "---|" * len(knobs)]
    held_fused = np.zeros(len(rows))
    held_unfused = np.zeros(len(rows))
    held_overhead = np.zeros(len(rows))
    for model in models:
        train = [r for r in rows if r.model != model.name]
        test_index = [i for i, r in enumerate(rows) if r.model == model.name]
        print(f"fitting without {model.name}", file=sys.stderr)
        fold = fit(Predictor(models, gpu, dtype, rows=train), default, knobs, overhead)
        held = Predictor(models, gpu, dtype, rows=model.rows)(fold.constants)
        held_fused[test_index], held_unfused[test_index] = held.fused_us, held.unfused_us
        held_overhead[test_index] = fold.overhead_us
        base = Predictor(models, gpu, dtype, rows=model.rows)(default)
        before = score(model.rows, base.fused_us, base.unfused_us)
        after = score(model.rows, held.fused_us, held.unfused_us, fold.overhead_us)
        lines.append(f"| {model.name} | {after.n} | {before.right} ({100 * before.accuracy:.0f}%) | "
                     f"{after.right} ({100 * after.accuracy:.0f}%) | {after.fused_slower} | "
                     + " | ".join(f"{k.get(fold.constants):.3g}" for k in knobs) + " |")
    lines += ["", "Pooled over the held-out models (each group predicted by the fit that did not see its model; the "
              "overhead is each fold's):", ""]
    lines += SCORE_HEADER
    # the folds' overheads differ: add each to its own rows, then score with none
    lines += score_rows("cross-validated", rows, held_fused + held_overhead, held_unfused + held_overhead, 0.0)
    lines += ["", "Decisions by kind (fitted on every model, and cross-validated):", "",
              "| kind | batch | groups | decision right, fitted | decision right, cross-validated | measured faster fused |",
              "|---|---|---|---|---|---|"]
    for kind in sorted({r.candidate.kind for r in rows}):
        for batch in sorted({r.batch for r in rows}):
            keep = np.array([r.candidate.kind == kind and r.batch == batch for r in rows])
            measured = np.array([r.fused_us < r.unfused_us for r in rows])[keep]
            in_sample = (fitted.fused_us < fitted.unfused_us)[keep] == measured
            held_out = (held_fused < held_unfused)[keep] == measured
            lines.append(f"| {kind} | {batch} | {keep.sum()} | {in_sample.sum()} | {held_out.sum()} | {measured.sum()} |")
    lines += ["", "## Against the targets", "",
              f"Targets: rank correlation at least {TARGET_RANK}, the decision right for at least {100 * TARGET_RIGHT:.0f}% of "
              "groups, and no group predicted faster fused that measured slower. Only the groups of the plans that were "
              "converted are measured, so layers those plans leave unfused are not part of this fit.", ""]
    for batch in sorted({r.batch for r in rows}):
        subset, f = select(rows, held_fused + held_overhead, lambda r, b=batch: r.batch == b)
        _, u = select(rows, held_unfused + held_overhead, lambda r, b=batch: r.batch == b)
        lines.append(f"- batch {batch}, cross-validated: " + against_targets(score(subset, f, u)))
    lines.append("")
    return "\n".join(lines), fitted_json(result.constants, knobs)



def against_targets(s: Scores) -> str:
    def mark(ok: bool) -> str:
        return "met" if ok else "not met"

    return (f"rank corr. fused {s.rank_fused:.2f} ({mark(s.rank_fused >= TARGET_RANK)}), subgraph {s.rank_unfused:.2f} "
            f"({mark(s.rank_unfused >= TARGET_RANK)}); decision right {100 * s.accuracy:.0f}% ({mark(s.accuracy >= TARGET_RIGHT)}; "
            f"never fusing: {100 * (1 - s.measured_faster / s.n):.0f}%); {s.fused_slower} fused though slower "
            f"({mark(s.fused_slower == 0)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("measurements", type=Path, nargs="+",
                        help="fcm bench reports (bench_<model>/bench.json) or fcm tune reports (<model>.tune.json), "
                             "or folders holding either")
    parser.add_argument("--models", type=Path, default=ROOT / "converted_models",
                        help="where <model>/<model>.dag.json and .plan.json are (default: converted_models)")
    parser.add_argument("--gpu", default="H200", help="the GPU the benchmarks ran on (default: H200)")
    parser.add_argument("--dtype", help="the planner's dtype (default: the plans')")
    parser.add_argument("--no-overhead", action="store_true", help="fit no per-run overhead of the micro-benchmarks")
    parser.add_argument("-o", "--output", type=Path, help="write the fitted constants here (JSON)")
    parser.add_argument("--report", type=Path, help="write the markdown report here too")
    parser.add_argument("--compare", type=Path, action="append", default=[],
                        help="also score these constants (JSON, as -o writes) on the measurements, unfitted")
    args = parser.parse_args(argv)
    models = [m for m in load_models(args.measurements, args.models) if m.rows]
    if not models:
        print(f"no measured group rows in {' '.join(map(str, args.measurements))}", file=sys.stderr)
        return 2
    dtypes = {m.plan["dtype"] for m in models}
    if not args.dtype and len(dtypes) > 1:
        print(f"the plans have several dtypes ({', '.join(sorted(dtypes))}): give --dtype", file=sys.stderr)
        return 2
    dtype = args.dtype or dtypes.pop()
    command = " ".join(["python", *map(shlex.quote, [_relative(sys.argv[0]), *(argv if argv is not None else sys.argv[1:])])])
    compare = {f"`{_relative(path)}`": costs.CostConstants.load(path) for path in args.compare}
    text, constants = report(models, resolve(args.gpu), dtype, default_knobs(dtype), command, not args.no_overhead, compare)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(constants, indent=1) + "\n")
        text += f"\nFitted constants written to `{_relative(args.output)}` (`fcm plan --constants {_relative(args.output)}`).\n"
    print(text)
    if args.report:
        args.report.write_text(text)
    return 0


def _relative(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
