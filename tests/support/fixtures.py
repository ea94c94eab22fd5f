"""Where the shared fixtures are, and the models and images tests run on.

In: ``$FCM_SHARED`` (default: ``../shared`` beside the repository). Out: paths to the seed's
fixtures, keras.applications models with seeded random weights (cached), the fixture image, the
TFLite interpreter's tensors on the int8 MobileNetV2.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from extractor.sources import randomize_batchnorm
from fcm.pipeline.inputs import load_image

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("FCM_SHARED", ROOT.parent / "shared"))
SEED = SHARED / "fixtures" / "seed_repo"
MOB_V2_TFLITE = SEED / "mob_v2_8.tflite"
IMAGENET_IMAGE = SEED / "ILSVRC2012_val_00000932.JPEG"
#: keras.applications models cheap enough to convert in the tests (the ``converted`` fixture).
CHEAP = ["MobileNet", "MobileNetV2", "MobileNetV3Small"]


def seed_dag_path(model: str) -> Path:
    return SEED / "dags" / f"{model}.model_dag.json"


_MODEL_CACHE: dict = {}


def keras_model(name: str, *, input_size: int = 224, logits: bool = True, random_bn: bool = True, seed: int = 0):
    """A keras.applications model with seeded random weights (cached for the session)."""
    key = (name, input_size, logits, random_bn, seed)
    if key not in _MODEL_CACHE:
        import keras

        keras.utils.set_random_seed(seed)
        kwargs = {"weights": None, "input_shape": (input_size, input_size, 3)}
        if logits:
            kwargs["classifier_activation"] = None
        model = getattr(keras.applications, name)(**kwargs)
        if random_bn:
            randomize_batchnorm(model, np.random.default_rng(seed + 1))
        _MODEL_CACHE[key] = model
    return _MODEL_CACHE[key]


def load_image_uint8(size: int = 224) -> np.ndarray:
    """The fixture ImageNet image, resized to size x size, as a [1, H, W, 3] uint8 batch."""
    return load_image(IMAGENET_IMAGE, size)


def interpreter_tensors(image: np.ndarray, builtin: bool, operators: int):
    """The TFLite interpreter run on the int8 MobileNetV2 fixture with every tensor kept: (the
    interpreter, the details of the model's first ``operators`` operators, in model order). The
    builtin kernels, or the default resolver (XNNPACK)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if builtin else OpResolverType.AUTO
    interpreter = Interpreter(str(MOB_V2_TFLITE), experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    return interpreter, interpreter._get_ops_details()[:operators]
