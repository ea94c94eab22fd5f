"""Normalizing an exported ONNX model so that fusion groups can be found in it.

In: an ``onnx.ModelProto`` as tf2onnx writes it. Out: the same function, in a canonical form:

0. What tf2onnx writes that ONNX does not have: TensorFlow's ``Erfc`` (Keras' exact GELU, ``0.5 x
   erfc(-x / sqrt(2))``) becomes ``1 - Erf(x)``, which ONNX Runtime can load.
1. ONNX Runtime's basic (level-1) graph optimizations, which are exact rewrites: BatchNormalization
   and the per-channel ``Mul``/``Add`` left after depthwise convolutions folded into the Conv
   weights, needless ``Transpose`` pairs cancelled (a MobileNetV3 export carries ~100), constants
   folded. Only standard operators come out (no runtime-specific fused ops: those are level 2).
2. Activation patterns recognised as single operators: ``x * Clip(x + 3, 0, 6) / 6`` becomes
   ``HardSwish``; ReLU6 is already ``Clip(0, 6)`` and swish stays ``x * Sigmoid(x)`` (ONNX has no
   Swish before opset 24): :mod:`ort_custom_ops.lowering.patterns` reads both.
3. What the runtime's folding leaves: a constant added to a Conv's output goes into its bias;
   ``Reshape`` nodes that do not change their input's shape are dropped.
4. Unused opset imports dropped; shapes inferred.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from fcm_core.errors import FcmError


def ort_basic_optimize(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="fcm-normalize-") as tmp:
        source, target = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, source)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(target)
        try:
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise FcmError(f"ONNX Runtime cannot load the exported model: {str(exc).strip().splitlines()[0][:300]}") from None
        return onnx.load(target)


def _const(tensor) -> np.ndarray | None:
    return tensor.values if isinstance(tensor, gs.Constant) else None


def _is_scalar(tensor, value: float) -> bool:
    array = _const(tensor)
    return array is not None and array.size == 1 and abs(float(array.reshape(-1)[0]) - value) < 1e-6


def _clip_bounds(node: gs.Node) -> tuple[float, float] | None:
    if node.op != "Clip":
        return None
    lo = _const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1].name else None
    hi = _const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    if lo is None or hi is None:
        return None
    return float(lo.reshape(-1)[0]), float(hi.reshape(-1)[0])


def _sole_consumer(tensor) -> gs.Node | None:
    return tensor.outputs[0] if len(tensor.outputs) == 1 else None


def fold_hard_swish(graph: gs.Graph) -> int:
    """``Mul(x, Mul(Clip(Add(x, 3), 0, 6), 1/6))`` (either operand order, or ``Div(.., 6)``)
    -> ``HardSwish(x)``. Returns how many were folded."""
    folded = 0
    for add in list(graph.nodes):
        if add.op != "Add" or len(add.inputs) != 2:
            continue
        x, three = (add.inputs[0], add.inputs[1]) if _is_scalar(add.inputs[1], 3.0) else (add.inputs[1], add.inputs[0])
        if not _is_scalar(three, 3.0) or isinstance(x, gs.Constant):
            continue
        clip = _sole_consumer(add.outputs[0])
        if clip is None or _clip_bounds(clip) != (0.0, 6.0):
            continue
        scale = _sole_consumer(clip.outputs[0])
        if scale is None or not ((scale.op == "Mul" and any(_is_scalar(t, 1 / 6) for t in scale.inputs))
                                 or (scale.op == "Div" and _is_scalar(scale.inputs[1], 6.0))):
            continue
        mul = _sole_consumer(scale.outputs[0])
        if mul is None or mul.op != "Mul" or len(mul.inputs) != 2 or x not in mul.inputs:
            continue
        output = mul.outputs[0]
        mul.outputs = []
        graph.nodes.append(gs.Node("HardSwish", name=f"{mul.name}_hard_swish", inputs=[x], outputs=[output]))
        folded += 1
    graph.cleanup().toposort()
    return folded


def fold_bias_adds(graph: gs.Graph) -> int:
    """``Add(Conv(x), c)`` with a constant ``c`` per output channel (or a scalar) -> the Conv's
    bias, when the Conv feeds nothing else (the runtime's own folding skips scalars)."""
    folded = 0
    for conv in list(graph.nodes):
        if conv.op != "Conv" or not isinstance(conv.inputs[1], gs.Constant):
            continue
        add = _sole_consumer(conv.outputs[0])
        if add is None or add.op != "Add" or len(add.inputs) != 2 or id(conv.outputs[0]) in {id(t) for t in graph.outputs}:
            continue
        other = add.inputs[1] if add.inputs[0] is conv.outputs[0] else add.inputs[0]
        value = _const(other)
        channels = conv.inputs[1].values.shape[0]
        per_channel = value is not None and tuple(value.shape) in ((channels, 1, 1), (1, channels, 1, 1))
        if value is None or not (value.size == 1 or per_channel):
            continue
        shift = np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float32)
        if len(conv.inputs) > 2 and conv.inputs[2].name:
            if not isinstance(conv.inputs[2], gs.Constant):
                continue
            bias = conv.inputs[2].values.astype(np.float32) + shift
        else:
            bias = shift.copy()
        conv.inputs = conv.inputs[:2] + [gs.Constant(f"{conv.name}_folded_bias", bias)]
        output = add.outputs[0]
        add.outputs = []
        conv.outputs = [output]
        folded += 1
    graph.cleanup().toposort()
    return folded


