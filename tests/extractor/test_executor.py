"""The numpy executor on extracted DAGs reproduces the source models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from extractor.executor import run_dag
from extractor.keras_reader import read_keras
from extractor.tflite_reader import read_tflite
from fcm_core.errors import FcmWarning
from tests.support.fixtures import MOB_V2_TFLITE, keras_model, load_image_uint8

# EfficientNet and MobileNetV3 rescale [0, 255] pixels themselves; the V1/V2 models take [-1, 1].
PIXEL_RANGE = {"MobileNet": (-1, 1), "MobileNetV2": (-1, 1), "MobileNetV3Small": (0, 255), "EfficientNetB0": (0, 255)}


def _conv_outputs_in_keras(model, dag):
    """{conv entry id: the Keras layer whose output that entry computes}: a conv's last source
    layer, when no later entry comes from the same layer (a separable conv's depthwise half
    has no Keras tensor of its own)."""
    last_entry = {}
    for layer in dag:
        last_entry[layer.source["layers"][-1]] = layer.id
    return {c.id: model.get_layer(c.source["layers"][-1]) for c in dag.convs() if last_entry[c.source["layers"][-1]] == c.id}


@pytest.mark.parametrize("architecture", sorted(PIXEL_RANGE))
def test_keras_fp32_logits_within_1e4(architecture, rng):
    import keras

    model = keras_model(architecture, logits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FcmWarning)
        dag = read_keras(model, architecture)
    low, high = PIXEL_RANGE[architecture]
    x = rng.uniform(low, high, (2, 224, 224, 3)).astype(np.float32)
    reference = model.predict(x, verbose=0)
    ours = run_dag(dag, x, keep=True)
    assert ours[0].shape == reference.shape
    error = np.abs(ours[0] - reference).max() / np.abs(reference).max()
    print(f"{architecture}: logits relative error {error:.2e}")
    assert error <= 1e-4, f"relative error {error:.2e}"

    # Random-weight networks can make the logits nearly independent of the input, which would
    # hide a wrong layer; so every convolution's output is compared with Keras' as well.
    probes = _conv_outputs_in_keras(model, dag)
    assert len(probes) >= 0.5 * len(dag.convs())
    intermediates = keras.Model(model.inputs, [layer.output for layer in probes.values()]).predict(x, verbose=0)
    input_dependent = 0
    for layer_id, expected in zip(probes, intermediates):
        mine = ours.values[(layer_id, 0)]
        assert mine.shape == expected.shape
        # Keras computes conv and BN apart in float32 (cancellation where BN's variance is small):
        # intermediate outputs carry ~1e-5 of its rounding; a wrong layer would be off by O(1)
        assert np.abs(mine - expected).max() <= 1e-3 * np.abs(expected).max(), f"layer {layer_id}"
        input_dependent += np.abs(expected[0] - expected[1]).max() > 0.1 * np.abs(expected).max()
    print(f"{input_dependent} of {len(probes)} compared conv outputs depend clearly on the input")
    # enough of them carry the input for these comparisons to mean something
    assert input_dependent >= 0.5 * len(probes)


def test_batchnorm_is_folded_not_dropped():
    """With BN statistics randomized, folding them matters: a DAG whose convs had the unfolded
    weights would be far off. The DAG has no batch_norm operator left, and the folded first conv
    equals conv * gamma / sqrt(var + eps)."""
    model = keras_model("MobileNetV2", logits=True)
    dag = read_keras(model, "MobileNetV2")
    assert "batch_norm" not in {layer.name for layer in dag}
    first = dag[0]
    assert first.source["layers"][:2] == ["Conv1", "bn_Conv1"]
    conv, bn = model.get_layer("Conv1"), model.get_layer("bn_Conv1")
    gamma, beta, mean, var = (w.numpy() for w in bn.weights)
    scale = gamma / np.sqrt(var + bn.epsilon)
    expected = conv.kernel.numpy().transpose(3, 2, 0, 1) * scale[:, None, None, None]
    np.testing.assert_allclose(dag.weight(0, "weights"), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dag.weight(0, "bias"), beta - mean * scale, rtol=1e-6, atol=1e-7)


def _interpreter_output(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model_bytes,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def test_int8_mobilenet_v2_on_the_imagenet_image():
    """Float math on dequantized weights, re-quantized at every layer boundary: same top-1 as
    the TFLite interpreter and at least 4 of its top-5 (bit-exact int8 is not the goal here)."""
    data = MOB_V2_TFLITE.read_bytes()
    dag = read_tflite(data, "mob_v2")
    image = load_image_uint8()
    (ours,) = run_dag(dag, image)
    reference = _interpreter_output(data, image)
    assert ours.dtype == reference.dtype == np.uint8 and ours.shape == reference.shape == (1, 1000)
    top5_ours = np.argsort(-ours[0].astype(int), kind="stable")[:5]
    top5_ref = np.argsort(-reference[0].astype(int), kind="stable")[:5]
    assert top5_ours[0] == top5_ref[0]
    assert len(set(top5_ours) & set(top5_ref)) >= 4
    # a real image gives a confident class, not a flat output
    assert reference[0].max() > 50


def test_int8_intermediates_stay_close_to_the_interpreter():
    """Layer by layer, the simulated quantized tensors agree with the interpreter's on most
    elements; where they differ it is by rounding that grows along the network."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    data = MOB_V2_TFLITE.read_bytes()
    dag = read_tflite(data, "mob_v2")
    image = load_image_uint8()
    interpreter = Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    ours = run_dag(dag, image, keep=True)
    from extractor.tflite_reader import parse_tflite

    _, subgraph = parse_tflite(data)
    for layer_id in (1, 2, 3):  # the first layers, before rounding differences accumulate
        out = dag[layer_id].outputs[0]
        reference = interpreter.get_tensor(int(subgraph.operators[layer_id].outputs[0])).astype(int)
        mine = np.round(ours.values[(layer_id, 0)] / out["scale"]).astype(int) + out["zero_point"]
        mismatch = np.abs(mine.reshape(reference.shape) - reference)
        assert mismatch.max() <= 3 and (mismatch > 0).mean() < 0.02
