"""Deploying on a CPU: a session that registers the FCM library as a user does (no config entry)
runs an fp32 fused node's function body, ONNX Runtime's own kernels, where this process cannot run
the CUDA kernels; the C++ reference kernels run only when ``fcm.fp32_kernels`` asks for them; the
int8 ops (no function bodies) stay registered for the CPU.

How a test tells which ran: a fused node whose ``stage1_activation`` attribute is hand-edited
(relu6 -> relu) while its function body still computes relu6. The reference kernel follows the
attribute, the function body does not, so the outputs say which ran, against numpy references of
both.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from ort_custom_ops.ops.library import FP32_KERNELS, cuda_unavailable_reason, library_path, make_session
from ort_custom_ops.ops.schema import Activation, FcmSpec, Quant, Requant, StageSpec, conv_node, make_model
from ort_custom_ops.ops.standalone import fused_model
from tests.support.fcm_numpy import run_spec

#: Whether this process can run the CUDA kernels (then ``auto`` registers the fp32 ops, the reference
#: kernels included for a CPU session).
CUDA_HERE = cuda_unavailable_reason() is None


def _spec(rng, first: str) -> FcmSpec:
    c, e, f = 5, 12, 7
    return FcmSpec("pwdwpw", [
        StageSpec("pw", rng.normal(size=(e, c)).astype(np.float32), rng.normal(size=e).astype(np.float32), Activation(first)),
        StageSpec("dw", rng.normal(size=(e, 3, 3)).astype(np.float32), np.zeros(e, np.float32), Activation("relu6"), 1,
                  (1, 1, 1, 1)),
        StageSpec("pw", rng.normal(size=(f, e)).astype(np.float32), np.zeros(f, np.float32)),
    ])


def _edited_model(spec: FcmSpec):
    """The fused model of ``spec`` (first activation relu6) with its node's attribute saying relu."""
    model = fused_model(spec)
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name != "stage1_activation"]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute("stage1_activation", "relu")])
    return model


def _user_session(model, entry: str | None = None):
    """A session as the README's deployment snippet makes it: plain onnxruntime, the library registered."""
    options = ort.SessionOptions()
    if entry is not None:
        options.add_session_config_entry(FP32_KERNELS, entry)
    options.register_custom_ops_library(str(library_path()))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


@pytest.fixture
def case(rng):
    spec = _spec(rng, "relu6")
    x = rng.normal(0, 3, (2, 5, 9, 7)).astype(np.float32)  # wide enough that relu and relu6 differ
    body = run_spec(spec, x)  # what the function body computes (relu6)
    stages = list(spec.stages)
    stages[0] = StageSpec("pw", stages[0].weight, stages[0].bias, Activation("relu"))
    as_attribute = run_spec(FcmSpec(spec.kind, stages), x)  # what the reference kernel computes (relu)
    assert np.abs(body - as_attribute).max() > 1e-2 * np.abs(body).max()
    return _edited_model(spec), x, body, as_attribute


def _bound(y: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.abs(y).max()))


@pytest.mark.parametrize("entry", [None, "auto", "none"])
def test_a_users_session_runs_the_function_body(case, entry):
    model, x, body, as_attribute = case
    (y,) = _user_session(model, entry).run(None, {"X": x})
    if CUDA_HERE and entry != "none":  # the CUDA kernels are registered, and the reference kernels with them
        np.testing.assert_allclose(y, as_attribute, rtol=0, atol=_bound(as_attribute))
        return
    np.testing.assert_allclose(y, body, rtol=0, atol=_bound(body))
    (plain,) = make_session(model, with_library=False).run(None, {"X": x})
    assert np.array_equal(y, plain)  # the same ONNX Runtime kernels as without the library


def test_reference_kernels_on_request(case):
    model, x, body, as_attribute = case
    for session in (_user_session(model, "reference"), make_session(model)):  # make_session asks for them by default
        (y,) = session.run(None, {"X": x})
        np.testing.assert_allclose(y, as_attribute, rtol=0, atol=_bound(as_attribute))
    (y,) = make_session(model, reference_kernels=False).run(None, {"X": x})
    np.testing.assert_allclose(y, body, rtol=0, atol=_bound(body))


def test_an_unknown_entry_value_is_refused(case):
    model = case[0]
    with pytest.raises(Exception) as info:
        _user_session(model, "fast")
    assert "fcm.fp32_kernels must be auto, reference or none, not 'fast'" in str(info.value)


def test_int8_ops_stay_registered_for_the_cpu(rng):
    """An int8 op has no function body: a user's session must still find its CPU kernel."""
    x = rng.integers(-128, 128, (1, 4, 5, 3)).astype(np.int8)
    weights = rng.integers(-127, 128, (2, 3)).astype(np.int8)
    node, arrays = conv_node("conv", "x", "y", Quant(0.05, 3), weights, np.zeros(2, np.int32),
                             Requant(np.array([0.01, 0.02], np.float32), Quant(0.1, -5)))
    graph = helper.make_graph([node], "int8", [helper.make_tensor_value_info("x", TensorProto.INT8, [None, 4, 5, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                              [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    model = make_model(graph)
    outputs = [_user_session(model, entry).run(None, {"x": x})[0] for entry in (None, "none", "reference")]
    assert outputs[0].shape == (1, 4, 5, 2) and outputs[0].dtype == np.int8
    assert all(np.array_equal(y, outputs[0]) for y in outputs)
