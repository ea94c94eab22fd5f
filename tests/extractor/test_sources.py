"""Every way of handing over a model: Keras objects and files, SavedModels, keras: names."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from extractor.executor import run_dag
from extractor.keras_reader import read_keras
from extractor.sources import SourceOptions, extract
from fcm.cli import main
from fcm_core.errors import FcmError, FcmWarning
from tests.support.fixtures import keras_model
from tests.support.dag_compare import match_convs


def _small_model(seed: int = 0, dilation: int = 2):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((20, 18, 5))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    y = keras.layers.DepthwiseConv2D(5, padding="same", depth_multiplier=2)(x)
    y = keras.layers.Activation("swish")(y)
    y = keras.layers.Conv2D(8, 1)(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.SeparableConv2D(12, 3, dilation_rate=dilation, activation="relu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(7)(x)
    model = keras.Model(inputs, x)
    from extractor.sources import randomize_batchnorm

    randomize_batchnorm(model, np.random.default_rng(seed))
    return model


def _check_runs_like_keras(model, dag, rng):
    x = rng.uniform(-1, 1, (3,) + tuple(model.inputs[0].shape[1:])).astype(np.float32)
    reference = model.predict(x, verbose=0)
    (ours,) = run_dag(dag, x)
    assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()


def test_keras_object_with_odd_shapes_and_layers(rng):
    model = _small_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FcmWarning)
        dag = extract(model)
    names = [layer.name for layer in dag]
    assert names == ["conv_2d", "depthwise_conv_2d", "logistic", "mul", "conv_2d", "add", "depthwise_conv_2d", "conv_2d",
                     "max_pool_2d", "mean", "fully_connected"]
    dw = dag[1]
    assert dw.weights_shape == [16, 5, 5] and dw.depth_multiplier == 2 and dw.pads == [2, 2, 2, 2]
    assert dag[0].activation == "RELU6" and dag[0].pads == [0, 1, 0, 1]  # SAME, stride 2: 20 -> 10, 18 -> 9
    assert dag[6].dilation == [2, 2] and dag[7].activation == "RELU"
    _check_runs_like_keras(model, dag, rng)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_files(tmp_path, suffix, rng):
    model = _small_model()
    path = tmp_path / f"model{suffix}"
    model.save(path)
    dag = extract(path)
    reference = extract(model)
    mapping, differences = match_convs(dag, reference)
    assert differences == {} and len(mapping) == 5
    _check_runs_like_keras(model, dag, rng)


def test_saved_model_directory(tmp_path, rng):
    # (TensorFlow's converter turns a dilated separable conv into space-to-batch ops; keep it plain)
    model = _small_model(dilation=1)
    path = tmp_path / "saved"
    model.export(path, verbose=False)
    dag = extract(path)
    assert dag[0].source["format"] == "tflite"
    mapping, differences = match_convs(dag, extract(model))
    assert differences == {} and len(mapping) == 5
    _check_runs_like_keras(model, dag, rng)


def _model_with_custom_layer(register: bool):
    import keras

    package = "fcm_tests_registered" if register else "fcm_tests_unregistered"

    @keras.saving.register_keras_serializable(package=package)
    class ChannelScale(keras.layers.Layer):
        def build(self, shape):
            self.scale = self.add_weight(shape=(shape[-1],), initializer="random_normal")

        def call(self, x):
            return x * self.scale

    keras.utils.set_random_seed(3)
    inputs = keras.Input((9, 9, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = ChannelScale(name="scale")(x)
    x = keras.layers.Conv2D(2, 1)(x)
    return keras.Model(inputs, x), package


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_unknown_custom_layer_is_kept_opaque(tmp_path, suffix):
    import keras

    model, package = _model_with_custom_layer(register=False)
    path = tmp_path / f"custom{suffix}"
    model.save(path)
    # a fresh process would not know the class: forget it
    keras.saving.get_custom_objects().pop(f"{package}>ChannelScale", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FcmWarning)
        dag = extract(path)
    assert any("ChannelScale" in str(w.message) for w in caught)
    assert [layer.name for layer in dag] == ["conv_2d", "custom", "conv_2d"]
    opaque = dag[1]
    assert opaque.opaque and opaque.options["custom_code"] == "ChannelScale"
    assert opaque.parents == [0] and opaque.children == [2] and opaque.ofms_shape == [1, 7, 7, 4]
    np.testing.assert_array_equal(dag.weight(1, "weight0"), model.get_layer("scale").scale.numpy())
    with pytest.raises(FcmError, match="not supported by the reference executor"):
        run_dag(dag, np.zeros((1, 9, 9, 3), np.float32))


def test_keras_application_names_and_options(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["-q", "extract", "keras:MobileNetV2", "--input-size", "96", "--logits", "--seed", "4", "-o", str(out)]) == 0
    from extractor.dag import Dag

    dag = Dag.load(out)
    assert dag[0].ifms_shape == [3, 96, 96]
    assert dag[len(dag) - 1].name == "fully_connected"  # no softmax with --logits
    # the same seed gives the same weights
    again = extract("keras:MobileNetV2", SourceOptions(input_size=96, logits=True, seed=4))
    np.testing.assert_array_equal(again.weight(0, "weights"), dag.weight(0, "weights"))
    other = extract("keras:MobileNetV2", SourceOptions(input_size=96, logits=True, seed=5))
    assert not np.array_equal(other.weight(0, "weights"), dag.weight(0, "weights"))


def test_build_options_only_for_keras_names(tmp_path):
    from tests.support.fixtures import MOB_V2_TFLITE

    with pytest.raises(FcmError, match="keras:<Name> models only"):
        extract(MOB_V2_TFLITE, SourceOptions(input_size=96))


def test_weights_file_option(tmp_path):
    model = keras_model("MobileNet", input_size=128, logits=True, seed=7)
    weights = tmp_path / "mobilenet.weights.h5"
    model.save_weights(weights)
    dag = extract("keras:MobileNet", SourceOptions(input_size=128, logits=True, weights=str(weights)))
    expected = read_keras(model)
    for key in ("0/weights", "0/bias", "1/weights"):
        np.testing.assert_allclose(dag.weights[key], expected.weights[key], rtol=1e-6)
    with pytest.raises(FcmError, match="no such weights file"):
        extract("keras:MobileNet", SourceOptions(weights=str(tmp_path / "missing.h5")))


def test_nested_models_are_inlined(rng):
    import keras

    inner = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.DepthwiseConv2D(3, padding="same"),
                              keras.layers.Conv2D(5, 1, activation="relu6")])
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    x = inner(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    dag = extract(model)
    assert [layer.name for layer in dag] == ["conv_2d", "depthwise_conv_2d", "conv_2d", "mean"]
    assert dag[2].activation == "RELU6"
    _check_runs_like_keras(model, dag, rng)
