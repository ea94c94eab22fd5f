"""Measuring models on ONNX Runtime's CUDA provider: what ``fcm bench``, ``fcm tune`` and the
scripts under ``benchmarks/`` time things with.

In: ONNX models (a fused model and its unfused form, or one fused node and its subgraph), batch
sizes. Out: timings (:class:`Timing`, :func:`time_session`), the two sides of a model timed in
every configuration of the CUDA provider (:func:`bench_pair`: CUDA graphs on/off,
``prefer_nhwc`` on/off, and for an fp16 unfused model its reductions in fp16 too, the best of each
and their ratio), per fused group a micro-benchmark
(:func:`bench_groups`: the group's node and its original subgraph, in the source's layout, as
small standalone models, :func:`group_models`, the subgraph in every configuration of the provider
and the best kept, with the bytes the group cannot avoid over its time
as achieved bandwidth, beside the planner's predicted bytes), per-node profiles, the device's description, and the
helpers around them (:func:`providers`, :func:`cuda_session`, :func:`value_shapes`,
:func:`random_feeds`, :func:`model_pieces`, :func:`fused_macs`).

How: inputs and outputs bound to device buffers (IO binding), warm-up runs, then the median of
``runs`` timed runs (host clock around each synchronous run). Both sides run in the same process,
one after the other, so their ratio holds even where absolute times drift.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper

from fcm_core.errors import FcmError
from fcm_core.vocabulary import kind_of
from ort_custom_ops.lowering.half import with_half_reductions
from ort_custom_ops.lowering.rules import overload_of
from ort_custom_ops.lowering.unfuse import function_body, node_function
from ort_custom_ops.ops.schema import TO_NCHW, TO_NHWC, is_channels_last, is_fused_group, nchw_dims

Progress = Callable[[str], None]
CONFIGS = [(graph, nhwc) for graph in (False, True) for nhwc in (False, True)]


@dataclass
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int

    @classmethod
    def of(cls, times_ms: list[float]) -> "Timing":
        """The median and the 10th and 90th percentiles of some runs' times (ms)."""
        times = sorted(times_ms)
        return cls(float(np.median(times)), times[len(times) // 10], times[(9 * len(times)) // 10], len(times))

    def to_json(self) -> dict:
        return {"median_ms": round(self.median_ms, 4), "p10_ms": round(self.p10_ms, 4), "p90_ms": round(self.p90_ms, 4),
                "runs": self.runs}


def providers(graph: bool, nhwc: bool, tf32: bool = True) -> list:
    """The CUDA provider (then the CPU) in one configuration: CUDA graphs, ``prefer_nhwc``, TF32."""
    options = {"device_id": "0", "enable_cuda_graph": "1" if graph else "0", "prefer_nhwc": "1" if nhwc else "0",
               "use_tf32": "1" if tf32 else "0"}
    return [("CUDAExecutionProvider", options), "CPUExecutionProvider"]


def bind_buffers(session, inputs: dict[str, np.ndarray], output_shapes: list[list[int]], output_dtypes: list | None = None,
                 device: str = "cuda") -> tuple:
    """An IO binding of ``session`` to ``device`` buffers: the inputs copied there, the outputs zeros
    (float32 unless ``output_dtypes`` says otherwise); ``(binding, input values, output values)``,
    the values to be kept alive while the binding is used."""
    import onnxruntime as ort

    binding = session.io_binding()
    device_inputs = []
    for name, array in inputs.items():
        device_inputs.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, 0))
        binding.bind_ortvalue_input(name, device_inputs[-1])
    dtypes = output_dtypes or [np.float32] * len(output_shapes)
    outputs = [ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype), device, 0)
               for shape, dtype in zip(output_shapes, dtypes)]
    for meta, value in zip(session.get_outputs(), outputs):
        binding.bind_ortvalue_output(meta.name, value)
    return binding, device_inputs, outputs


def time_session(session, inputs: dict[str, np.ndarray], output_shapes: list[list[int]], runs: int,
                 warmup: int, output_dtypes: list | None = None, device: str = "cuda") -> tuple[Timing, list[np.ndarray]]:
    """Median time of ``session`` with inputs and outputs in fixed ``device`` buffers (a CUDA graph
    is captured on the first run, so the buffers must be bound before it); outputs float32 unless
    ``output_dtypes`` says otherwise."""
    binding, kept_inputs, outputs = bind_buffers(session, inputs, output_shapes, output_dtypes, device)
    for _ in range(warmup):
        session.run_with_iobinding(binding)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run_with_iobinding(binding)
        times.append((time.perf_counter() - started) * 1e3)
    return Timing.of(times), [o.numpy().copy() for o in outputs]


