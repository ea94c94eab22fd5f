"""Reading small ONNX patterns: every activation of the vocabulary in its standard ONNX form (as the
function bodies write it) reads back as itself; pads and channel scales read as the kernels take
them; what the kernels do not implement reads as such."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
from onnx import helper

from fcm_core.vocabulary import ACTIVATIONS
from ort_custom_ops.lowering import patterns
from ort_custom_ops.ops.schema import Activation, activation_nodes


def graph_of(nodes: list[onnx.NodeProto], x: str, y: str, shape=(2, 4, 5, 5)) -> gs.Graph:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info(y, onnx.TensorProto.FLOAT, None)])
    graph = gs.import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    graph.fold_constants()  # Constant nodes -> constants, as the normalized models have them
    return graph.cleanup()


@pytest.mark.parametrize("name", [a for a in ACTIVATIONS if a != "none"])
def test_every_activation_reads_back_from_its_onnx_form(name):
    activation = Activation(name, (-1.0, 2.5) if name == "clip" else None)
    nodes = [helper.make_node("Relu", ["x"], ["t"])]  # the tensor the activation follows
    out = activation_nodes(nodes, activation, "t", "a")
    nodes.append(helper.make_node("Identity", [out], ["y"]))
    graph = graph_of(nodes, "x", "y")
    t = next(n for n in graph.nodes if n.op == "Relu").outputs[0]
    read, consumed, result = patterns.read_activation(t, patterns.ids(graph.outputs))
    assert read is not None and read.name == activation.name
    assert read.name != "clip" or np.allclose(read.clip, activation.clip)
    assert result.outputs and result.outputs[0].op == "Identity" and len(consumed) >= 1


def test_an_activation_the_kernels_lack_reads_as_none_and_a_model_output_as_no_activation():
    graph = graph_of([helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Gelu", ["t"], ["y"], domain="")],
                     "x", "y")
    t = graph.nodes[0].outputs[0]
    read, consumed, _ = patterns.read_activation(t, patterns.ids(graph.outputs))
    assert read is None and consumed[0].op == "Gelu"
    y = graph.outputs[0]
    assert patterns.read_activation(y, patterns.ids(graph.outputs)) == (Activation(), [], y)


def test_a_zero_pad_of_h_and_w_reads_as_top_left_bottom_right():
    pads = helper.make_node("Constant", [], ["p"], value=onnx.numpy_helper.from_array(
        np.array([0, 0, 1, 2, 0, 0, 3, 0], np.int64)))
    graph = graph_of([pads, helper.make_node("Pad", ["x", "p"], ["y"])], "x", "y")
    assert patterns.read_spatial_pad(graph.nodes[0]) == (1, 2, 3, 0)
    channels = helper.make_node("Constant", [], ["p"], value=onnx.numpy_helper.from_array(
        np.array([0, 1, 0, 0, 0, 0, 0, 0], np.int64)))
    graph = graph_of([channels, helper.make_node("Pad", ["x", "p"], ["y"])], "x", "y")
    assert patterns.read_spatial_pad(graph.nodes[0]) is None  # pads channels: not a depthwise padding


def test_a_channel_scale_reads_as_feature_map_and_scale():
    nodes = [helper.make_node("ReduceMean", ["x"], ["s"], axes=[2, 3], keepdims=1),
             helper.make_node("Mul", ["x", "s"], ["y"])]
    graph = graph_of(nodes, "x", "y")
    graph.toposort()
    mul = next(n for n in graph.nodes if n.op == "Mul")
    mul.inputs[1].shape = [2, 4, 1, 1]
    feature_map, scale = patterns.read_channel_scale(mul)
    assert feature_map.name == "x" and scale.name == "s"