def remove_identity_reshapes(graph: gs.Graph) -> int:
    """Drop ``Reshape`` nodes that give back their input's shape (tf2onnx leaves them around 1x1
    feature maps where a layout change is a no-op)."""
    removed = 0
    for node in list(graph.nodes):
        if node.op != "Reshape" or len(node.inputs) != 2:
            continue
        data, target = node.inputs
        shape = _const(target)
        if shape is None or data.shape is None or len(data.shape) != shape.size:
            continue
        same = all(int(t) == d if isinstance(d, int) else (index == 0 and int(t) in (-1, 0))
                   for index, (t, d) in enumerate(zip(shape.tolist(), data.shape)))
        if not same or id(node.outputs[0]) in {id(t) for t in graph.outputs}:
            continue
        output = node.outputs[0]
        for consumer in list(output.outputs):
            consumer.inputs = [data if t is output else t for t in consumer.inputs]
        node.outputs = []
        removed += 1
    graph.cleanup().toposort()
    return removed


def prune_opsets(model: onnx.ModelProto) -> None:
    used = {node.domain for node in model.graph.node} | {""}
    for function in model.functions:
        used |= {node.domain for node in function.node} | {function.domain}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # shapes are a convenience; no pass depends on them being complete
        return model


def expand_erfc(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with each ``Erfc(x)`` node as ``1 - Erf(x)`` (where erfc(x) is tiny, this is exact
    to float32's absolute rounding of 1, about 6e-8, not to its relative rounding)."""
    if not any(node.op_type == "Erfc" for node in model.graph.node):
        return model
    graph = gs.import_onnx(model)
    for node in [n for n in graph.nodes if n.op == "Erfc" and n.domain in (None, "", "ai.onnx")]:
        x, y = node.inputs[0], node.outputs[0]
        erf = gs.Variable(f"{y.name}__erf", dtype=x.dtype)
        one = gs.Constant(f"{y.name}__one", np.ones((), np.dtype(x.dtype) if x.dtype is not None else np.float32))
        node.outputs.clear()
        graph.nodes += [gs.Node("Erf", inputs=[x], outputs=[erf]), gs.Node("Sub", inputs=[one, erf], outputs=[y])]
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    return out


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    model = _infer_shapes(ort_basic_optimize(expand_erfc(model)))
    graph = gs.import_onnx(model)
    fold_hard_swish(graph)
    fold_bias_adds(graph)
    remove_identity_reshapes(graph)
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    prune_opsets(out)
    return _infer_shapes(out)
