"""Bad input: a one-line error naming the file and the problem, a non-zero exit, no traceback,
nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from tests.support.fixtures import IMAGENET_IMAGE, MOB_V2_TFLITE, ROOT, seed_dag_path



def fcm(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "fcm", *args], capture_output=True, text=True, env=env, timeout=300)


def assert_clean_failure(result: subprocess.CompletedProcess, path, words: str, out_dir=None) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fcm: error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"fcm: error: {path}: "), errors[0]
    assert words in errors[0], errors[0]
    if out_dir is not None:
        assert not out_dir.exists()
        assert not list(out_dir.parent.glob(f".{out_dir.name}.*")), "a partial output was left behind"


def test_missing_file(tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "nope.tflite"
    assert_clean_failure(fcm("extract", str(missing), "-o", str(out)), missing, "no such file", out)


def test_empty_file(tmp_path):
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    assert_clean_failure(fcm("extract", str(empty), "-o", str(out)), empty, "empty", out)


def test_truncated_tflite(tmp_path):
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(MOB_V2_TFLITE.read_bytes()[:200_000])
    out = tmp_path / "out"
    assert_clean_failure(fcm("extract", str(truncated), "-o", str(out)), truncated, "truncated", out)


def test_corrupt_tflite(tmp_path):
    data = bytearray(MOB_V2_TFLITE.read_bytes())
    data[0:4] = (0x7FFFFFF0).to_bytes(4, "little")  # the root table offset points far past the end
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(bytes(data))
    out = tmp_path / "out"
    assert_clean_failure(fcm("extract", str(corrupt), "-o", str(out)), corrupt, "corrupt", out)


def damaged_tflite(path, change) -> None:
    """MobileNetV2's int8 .tflite with ``change`` applied to it (flatbuffers' object API: a ModelT),
    written to ``path``."""
    import flatbuffers

    from extractor.tflite_reader import tfl

    model = tfl.ModelT.InitFromPackedBuf(MOB_V2_TFLITE.read_bytes(), 0)
    change(model)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def _set_first(tensor, field: str, value) -> None:
    quantization = tensor.quantization
    values = np.array(getattr(quantization, field))
    values[0] = value
    setattr(quantization, field, values)


def test_tflite_with_a_non_finite_quantization_scale(tmp_path):
    damaged, out = tmp_path / "nan_scale.tflite", tmp_path / "out"
    damaged_tflite(damaged, lambda model: _set_first(model.subgraphs[0].tensors[0], "scale", np.nan))  # the input's
    assert_clean_failure(fcm("extract", str(damaged), "-o", str(out)), damaged,
                         "tensor 0 has a quantization scale that is not a finite number", out)


def _first_op(model, code: int):
    return next(op for op in model.subgraphs[0].operators if model.operatorCodes[op.opcodeIndex].builtinCode == code)


def _set_version(model) -> None:
    model.version = 2097155


def _set_padding(model) -> None:
    _first_op(model, 4).builtinOptions.padding = 33  # the first DEPTHWISE_CONV_2D


def _drop_outputs(model) -> None:
    _first_op(model, 3).outputs = []  # the first CONV_2D


@pytest.mark.parametrize("change, words", [
    (_set_version, "TFLite schema version 2097155, where only version 3 exists"),
    (_set_padding, "(depthwise_conv_2d): unknown padding 33"),
    (_drop_outputs, "(conv_2d): its output is missing"),
], ids=["version", "padding", "no-output"])
def test_tflite_with_damaged_structure(tmp_path, change, words):
    damaged, out = tmp_path / "damaged.tflite", tmp_path / "out"
    damaged_tflite(damaged, change)
    assert_clean_failure(fcm("extract", str(damaged), "-o", str(out)), damaged, words, out)


def test_tflite_with_a_negative_weight_scale(tmp_path):
    damaged, out = tmp_path / "negative_scale.tflite", tmp_path / "out" / "m.onnx"
    # tensor 7: the first block's projection weights, int8 with a scale per output channel
    damaged_tflite(damaged, lambda model: _set_first(model.subgraphs[0].tensors[7], "scale", -0.5))
    assert_clean_failure(fcm("convert", str(damaged), "-o", str(out)), damaged,
                         "a quantization scale of its weights is -0.5; TFLite's integer arithmetic needs positive ones",
                         out.parent)


def test_tflite_the_interpreter_refuses(tmp_path):
    damaged, out = tmp_path / "bias_zero_point.tflite", tmp_path / "out" / "m.onnx"
    # tensor 4: the stem's int32 bias, whose zero points TFLite requires to be 0; the reader does not check them
    damaged_tflite(damaged, lambda model: _set_first(model.subgraphs[0].tensors[4], "zeroPoint", 42496))
    assert_clean_failure(fcm("convert", str(damaged), "-o", str(out)), damaged,
                         "the TFLite interpreter cannot run the model, so it cannot be verified", out.parent)


@pytest.mark.parametrize("kind", ["jpeg", "text", "zip", "tflite-named-text"])
def test_not_a_model(tmp_path, kind):
    if kind == "jpeg":
        path = IMAGENET_IMAGE
    elif kind == "text":
        path = tmp_path / "notes.txt"
        path.write_text("not a model\n")
    elif kind == "zip":
        path = tmp_path / "archive.keras"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "hello")
    else:
        path = tmp_path / "model.tflite"
        path.write_text("this is text, not a flatbuffer")
    out = tmp_path / "out"
    words = {"jpeg": "not a model file", "text": "not a model file", "zip": "Keras could not load",
             "tflite-named-text": "not a TFLite model"}[kind]
    assert_clean_failure(fcm("extract", str(path), "-o", str(out)), path, words, out)


def test_unknown_keras_application(tmp_path):
    out = tmp_path / "out"
    assert_clean_failure(fcm("extract", "keras:MobileNetV7", "-o", str(out)), "keras:MobileNetV7", "no model", out)


def test_keras_lambda_layer_is_refused_in_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Conv2D(4, 1)(inputs))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    out = tmp_path / "out"
    result = fcm("extract", str(path), "-o", str(out))
    assert_clean_failure(result, path, "Keras could not load", out)
    assert "Lambda" in result.stderr


def test_existing_output_is_untouched_on_failure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dag.json").write_text("previous")
    truncated = tmp_path / "bad.tflite"
    truncated.write_bytes(MOB_V2_TFLITE.read_bytes()[:1000])
    result = fcm("extract", str(truncated), "-o", str(out))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (out / "dag.json").read_text() == "previous"
    assert sorted(p.name for p in out.iterdir()) == ["dag.json"]


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda d: d[3]["children"].append(999), "not a layer id"),
        (lambda d: d[5]["parents"].append(9), "does not list it"),
        (lambda d: (d[2]["parents"].append(5), d[5]["children"].append(2)), "cycle"),
        (lambda d: d[3].pop("ofms_shape"), "no valid ofms_shape"),
        (lambda d: d.__setitem__(4, {"id": 4}), "not a layer"),
        (lambda d: d[3].__setitem__("strides", "2"), "entry 3 is malformed: 'strides' must be an integer, not \"2\""),
        (lambda d: d[3].__setitem__("ofms_scales", float("nan")), "'ofms_scales' must be a finite number or a list of them, not nan"),
        (lambda d: d[6].__setitem__("strides", 0), "'strides' must be at least 1, not 0"),
        (lambda d: d[2].__setitem__("kernel_size", [3]), "'kernel_size' must hold 2 integers, not [3]"),
        (lambda d: d[5].pop("padding_left"), "padding_top, padding_bottom, padding_left, padding_right come together or not at all"),
        (lambda d: d[2].__setitem__("weights_shape", [32, 9]), "dw layer 2 (depthwise_conv_2d) has no valid weights_shape (3 positive"),
        (lambda d: d[3].__setitem__("children", None), "does not list it"),
    ],
)
@pytest.mark.parametrize("command", [["inspect"], ["plan", "--gpu", "H100"]])
def test_broken_dags_are_rejected(tmp_path, damage, words, command):
    entries = json.loads(seed_dag_path("mob_v2").read_text())
    damage(entries)
    path = tmp_path / "dag.json"
    path.write_text(json.dumps(entries))
    assert_clean_failure(fcm(command[0], str(path), *command[1:]), path, words)


def test_inspect_rejects_non_json(tmp_path):
    path = tmp_path / "dag.json"
    path.write_bytes(np.arange(10, dtype=np.uint8).tobytes())
    assert_clean_failure(fcm("inspect", str(path)), path, "not a JSON file")
