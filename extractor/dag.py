"""The layer DAG: the extractor's output and the planner's input.

In: nothing (this module defines the format). Out: :class:`Dag`, a list of :class:`Layer` entries
in execution order plus their weights, read from and written to

- ``dag.json``: the seed's format (a JSON list, one entry per operator, same field names and
  conventions) with the extension fields documented in ``docs/dag_format.md``;
- ``weights.npz``: plain numpy arrays (never pickled objects) keyed ``"<layer id>/<name>"``,
  e.g. ``"3/weights"``, ``"3/bias"``, ``"3/weights_scales"``.

Readers accept the seed's own files as they are (no weights, no extension fields).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fcm_core.errors import FcmError
from fcm_core.fileio import staged_directory

from .ops import NO_ACTIVATION

DAG_FILE = "dag.json"
WEIGHTS_FILE = "weights.npz"

#: The seed's fields, in the order its files list them.
SEED_FIELDS = (
    "name",
    "id",
    "activation",
    "parents",
    "children",
    "type",
    "weights_shape",
    "ifms_shape",
    "ofms_shape",
    "strides",
    "ifms_scales",
    "ifms_zero_points",
    "ofms_scales",
    "ofms_zero_points",
    "padding_top",
    "padding_bottom",
    "padding_left",
    "padding_right",
)

#: Our extension fields (docs/dag_format.md says what each holds).
EXTENSION_FIELDS = (
    "kernel_size",
    "strides_hw",
    "dilation",
    "padding",
    "pads",
    "depth_multiplier",
    "groups",
    "has_bias",
    "activation_params",
    "inputs",
    "outputs",
    "options",
    "source",
    "opaque",
)

CONV_TYPES = ("s", "dw", "pw")


# --- what each field may hold (a file's entries are checked against this when read) -------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(_is_int(v) for v in value)


def _int_or_ints(value: Any) -> bool:
    return _is_int(value) or _ints(value)


def _number_or_numbers(value: Any) -> bool:
    return _is_number(value) or (isinstance(value, list) and all(_is_number(v) for v in value))


#: an operand object's keys, where given, and the types the readers write there
_REF_CHECKS = {"shape": _ints, "scale": _number_or_numbers, "zero_point": _int_or_ints, "op": _is_int, "index": _is_int,
               "dtype": lambda v: isinstance(v, str), "model_output": _is_int}


def _tensor_refs(value: Any) -> bool:
    """``inputs``/``outputs``: one dict per operand (inputs may hold null), checked by ``_REF_CHECKS``."""
    if not isinstance(value, list):
        return False
    for ref in value:
        if ref is None:
            continue
        if not isinstance(ref, dict) or any(key in ref and not check(ref[key]) for key, check in _REF_CHECKS.items()):
            return False
    return True


_STRING = ("a string", lambda v: isinstance(v, str))
_INTEGER = ("an integer", _is_int)
_INTEGERS = ("a list of integers", _ints)
_OBJECT = ("an object", lambda v: isinstance(v, dict))
_BOOLEAN = ("true or false", lambda v: isinstance(v, bool))

#: field -> (what it must be, in words; the check). None is always allowed (the field absent).
FIELD_TYPES: dict[str, tuple[str, Any]] = {
    **{name: _STRING for name in ("name", "type", "padding")},
    **{name: _INTEGER for name in ("id", "strides", "depth_multiplier", "groups", "padding_top", "padding_bottom",
                                    "padding_left", "padding_right")},
    **{name: _INTEGERS for name in ("weights_shape", "ifms_shape", "ofms_shape", "kernel_size", "strides_hw", "dilation",
                                     "pads")},
    **{name: _OBJECT for name in ("activation_params", "options", "source")},
    **{name: _BOOLEAN for name in ("has_bias", "opaque")},
    "activation": ("a string", lambda v: isinstance(v, (str, int)) and not isinstance(v, bool)),
    **{name: ("a list of layer ids", _ints) for name in ("parents", "children")},
    **{name: ("a finite number or a list of them", _number_or_numbers) for name in ("ifms_scales", "ofms_scales")},
    **{name: ("an integer or a list of them", _int_or_ints) for name in ("ifms_zero_points", "ofms_zero_points")},
    "inputs": ("a list of operand objects (or null)", _tensor_refs),
    "outputs": ("a list of operand objects", _tensor_refs),
}

#: list fields of a fixed length (height and width; top, bottom, left, right)
LENGTHS = {"kernel_size": 2, "strides_hw": 2, "dilation": 2, "pads": 4}
PADDING_FIELDS = ("padding_top", "padding_bottom", "padding_left", "padding_right")

#: fields that count or measure something, so must be at least 1 (sizes, strides) or 0 (padding)
AT_LEAST = {**{name: 1 for name in ("weights_shape", "ifms_shape", "ofms_shape", "strides", "kernel_size", "strides_hw",
                                     "dilation", "depth_multiplier", "groups")},
            **{name: 0 for name in ("padding_top", "padding_bottom", "padding_left", "padding_right", "pads")}}


@dataclass
class Layer:
    """One operator of the model. Field names follow the seed's DAG files (see module doc)."""

    name: str
    id: int
    activation: str = NO_ACTIVATION
    parents: list[int] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    type: str | None = None
    weights_shape: list[int] | None = None
    ifms_shape: list[int] | None = None
    ofms_shape: list[int] | None = None
    strides: int | None = None
    ifms_scales: float | list[float] | None = None
    ifms_zero_points: int | list[int] | None = None
    ofms_scales: float | None = None
    ofms_zero_points: int | None = None
    padding_top: int | None = None
    padding_bottom: int | None = None
    padding_left: int | None = None
    padding_right: int | None = None
    # --- extensions ---
    kernel_size: list[int] | None = None
    strides_hw: list[int] | None = None
    dilation: list[int] | None = None
    padding: str | None = None
    pads: list[int] | None = None
    depth_multiplier: int | None = None
    groups: int | None = None
    has_bias: bool | None = None
    activation_params: dict[str, Any] | None = None
    inputs: list[dict[str, Any] | None] | None = None
    outputs: list[dict[str, Any]] | None = None
    options: dict[str, Any] | None = None
    source: dict[str, Any] | None = None
    opaque: bool | None = None
    #: fields of a foreign file that this version does not know, kept so nothing is lost
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_conv(self) -> bool:
        return self.type in CONV_TYPES

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in SEED_FIELDS + EXTENSION_FIELDS:
            value = getattr(self, name)
            if value is not None or name in ("activation", "parents", "children"):
                out[name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> "Layer":
        """The layer of a file's entry; a field of the wrong type or out of range is an FcmError."""
        for name, (words, check) in FIELD_TYPES.items():
            value = entry.get(name)
            if value is not None and not check(value):
                raise FcmError(f"'{name}' must be {words}, not {_short_repr(value)}")
            if name in AT_LEAST and value is not None and min(value if isinstance(value, list) else [value], default=1) < AT_LEAST[name]:
                raise FcmError(f"'{name}' must be at least {AT_LEAST[name]}, not {_short_repr(value)}")
            if name in LENGTHS and value is not None and len(value) != LENGTHS[name]:
                raise FcmError(f"'{name}' must hold {LENGTHS[name]} integers, not {_short_repr(value)}")
        if len({entry.get(name) is None for name in PADDING_FIELDS}) > 1:
            raise FcmError(f"{', '.join(PADDING_FIELDS)} come together or not at all")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in entry.items() if k in known}
        extra = {k: v for k, v in entry.items() if k not in known}
        layer = cls(**kwargs, extra=extra)
        layer.parents, layer.children = layer.parents or [], layer.children or []  # (null: none)
        if layer.activation is None:
            layer.activation = NO_ACTIVATION
        layer.activation = str(layer.activation)
        return layer


