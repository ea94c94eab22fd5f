"""Source model -> standard ONNX, with tf2onnx.

In: a ``keras.Model``, a TFLite file or a SavedModel directory. Out: an ``onnx.ModelProto``
(opset 17) with the source's interface kept: NHWC image inputs, a dynamic batch dimension for
Keras models and SavedModels (a TFLite model's batch is whatever its file says).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import onnx

from fcm_core.errors import FcmError

OPSET = 17


def _quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tf2onnx", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)


def from_keras(model: Any) -> onnx.ModelProto:
    """Export a Keras model with tf2onnx's Keras path; where that fails (it does on some Keras 3
    models), through a ``tf.function`` of the model's inference call. Either must give an ONNX
    model with the Keras model's inputs and nothing else (constants left as inputs would be a
    wrong export)."""
    _quiet()
    import tensorflow as tf
    import tf2onnx

    inputs = list(model.inputs)
    signature = [tf.TensorSpec((None,) + tuple(t.shape[1:]), t.dtype, name=_input_name(t, i)) for i, t in enumerate(inputs)]

    @tf.function(input_signature=signature)
    def infer(*args):
        return model(args[0] if len(args) == 1 else list(args), training=False)

    errors = []
    for attempt in ("keras", "function"):
        try:
            if attempt == "keras":
                proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=OPSET)
            else:
                proto, _ = tf2onnx.convert.from_function(infer, input_signature=signature, opset=OPSET)
        except Exception as exc:
            errors.append(_first_line(exc))
            continue
        initializers = {i.name for i in proto.graph.initializer}
        graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
        if len(graph_inputs) == len(inputs):
            return proto
        errors.append(f"the export has {len(graph_inputs)} inputs for the model's {len(inputs)}")
    raise FcmError(f"tf2onnx could not export the model: {'; '.join(errors)}")


def from_tflite(path: str | Path) -> onnx.ModelProto:
    _quiet()
    import tf2onnx

    try:
        proto, _ = tf2onnx.convert.from_tflite(os.fspath(path), opset=OPSET)
    except Exception as exc:
        raise FcmError(f"tf2onnx could not export the TFLite model: {_first_line(exc)}", path) from None
    return proto


def from_saved_model(path: str | Path) -> onnx.ModelProto:
    _quiet()
    import tensorflow as tf
    import tf2onnx

    try:
        loaded = tf.saved_model.load(os.fspath(path))
        function = loaded.signatures["serving_default"]
        signature = [tf.TensorSpec((None,) + tuple(s.shape[1:]), s.dtype, name=s.name) for s in function.structured_input_signature[1].values()]
        proto, _ = tf2onnx.convert.from_function(tf.function(lambda *a: function(*a)), input_signature=signature, opset=OPSET)
    except Exception as exc:
        raise FcmError(f"tf2onnx could not export the SavedModel: {_first_line(exc)}", path) from None
    return proto


def _input_name(tensor: Any, index: int) -> str:
    name = getattr(tensor, "name", None) or f"input_{index}"
    return name.split(":")[0].replace("/", "_")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
