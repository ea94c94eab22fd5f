"""A model read from Keras and from its TFLite conversion has the same convolution layers: same
shapes, strides, activations, padding (explicit `pad` entries or padding on the conv) and the same
folded weights; and the TFLite DAG (fp32, with its dynamic-shape ops) runs like the interpreter."""

from __future__ import annotations

import numpy as np
import pytest

from extractor.executor import run_dag
from extractor.keras_reader import read_keras
from extractor.tflite_reader import read_tflite
from tests.support.fixtures import keras_model
from tests.support.dag_compare import effective_pads, match_convs


def _conv_key(dag, layer):
    padded_input = layer.ifms_shape
    parents = [dag[p] for p in layer.parents]
    if len(parents) == 1 and parents[0].name == "pad":  # compare the input before the explicit pad
        shape = parents[0].ifms_shape
        padded_input = [shape[3], shape[1], shape[2]]
    return {
        "type": layer.type,
        "weights_shape": layer.weights_shape,
        "input": padded_input,
        "ofms_shape": layer.ofms_shape,
        "strides_hw": layer.strides_hw,
        "dilation": layer.dilation,
        "activation": layer.activation,
        "pads": effective_pads(dag, layer.id),
    }


def _convert(model) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["MobileNetV2", "MobileNetV3Small"])
def test_keras_and_tflite_conversion_agree(architecture, rng):
    model = keras_model(architecture, logits=True)
    from_keras = read_keras(model, architecture)
    tflite_bytes = _convert(model)
    from_tflite = read_tflite(tflite_bytes, f"{architecture}.tflite")

    mapping, differences = match_convs(from_keras, from_tflite, key=_conv_key)
    assert differences == {}
    assert len(mapping) == len(from_keras.convs()) == len(from_tflite.convs())
    for ours, theirs in mapping.items():  # BN folded the same way as the converter folds it
        for key in ("weights", "bias"):
            a, b = from_keras.weight(ours, key), from_tflite.weight(theirs, key)
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x = rng.uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    interpreter = Interpreter(model_content=tflite_bytes,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    reference = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    (ours,) = run_dag(from_tflite, x)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()
