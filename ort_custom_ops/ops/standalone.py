"""Small standalone models of one fused module, for tests and micro-benchmarks.

In: an :class:`~ort_custom_ops.ops.schema.FcmSpec`. Out: ``fused_model(spec)``: one FCM node (with
its function body, so it runs with or without the library); ``reference_model(spec)``: the same
computation in standard ONNX operators only. Both take ``X`` [N, C, H, W] (N dynamic; [N, H, W, C]
for a channels-last spec) and, when the spec has one, ``S`` [N, C, 1, 1]; both return ``Y``; every
tensor in the spec's precision.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from .schema import DOMAIN, DOMAIN_VERSION, ONNX_TYPES, FcmSpec, make_function

OPSET = 17


def _io(spec: FcmSpec, height: int | str, width: int | str):
    c = spec.stages[0].in_channels
    x_shape = ["N", height, width, c] if spec.channels_last else ["N", c, height, width]
    element = ONNX_TYPES[spec.precision]
    inputs = [helper.make_tensor_value_info("X", element, x_shape)]
    if spec.has_scale:
        inputs.append(helper.make_tensor_value_info("S", element, ["N", c, 1, 1]))
    outputs = [helper.make_tensor_value_info("Y", element, None)]
    return inputs, outputs


def fused_model(spec: FcmSpec, height: int | str = "H", width: int | str = "W") -> onnx.ModelProto:
    weights = spec.weights("")
    inputs = spec.input_names("", "X", "S")
    formal = ["X"] + list(weights) + (["S"] if spec.has_scale else [])
    body = spec.reference_nodes("X", list(weights), "Y", "S" if spec.has_scale else None)
    function = make_function(spec, body, formal, "Y", overload="g0", opset=OPSET)
    node = spec.node(inputs, "Y", name="fcm0", overload="g0")
    graph_inputs, graph_outputs = _io(spec, height, width)
    graph = helper.make_graph([node], "fcm", graph_inputs, graph_outputs,
                              [numpy_helper.from_array(a, k) for k, a in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
                              functions=[function])
    model.ir_version = 10
    return model


def reference_model(spec: FcmSpec, height: int | str = "H", width: int | str = "W") -> onnx.ModelProto:
    weights = spec.weights("")
    nodes = spec.reference_nodes("X", list(weights), "Y", "S" if spec.has_scale else None)
    graph_inputs, graph_outputs = _io(spec, height, width)
    graph = helper.make_graph(nodes, "reference", graph_inputs, graph_outputs,
                              [numpy_helper.from_array(a, k) for k, a in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    return model


def float_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with fp32 inputs and outputs where it has fp16 or bf16 ones: a Cast at each (to run
    a half-precision model from numpy float32 arrays, which ONNX Runtime's Python API cannot pass
    as bf16; the values are exact where the caller rounded them to the model's type first)."""
    from onnx import TensorProto

    half = {TensorProto.FLOAT16, TensorProto.BFLOAT16}
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    head, tail = [], []
    for value in graph.input:
        element = value.type.tensor_type.elem_type
        if element in half:
            inner = f"{value.name}__half"
            for node in graph.node:
                node.input[:] = [inner if name == value.name else name for name in node.input]
            head.append(helper.make_node("Cast", [value.name], [inner], to=element))
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    for value in graph.output:
        if value.type.tensor_type.elem_type in half:
            inner = f"{value.name}__half"
            for node in graph.node:
                node.output[:] = [inner if name == value.name else name for name in node.output]
                node.input[:] = [inner if name == value.name else name for name in node.input]
            tail.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT))
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    nodes = head + list(graph.node) + tail
    del graph.node[:]
    graph.node.extend(nodes)
    return copy
