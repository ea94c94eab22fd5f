"""Weight-free copies of ONNX models, for benchmarking on a machine the real files cannot reach.

In (``pack``): ONNX files. Out: the same graphs with every large weight tensor's data replaced by
a note of its digest and of each output channel's mean and standard deviation (biases and small
tensors stay as they are, and so do tensors of one repeated value, such as the averaging row of a
spatial mean computed as a ``MatMul``). ``unpack`` fills each one with pseudo-random data seeded by the
digest: vectors with those means and deviations, weight matrices and kernels zero-mean with the
deviation capped at sqrt(2 / fan_in), so that activations stay near 1 layer after layer
(independent draws with the real statistics make them grow, see ``_fill``). Initializers that
held the same bytes (a fused node's kernel-layout weights and the Conv weights they were reshaped
from) get the same data again, and so does a matrix that holds another one's values transposed (the
``MatMul`` a pointwise Conv becomes between channels-last neighbours), and so does a fused model's
weight that holds an unfused model's values times a constant, up to its type's rounding (a factor the
rewrite folded into them, such as MobileNetV3's ``x / 6``: filled as that weight's data times the factor), so a fused model and its
unfused original stay equivalent, and timings do not depend on the values. Accuracy against the
source model is checked where the real weights are (``fcm convert``); what runs on the skeletons is checked against the unfused skeleton.

A conversion's layer DAG weights (``<stem>.weights.npz``, which ``fcm tune`` needs to rewrite the
source model with the groups it keeps) travel as ``<stem>.dag_weights.json``: which Conv weight of
``<stem>.unfused.onnx`` each DAG convolution holds. ``unpack`` writes the npz again from the filled
unfused model, so the DAG and the refilled models agree as the real files do.

    python -m fcm.skeleton pack converted_models -o .device/models
    python -m fcm.skeleton unpack .device/models -o /tmp/models
"""

from __future__ import annotations

import argparse
import base64
import functools
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from fcm.pipeline.verify import COMPANIONS

MARK = "fcm-skeleton"
MIN_BYTES = 4096  # smaller initializers (shapes, pads, clip bounds) travel as they are


def _encode(values: np.ndarray) -> str:
    return base64.b64encode(values.astype(np.float32).tobytes()).decode()


def _decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), np.float32)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def _strippable(array: np.ndarray) -> bool:
    """A large float matrix or kernel, unless it holds one value repeated: that is no weight (the
    column of 1/(H*W) of a spatial mean computed as a MatMul), and random values would change what it
    computes."""
    return (array.nbytes >= MIN_BYTES and array.dtype.kind == "f" and array.ndim >= 2
            and not np.all(array == array.flat[0]))


def _row_stats(source: np.ndarray) -> dict:
    rows = source.reshape(source.shape[0], -1).astype(np.float64)
    return {"row_mean": _encode(rows.mean(axis=1)), "row_std": _encode(rows.std(axis=1))}


def _scaled_copy(array: np.ndarray, sources: dict[int, list[tuple[str, np.ndarray]]], own: str) -> dict | None:
    """The note of ``array`` as ``factor`` times one of ``sources`` (the unfused models' weights, by
    element count), in its layout or, for a matrix, transposed; None when it is no such copy."""
    candidates = sources.get(array.size, [])
    if any(digest == own for digest, _ in candidates):  # a copy of the bytes: filled alike by its digest
        return None
    array64 = array.astype(np.float64)
    scale = float(np.abs(array64).max())
    # both sides rounded to the tensor's type (fp16 keeps 11 bits: a copy scaled in fp32 and rounded
    # again differs from the scaled source by up to one unit in the last place)
    eps = max(float(np.finfo(array.dtype).eps), 1e-6)
    rtol = max(1e-5, 2 * eps)
    for digest, other in candidates:
        layouts = [(False, other.reshape(array.shape))]
        if array.ndim == 2:
            layouts.append((True, other.reshape(array.shape[::-1]).T))
        for transposed, source in layouts:
            source64 = source.astype(np.float64)
            norm = float(np.sum(source64 * source64))
            factor = float(np.sum(array64 * source64)) / norm if norm else 0.0
            if (np.isfinite(factor) and factor != 0.0 and abs(factor - 1.0) > 1e-6
                    and np.allclose(array64, factor * source64, rtol=rtol, atol=eps * scale)):
                return {"sha1": digest, **_row_stats(other), "source_dims": list(other.shape), "factor": factor,
                        "transposed": transposed}
    return None


