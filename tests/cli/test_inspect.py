"""`fcm inspect`: a readable table and totals, for our DAGs and the seed's."""

from __future__ import annotations

import pytest

from extractor.dag import Dag
from extractor.summary import layer_macs, totals
from fcm.cli import main
from tests.support.fixtures import MOB_V2_TFLITE, seed_dag_path


@pytest.fixture(scope="module")
def mob_v2_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect")
    assert main(["-q", "extract", str(MOB_V2_TFLITE), "-o", str(out)]) == 0
    return out


def test_table_lists_every_entry_with_its_fields(mob_v2_dir, capsys):
    assert main(["inspect", str(mob_v2_dir / "dag.json")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines[0].split()
    assert header == ["id", "op", "type", "input", "output", "kernel/stride", "activation", "parents", "children"]
    rows = [line.split() for line in lines[2:73]]
    assert [int(r[0]) for r in rows] == list(range(71))
    dw = rows[6]  # 6: depthwise_conv_2d dw 96x113x113 96x56x56 3x3/2 RELU6 5 7
    assert dw == ["6", "depthwise_conv_2d", "dw", "96x113x113", "96x56x56", "3x3/2", "RELU6", "5", "7"]
    add = rows[11]
    assert add[1] == "add" and add[-2:] == ["7,10", "12"]


def test_totals_are_computed_from_the_shapes(mob_v2_dir, capsys):
    assert main(["inspect", str(mob_v2_dir), "--totals-only", "--batch", "32", "--dtype", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "convolutions: 52 = 17 depthwise + 34 pointwise + 1 standard" in out
    assert "fully connected: 1; other ops: 18" in out
    dag = Dag.load(mob_v2_dir / "dag.json")
    # parameters: every weight and bias array of the file, counted independently of the shapes
    stored = sum(v.size for k, v in dag.weights.items() if k.endswith("/weights") or k.endswith("/bias"))
    assert f"parameters: {stored:,}" in out
    # MACs of one pointwise layer by hand: 56*56 outputs x 24 filters x 144 channels
    assert layer_macs(dag[10]) == 56 * 56 * 24 * 144
    t = totals(dag, batch=32, dtype="fp32")
    assert f"MACs at batch 32: {t.macs:,}" in out
    assert t.macs == 32 * sum(layer_macs(layer) for layer in dag)
    # layer-by-layer conv traffic of MobileNetV2 at batch 32, fp32: the 1.73 GB of DESIGN.md §7
    assert round(t.conv_traffic_bytes / 1e9, 2) == 1.73
    assert "1.73 GB" in out


def test_reads_the_seed_files_as_they_are(capsys):
    assert main(["inspect", str(seed_dag_path("xce_r")), "--totals-only"]) == 0
    out = capsys.readouterr().out
    assert "convolutions: 74 = 34 depthwise + 38 pointwise + 2 standard" in out


def test_int8_bytes_are_a_quarter_of_fp32(mob_v2_dir):
    dag = Dag.load(mob_v2_dir)
    assert totals(dag, 8, "int8").fm_bytes_written * 4 == totals(dag, 8, "fp32").fm_bytes_written
