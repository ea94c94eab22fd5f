"""Inputs to run a model on: random ones, or a real image.

In: an ONNX model and a batch size (random inputs), or an image file (a real input). Out: numpy
arrays in the model's input dtypes and shapes: floats uniform in a value range (default [-1, 1]),
integers over their whole range, or the image resized as an NHWC uint8 batch of one; or random images
(:func:`image_like_inputs`) with natural images' statistics, in a given value range, for the
agreement of classifiers (uniform noise is nothing a classifier was made for).
"""

from __future__ import annotations

import os

import numpy as np
import onnx

from extractor.sources import DEFAULT_INPUT_RANGE


def random_inputs(model: onnx.ModelProto, batch: int, rng: np.random.Generator,
                  value_range: tuple[float, float] = DEFAULT_INPUT_RANGE) -> list[np.ndarray]:
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
            arrays.append(rng.uniform(value_range[0], value_range[1], shape).astype(dtype))
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
                      value_range: tuple[float, float] = DEFAULT_INPUT_RANGE) -> list[np.ndarray]:
    """``count`` random images for a model with one NHWC (or NCHW) image input, as float32 in
    ``value_range``, with the statistics of natural images rather than noise: an amplitude spectrum
    falling as 1/f^a (a drawn near 1, as measured on photographs), colour channels that share most
    of their structure (a luminance field plus weaker chroma fields), and a random contrast and
    brightness. Other inputs get :func:`random_inputs`'s values."""
    arrays = random_inputs(model, count, rng)
    lo, hi = value_range
    for index, array in enumerate(arrays):
        if array.ndim != 4 or not np.issubdtype(array.dtype, np.floating):
            continue
        channels_last = array.shape[3] <= 4 or array.shape[1] > 4  # a few colour channels
        n, h, w, c = array.shape if channels_last else (array.shape[0], array.shape[2], array.shape[3], array.shape[1])
        frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.rfftfreq(w), indexing="ij"))
        frequency[0, 0] = 1.0 / max(h, w)
        images = np.empty((n, h, w, c), np.float64)
        for k in range(n):
            fields = np.fft.rfft2(rng.normal(size=(c, h, w)), axes=(1, 2)) / frequency ** rng.uniform(0.8, 1.2)
            fields = np.fft.irfft2(fields, s=(h, w), axes=(1, 2))
            fields /= fields.std(axis=(1, 2), keepdims=True) + 1e-12
            mix = np.full((c, c), 0.0)
            mix[:, 0] = 1.0  # luminance, in every channel
            mix[:, 1:] = rng.normal(0.0, 0.3, (c, c - 1))  # weaker chroma
            image = np.tensordot(fields, mix, axes=([0], [1]))  # (h, w, c)
            low, high = np.percentile(image, [1, 99])
            image = (image - low) / max(high - low, 1e-12)  # most values in [0, 1]
            contrast, brightness = rng.uniform(0.5, 1.0), rng.uniform(-0.2, 0.2)
            images[k] = np.clip(0.5 + contrast * (image - 0.5) + brightness, 0.0, 1.0)
        images = lo + (hi - lo) * images
        arrays[index] = (images if channels_last else images.transpose(0, 3, 1, 2)).astype(array.dtype)
    return arrays
