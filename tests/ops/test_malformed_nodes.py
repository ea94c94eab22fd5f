"""Randomly broken FCM nodes on the CPU kernels: each either runs or fails with an ONNX Runtime error,
never a crash or another exception.

Each case starts from a valid one-node model (a fused float node in either layout and precision, a
float Conv layer, a float Mean layer, an int8 convolution, add or mean) and changes one or two things at random: an
attribute's value (extreme integers, lists of any length, NaN and infinite floats, strings that are
not UTF-8), an attribute dropped or added, an initializer given another shape or element type, an
input emptied or dropped; the input fed has random sizes, zero included, and now and then another
channel count. ``test_kernel_validation.py`` checks the messages of hand-picked cases."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from fcm_core.vocabulary import KINDS
from ort_custom_ops.ops.library import is_onnxruntime_error, make_session
from ort_custom_ops.ops.schema import (NUMPY_TYPES, ONNX_TYPES, Activation, Quant, Requant, add_node, conv_layer_node,
                                       conv_node, make_model, mean_layer_node, mean_node)
from ort_custom_ops.ops.standalone import fused_model
from tests.support.gpu import cuda_providers, require_cuda
from tests.support.specs import random_int8, random_spec

CASES = 300  # per family and test run on the CPU kernels; the seeds are fixed
GPU_CASES = 60  # on the CUDA kernels (a CUDA session takes longer to make; the sanitizers run this test too)
EXTREME_INTS = [-2**31, -1, 0, 1, 2, 3, 5, 7, 8, 64, 1000, 2**31 - 1]
ATTRIBUTE_NAMES = ["dw_kernel", "dw_stride", "dw_pads", "residual", "channels_last", "split", "cuda_plans", "group", "strides",
                   "pads", "kernel_shape", "clamp", "table", "stage1_activation", "stage1_clip", "keepdims", "unknown_name"]


def _random_value(rng, attribute: AttributeProto) -> None:
    if attribute.type == AttributeProto.INT:
        attribute.i = int(rng.choice(EXTREME_INTS))
    elif attribute.type == AttributeProto.INTS:
        del attribute.ints[:]
        attribute.ints.extend(int(rng.choice(EXTREME_INTS)) for _ in range(int(rng.integers(0, 300 if rng.random() < 0.1 else 6))))
    elif attribute.type == AttributeProto.FLOAT:
        attribute.f = float(rng.choice([np.nan, np.inf, -np.inf, -1.0, 0.0, 1e-45, 6.0, 1e30]))
    elif attribute.type == AttributeProto.FLOATS:
        del attribute.floats[:]
        attribute.floats.extend(float(rng.choice([np.nan, -1.0, 0.0, 6.0, 1e30])) for _ in range(int(rng.integers(0, 5))))
    elif attribute.type == AttributeProto.STRING:
        attribute.s = bytes(rng.choice([b"", b"relu", b"clip", b"fixed_point", b"\xff\x00", b"1:64,8x8,16,2,2,0",
                                        b"3:8x8,99999,99,9", b";;", b"x" * 300]))


def break_model(rng, model: onnx.ModelProto) -> None:
    """One or two random changes to ``model``'s first node and its initializers."""
    node = model.graph.node[0]
    for _ in range(int(rng.integers(1, 3))):
        change = int(rng.integers(0, 5))
        if change == 0 and node.attribute:
            _random_value(rng, node.attribute[int(rng.integers(0, len(node.attribute)))])
        elif change == 1 and node.attribute:
            del node.attribute[int(rng.integers(0, len(node.attribute)))]
        elif change == 2:
            name = str(rng.choice(ATTRIBUTE_NAMES))
            kept = [a for a in node.attribute if a.name != name]
            del node.attribute[:]
            value = [int(rng.choice(EXTREME_INTS)), [int(rng.choice(EXTREME_INTS))] * int(rng.integers(1, 5)), "relu", float("nan")]
            node.attribute.extend(kept + [helper.make_attribute(name, value[int(rng.integers(0, 4))])])
        elif change == 3 and model.graph.initializer:
            index = int(rng.integers(0, len(model.graph.initializer)))
            init = model.graph.initializer[index]
            dtype = numpy_helper.to_array(init).dtype
            if rng.random() < 0.2:
                dtype = np.dtype(rng.choice([np.float64, np.float32, np.float16, np.int32, np.int8]))
            shape = tuple(int(rng.integers(0, 6)) for _ in range(int(rng.integers(0, 5))))
            values = np.clip(rng.normal(size=shape) * (50 if dtype.kind == "i" else 1), -128, 127).astype(dtype)
            init.CopyFrom(numpy_helper.from_array(values, init.name))
        elif change == 4 and len(node.input) > 1:
            if rng.random() < 0.5:
                node.input[int(rng.integers(1, len(node.input)))] = ""
            else:
                del node.input[-1]


