"""Opening a model, whatever form it comes in, safely.

In: a model specification, one of
- a ``keras.Model`` object;
- ``keras:<Name>``, a ``keras.applications`` architecture (``keras:MobileNetV2``), built with
  random weights from a fixed seed unless ``weights`` says otherwise;
- a ``.keras`` or ``.h5`` file (loaded in Keras' safe mode: no code from the file is run);
- a TensorFlow SavedModel directory (converted to TFLite by TensorFlow's own converter);
- a ``.tflite`` file (parsed as a flatbuffer; nothing is executed).
Out: a :class:`~extractor.dag.Dag` (via the Keras or the TFLite reader).

TensorFlow is imported only when a Keras model or SavedModel needs it.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fcm_core.errors import FcmError, FcmWarning, one_line

from .dag import Dag

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
KERAS_PREFIX = "keras:"


@dataclass
class SourceOptions:
    """How to build ``keras:<Name>`` models."""

    input_size: int | None = None  # square input side; the architecture's default when None
    weights: str | None = None  # None: random (seeded); "imagenet"; or a path to a weights file
    seed: int = 0
    logits: bool = False  # classifier_activation=None: the model outputs logits


def quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ start-up chatter off the terminal (set before it is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def import_keras():
    quiet_tensorflow()
    try:
        import keras
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise FcmError(f"reading Keras models needs TensorFlow/Keras ({exc})") from None
    return keras


def describe_spec(spec: Any) -> str:
    if isinstance(spec, (str, os.PathLike)):
        return os.fspath(spec)
    return f"<{type(spec).__name__} {getattr(spec, 'name', '')}>".replace(" >", ">")


#: The values random inputs take for a model that does not say otherwise.
DEFAULT_INPUT_RANGE = (-1.0, 1.0)
#: Pixel values: what a Keras model that rescales its input itself takes (keras.applications'
#: MobileNetV3 and EfficientNet models begin with a Rescaling to [0, 1] or [-1, 1]).
PIXEL_RANGE = (0.0, 255.0)


def keras_input_range(model: Any) -> tuple[float, float]:
    """The values ``model``'s image input takes: :data:`PIXEL_RANGE` where one of its first layers
    rescales pixel values to [0, 1] or [-1, 1] (a Rescaling by 1/255 or 1/127.5), else
    :data:`DEFAULT_INPUT_RANGE`."""
    for layer in getattr(model, "layers", [])[:4]:  # the input layer, then the first few
        if type(layer).__name__ == "Rescaling":
            scale = np.asarray(layer.scale, np.float64).ravel()
            if scale.size == 1 and min(abs(scale[0] * 255 - 1), abs(scale[0] * 127.5 - 1)) < 1e-3:
                return PIXEL_RANGE
            break
    return DEFAULT_INPUT_RANGE


@dataclass
class OpenedModel:
    """A model opened from a specification: a Keras model object, or a file to read."""

    kind: str  # "keras", "tflite" or "savedmodel"
    where: str
    keras_model: Any = None
    path: Path | None = None

    @property
    def input_range(self) -> tuple[float, float]:
        """The values its random inputs take (:func:`keras_input_range`; files: [-1, 1])."""
        return keras_input_range(self.keras_model) if self.kind == "keras" else DEFAULT_INPUT_RANGE

    def dag(self) -> Dag:
        from .keras_reader import read_keras
        from .tflite_reader import read_tflite

        try:
            if self.kind == "keras":
                return read_keras(self.keras_model, self.where)
            if self.kind == "tflite":
                return read_tflite(self.path.read_bytes(), self.where)
            return read_tflite(savedmodel_to_tflite(self.path), self.where)
        except FcmError as exc:
            if exc.where is None:
                raise FcmError(exc.message, self.where) from None
            raise


def open_model(spec: Any, options: SourceOptions | None = None) -> OpenedModel:
    """Open ``spec`` (see module docstring) without reading it into a DAG yet."""
    options = options or SourceOptions()
    where = describe_spec(spec)
    if not isinstance(spec, (str, os.PathLike)):
        if hasattr(spec, "layers") and hasattr(spec, "inputs"):
            return OpenedModel("keras", where, keras_model=spec)
        raise FcmError(f"cannot read a {type(spec).__name__}: expected a keras.Model, a file or a keras:<Name>")
    text = os.fspath(spec)
    if text.startswith(KERAS_PREFIX):
        return OpenedModel("keras", where, keras_model=keras_application(text[len(KERAS_PREFIX):], options))
    _reject_build_options(options, where)
    path = Path(text)
    if not path.exists():
        raise FcmError("no such file or directory", where)
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return OpenedModel("savedmodel", where, path=path)
        raise FcmError("a directory, but not a SavedModel (no saved_model.pb in it)", where)
    kind = sniff(path)
    if kind == "tflite":
        return OpenedModel("tflite", where, path=path)
    if kind in ("keras", "h5"):
        return OpenedModel("keras", where, keras_model=load_keras_file(path))
    if kind == "empty":
        raise FcmError("the file is empty", where)
    raise FcmError("not a model file this tool reads (expected a .tflite, .keras or .h5 file, or a SavedModel "
                   "directory, or keras:<Name>)", where)


def extract(spec: Any, options: SourceOptions | None = None) -> Dag:
    """Open ``spec`` (see module docstring) and read it into a DAG."""
    return open_model(spec, options).dag()


def _reject_build_options(options: SourceOptions, where: str) -> None:
    if options.input_size is not None or options.weights is not None or options.logits:
        raise FcmError("--input-size, --weights and --logits apply to keras:<Name> models only", where)


def sniff(path: Path) -> str:
    """'tflite', 'keras', 'h5', 'empty' or 'unknown', from the file's first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        return "empty"
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "tflite"
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head.startswith(HDF5_MAGIC):
        return "h5"
    if path.suffix == ".tflite":
        return "tflite"  # let the flatbuffer check say what is wrong with it
    return "unknown"


