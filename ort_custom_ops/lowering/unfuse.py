"""Unfusing: a fused node back to the subgraph it replaced.

In: a fused ONNX model (``fcm convert``) and the names of some of its ``ai.fcm`` nodes. Out: the
same model with each of those nodes replaced by its function body (the original convolutions and
activations, which the rewrite stored as the node's ONNX function), its internal tensor names
prefixed with the node's name so they stay unique, and the functions no other node calls removed.
The model computes the same function; only those groups run unfused. A channels-last node's body
holds Transposes to and from NCHW: the layout cleanup (:mod:`.transposes`) then cancels those
that meet their inverses, with the final rules of the batch the model was planned for (recorded in
its metadata by the rewrite).
"""

from __future__ import annotations

import onnx

from fcm_core.errors import FcmError

from ..ops.schema import DOMAIN, is_channels_last
from .transposes import optimize_model, planned_batch


def node_function(model: onnx.ModelProto, node: onnx.NodeProto) -> onnx.FunctionProto:
    for function in model.functions:
        if function.domain == node.domain and function.name == node.op_type and function.overload == node.overload:
            return function
    raise FcmError(f"fused node {node.name} has no function body in the model")


def function_body(model: onnx.ModelProto, node: onnx.NodeProto, prefix: str = "") -> list[onnx.NodeProto]:
    """The nodes of ``node``'s function with its formal inputs/output bound to the node's actual
    ones and every internal name given ``prefix``."""
    function = node_function(model, node)
    rename = dict(zip(function.input, node.input))
    rename.update(zip(function.output, node.output))
    body = []
    for index, original in enumerate(function.node):
        copy = onnx.NodeProto()
        copy.CopyFrom(original)
        copy.input[:] = [rename.get(n, prefix + n) if n else n for n in copy.input]
        copy.output[:] = [rename.get(n, prefix + n) if n else n for n in copy.output]
        copy.name = prefix + (copy.name or f"{copy.op_type}_{index}")
        body.append(copy)
    return body


def check_fused_names(model: onnx.ModelProto, names: list[str] | set[str]) -> None:
    """An FcmError naming those of ``names`` that are no fused node of ``model``."""
    fused = {n.name for n in model.graph.node if n.domain == DOMAIN}
    unknown = sorted(set(names) - fused)
    if unknown:
        raise FcmError(f"no fused node named {', '.join(unknown)} (fused nodes: {', '.join(sorted(fused)) or 'none'})")


def unfuse(model: onnx.ModelProto, names: list[str] | set[str]) -> onnx.ModelProto:
    """A copy of ``model`` with the fused nodes named in ``names`` replaced by their bodies."""
    check_fused_names(model, names)
    wanted = set(names)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in model.graph.node:
        if node.name in wanted:
            nodes.extend(function_body(model, node, prefix=node.name + "/"))
        else:
            nodes.append(node)
    out.graph.ClearField("node")
    out.graph.node.extend(nodes)
    called = {(n.domain, n.op_type, n.overload) for n in nodes}
    kept = [f for f in model.functions if (f.domain, f.name, f.overload) in called]
    out.ClearField("functions")
    out.functions.extend(kept)
    if not any(n.domain == DOMAIN for n in nodes):
        kept_opsets = [o for o in out.opset_import if o.domain != DOMAIN]
        out.ClearField("opset_import")
        out.opset_import.extend(kept_opsets)
    if any(is_channels_last(n) for n in model.graph.node if n.name in wanted):
        out = optimize_model(out, planned_batch(model))
    return out
