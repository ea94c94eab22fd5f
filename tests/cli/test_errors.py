"""User errors are one line, ``fcm: error: ...``, exit status 2, and nothing is written: bad option
values (checked before any model is read), ONNX Runtime refusing a bad or hand-edited model,
``fcm verify --provider cuda`` where CUDA cannot run, damaged Keras files, Keras's own messages
cut at a word boundary; ``-q`` and ``--debug`` after the command's name."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import helper

from fcm.cli import build_parser, main
from fcm_core.errors import one_line
from ort_custom_ops.ops.library import cuda_unavailable_reason
from tests.support.fixtures import ROOT
from tests.support.tiny import fused_pair, tiny_keras


def fcm(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "fcm", *args], capture_output=True, text=True, env=env, timeout=600)


def one_error_line(result: subprocess.CompletedProcess, words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fcm: error:")]
    assert len(errors) == 1, result.stderr
    assert not [line for line in result.stderr.splitlines() if line.startswith("usage:")], result.stderr
    assert words in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def pair(tmp_path, rng):
    fused, unfused = fused_pair(rng)
    paths = tmp_path / "m.onnx", tmp_path / "m.unfused.onnx"
    onnx.save(fused, paths[0])
    onnx.save(unfused, paths[1])
    return paths


# --- fcm verify: the provider, the bounds, bad models ------------------------------------------------

@pytest.mark.skipif(cuda_unavailable_reason() is None, reason="the CUDA kernels can run here")
def test_verify_on_cuda_without_cuda_is_an_error(pair):
    result = fcm("verify", str(pair[0]), "--provider", "cuda")
    one_error_line(result, "--provider cuda cannot run here: this onnxruntime has no CUDA execution provider")
    assert "make setup GPU=1" in result.stderr  # how to get the GPU build
    assert result.stdout == ""  # nothing ran


@pytest.mark.parametrize("args, words", [
    (["--batch", "0"], "argument --batch: must be at least 1, not 0"),
    (["--batch", "-3"], "argument --batch: must be at least 1, not -3"),
    (["--runs", "0"], "argument --runs: must be at least 1, not 0"),
    (["--tolerance=-1e-4"], "--tolerance must be a number at least 0, not -0.0001"),
    (["--tolerance", "-0.001"], "--tolerance must be a number at least 0, not -0.001"),
    (["--tolerance", "nan"], "--tolerance must be a number at least 0"),
    (["--tf32-tolerance", "-1"], "--tf32-tolerance must be a number at least 0"),
])
def test_verify_rejects_bad_values(pair, args, words):
    result = fcm("verify", str(pair[0]), *args)
    one_error_line(result, words)
    assert result.stdout == ""


def test_verify_says_how_it_compared(pair):
    result = fcm("verify", str(pair[0]), "--provider", "cpu", "--batch", "2", "--runs", "2")
    assert result.returncode == 0, result.stderr
    assert "on the CPU, FP32: largest difference from m.unfused.onnx" in result.stdout
    assert "bound 0.0001" in result.stdout


def _hand_edited(model: onnx.ModelProto, attribute: str, value) -> onnx.ModelProto:
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name != attribute]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(attribute, value)])
    return model


@pytest.mark.parametrize("edit, words", [
    (lambda m: _hand_edited(m, "dw_kernel", 4), "dw_kernel must be 3, 5 or 7"),
    (lambda m: _hand_edited(m, "stage2_activation", "gelu"), "unknown stage2_activation 'gelu'"),
    (lambda m: m.graph.node[0].input.__setitem__(1, "missing"), "missing"),
    (lambda m: m.graph.node.append(helper.make_node("NoSuchOp", ["Y"], ["Z"])), "NoSuchOp"),
])
def test_onnx_runtime_refusing_a_model_is_one_line(pair, edit, words):
    model = onnx.load(pair[0])
    edit(model)
    onnx.save(model, pair[0])
    result = fcm("verify", str(pair[0]), "--provider", "cpu")
    line = one_error_line(result, words)
    assert line.startswith(f"fcm: error: {pair[0]}: ONNX Runtime refuses it: ")
    assert "[ONNXRuntimeError]" not in line


def test_verify_of_a_file_that_is_not_onnx(pair):
    pair[0].write_bytes(b"\x00\x01garbage" * 10)
    one_error_line(fcm("verify", str(pair[0])), "not an ONNX model")


# --- fcm convert: options checked before the model is read ------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--gpu", "Z80"], "unknown GPU 'Z80'"),
    (["--int8", "--calibration", "{missing}"], "no such file"),
    (["--int8", "--calibration", "{text}"], "not a .npy file"),
    (["--int8", "--calibration", "{scalars}"], "the file holds no samples"),
    (["--io-dtype", "uint8"], "--calibration and --io-dtype apply with --int8 only"),
    (["--calibration", "{scalars}"], "--calibration and --io-dtype apply with --int8 only"),
    (["--batch", "0"], "argument --batch: must be at least 1, not 0"),
])
def test_convert_checks_its_options_first(tmp_path, args, words):
    files = {"missing": tmp_path / "missing.npy", "text": tmp_path / "text.npy", "scalars": tmp_path / "scalars.npy"}
    files["text"].write_text("not numbers")
    np.save(files["scalars"], np.zeros(3, np.float32))
    args = [a.format(**files) for a in args]
    out = tmp_path / "out" / "m.onnx"
    started = time.monotonic()
    result = fcm("convert", "keras:MobileNetV2", "-o", str(out), *args)
    one_error_line(result, words)
    assert "fcm: opening" not in result.stderr  # before the model was built, let alone exported
    assert time.monotonic() - started < 120
    assert not out.parent.exists()


# --- Keras files ---------------------------------------------------------------------------------

def test_a_truncated_keras_file_is_damaged(tmp_path):
    path = tiny_keras(tmp_path)
    data = path.read_bytes()
    for size in (len(data) // 2, len(data) - 100):
        truncated = tmp_path / f"cut{size}.keras"
        truncated.write_bytes(data[:size])
        out = tmp_path / f"out{size}"
        line = one_error_line(fcm("extract", str(truncated), "-o", str(out)), "a damaged .keras file")
        assert "not found" not in line.lower()
        assert not out.exists()


def test_long_messages_are_cut_at_a_word_boundary():
    text = "Requested the deserialization of a Lambda layer whose " + "function could run arbitrary code " * 20
    line = one_line(text + "\nsecond line", limit=120)
    assert len(line) <= 124 and line.endswith(" ...")
    kept = line.removesuffix(" ...")
    assert text.startswith(kept) and text[len(kept)] == " "  # the cut falls between words
    assert one_line("  short\nsecond") == "short"


def test_a_keras_message_in_an_error_ends_on_a_whole_word(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda t: t * 2.0)(keras.layers.Conv2D(4, 1)(inputs))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    line = one_error_line(fcm("extract", str(path), "-o", str(tmp_path / "out")), "Keras could not load the model: ")
    message = line.split("Keras could not load the model: ", 1)[1]
    try:
        keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:
        full = " ".join(str(exc).split())
    kept = message.removesuffix(" ...")
    start = full.index(kept)
    assert start + len(kept) == len(full) or full[start + len(kept)] in " .,;:", (message, full)


# --- -q and --debug after the command ------------------------------------------------------------

def test_global_options_after_the_command(pair, capsys):
    assert main(["verify", str(pair[0]), "-q", "--provider", "cpu", "--runs", "1"]) == 0
    assert capsys.readouterr().err == ""  # quiet: no progress line
    assert main(["verify", "--debug", str(pair[0]), "--provider", "cpu", "--runs", "1"]) == 0
    capsys.readouterr()
    assert main(["-q", "verify", str(pair[0]), "--provider", "cpu", "--runs", "1"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["verify", str(pair[0]), "--provider", "cpu", "--runs", "1"]) == 0
    assert "fcm: running" in capsys.readouterr().err
    parser = build_parser()
    for argv in (["verify", "m.onnx", "--debug", "-q"], ["--debug", "-q", "verify", "m.onnx"]):
        args = parser.parse_args(argv)
        assert args.debug and args.quiet
    args = parser.parse_args(["verify", "m.onnx"])
    assert not args.debug and not args.quiet
