"""Small standalone models of one fused module, for tests and micro-benchmarks.

In: an :class:`~ort_custom_ops.ops.schema.FcmSpec`. Out: ``fused_model(spec)``: one FCM node (with
its function body, so it runs with or without the library); ``reference_model(spec)``: the same
computation in standard ONNX operators only. Both take ``X`` [N, C, H, W] (N dynamic; [N, H, W, C]
for a channels-last spec) and, when the spec has one, ``S`` [N, C, 1, 1]; both return ``Y``.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

from .schema import DOMAIN, DOMAIN_VERSION, FcmSpec, make_function

OPSET = 17


def _io(spec: FcmSpec, height: int | str, width: int | str):
    c = spec.stages[0].in_channels
    x_shape = ["N", height, width, c] if spec.channels_last else ["N", c, height, width]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    if spec.has_scale:
        inputs.append(helper.make_tensor_value_info("S", TensorProto.FLOAT, ["N", c, 1, 1]))
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]
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