# --- keras.applications -------------------------------------------------------------------------

def application_names() -> list[str]:
    keras = import_keras()
    return sorted(n for n in dir(keras.applications) if n[:1].isupper() and callable(getattr(keras.applications, n)))


def keras_application(name: str, options: SourceOptions) -> Any:
    keras = import_keras()
    builder = getattr(keras.applications, name, None)
    if builder is None or not name[:1].isupper():
        close = [n for n in application_names() if n.lower().startswith(name.lower()[:5])]
        hint = f" (did you mean {', '.join(close[:5])}?)" if close else ""
        raise FcmError(f"keras.applications has no model '{name}'{hint}", f"{KERAS_PREFIX}{name}")
    kwargs: dict[str, Any] = {"weights": None}
    if options.input_size is not None:
        if options.input_size < 32:
            raise FcmError(f"--input-size {options.input_size} is too small (at least 32)")
        kwargs["input_shape"] = (options.input_size, options.input_size, 3)
    if options.logits:
        kwargs["classifier_activation"] = None
    weights_file = None
    if options.weights not in (None, "", "none", "random"):
        if options.weights == "imagenet":
            kwargs["weights"] = "imagenet"
        else:
            weights_file = Path(options.weights)
            if not weights_file.is_file():
                raise FcmError("no such weights file", weights_file)
    # layers named automatically ("add", "add_1", ...) count from zero whatever was built before in
    # this process: the same DAG from `fcm convert` and from `make zoo`'s sixth model
    keras.backend.clear_session()
    keras.utils.set_random_seed(options.seed)
    try:
        model = builder(**kwargs)
        if "input_shape" not in kwargs and any(d is None for d in model.inputs[0].shape[1:]):
            # architectures that accept any size (MobileNetV3, ...) are built at 224 unless told
            keras.utils.set_random_seed(options.seed)
            model = builder(**kwargs, input_shape=(224, 224, 3))
    except TypeError as exc:
        raise FcmError(f"cannot build {name} with these options: {one_line(exc)}", f"{KERAS_PREFIX}{name}") from None
    except ValueError as exc:
        raise FcmError(one_line(exc), f"{KERAS_PREFIX}{name}") from None
    except Exception as exc:  # downloading ImageNet weights without a network, mostly
        raise FcmError(f"could not build the model ({type(exc).__name__}: {one_line(exc)})",
                       f"{KERAS_PREFIX}{name}") from None
    if weights_file is not None:
        try:
            model.load_weights(weights_file)
        except Exception as exc:
            raise FcmError(f"cannot load these weights into {name}: {one_line(exc)}", weights_file) from None
    elif kwargs["weights"] is None:
        randomize_batchnorm(model, np.random.default_rng(options.seed))
    return model


