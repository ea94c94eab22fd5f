"""Randomly damaged DAG files (the paper's and ours): reading and planning either works or raises an
FcmError naming the problem, never another exception (which the CLI reports as an internal error).

Each case changes one to three values anywhere in a seed DAG (a field's value swapped for a number,
NaN, a string, null, a list or an object; a field or a list item dropped), writes it, and reads and
plans it for a GPU and batch. ``tests/cli/test_bad_input.py`` checks the messages of hand-picked cases."""

from __future__ import annotations

import copy
import json
import random

import pytest

from extractor.dag import Dag
from fcm_core.errors import FcmError
from planner.gpus import resolve
from planner.plan import make_plan
from tests.support.fixtures import seed_dag_path

CASES = 60  # per seed DAG; the seeds are fixed
VALUES = [0, -1, 1, 2, 3, 1e30, float("nan"), 10**12, "x", "dw", "pw", "RELU6", None, [], [0], [1, 2], [-1, 3, 3], {}, True,
          0.5, [3, 0, 0]]


def _places(value, found: list) -> list:
    """Every (container, key) in a JSON value."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append((value, key))
        _places(child, found)
    return found


def damage(entries: list, rnd: random.Random) -> None:
    places = _places(entries, [])
    for _ in range(rnd.randint(1, 3)):
        container, key = rnd.choice(places)
        if rnd.random() < 0.15:
            if isinstance(container, dict):
                container.pop(key, None)
            elif key < len(container):
                del container[key]
        elif isinstance(container, dict) or key < len(container):
            container[key] = rnd.choice(VALUES)


@pytest.mark.parametrize("name", ["mob_v2", "mob_v1", "xce_r", "gprox_3"])
def test_damaged_dags_plan_or_raise_an_fcm_error(name, tmp_path):
    source = json.loads(seed_dag_path(name).read_text())
    outcomes = {"planned": 0, "refused": 0}
    for seed in range(CASES):
        rnd = random.Random(seed)
        entries = copy.deepcopy(source)
        damage(entries, rnd)
        path = tmp_path / f"{seed}.json"
        path.write_text(json.dumps(entries))
        try:
            make_plan(Dag.load(path), resolve(rnd.choice(["H100", "H200", "A100"])), batch=rnd.choice([1, 32]))
            outcomes["planned"] += 1
        except FcmError:
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure
            pytest.fail(f"seed {seed}: {type(exc).__name__}: {exc}")
    # both occur: damage that the planner does not read (names, scales) leaves a plannable DAG
    assert outcomes["planned"] > 0 and outcomes["refused"] > 0, outcomes
