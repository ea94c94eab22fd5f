"""Small models that convert in seconds, for tests of the command line and of what it writes.

In: a folder. Out: a ``.keras`` file of a small depthwise-separable network (one fusion group or
more), a fused one-node ONNX model and its unfused form (no TensorFlow needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_keras(folder: Path, name: str = "tiny.keras") -> Path:
    """A .keras file: conv, then a depthwise -> pointwise pair and a pointwise -> depthwise ->
    pointwise block, pooled into 5 logits, 24x24x3 input, random batch-norm statistics."""
    import keras

    from extractor.sources import randomize_batchnorm

    keras.utils.set_random_seed(3)
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu6")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu6")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.Conv2D(16, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(x))
    randomize_batchnorm(model, np.random.default_rng(3))
    path = Path(folder) / name
    model.save(path)
    return path


def fused_pair(rng):
    """(fused, unfused): a one-node fused ONNX model (pw -> dw -> pw, residual) and its function
    body as a plain model."""
    from ort_custom_ops.ops.schema import Activation, FcmSpec, StageSpec
    from ort_custom_ops.ops.standalone import fused_model, reference_model

    c, e = 6, 12
    spec = FcmSpec("pwdwpw", [
        StageSpec("pw", rng.normal(size=(e, c)).astype(np.float32), np.zeros(e, np.float32), Activation("relu6")),
        StageSpec("dw", rng.normal(size=(e, 3, 3)).astype(np.float32), np.zeros(e, np.float32), Activation("relu6"), 1,
                  (1, 1, 1, 1)),
        StageSpec("pw", rng.normal(size=(c, e)).astype(np.float32), np.zeros(c, np.float32)),
    ], residual=True)
    return fused_model(spec, 10, 9), reference_model(spec, 10, 9)