def randomize_batchnorm(model: Any, rng: np.random.Generator, batch: int = 8) -> None:
    """Make a randomly initialised model's BatchNormalization layers non-trivial and its layers
    input-dependent: random scale and shift, then moving statistics set to those of a batch of
    random inputs (uniform in the model's input range, :func:`keras_input_range`: pixel values for a
    model that rescales its input, else [-1, 1]; calibrated on [-1, 1], such a model would see
    images varying by under 1% around one value, and amplify that variation, and any rounding of
    it, to full scale).

    A freshly built network's BN layers are identities and, untrained, its activations forget the
    input within a few layers, so comparing two implementations' outputs would prove little.
    With calibrated statistics every layer's output varies with the input, as in a trained model.
    """
    bn_layers = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    if not bn_layers:
        return
    for layer in bn_layers:
        shape = tuple(layer.moving_mean.shape)
        if layer.scale:
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape).astype(np.float32))
        if layer.center:
            layer.beta.assign(rng.normal(0.0, 0.2, shape).astype(np.float32))
    # One training-mode pass normalises each BN by its batch statistics; with momentum 0 the moving
    # statistics become exactly those, layer after layer, in a single forward pass.
    momenta = [layer.momentum for layer in bn_layers]
    input_shape = [batch] + [int(d) for d in model.inputs[0].shape[1:]]
    low, high = keras_input_range(model)
    sample = rng.uniform(low, high, input_shape).astype(np.float32)
    try:
        for layer in bn_layers:
            layer.momentum = 0.0
        model(sample, training=True)
    finally:
        for layer, momentum in zip(bn_layers, momenta):
            layer.momentum = momentum
    # Channels that are (nearly) constant on the sample, e.g. dead after a ReLU, would get a huge
    # 1/sqrt(variance) gain that amplifies float32 rounding; bound the gain per layer.
    for layer in bn_layers:
        variance = layer.moving_variance.numpy()
        layer.moving_variance.assign(np.maximum(variance, 0.1 * float(variance.mean()) + 1e-6).astype(np.float32))


# --- .keras / .h5 files ---------------------------------------------------------------------------

def load_keras_file(path: Path) -> Any:
    """Load a ``.keras``/``.h5`` model in safe mode; unknown custom layers become opaque
    placeholders (their weights kept, nothing of theirs run) if the rest of the model can be read."""
    where = os.fspath(path)
    _check_archive(path, where)
    keras = import_keras()
    try:
        return _load(keras, path, {})
    except FcmError:
        raise
    except Exception as exc:
        first_error = exc
    unknown = _unknown_classes(keras, path)
    if not unknown:
        raise FcmError(f"Keras could not load the model: {_short(first_error)}", where) from None
    placeholders = {name: _placeholder_class(keras, name, shapes) for name, shapes in unknown.items()}
    try:
        model = _load(keras, path, placeholders)
    except Exception as exc:
        raise FcmError(f"Keras could not load the model ({', '.join(sorted(unknown))} unknown): {_short(exc)}", where) from None
    warnings.warn(f"{where}: custom layer class(es) {', '.join(sorted(unknown))} not registered; "
                  "kept as opaque entries", FcmWarning, stacklevel=2)
    return model


def _check_archive(path: Path, where: str) -> None:
    """A ``.keras`` file is a zip archive: one that is cut short or damaged is said to be so (Keras
    itself reports it as "File not found")."""
    if sniff(path) != "keras":
        return
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise FcmError(f"a damaged .keras file: not a complete zip archive (truncated?): {one_line(exc)}", where) from None
    if damaged is not None:
        raise FcmError(f"a damaged .keras file: its member {damaged} fails its checksum", where)


def _load(keras: Any, path: Path, custom_objects: dict) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns about missing optimizer state etc.
        return keras.saving.load_model(path, custom_objects=custom_objects or None, compile=False, safe_mode=True)


def _short(exc: Exception) -> str:
    text = str(exc).strip()
    match = re.search(r"(Could not (?:locate|deserialize)[^\n]*|Unknown layer[^\n]*|Requested the deserialization[^\n]*)", text)
    return one_line(match.group(1) if match else text or type(exc).__name__)


