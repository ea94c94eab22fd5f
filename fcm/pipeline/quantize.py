"""``fcm convert --int8``: a float Keras model -> a full-integer TFLite model.

In: the Keras model (as opened by :func:`extractor.sources.open_model`), optionally a ``.npy`` file
of calibration samples, the model's input/output integer type. Out: the bytes of a full-integer
``.tflite`` model (post-training quantization by ``tf.lite.TFLiteConverter.from_keras_model``:
``Optimize.DEFAULT``, ``TFLITE_BUILTINS_INT8`` only, int8 weights with per-channel scales, int8
activations, an int8 or uint8 input and output), which the int8 path of :mod:`fcm.pipeline.convert` then converts.

Calibration: the representative dataset is the user's samples, one array ``[N, H, W, C]`` (the
model's input shape after the batch dimension; any real dtype, converted to float32, finite), each
sample fed on its own. Without a file, seeded random samples uniform in the model's input range
([-1, 1], or pixel values 0-255 for a model that rescales them itself) are used: enough to
exercise the conversion, meaningless for accuracy (a warning says so).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from extractor.sources import keras_input_range
from fcm_core.errors import FcmError, FcmWarning

#: Random calibration: this many samples, uniform in the model's input range.
RANDOM_SAMPLES = 16
IO_DTYPES = ("int8", "uint8")
RANDOM_CALIBRATION_WARNING = ("no --calibration file: calibrating on random data (uniform in the model's input range); the "
                              "quantization ranges are meaningless for real inputs, so the int8 model's accuracy is "
                              "too -- give a .npy of representative input samples for a usable model")


def model_input_shape(keras_model: Any) -> tuple[int | None, ...]:
    """The single input's shape without the batch dimension; an FcmError for other models."""
    inputs = list(getattr(keras_model, "inputs", None) or [])
    if len(inputs) != 1:
        raise FcmError(f"--int8 quantizes models with one input; this one has {len(inputs)}")
    return tuple(None if d is None else int(d) for d in inputs[0].shape[1:])


def load_calibration(path: str | Path, input_shape: tuple[int | None, ...]) -> np.ndarray:
    """The samples of a ``.npy`` file as float32 ``[N, *input_shape]``; an FcmError naming the
    file when it is not one, or its shape or values do not fit the model."""
    return fit_calibration(read_calibration(path), input_shape, path)


def read_calibration(path: str | Path) -> np.ndarray:
    """The samples of a ``.npy`` file as float32 ``[N, ...]``; an FcmError naming the file when it
    is not one (checked before the model is read: the model's shape comes later, :func:`fit_calibration`)."""
    path = Path(path)
    if path.suffix != ".npy":
        raise FcmError("the calibration data must be a .npy file (numpy.save of an array [N, H, W, C])", path)
    if not path.is_file():
        raise FcmError("no such file", path)
    with open(path, "rb") as handle:
        head = handle.read(6)
    if head.startswith(b"PK"):
        raise FcmError("a .npz archive, not a .npy array", path)
    if head != b"\x93NUMPY":  # numpy would take anything else for a pickle
        raise FcmError("not a .npy file (no .npy header: write it with numpy.save)", path)
    try:
        samples = np.load(path, allow_pickle=False)
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "pickle" in message.lower():
            message = "holds Python objects (a pickled array), not numbers"
        raise FcmError(f"not a usable .npy file ({message})", path) from None
    except (OSError, EOFError) as exc:
        raise FcmError(f"not a .npy file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})", path) from None
    if not isinstance(samples, np.ndarray):
        raise FcmError("a .npz archive, not a .npy array", path)
    if samples.dtype.kind not in "fiu":
        raise FcmError(f"the samples must be real numbers, not {samples.dtype}", path)
    if samples.ndim < 2 or samples.shape[0] < 1:
        raise FcmError(f"the file holds no samples (shape {list(samples.shape)}; expected [N, H, W, C])", path)
    samples = samples.astype(np.float32)
    if not np.all(np.isfinite(samples)):
        raise FcmError("the samples hold NaN or infinite values", path)
    return samples


def fit_calibration(samples: np.ndarray, input_shape: tuple[int | None, ...], path: str | Path) -> np.ndarray:
    """``samples`` (from :func:`read_calibration`), or an FcmError when their shape does not fit the model's input."""
    wanted = "[N, " + ", ".join("?" if d is None else str(d) for d in input_shape) + "]"
    fits = samples.ndim == len(input_shape) + 1 and all(
        d is None or d == s for d, s in zip(input_shape, samples.shape[1:]))
    if not fits:
        raise FcmError(f"the samples have shape {list(samples.shape)}; the model takes {wanted} "
                       "(N samples, one per row)", path)
    return samples


def random_calibration(input_shape: tuple[int | None, ...], seed: int, value_range: tuple[float, float]) -> np.ndarray:
    """Random samples uniform in ``value_range`` (the model's input range)."""
    if any(d is None for d in input_shape):
        raise FcmError("the model's input size is not fixed: give --input-size, or --calibration samples")
    low, high = value_range
    return np.random.default_rng(seed).uniform(low, high, (RANDOM_SAMPLES, *input_shape)).astype(np.float32)


def check_io_dtype(io_dtype: str) -> None:
    if io_dtype not in IO_DTYPES:
        raise FcmError(f"unknown input/output type {io_dtype!r} (int8 or uint8)")


def quantize_keras(keras_model: Any, calibration: str | Path | None = None, io_dtype: str = "int8",
                   seed: int = 0, samples: np.ndarray | None = None) -> bytes:
    """The full-integer TFLite model of ``keras_model`` (see the module docstring), calibrated on
    the ``.npy`` file ``calibration`` (or its ``samples``, read already by :func:`read_calibration`)."""
    import tensorflow as tf

    check_io_dtype(io_dtype)
    input_shape = model_input_shape(keras_model)
    if calibration is None:
        warnings.warn(RANDOM_CALIBRATION_WARNING, FcmWarning, stacklevel=2)
        samples = random_calibration(input_shape, seed, keras_input_range(keras_model))
    else:
        samples = fit_calibration(read_calibration(calibration) if samples is None else samples, input_shape, calibration)

    def representative_dataset():
        for sample in samples:
            yield [sample[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = getattr(tf, io_dtype)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the converter's export chatter
            return converter.convert()
    except Exception as exc:  # an op without an int8 TFLite kernel, mostly
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise FcmError(f"TFLite's full-integer quantization failed: {first}") from None