def _sizes(rng) -> tuple[int, int, int]:
    return int(rng.integers(0, 3)), int(rng.integers(0, 10)), int(rng.integers(0, 10))


def _channels(rng, channels: int) -> int:
    return channels if rng.random() < 0.8 else int(rng.integers(0, 9))


def fused_case(rng):
    kind = str(rng.choice([k for k in KINDS if "fp16" in KINDS[k].precisions]))
    spec = random_spec(rng, kind, int(rng.integers(1, 16)), kernel=int(rng.choice([3, 5, 7])), stride=int(rng.choice([1, 2])),
                       scale=bool(rng.random() < 0.2), channels_last=bool(rng.random() < 0.5))
    spec = dataclasses.replace(spec, precision=str(rng.choice(["fp32", "fp16"])))
    n, h, w = _sizes(rng)
    c = _channels(rng, spec.stages[0].in_channels)
    dtype = NUMPY_TYPES[spec.precision]
    feeds = {"X": rng.normal(size=(n, h, w, c) if spec.channels_last else (n, c, h, w)).astype(dtype)}
    if spec.has_scale:
        feeds["S"] = rng.normal(size=(n, 1, 1, c) if spec.channels_last else (n, c, 1, 1)).astype(dtype)
    return fused_model(spec), feeds


def layer_case(rng):
    precision = str(rng.choice(["fp32", "fp16"]))
    channels, kernel = int(rng.integers(1, 9)), int(rng.choice([1, 3, 5]))
    depthwise = rng.random() < 0.5
    filters = channels if depthwise else int(rng.integers(1, 9))
    stride = int(rng.integers(1, 3))
    weights = rng.normal(size=(filters, 1 if depthwise else channels, kernel, kernel)).astype(NUMPY_TYPES[precision])
    attributes = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": [kernel // 2] * 4,
                  "group": channels if depthwise else 1, "channels_last": 1, **Activation("relu6").attributes("stage1")}
    node = conv_layer_node(precision, ["X", "W", "B"], "Y", "layer", attributes)
    graph = helper.make_graph([node], "layer", [helper.make_tensor_value_info("X", ONNX_TYPES[precision], None)],
                              [helper.make_tensor_value_info("Y", ONNX_TYPES[precision], None)],
                              [numpy_helper.from_array(weights, "W"),
                               numpy_helper.from_array(rng.normal(size=filters).astype(NUMPY_TYPES[precision]), "B")])
    n, h, w = _sizes(rng)
    return make_model(graph), {"X": rng.normal(size=(n, h, w, _channels(rng, channels))).astype(NUMPY_TYPES[precision])}


def mean_layer_case(rng):
    """A float Mean layer (fp32 or fp16, either keepdims); sizes of 0 pixels included."""
    precision = str(rng.choice(["fp32", "fp16"]))
    node = mean_layer_node(precision, "X", "Y", "mean", keepdims=bool(rng.random() < 0.5))
    graph = helper.make_graph([node], "mean", [helper.make_tensor_value_info("X", ONNX_TYPES[precision], None)],
                              [helper.make_tensor_value_info("Y", ONNX_TYPES[precision], None)])
    n, h, w = _sizes(rng)
    shape = (n, h, w, int(rng.integers(0, 40)))
    if rng.random() < 0.1:  # another rank
        shape = shape[:int(rng.integers(0, 4))] if rng.random() < 0.5 else shape + (2,)
    return make_model(graph), {"X": rng.normal(size=shape).astype(NUMPY_TYPES[precision])}


