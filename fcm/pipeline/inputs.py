"""Inputs to run a model on: random ones, or a real image.

In: an ONNX model and a batch size (random inputs), or an image file (a real input). Out: numpy
arrays in the model's input dtypes and shapes: floats uniform in [-1, 1], integers over their
whole range, or the image resized as an NHWC uint8 batch of one; or random images
(:func:`image_like_inputs`): smooth random scenes with fine noise, in a given value range, for the
agreement of classifiers (uniform noise is nothing a classifier was made for).
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


def image_like_inputs(model: onnx.ModelProto, count: int, rng: np.random.Generator,
                      value_range: tuple[float, float] = (-1.0, 1.0)) -> list[np.ndarray]:
    """``count`` random images for a model with one NHWC (or NCHW) image input, as float32 in
    ``value_range``: per image a coarse random colour field (4x4 to 16x16 cells) smoothly upsampled,
    plus pixel noise of a twentieth of the range. Other inputs get :func:`random_inputs`'s values."""
    arrays = random_inputs(model, count, rng)
    lo, hi = value_range
    for index, array in enumerate(arrays):
        if array.ndim != 4 or not np.issubdtype(array.dtype, np.floating):
            continue
        channels_last = array.shape[3] <= 4 or array.shape[1] > 4  # a few colour channels
        n, h, w, c = array.shape if channels_last else (array.shape[0], array.shape[2], array.shape[3], array.shape[1])
        images = np.empty((n, h, w, c), np.float64)
        for k in range(n):
            cells = int(rng.integers(4, 17))
            coarse = rng.uniform(0.0, 1.0, (cells, cells, c))
            rows = np.linspace(0, cells - 1, h)
            cols = np.linspace(0, cells - 1, w)
            r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
            r1, c1 = np.minimum(r0 + 1, cells - 1), np.minimum(c0 + 1, cells - 1)
            fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
            top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c1] * fc
            bottom = coarse[r1][:, c0] * (1 - fc) + coarse[r1][:, c1] * fc
            images[k] = top * (1 - fr) + bottom * fr + rng.normal(0.0, 0.05, (h, w, c))
        images = lo + (hi - lo) * np.clip(images, 0.0, 1.0)
        arrays[index] = (images if channels_last else images.transpose(0, 3, 1, 2)).astype(array.dtype)
    return arrays