def cuda_session(model, with_library: bool, execution_providers: list, profile: bool = False, disabled_optimizers: list = ()):
    """A session of ``model`` (with the FCM library or not, without ``disabled_optimizers``); an
    FcmError unless the CUDA provider started."""
    from ort_custom_ops.ops.library import make_session

    # as a user's session registers the library (fcm.fp32_kernels=auto): the CUDA kernels, and for ops the library has
    # none for (a build without them) their function bodies on the GPU rather than the CPU reference kernels
    session = make_session(model, with_library=with_library, providers=execution_providers, profile=profile,
                           reference_kernels=False, disabled_optimizers=disabled_optimizers)
    if session.get_providers()[0] != "CUDAExecutionProvider":
        raise FcmError(f"the CUDA execution provider did not start (got {session.get_providers()})")
    return session


def output_shapes(model: onnx.ModelProto, batch: int) -> list[list[int]]:
    shapes = value_shapes(model, batch)
    found = [shapes.get(o.name) for o in model.graph.output]
    if any(s is None for s in found):
        raise FcmError("cannot infer the output shapes at this batch size")
    return found


def profile_nodes(model: onnx.ModelProto, with_library: bool, execution_providers: list, inputs: dict[str, np.ndarray],
                  runs: int = 20, warmup: int = 5) -> list[dict]:
    """Per-node host time (microseconds, mean over ``runs`` after ``warmup`` runs), from ONNX
    Runtime's profiler."""
    session = cuda_session(model, with_library, execution_providers, profile=True)
    for _ in range(warmup + runs):
        session.run(None, inputs)
    path = Path(session.end_profiling())
    events = json.loads(path.read_text())
    path.unlink(missing_ok=True)
    totals: dict[str, dict] = {}
    # the warm-up runs (the first holds cuDNN's algorithm search) are left out
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    cutoff = run_starts[warmup] if len(run_starts) > warmup else 0
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time") or event.get("ts", 0) < cutoff:
            continue
        args = event.get("args", {})
        node = event["name"][: -len("_kernel_time")]
        entry = totals.setdefault(node, {"node": node, "op": args.get("op_name"), "provider": args.get("provider"),
                                         "total_us": 0.0, "count": 0})
        entry["total_us"] += float(event.get("dur", 0))
        entry["count"] += 1
    rows = []
    for entry in totals.values():
        entry["mean_us"] = round(entry.pop("total_us") / max(entry["count"], 1), 2)
        rows.append(entry)
    return sorted(rows, key=lambda r: -r["mean_us"])


def random_feeds(model: onnx.ModelProto, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    from fcm.pipeline.inputs import random_inputs

    initializers = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    return dict(zip(names, random_inputs(model, batch, rng)))


NUMPY_IO = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}  # what ONNX Runtime's Python API binds as numpy arrays


