"""The DAG files: round trips, the seed's files read as they are, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from extractor.dag import Dag, SEED_FIELDS
from extractor.tflite_reader import read_tflite
from fcm_core.errors import FcmError
from tests.support.fixtures import MOB_V2_TFLITE, seed_dag_path


@pytest.mark.parametrize("model", ["mob_v1", "mob_v2", "xce_r", "gprox_3"])
def test_seed_files_load_and_write_back_unchanged(model, tmp_path):
    original = json.loads(seed_dag_path(model).read_text())
    dag = Dag.load(seed_dag_path(model))
    assert len(dag) == len(original) and dag.weights == {}
    dag.save(tmp_path)
    written = json.loads((tmp_path / "dag.json").read_text())
    # every seed field comes back with its value (ours adds "parents"/"children"/"activation"
    # where the seed omitted them, e.g. xce_r's typeless fully_connected)
    for before, after in zip(original, written):
        assert {k: after[k] for k in before} == before


def test_round_trip_keeps_entries_and_weights(tmp_path):
    dag = read_tflite(MOB_V2_TFLITE.read_bytes())
    dag.save(tmp_path)
    again = Dag.load(tmp_path / "dag.json")
    assert again.to_json() == dag.to_json()
    assert again.weights.keys() == dag.weights.keys()
    for key, value in dag.weights.items():
        assert again.weights[key].dtype == value.dtype
        np.testing.assert_array_equal(again.weights[key], value)


def test_the_written_file_is_a_plain_json_list(tmp_path):
    dag = read_tflite(MOB_V2_TFLITE.read_bytes())
    dag.save(tmp_path)
    entries = json.loads((tmp_path / "dag.json").read_text())
    assert isinstance(entries, list) and [e["id"] for e in entries] == list(range(71))
    first = entries[1]
    assert list(first)[: len([f for f in SEED_FIELDS if f in first])] == [f for f in SEED_FIELDS if f in first]


def test_unknown_fields_are_kept(tmp_path):
    entries = json.loads(seed_dag_path("mob_v1").read_text())
    entries[3]["vendor_note"] = {"anything": [1, 2]}
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(entries))
    dag = Dag.load(path)
    assert dag[3].extra == {"vendor_note": {"anything": [1, 2]}}
    assert dag.to_json()[3]["vendor_note"] == {"anything": [1, 2]}


def test_weights_are_read_without_pickle(tmp_path):
    path = tmp_path / "weights.npz"
    np.savez(path, **{"0/weights": np.array([{"a": 1}], dtype=object)})
    (tmp_path / "dag.json").write_text(seed_dag_path("mob_v1").read_text())
    with pytest.raises(FcmError, match="not a readable weights file"):
        Dag.load(tmp_path / "dag.json")


def test_ids_must_be_positions(tmp_path):
    entries = json.loads(seed_dag_path("mob_v1").read_text())
    entries[0], entries[1] = entries[1], entries[0]
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(entries))
    with pytest.raises(FcmError, match="ids must equal list positions"):
        Dag.load(path)
