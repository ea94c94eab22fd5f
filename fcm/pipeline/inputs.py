"""Inputs to run a model on: random ones, or a real image.

In: an ONNX model and a batch size (random inputs), or an image file (a real input). Out: numpy
arrays in the model's input dtypes and shapes: floats uniform in [-1, 1], integers over their
whole range, or the image resized as an NHWC uint8 batch of one.
"""

from __future__ import annotations

import os

import numpy as np
import onnx


def random_inputs(model: onnx.ModelProto, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    arrays = []
    initializers = {i.name for i in model.graph.initializer}
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        tensor_type = graph_input.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        shape = [batch if i == 0 else (d or 1) for i, d in enumerate(dims)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.uniform(-1.0, 1.0, shape).astype(dtype))
        else:
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype))
    return arrays


def load_image(path: str | os.PathLike, size: int = 224) -> np.ndarray:
    """An image file resized to size x size, as a [1, H, W, 3] uint8 batch."""
    import tensorflow as tf

    image = tf.io.decode_jpeg(open(path, "rb").read(), channels=3)
    image = tf.image.resize(image, (size, size)).numpy()
    return np.clip(np.round(image), 0, 255).astype(np.uint8)[None]