def _model_config(path: Path) -> dict | None:
    """The architecture JSON of a ``.keras`` or ``.h5`` file, read without running anything."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return json.loads(archive.read("config.json"))
        import h5py

        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            if raw is None:
                return None
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except Exception:
        return None


def _unknown_classes(keras: Any, path: Path) -> dict[str, dict[str, Any]]:
    """Custom layer classes Keras cannot resolve: ``{name: {"output_shapes": {layer: shape},
    "weight_shapes": {layer: [shapes]}}}``. The output shape of an unknown layer is read off the
    layers it feeds (their recorded input shapes)."""
    config = _model_config(path)
    if config is None:
        return {}
    layers = (config.get("config") or {}).get("layers") or []
    unknown: dict[str, dict[str, Any]] = {}
    for layer in layers:
        module, class_name = layer.get("module"), layer.get("class_name", "")
        registered = layer.get("registered_name") or class_name
        if module and module.startswith("keras"):
            continue
        if keras.saving.get_registered_object(registered) is not None or hasattr(keras.layers, class_name):
            continue
        entry = unknown.setdefault(registered, {"output_shapes": {}, "weight_shapes": {}})
        entry["output_shapes"][layer["config"]["name"]] = _consumer_input_shape(layers, layer["config"]["name"])
        entry["weight_shapes"][layer["config"]["name"]] = _h5_weight_shapes(path, layer["config"]["name"])
    return unknown


def _consumer_input_shape(layers: list[dict], name: str) -> list | None:
    for layer in layers:
        for node in layer.get("inbound_nodes") or []:
            args = node.get("args", []) if isinstance(node, dict) else node
            if name in json.dumps(args):
                shape = (layer.get("build_config") or {}).get("input_shape")
                if shape and not isinstance(shape[0], list):
                    return shape
    return None


def _h5_weight_shapes(path: Path, layer_name: str) -> list[tuple[int, ...]]:
    if zipfile.is_zipfile(path):
        return []  # .keras archives hand each layer its own variables (load_own_variables)
    try:
        import h5py

        with h5py.File(path, "r") as handle:
            group = handle["model_weights"][layer_name]
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("weight_names", [])]
            return [tuple(group[n].shape) for n in names]
    except Exception:
        return []


def _placeholder_class(keras: Any, class_name: str, info: dict[str, Any]) -> type:
    """A stand-in for an unregistered layer class: it keeps its config and weights, declares the
    output shape its consumers expect, and refuses to compute."""
    output_shapes, weight_shapes = info["output_shapes"], info["weight_shapes"]

    class OpaqueLayer(keras.layers.Layer):
        def __init__(self, **config):
            base = {k: config.pop(k) for k in ("name", "trainable", "dtype") if k in config}
            super().__init__(**base)
            self.opaque_config = config
            self.opaque_weights = []

        def build(self, input_shape):
            for index, shape in enumerate(weight_shapes.get(self.name, [])):
                self.add_weight(shape=shape, initializer="zeros", name=f"w{index}", trainable=False)
            self.built = True

        def compute_output_shape(self, input_shape):
            shape = output_shapes.get(self.name)
            return tuple(shape) if shape else input_shape

        def call(self, inputs):
            raise FcmError(f"layer '{self.name}' ({class_name}) is opaque and cannot be run")

        def load_own_variables(self, store):
            import numpy as np

            self.opaque_weights = [np.asarray(store[k]) for k in sorted(store.keys(), key=lambda k: int(k) if str(k).isdigit() else 0)]

        def get_config(self):
            return {**super().get_config(), **self.opaque_config}

    OpaqueLayer.__name__ = OpaqueLayer.__qualname__ = class_name.split(">")[-1]
    return OpaqueLayer


# --- SavedModel ------------------------------------------------------------------------------------

def savedmodel_to_tflite(path: Path) -> bytes:
    """Convert a SavedModel to an fp32 TFLite flatbuffer with TensorFlow's converter."""
    quiet_tensorflow()
    try:
        import tensorflow as tf
    except ImportError as exc:  # pragma: no cover
        raise FcmError(f"reading SavedModels needs TensorFlow ({exc})", path) from None
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(path))
        return converter.convert()
    except Exception as exc:
        raise FcmError(f"TensorFlow could not convert the SavedModel: {one_line(exc)}", path) from None