def int8_case(rng):
    n, h, w = _sizes(rng)
    channels = int(rng.integers(1, 12))
    which = int(rng.integers(0, 4))
    arrays: dict = {}
    if which == 0:
        filters = int(rng.integers(1, 12))
        node, arrays = conv_node("pw", "x", "y", Quant(0.1, 3), random_int8(rng, (filters, channels)), np.zeros(filters, np.int32),
                                 Requant(np.full(filters, 0.01, np.float32), Quant(0.2, -5)))
    elif which == 1:
        kernel = int(rng.choice([3, 5]))
        node, arrays = conv_node("dw", "x", "y", Quant(0.1, 0), random_int8(rng, (kernel, kernel, channels)), None,
                                 Requant(np.full(channels, 0.01, np.float32), Quant(0.2, 0)), depthwise=True,
                                 strides=(int(rng.integers(1, 3)),) * 2)
    elif which == 2:
        node = add_node("add", "x", "b", "y", Quant(0.1, 0), Quant(0.1, 0), Quant(0.2, 0))
    else:
        node = mean_node("mean", "x", "y", Quant(0.1, 0), Quant(0.2, 0), keepdims=bool(rng.random() < 0.5))
    feeds = {"x": random_int8(rng, (n, h, w, _channels(rng, channels)))}
    if which == 2:
        feeds["b"] = random_int8(rng, (n, h, w, _channels(rng, channels)))
    graph = helper.make_graph([node], "int8", [helper.make_tensor_value_info(k, TensorProto.INT8, None) for k in feeds],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                              [numpy_helper.from_array(a, k) for k, a in arrays.items()])
    return make_model(graph), feeds


def check_broken_models(family, providers: list, cases: int) -> None:
    outcomes = {"ran": 0, "refused": 0}
    for seed in range(cases):
        rng = np.random.default_rng(seed)
        model, feeds = family(rng)
        break_model(rng, model)
        try:
            make_session(model, with_library=True, providers=providers).run(None, feeds)
            outcomes["ran"] += 1
        except Exception as exc:  # noqa: BLE001 - what matters is whose exception it is
            assert is_onnxruntime_error(exc), f"seed {seed}: {type(exc).__name__}: {exc}"
            outcomes["refused"] += 1
    # both outcomes occur: the changes reach the kernels' checks, and some broken models stay valid
    assert outcomes["ran"] > 0 and outcomes["refused"] > 0, outcomes


FAMILIES = pytest.mark.parametrize("family", [fused_case, layer_case, mean_layer_case, int8_case],
                                    ids=["fused", "layer", "mean", "int8"])


@FAMILIES
def test_broken_nodes_run_or_fail_with_an_onnx_runtime_error(family):
    check_broken_models(family, ["CPUExecutionProvider"], CASES)


@pytest.mark.gpu
@FAMILIES
def test_broken_nodes_on_the_cuda_kernels(family):
    """The same on the CUDA provider (the CUDA kernels' launch checks, plans from a broken
    ``cuda_plans``). A fault inside a kernel would leave the CUDA context failing every later run,
    which the loop would count as refusals: a valid node run afterwards must still compute what the
    CPU kernels compute (compute-sanitizer memcheck, in the GPU runs, sees an access directly)."""
    require_cuda()
    check_broken_models(family, cuda_providers(), GPU_CASES)
    rng = np.random.default_rng(GPU_CASES)
    spec = random_spec(rng, "pwdwpw", 24, expand=96, out=24, residual=True, channels_last=True)
    x = {"X": rng.normal(size=(2, 9, 11, 24)).astype(np.float32)}
    on_gpu = make_session(fused_model(spec), with_library=True, providers=cuda_providers()).run(None, x)[0]
    on_cpu = make_session(fused_model(spec), with_library=True, providers=["CPUExecutionProvider"]).run(None, x)[0]
    assert np.abs(on_gpu - on_cpu).max() <= 1e-2 * np.abs(on_cpu).max(), "the CUDA kernels no longer compute after the broken models"