def _short_repr(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fmt_dag_json(entries: list[dict[str, Any]]) -> str:
    # One entry per line: still a plain JSON list, as the seed's tools expect, but diffable.
    return "[\n" + ",\n".join(json.dumps(e, separators=(", ", ": ")) for e in entries) + "\n]\n"


class Dag:
    """A model's layers in execution order and their weights."""

    def __init__(self, layers: list[Layer], weights: dict[str, np.ndarray] | None = None):
        self.layers = layers
        self.weights: dict[str, np.ndarray] = dict(weights or {})

    # --- access -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, layer_id: int) -> Layer:
        return self.layers[layer_id]

    def convs(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.is_conv]

    def weight(self, layer_id: int, key: str) -> np.ndarray:
        try:
            return self.weights[f"{layer_id}/{key}"]
        except KeyError:
            raise FcmError(f"layer {layer_id} has no '{key}' array in the weights file") from None

    def has_weight(self, layer_id: int, key: str) -> bool:
        return f"{layer_id}/{key}" in self.weights

    def model_outputs(self) -> list[tuple[int, int]]:
        """``(layer id, output index)`` of each model output, in model-output order."""
        found = []
        for layer in self.layers:
            for index, out in enumerate(layer.outputs or []):
                if out.get("model_output") is not None:
                    found.append((out["model_output"], layer.id, index))
        if not found:  # seed files: the entries nobody consumes
            return [(layer.id, 0) for layer in self.layers if not layer.children]
        return [(lid, idx) for _, lid, idx in sorted(found)]

    def to_json(self) -> list[dict[str, Any]]:
        return [layer.to_json() for layer in self.layers]

    # --- consistency --------------------------------------------------------------------------
    def validate(self, where: str | os.PathLike | None = None) -> "Dag":
        """Check ids, edges, acyclicity and the shapes convolutions need; raise :class:`FcmError`."""
        n = len(self.layers)
        for position, layer in enumerate(self.layers):
            if layer.id != position:
                raise FcmError(f"entry {position} has id {layer.id}; ids must equal list positions", where)
            for kind in ("parents", "children"):
                for other in getattr(layer, kind):
                    if not isinstance(other, int) or not 0 <= other < n:
                        raise FcmError(f"layer {layer.id} ({layer.name}) lists {kind[:-1]} {other!r}, which is not a layer id", where)
        for layer in self.layers:
            for parent in layer.parents:
                if layer.id not in self.layers[parent].children:
                    raise FcmError(f"layer {parent} is a parent of {layer.id} but does not list it as a child", where)
            for child in layer.children:
                if layer.id not in self.layers[child].parents:
                    raise FcmError(f"layer {child} is a child of {layer.id} but does not list it as a parent", where)
        cycle = _find_cycle(self.layers)
        if cycle:
            raise FcmError("the graph has a cycle: " + " -> ".join(str(i) for i in cycle), where)
        for layer in self.layers:
            for parent in layer.parents:
                if parent >= layer.id:
                    raise FcmError(f"layer {layer.id} comes before its parent {parent}; entries must be in execution order", where)
        for layer in self.layers:
            if layer.is_conv:
                # weights [F, C] (pw), [C * M, KH, KW] (dw), [F, C, KH, KW] (s); feature maps [C, H, W]
                weight_rank = {"pw": 2, "dw": 3, "s": 4}[layer.type]
                for name, rank in (("weights_shape", weight_rank), ("ifms_shape", 3), ("ofms_shape", 3)):
                    value = getattr(layer, name)
                    if not value or len(value) != rank or not all(isinstance(v, int) and v > 0 for v in value):
                        raise FcmError(f"{layer.type} layer {layer.id} ({layer.name}) has no valid {name} "
                                       f"({rank} positive integers)", where)
        return self

    # --- files --------------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``dag.json`` and ``weights.npz`` into ``directory``, both or neither."""
        directory = Path(directory)
        with staged_directory(directory) as scratch:
            (scratch / DAG_FILE).write_text(_fmt_dag_json(self.to_json()))
            with open(scratch / WEIGHTS_FILE, "wb") as handle:
                np.savez(handle, **{k: np.ascontiguousarray(v) for k, v in sorted(self.weights.items())})
        return directory / DAG_FILE, directory / WEIGHTS_FILE

    @classmethod
    def load(cls, path: str | os.PathLike, weights: str | os.PathLike | None = None) -> "Dag":
        """Read a ``dag.json`` (ours or the seed's) and, if present, the ``weights.npz`` beside it."""
        path = Path(path)
        if path.is_dir():
            path = path / DAG_FILE
        entries = _read_json_list(path)
        layers = []
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict) or "name" not in entry or "id" not in entry:
                raise FcmError(f"entry {position} is not a layer (needs at least 'name' and 'id')", path)
            try:
                layers.append(Layer.from_json(entry))
            except FcmError as exc:  # (its fields checked, the entry makes a Layer: it has a name and an id)
                raise FcmError(f"entry {position} is malformed: {exc.message}", path) from None
        weights_path = Path(weights) if weights is not None else path.with_name(WEIGHTS_FILE)
        arrays: dict[str, np.ndarray] = {}
        if weights is not None or weights_path.exists():
            arrays = load_weights(weights_path)
        return cls(layers, arrays).validate(path)


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a weights ``.npz`` safely (no pickled objects are ever loaded)."""
    path = Path(path)
    if not path.exists():
        raise FcmError("no such weights file", path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise FcmError(f"not a readable weights file ({exc})", path) from None


def _read_json_list(path: Path) -> list:
    if not path.exists():
        raise FcmError("no such file", path)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FcmError(f"not a JSON file ({exc})", path) from None
    if not isinstance(data, list):
        raise FcmError("not a DAG file: expected a JSON list of layer entries", path)
    return data


def _find_cycle(layers: list[Layer]) -> list[int] | None:
    """A cycle along ``children`` edges, as a list of ids, or None."""
    state = [0] * len(layers)  # 0 new, 1 on stack, 2 done
    for root in range(len(layers)):
        if state[root]:
            continue
        stack: list[tuple[int, int]] = [(root, 0)]
        path: list[int] = []
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            children = layers[node].children
            if index < len(children):
                stack.append((node, index + 1))
                child = children[index]
                if state[child] == 1:
                    return path[path.index(child):] + [child]
                if state[child] == 0:
                    stack.append((child, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def json_float(value: float) -> float:
    """A float32 value as the seed writes it: the exact float32, printed as a Python float."""
    value = float(np.float32(value))
    if not math.isfinite(value):
        raise ValueError("non-finite quantization parameter")
    return value