def _strip(tensor: onnx.TensorProto, others: frozenset[str] = frozenset(),
           sources: dict[int, list[tuple[str, np.ndarray]]] | None = None) -> bool:
    """Replace the data by a note; a matrix whose transpose is among ``others`` (digests of the
    tensors being packed with it) is noted as that transpose, and a tensor that is a multiple of one of
    ``sources`` as that multiple, so that each pair is filled alike."""
    array = numpy_helper.to_array(tensor)
    if not _strippable(array):
        return False
    digest = _digest(array)
    digest_t = _digest(array.T) if array.ndim == 2 else digest
    transposed = digest_t in others and digest_t != digest
    scaled = _scaled_copy(array, sources, digest) if sources and not transposed else None
    if scaled is not None:
        note = {"mark": MARK, **scaled}
    else:
        source, digest = (array.T, digest_t) if transposed else (array, digest)
        note = {"mark": MARK, "sha1": digest, **_row_stats(source)}
        if transposed:
            note["transposed"] = True
    dims, dtype, name = list(tensor.dims), tensor.data_type, tensor.name
    tensor.Clear()
    tensor.name, tensor.data_type = name, dtype
    tensor.dims.extend(dims)
    tensor.doc_string = json.dumps(note)
    return True


def _fill(tensor: onnx.TensorProto) -> bool:
    try:
        note = json.loads(tensor.doc_string) if tensor.doc_string else None
    except json.JSONDecodeError:
        return False
    if not isinstance(note, dict) or note.get("mark") != MARK:
        return False
    rng = np.random.default_rng(int(note["sha1"][:16], 16))
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    mean, std = _decode(note["row_mean"]), _decode(note["row_std"])
    fan_in = int(np.prod(tensor.dims)) // len(mean)
    rows = rng.standard_normal((len(mean), fan_in))  # a transposed note: the rows of the transpose
    if len(note.get("source_dims", tensor.dims)) >= 2:
        # Weight matrices and kernels: independent draws lack the real weights' cancellations, so
        # with the real row statistics activations grow from layer to layer (to 1e4-1e5 by the end
        # of EfficientNetB0) and saturating gates make the network chaotic under TF32. Zero-mean
        # rows with the real deviation capped at He's sqrt(2 / fan_in) keep activations near 1.
        array = (rows * np.minimum(std, np.sqrt(2.0 / fan_in))[:, None]).astype(dtype)
    else:
        array = (rows * std[:, None] + mean[:, None]).astype(dtype)
    if "factor" in note:  # a multiple of the weight filled from the same note, in this layout
        dims = list(tensor.dims)
        array = array.astype(np.float64).reshape(dims[::-1] if note["transposed"] else dims)
        array = (array.T if note["transposed"] else array) * note["factor"]
        array = array.astype(dtype)
    elif note.get("transposed"):
        array = array.T
    filled = numpy_helper.from_array(np.ascontiguousarray(array).reshape(list(tensor.dims)), tensor.name)
    tensor.CopyFrom(filled)
    return True


def _initializers(model: onnx.ModelProto):
    yield from model.graph.initializer
    for node in model.graph.node:  # Constant nodes of the main graph hold data too
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t


def _forget_companions(model: onnx.ModelProto) -> None:
    """Drop a fused model's record of the files converted with it (``fcm.companions``): the copies
    hold other data, and fcm verify and fcm bench would refuse them as a mixed set."""
    kept = [p for p in model.metadata_props if p.key != COMPANIONS]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)


DAG_WEIGHTS = ".dag_weights.json"  # DAG conv layer id -> the unfused model's Conv weight initializer


def _conversion_files(stem: Path) -> dict[str, Path]:
    """The files of the conversion ``<stem>.onnx`` (fcm convert's output_files)."""
    from fcm.pipeline.convert import output_files

    return output_files(stem.with_name(stem.name + ".onnx"))