def numpy_io(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """``model`` as the Python API can feed it: itself, or (bf16 inputs or outputs) with a Cast to
    fp32 at each (``float_io``); and whether it was wrapped."""
    from ort_custom_ops.ops.standalone import float_io

    edges = list(model.graph.input) + list(model.graph.output)
    if all(v.type.tensor_type.elem_type in NUMPY_IO for v in edges):
        return model, False
    return float_io(model), True


def bench_pair(unfused: onnx.ModelProto, fused: onnx.ModelProto, batch: int, runs: int, warmup: int,
               progress: Progress, exact_fp32: bool = False, unfused_side: dict | None = None) -> dict:
    """Both sides in every configuration at one batch size; exact FP32 (``exact_fp32``) through the
    provider's ``use_tf32`` on the unfused side and the ``allow_tf32`` attribute of every fused node.
    ``unfused_side``: the unfused side of an earlier result at this batch size in this process, taken
    as it is instead of timed again (fcm tune compares several fused models with one source model);
    the fused side's differences are then among its own configurations."""
    rng = np.random.default_rng(batch)
    inputs = random_feeds(unfused, batch, rng)
    shapes = output_shapes(unfused, batch)
    dtypes = [helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type) for o in unfused.graph.output]
    result: dict = {"batch": batch, "unfused": {}, "fused": {}}
    reference = None
    modes = [("tf32", True)] + ([("exact_fp32", False)] if exact_fp32 else [])
    if unfused_side is not None:
        if any(mode not in unfused_side for mode, _ in modes):
            raise FcmError(f"batch {batch}: the earlier unfused side has no {', '.join(m for m, _ in modes)} timings")
        result["unfused"] = {mode: dict(unfused_side[mode]) for mode, _ in modes}
    # ONNX Runtime's fp16 model also with its reductions in fp16 (the converter's default), where that
    # changes it: a configuration of the unfused side (ort_custom_ops.lowering.half.with_half_reductions)
    variants = [("", unfused)]
    if unfused_side is None and (half_reductions := with_half_reductions(unfused)) is not None:
        variants.append((",reductions=fp16", half_reductions))
    for mode, tf32 in modes:
        sides = [("unfused", suffix, model, False) for suffix, model in variants]
        sides.append(("fused", "", fused if tf32 else with_allow_tf32(fused, False), True))
        for side, suffix, model, with_library in sides:
            if side == "unfused" and unfused_side is not None:
                continue
            entries = result[side].setdefault(mode, {})
            for graph, nhwc in CONFIGS:
                label = f"graph={'on' if graph else 'off'},nhwc={'on' if nhwc else 'off'}{suffix}"
                progress(f"batch {batch}{f' {mode}' if exact_fp32 else ''} {side} {label}")  # (the mode only where two are timed)
                try:
                    session = cuda_session(model, with_library, providers(graph, nhwc, tf32))
                    timing, outputs = time_session(session, inputs, shapes, runs, warmup, dtypes)
                except Exception as exc:  # a configuration the runtime refuses is reported, not fatal
                    entries[label] = {"error": str(exc).strip().splitlines()[0][:200]}
                    continue
                if reference is None:
                    reference = outputs
                error = max(float(np.abs(o.astype(np.float64) - r).max()) for o, r in zip(outputs, reference))
                scale = max(float(np.abs(r.astype(np.float64)).max()) for r in reference) or 1.0
                entries[label] = {**timing.to_json(), "max_relative_difference": round(error / scale, 6)}
                del session
    for mode, _ in modes:
        best = {}
        for side in ("unfused", "fused"):
            timed = {k: v for k, v in result[side][mode].items() if "median_ms" in v}
            if not timed:
                raise FcmError(f"batch {batch}: no configuration of the {side} model ran")
            label = min(timed, key=lambda k: timed[k]["median_ms"])
            best[side] = {"config": label, "median_ms": timed[label]["median_ms"]}
        best["speedup"] = round(best["unfused"]["median_ms"] / best["fused"]["median_ms"], 3)
        result.setdefault("best", {})[mode] = best
    return result


# --- per-group micro-benchmarks ---------------------------------------------------------------

