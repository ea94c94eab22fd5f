"""``fcm convert --int8``: Keras -> full-integer TFLite (post-training quantization) -> fused int8 ONNX.

Keras MobileNet (v1, 96x96, random weights) goes through the command in one call, calibrated on a
user's ``.npy``; the written ``.tflite`` and the fused int8 model are then compared on fresh random
inputs with the TFLite interpreter (default resolver): at least 99.9% of the outputs equal, all
within 1, the same top-5. Also: random calibration (with its warning), uint8 input/output, bad
calibration files and misused options are errors that write nothing.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest

from fcm.convert import interpreter_outputs
from fcm.errors import FcmError, FcmWarning

SIZE = 96


def _session_outputs(path, x):
    from ort_custom_ops.library import make_session

    session = make_session(onnx.load(path))
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _agreement(got: np.ndarray, want: np.ndarray) -> tuple[float, int, bool]:
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    top5 = all(set(np.argsort(-g.astype(np.int64), kind="stable")[:5]) == set(np.argsort(-w.astype(np.int64), kind="stable")[:5])
               for g, w in zip(got, want))
    return float(np.mean(diff == 0)), int(diff.max()), top5


def _tiny_keras():
    import keras

    keras.utils.set_random_seed(5)
    x = inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu6")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_keras_mobilenet_to_fused_int8_in_one_call(tmp_path, capsys, rng):
    from fcm.cli import main

    calibration = tmp_path / "calibration.npy"
    np.save(calibration, rng.uniform(-1, 1, (8, SIZE, SIZE, 3)).astype(np.float32))
    out = tmp_path / "out" / "mob.onnx"
    assert main(["-q", "convert", "keras:MobileNet", "--input-size", str(SIZE), "--int8", "--calibration",
                 str(calibration), "-o", str(out), "--gpu", "H100"]) == 0
    captured = capsys.readouterr()
    assert "random data" not in captured.err
    assert "verified: fused ONNX vs TFLite (XNNPACK)" in captured.out
    tflite = out.parent / "mob.tflite"
    for name in ("mob.onnx", "mob.unfused.onnx", "mob.tflite", "mob.report.md"):
        assert (out.parent / name).is_file(), name
    assert "calibrated on the samples of" in (out.parent / "mob.report.md").read_text()

    model = onnx.load(out)
    fused = [n for n in model.graph.node if n.op_type.startswith("QFused")]
    assert len(fused) == 13 and all(n.domain == "ai.fcm" for n in fused)  # every DW->PW pair of MobileNet
    assert all(n.domain == "ai.fcm" for n in model.graph.node if n.op_type in ("QConv", "QMean"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT8

    x = rng.integers(-128, 128, (3, SIZE, SIZE, 3)).astype(np.int8)
    got = _session_outputs(out, x)
    want = interpreter_outputs(tflite, [x], builtin=False)[0]
    assert got.shape == want.shape == (3, 1000) and got.dtype == want.dtype == np.int8
    equal, largest, top5 = _agreement(got, want)
    print(f"Keras MobileNet {SIZE}: fused int8 ONNX vs the interpreter: {equal:.2%} equal, largest difference "
          f"{largest}, top-5 same: {top5}")
    assert equal >= 0.999 and largest <= 1 and top5


def test_random_calibration_warns_and_uint8_io(tmp_path, rng):
    from fcm.convert import ConvertOptions, convert

    out = tmp_path / "tiny.onnx"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convert(_tiny_keras(), out, ConvertOptions(gpu="H100", int8=True, io_dtype="uint8", seed=2))
    assert any(issubclass(w.category, FcmWarning) and "meaningless" in str(w.message) for w in caught)
    assert any("calibrated on random data" in n for n in result.notes)
    assert result.files["tflite"] == tmp_path / "tiny.tflite" and result.files["tflite"].is_file()
    x = rng.integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
    got = _session_outputs(out, x)
    want = interpreter_outputs(result.files["tflite"], [x], builtin=False)[0]
    assert got.dtype == np.uint8 and np.array_equal(got, want)


@pytest.mark.parametrize("samples, message", [
    (np.zeros((4, 16, 16, 1), np.float32), r"shape \[4, 16, 16, 1\]; the model takes \[N, 16, 16, 3\]"),
    (np.zeros((16, 16, 3), np.float32), r"shape \[16, 16, 3\]"),
    (np.zeros((0, 16, 16, 3), np.float32), "no samples"),
    (np.zeros((2, 16, 16, 3), np.complex64), "real numbers, not complex64"),
    (np.zeros((2, 16, 16, 3), bool), "real numbers, not bool"),
    (np.full((2, 16, 16, 3), np.nan, np.float32), "NaN"),
    (np.array([{"a": 1}], dtype=object), "Python objects"),
])
def test_bad_calibration_files_are_errors(tmp_path, samples, message):
    from fcm.quantize import load_calibration

    path = tmp_path / "cal.npy"
    np.save(path, samples, allow_pickle=True)
    with pytest.raises(FcmError, match=message):
        load_calibration(path, (16, 16, 3))


def test_calibration_that_is_not_an_npy_file(tmp_path):
    from fcm.quantize import load_calibration

    text = tmp_path / "cal.npy"
    text.write_text("0 1 2\n")
    with pytest.raises(FcmError, match="not a .*npy file"):
        load_calibration(text, (16, 16, 3))
    with pytest.raises(FcmError, match="must be a .npy file"):
        load_calibration(tmp_path / "cal.txt", (16, 16, 3))
    with pytest.raises(FcmError, match="no such file"):
        load_calibration(tmp_path / "missing.npy", (16, 16, 3))
    archive = tmp_path / "archive.npy"
    with open(archive, "wb") as handle:
        np.savez(handle, a=np.zeros(3))
    with pytest.raises(FcmError, match="npz archive"):
        load_calibration(archive, (16, 16, 3))


def test_misused_options_write_nothing(tmp_path, capsys, rng):
    from fcm.cli import main

    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 32, 32, 3), np.float32))
    out = tmp_path / "out" / "m.onnx"
    model = tmp_path / "tiny.keras"
    _tiny_keras().save(model)
    assert main(["-q", "convert", str(model), "--int8", "--calibration", str(bad), "-o", str(out), "--gpu", "H100"]) == 2
    assert "the model takes [N, 16, 16, 3]" in capsys.readouterr().err
    assert main(["-q", "convert", str(model), "--calibration", str(bad), "-o", str(out), "--gpu", "H100"]) == 2
    assert "with --int8 only" in capsys.readouterr().err
    assert main(["-q", "convert", str(model), "--int8", "--dtype", "fp32", "-o", str(out), "--gpu", "H100"]) == 2
    assert "leave out --dtype fp32" in capsys.readouterr().err
    assert not out.parent.exists()


def test_int8_on_a_float_tflite_is_refused(tmp_path):
    import tensorflow as tf

    from fcm.convert import ConvertOptions, convert

    source = tmp_path / "float.tflite"
    source.write_bytes(tf.lite.TFLiteConverter.from_keras_model(_tiny_keras()).convert())
    out = tmp_path / "out" / "float.onnx"
    with pytest.raises(FcmError, match="needs a full-integer model"):
        convert(source, out, ConvertOptions(gpu="H100", int8=True))
    assert not out.parent.exists()