def _conv_weight_names(stem: Path, unfused: onnx.ModelProto) -> dict[str, str] | None:
    """For a conversion's files ``<stem>.*`` and its unfused model (with its weights): each DAG
    conv's Conv weight initializer, found as the rewrite finds them (equal weights); None without a
    DAG and its weights."""
    import onnx_graphsurgeon as gs

    from extractor.dag import Dag
    from ort_custom_ops.lowering.rewrite import map_convs

    files = _conversion_files(stem)
    if not files["dag"].is_file() or not files["weights"].is_file():
        return None
    mapping = map_convs(Dag.load(files["dag"], files["weights"]), gs.import_onnx(unfused))
    return {str(layer): node.inputs[1].name for layer, node in mapping.items()}


def _dag_weights(stem: Path, unfused: onnx.ModelProto, names: dict[str, str]) -> dict[str, np.ndarray]:
    """The DAG's conv weights (in its layouts, by layer type) from the unfused model's Conv weights."""
    from extractor.dag import Dag
    from ort_custom_ops.lowering.rewrite import dag_layout

    dag = Dag.load(_conversion_files(stem)["dag"])  # the layer types (no weights: the npz is being written)
    arrays = {t.name: t for t in unfused.graph.initializer}
    return {f"{layer}/weights": dag_layout(numpy_helper.to_array(arrays[name]), dag[int(layer)].type)
            for layer, name in names.items()}


def _packed_digests(src: Path) -> tuple[frozenset[str], dict[int, list[tuple[str, np.ndarray]]]]:
    """The digests of every tensor ``pack`` strips under ``src`` (a Conv's [F, C, 1, 1] kernel has
    the bytes of its [F, C] matrix), and the unfused models' such tensors by element count (with
    their digests), which a fused model's scaled weights are found among."""
    digests, sources = set(), {}
    for path in sorted(src.rglob("*.onnx")):
        for t in _initializers(onnx.load(path)):
            if _strippable(a := numpy_helper.to_array(t)):
                digest = _digest(a)
                digests.add(digest)
                if path.name.endswith(".unfused.onnx"):
                    sources.setdefault(a.size, []).append((digest, a))
    return frozenset(digests), sources


def _walk(src: Path, dst: Path, packing: bool) -> int:
    count = 0
    others, sources = _packed_digests(src) if packing else (frozenset(), {})
    for path in sorted(src.rglob("*")):
        if path.is_dir():
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".onnx":
            model = onnx.load(path)
            unfused = path.name.endswith(".unfused.onnx")  # a conversion's source: its DAG weights travel too
            stem = path.with_name(path.name.removesuffix(".unfused.onnx"))
            names = _conv_weight_names(stem, model) if unfused and packing else None  # before they go
            if packing:  # (an unfused model's weights are the sources: never noted as copies)
                transform = functools.partial(_strip, others=others, sources=None if unfused else sources)
            else:
                transform = _fill
            changed = sum(transform(t) for t in _initializers(model))
            _forget_companions(model)
            onnx.save(model, target)
            count += 1
            print(f"{path.relative_to(src)}: {changed} initializers", flush=True)
            if unfused:
                _carry_dag_weights(stem, dst / stem.relative_to(src), model, names, packing=packing)
        elif path.suffix in (".json", ".md"):
            shutil.copy2(path, target)
    return count


def _carry_dag_weights(stem: Path, target: Path, unfused: onnx.ModelProto, names: dict[str, str] | None,
                       packing: bool) -> None:
    """pack: write ``<stem>.dag_weights.json`` (``names``) beside the copies; unpack: the DAG weights
    from it and the filled ``unfused`` model."""
    if packing:
        if names is not None:
            target.with_name(target.name + DAG_WEIGHTS).write_text(json.dumps(names, indent=0) + "\n")
        return
    record = stem.with_name(stem.name + DAG_WEIGHTS)
    if record.is_file():
        with open(target.with_name(target.name + ".weights.npz"), "wb") as handle:
            np.savez(handle, **_dag_weights(stem, unfused, json.loads(record.read_text())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcm.skeleton", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("source", help="a directory of .onnx files (and their .json/.md companions)")
    parser.add_argument("-o", "--output", required=True, help="where to write the copies")
    args = parser.parse_args(argv)
    count = _walk(Path(args.source), Path(args.output), packing=args.action == "pack")
    print(f"{args.action}ed {count} models into {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