def value_shapes(model: onnx.ModelProto, batch: int) -> dict[str, list[int]]:
    """Every tensor's shape at ``batch`` (shape inference with the batch dimension fixed)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for graph_input in fixed.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    del fixed.graph.value_info[:]
    for output in fixed.graph.output:
        output.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(fixed)
    shapes = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = info.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [d.dim_value for d in dims]
    return shapes


def node_element_type(node: onnx.NodeProto, initializers: dict) -> int:
    """The element type of a fused node's tensors (ONNX's enum): its weights' (every input and the
    output of a float fused op share one type), float32 where it has none as initializers."""
    types = {initializers[name].data_type for name in node.input if name in initializers}
    if len(types) > 1:
        raise FcmError(f"{node.name}: its weights mix element types")
    return types.pop() if types else onnx.TensorProto.FLOAT


def timing_feeds(model: onnx.ModelProto, names: list[str], shapes: dict[str, list[int]],
                 rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray], np.dtype]:
    """A small model (:func:`group_models`' either side) as it is timed, its random inputs in
    [-1, 1] and its output's numpy type. fp32 and fp16 as they are; bf16, which numpy cannot hold,
    through a Cast at each input and output (``float_io``; both sides of a group pay them), the
    inputs rounded to bf16 first."""
    import ml_dtypes

    from ort_custom_ops.ops.standalone import float_io

    element = model.graph.input[0].type.tensor_type.elem_type
    values = {name: rng.uniform(-1, 1, shapes[name]).astype(np.float32) for name in names}
    if element == onnx.TensorProto.BFLOAT16:
        rounded = {name: v.astype(ml_dtypes.bfloat16).astype(np.float32) for name, v in values.items()}
        return float_io(model), rounded, np.dtype(np.float32)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(element))
    return model, {name: v.astype(dtype) for name, v in values.items()}, dtype


def group_models(fused: onnx.ModelProto, node: onnx.NodeProto, shapes: dict[str, list[int]],
                 source_layout: bool = False):
    """(fused node alone, its function body as a plain graph, the node's data inputs) with the
    node's initializers. ``source_layout``: for a channels-last node, the body as the source model
    runs it, NCHW in and out, without the Transposes that adapt it to the node's NHWC tensors (the
    plain graph's first input and its output are then the NCHW tensors, see :func:`plain_feeds`)."""
    initializers = {i.name: i for i in fused.graph.initializer}
    function = node_function(fused, node)
    opset = [o for o in fused.opset_import]
    data_inputs = [name for name in node.input if name and name not in initializers]
    element = node_element_type(node, initializers)
    inputs = [helper.make_tensor_value_info(name, element, shapes[name]) for name in data_inputs]
    output = helper.make_tensor_value_info(node.output[0], element, shapes.get(node.output[0]))
    weights = [initializers[name] for name in node.input if name in initializers]
    alone = helper.make_model(helper.make_graph([node], "group", inputs, [output], weights), opset_imports=opset,
                              functions=[function])
    alone.ir_version = fused.ir_version
    body = function_body(fused, node)  # its formal parameters bound to the node's actual inputs
    if source_layout and is_channels_last(node):
        body, inputs, output = _in_source_layout(body, node, inputs, output)
    plain = helper.make_model(helper.make_graph(body, "subgraph", inputs, [output], weights),
                              opset_imports=[o for o in opset if o.domain in ("", "ai.onnx")])
    plain.ir_version = fused.ir_version
    return alone, plain, data_inputs


def _in_source_layout(body: list, node: onnx.NodeProto, inputs: list, output) -> tuple[list, list, object]:
    """A channels-last body (``schema.channels_last_body``: X transposed to NCHW first, the result
    transposed to NHWC last; in bf16 each through a Cast to and from fp32) without those two
    Transposes, its first input and output NCHW (named apart from the node's, which are NHWC)."""
    x, y = node.input[0], node.output[0]
    producer = {name: n for n in body for name in n.output}

    def reads_x(n: onnx.NodeProto) -> bool:  # X, or X widened by a Cast
        source = producer.get(n.input[0])
        return n.input[0] == x or (source is not None and source.op_type == "Cast" and source.input[0] == x)

    def writes_y(n: onnx.NodeProto) -> bool:  # Y, or what a Cast narrows into Y
        users = [u for u in body if n.output[0] in u.input]
        return n.output[0] == y or (len(users) == 1 and users[0].op_type == "Cast" and users[0].output[0] == y)

    heads = [n for n in body if n.op_type == "Transpose" and reads_x(n)]
    tails = [n for n in body if n.op_type == "Transpose" and writes_y(n)]
    if len(heads) != 1 or len(tails) != 1:
        raise FcmError(f"{node.name}: its function body does not start and end with its layout changes")
    head, tail = heads[0], tails[0]
    x_nchw, y_nchw = f"{x}__nchw", f"{y}__nchw"
    # the Transposes' readers read what they transposed; X and Y (where a Cast still writes it) renamed
    renamed = {x: x_nchw, y: y_nchw, head.output[0]: x_nchw if head.input[0] == x else head.input[0]}
    if tail.output[0] != y:
        renamed[tail.output[0]] = tail.input[0]
    kept = []
    for n in body:
        if n is head or n is tail:
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(n)
        copy.input[:] = [renamed.get(name, name) for name in copy.input]
        copy.output[:] = [renamed.get(name, name) for name in copy.output]
        kept.append(copy)
    out_name = tail.input[0] if tail.output[0] == y else y_nchw

    def nchw(dims):
        return None if dims is None else [dims[i] for i in TO_NCHW]

    x_dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    y_dims = [d.dim_value for d in output.type.tensor_type.shape.dim] or None
    element = inputs[0].type.tensor_type.elem_type
    x_info = helper.make_tensor_value_info(x_nchw, element, nchw(x_dims))
    y_info = helper.make_tensor_value_info(out_name, element, nchw(y_dims))
    return kept, [x_info] + inputs[1:], y_info


def plain_output_shape(plain: onnx.ModelProto) -> list[int]:
    """The shape of :func:`group_models`' plain graph's output (NCHW where it is in the source layout)."""
    return [d.dim_value for d in plain.graph.output[0].type.tensor_type.shape.dim]


def plain_feeds(plain: onnx.ModelProto, data_inputs: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The fused node's ``feeds`` as :func:`group_models`' plain graph takes them (the first input
    transposed to NCHW where that graph is in the source layout)."""
    out = {}
    for name, value in zip(data_inputs, plain.graph.input):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        array = feeds[name]
        out[value.name] = array if value.name == name else np.ascontiguousarray(array.transpose(TO_NCHW))
        if list(out[value.name].shape) != dims:
            raise FcmError(f"{value.name}: the plain graph takes {dims}, not {list(out[value.name].shape)}")
    return out


def unavoidable_bytes(node: onnx.NodeProto, shapes: dict[str, list[int]], initializers: dict) -> int:
    """Read the input (and scale) once, the weights once, write the output once, in the node's
    element type."""
    total = 0
    for name in list(node.input) + list(node.output):
        if name in initializers:
            total += int(np.prod(initializers[name].dims))
        elif name in shapes:
            total += int(np.prod(shapes[name]))
    element = node_element_type(node, initializers)
    return np.dtype(helper.tensor_dtype_to_np_dtype(element)).itemsize * total


def fused_macs(node: onnx.NodeProto, shapes: dict[str, list[int]], initializers: dict) -> dict[str, int]:
    """Multiply-accumulates of one fused node, per stage type: {"pw": ..., "dw": ...} (the pointwise
    stages run on tensor cores, the depthwise one on the FP32 units). Each stage costs its output
    pixels times its weight count ([F, C] pointwise, [C, K, K] depthwise); stages before the
    depthwise one are at the input's resolution, the rest at the output's. Any precision."""
    found = kind_of(node.op_type)
    if found is None:
        raise FcmError(f"{node.name}: {node.op_type} is not a fused op")
    channels_last = is_channels_last(node)
    batch, _, height, width = nchw_dims(shapes[node.input[0]], channels_last)
    _, _, out_h, out_w = nchw_dims(shapes[node.output[0]], channels_last)
    macs = {"pw": 0, "dw": 0}
    pixels = height * width
    for index, stage in enumerate(found[0].stages):
        if stage == "dw":
            pixels = out_h * out_w
        macs[stage] += batch * pixels * int(np.prod(initializers[node.input[1 + 2 * index]].dims))
    return macs


def bench_groups(fused: onnx.ModelProto, plan: dict | None, batch: int, runs: int, warmup: int, progress: Progress) -> list[dict]:
    shapes = value_shapes(fused, batch)
    initializers = {i.name: i for i in fused.graph.initializer}
    groups_by_overload = {overload_of(g["id"]): g for g in (plan or {}).get("groups", [])}  # the node's group, as data
    rng = np.random.default_rng(0)
    rows = []
    for node in fused.graph.node:
        if not is_fused_group(node):  # a convolution layer is no group: the whole model times it
            continue
        if not all(n in shapes or n in initializers or not n for n in list(node.input) + list(node.output)):
            rows.append({"node": node.name, "error": "shapes unknown"})
            continue
        progress(f"batch {batch} group {node.name}")
        # the subgraph as the source model runs it: a channels-last group's without the Transposes
        # its function body adds (they would count against the subgraph, and the source has none)
        alone, plain, data_inputs = group_models(fused, node, shapes, source_layout=True)
        output_name = plain.graph.output[0].name
        alone, feeds, dtype = timing_feeds(alone, data_inputs, shapes, rng)
        plain, _, _ = timing_feeds(plain, [], shapes, rng)  # (fed the same values, plain_feeds below)
        out_shape = [shapes[node.output[0]]]
        plain_out_shape = [plain_output_shape(plain)]
        try:  # each side in its best configuration: the node with CUDA graphs on or off; the subgraph in
            # every configuration of the provider (prefer_nhwc too: ONNX Runtime's NHWC kernels can beat
            # its NCHW ones by more than the layout Transposes it then adds at the subgraph's edges, and
            # the source model runs in whichever is faster: timed in NCHW only, a group could look
            # faster alone than against the source's NHWC run)
            plain_inputs = plain_feeds(plain, data_inputs, feeds)
            fused_t, fused_out = min((time_session(cuda_session(alone, True, providers(g, False)), feeds, out_shape, runs, warmup,
                                                   [dtype])
                                      for g in (False, True)), key=lambda r: r[0].median_ms)
            timed = [(time_session(cuda_session(plain, False, providers(g, nhwc)), plain_inputs, plain_out_shape, runs, warmup,
                                   [dtype]), nhwc) for g, nhwc in CONFIGS]
            (plain_t, plain_out), plain_nhwc = min(timed, key=lambda r: r[0][0].median_ms)
        except Exception as exc:
            rows.append({"node": node.name, "error": str(exc).strip().splitlines()[0][:200]})
            continue
        fused_out, plain_out = [fused_out[0].astype(np.float32)], [plain_out[0].astype(np.float32)]
        if output_name != node.output[0]:  # NCHW: compared in the node's layout
            plain_out = [plain_out[0].transpose(TO_NHWC)]
        floor = unavoidable_bytes(node, shapes, initializers)
        scale = float(np.abs(plain_out[0]).max()) or 1.0
        row = {
            "node": node.name, "op": node.op_type,
            "fused_ms": round(fused_t.median_ms, 4), "unfused_ms": round(plain_t.median_ms, 4), "unfused_nhwc": plain_nhwc,
            "speedup": round(plain_t.median_ms / fused_t.median_ms, 3),
            "unavoidable_bytes": floor, "achieved_gb_s": round(floor / (fused_t.median_ms * 1e-3) / 1e9, 1),
            "max_relative_difference": round(float(np.abs(fused_out[0] - plain_out[0]).max()) / scale, 6),
        }
        group = groups_by_overload.get(node.overload)
        if group is not None:
            predicted = group["predicted"]["fused"]
            row["planner"] = {"layers": group["layers"], "plan_batch": plan["batch"], "dram_bytes": predicted["dram_bytes"],
                              "time_us": predicted["time_us"], "unfused_time_us": group["predicted"]["unfused"]["time_us"]}
        rows.append(row)
    return rows


# --- the whole benchmark ----------------------------------------------------------------------

def device_info() -> dict:
    import onnxruntime as ort

    # the host's processor too: what launches each inference (eager PyTorch's and torch.compile's
    # per-call costs moved by 1.3-1.6x between two H100 machines whose GPUs timed the same)
    info = {"onnxruntime": ort.__version__, "python": platform.python_version(), "host": platform.node(),
            "cpu": host_processor(), "cpus": os.cpu_count()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        name, driver, memory = [part.strip() for part in smi.stdout.splitlines()[0].split(",")]
        info.update(gpu=name, driver=driver, gpu_memory=memory)
    except Exception:
        info["gpu"] = "unknown"
    return info


def host_processor() -> str:
    """The host processor's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def copy_bandwidth() -> float | None:
    """Device-to-device copy bandwidth (bytes read + written per second), if PyTorch is here."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    a = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        b.copy_(a)
    end.record()
    torch.cuda.synchronize()
    return 2 * a.numel() * 20 / (start.elapsed_time(end) * 1e-3)


def with_allow_tf32(model: onnx.ModelProto, allow: bool) -> onnx.ModelProto:
    """A copy of ``model`` whose fp32 fused nodes carry ``allow_tf32`` (the kernels' TF32 pointwise
    stages on or off; the other ops do not declare it)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if is_fused_group(node) and kind_of(node.op_type)[1] == "fp32":
            kept = [a for a in node.attribute if a.name != "allow_tf32"]
            del node.attribute[:]
            node.attribute.extend(kept + [helper.make_attribute("allow_tf32", int(allow))])
    return out


def model_pieces(model: onnx.ModelProto) -> dict[str, tuple[list[str], list[str]]]:
    """Input and output tensor names of a fused model's three pieces: the head (up to its first
    fused node), the body (its fused nodes and what lies between them) and the tail. Fused nodes are
    the groups' (a convolution layer before the first, such as the stem, is in the head)."""
    fused = [n for n in model.graph.node if is_fused_group(n)]
    if not fused:
        raise FcmError("the model has no fused nodes")
    graph_inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    graph_outputs = [o.name for o in model.graph.output]
    first_in, last_out = [fused[0].input[0]], [fused[-1].output[0]]
    return {"head": (graph_inputs, first_in), "body": (first_in, last_out), "tail": (last_out, graph_outputs)}
