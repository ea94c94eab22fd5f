"""The fp16 and bf16 FCM ops (Fp16Fused*, Bf16Fused*): the CPU reference kernels against a numpy
reference that rounds where the ops define it (every input, and every stage's output, to the element
type), within a few units of rounding; rounding to nearest even; the function bodies (the path
without the library) against the kernels; both layouts; and the errors a half node gives for what it
cannot take."""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from fcm_core.vocabulary import PRECISIONS
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import NUMPY_TYPES, Activation, FcmSpec, StageSpec
from ort_custom_ops.ops.standalone import float_io, fused_model
from tests.support.fcm_numpy import depthwise, pointwise, round_to, run_spec
from tests.support.half import rounding_bound
from tests.support.specs import random_feeds, random_spec

HALF = pytest.mark.parametrize("precision", ["fp16", "bf16"])
LAYOUTS = pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])


def _run(spec: FcmSpec, feeds: dict, with_library: bool = True) -> np.ndarray:
    """The half node run from float32 feeds (rounded to its type first) through Casts at its edges."""
    dtype = NUMPY_TYPES[spec.precision]
    feeds = {k: v.astype(dtype).astype(np.float32) for k, v in feeds.items()}
    (y,) = make_session(float_io(fused_model(spec)), with_library=with_library).run(None, feeds)
    return y


def _check(spec: FcmSpec, rng, batch: int, height: int, width: int) -> None:
    feeds, x, scale = random_feeds(spec, rng, batch, height, width)
    expected = run_spec(spec, x, scale, NUMPY_TYPES[spec.precision])
    if spec.channels_last:
        expected = expected.transpose(0, 2, 3, 1)
    bound = rounding_bound(spec, x, scale)
    if spec.residual:
        bound += 2 * PRECISIONS[spec.precision].unit_roundoff * np.abs(expected).max()
    got = _run(spec, feeds)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= bound, np.abs(got - expected).max() / bound
    assert np.isfinite(got).all()
    # the function body: ONNX Runtime's own operators on the same values, rounding after each of them
    body = _run(spec, feeds, with_library=False)
    assert np.abs(body - expected).max() <= bound, np.abs(body - expected).max() / bound


@HALF
@LAYOUTS
@pytest.mark.parametrize("kind, kernel, stride", [("dwpw", 3, 2), ("dwpw", 7, 1), ("pwdw", 5, 2), ("pwdw", 3, 1),
                                                  ("pwdwpw", 3, 2), ("pwdwpw", 7, 1), ("pwpw", 3, 1)])
def test_kernels_match_the_rounded_numpy_reference(precision, channels_last, kind, kernel, stride, rng):
    spec = random_spec(rng, kind, int(rng.integers(3, 37)), kernel=kernel, stride=stride, channels_last=channels_last)
    spec = dataclasses.replace(spec, precision=precision)
    _check(spec, rng, batch=int(rng.integers(1, 4)), height=int(rng.integers(kernel, 20)), width=int(rng.integers(kernel, 20)))


@HALF
@LAYOUTS
@pytest.mark.parametrize("kind", ["pwdwpw", "pwpw"])
def test_residual_and_channel_scale(precision, channels_last, kind, rng):
    spec = random_spec(rng, kind, 19, residual=True, scale=True, channels_last=channels_last)
    _check(dataclasses.replace(spec, precision=precision), rng, batch=3, height=9, width=14)


@HALF
@pytest.mark.parametrize("residual", [False, True])
def test_single_pointwise_stage_with_a_channel_scale(precision, residual, rng):
    spec = random_spec(rng, "pw", 27, residual=residual, scale=True, channels_last=True)
    _check(dataclasses.replace(spec, precision=precision), rng, batch=3, height=6, width=11)


@HALF
def test_rows_cross_blocks_on_a_larger_map(precision, rng):
    spec = random_spec(rng, "pwdwpw", 16, expand=96, out=16, residual=True, channels_last=True)
    _check(dataclasses.replace(spec, precision=precision), rng, batch=1, height=112, width=96)


def _identity_chain(precision: str, bias: float) -> FcmSpec:
    """dw (a centred 1) -> pw (the identity), the last bias ``bias``: the output is x + bias, rounded once."""
    channels = 4
    dw = np.zeros((channels, 3, 3), np.float32)
    dw[:, 1, 1] = 1
    stages = [StageSpec("dw", dw, np.zeros(channels, np.float32), Activation(), stride=1, pads=(1, 1, 1, 1)),
              StageSpec("pw", np.eye(channels, dtype=np.float32), np.full(channels, bias, np.float32), Activation())]
    return FcmSpec("dwpw", stages, precision=precision)


@pytest.mark.parametrize("precision, mantissa", [("fp16", 10), ("bf16", 7)])
def test_rounding_is_to_nearest_even(precision, mantissa):
    """Halfway cases go to the even neighbour (1 + half an ULP -> 1; 1 + 1.5 ULP -> 1 + 2 ULP), not down."""
    ulp = 2.0 ** -mantissa
    spec = _identity_chain(precision, ulp / 2)
    x = np.array([1.0, 1.0 + ulp, 2.0, -1.0 - ulp], np.float32)
    feeds = {"X": np.broadcast_to(x[None, :, None, None], (1, 4, 3, 3)).copy()}
    got = _run(spec, feeds)[0, :, 1, 1]
    want = (x.astype(np.float64) + ulp / 2).astype(np.float32).astype(NUMPY_TYPES[precision]).astype(np.float32)
    assert list(got) == list(want)
    assert got[0] == 1.0 and got[1] == 1.0 + 2 * ulp  # ties to even, both ways
    if precision == "bf16":  # the upper 16 bits of the float32, rounded (not cut)
        assert got.view(np.uint32)[1] & 0xFFFF == 0 and got[1] != np.float32(1.0 + ulp)


@pytest.mark.parametrize("precision, mantissa", [("fp16", 10), ("bf16", 7)])
def test_each_stage_output_is_rounded(precision, mantissa):
    """pw -> pw: stage 1 makes (1 + ULP/4, 1), stage 2 their difference times 4. With stage 1's output
    rounded to the element type (as the ops define) that is 0; kept in fp32 it would be one ULP.
    The bf16 function body rounds there too (a Cast to bf16 and back). The fp16 one does not on the
    CPU: ONNX Runtime's CPU provider runs fp16 Conv in fp32 between Casts it inserts, and drops the
    Casts between two such nodes (its CUDA provider has fp16 kernels)."""
    ulp = 2.0 ** -mantissa
    stages = [StageSpec("pw", np.ones((2, 1), np.float32), np.array([ulp / 4, 0], np.float32), Activation()),
              StageSpec("pw", np.array([[4, -4]], np.float32), np.zeros(1, np.float32), Activation())]
    spec = FcmSpec("pwpw", stages, precision=precision)
    got = _run(spec, {"X": np.ones((1, 1, 2, 2), np.float32)})
    assert np.array_equal(got, np.zeros((1, 1, 2, 2), np.float32))
    body = _run(spec, {"X": np.ones((1, 1, 2, 2), np.float32)}, with_library=False)
    assert np.array_equal(body, got if precision == "bf16" else np.full_like(got, ulp))


@HALF
def test_every_input_must_have_the_op_s_element_type(precision, rng):
    spec = dataclasses.replace(random_spec(rng, "dwpw", 5), precision=precision)
    model = fused_model(spec)
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT  # X fp32 into a half op
    with pytest.raises(Exception, match="(?i)type"):
        make_session(model).run(None, {"X": np.zeros((1, 5, 4, 4), np.float32)})


@HALF
def test_a_half_op_declares_no_allow_tf32(precision, rng):
    spec = dataclasses.replace(random_spec(rng, "pwpw", 5), precision=precision)
    with pytest.raises(ValueError, match="allow_tf32"):
        from ort_custom_ops.ops.schema import fused_node

        fused_node("pwpw", precision, ["X", "W1", "B1", "W2", "B2"], "Y", "n", {"allow_tf32": 0})
    assert spec.op_type == {"fp16": "Fp16FusedPwPw", "bf16": "Bf16FusedPwPw"}[precision]


@HALF
def test_bad_shapes_are_an_error_not_a_crash(precision, rng):
    spec = dataclasses.replace(random_spec(rng, "pwdwpw", 6, channels_last=True), precision=precision)
    model = fused_model(spec)
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "C"  # let a wrong channel count reach the kernel
    session = make_session(float_io(model))
    with pytest.raises(Exception, match="FCM node 'fcm0': input has 7 channels"):
        session.run(None, {"X": np.zeros((1, 5, 5, 7), np.float32)})


def test_ml_dtypes_and_onnxruntime_round_bf16_alike():
    """The numpy reference rounds with ml_dtypes; ONNX Runtime's Cast (which the bf16 function bodies use)
    rounds the same way."""
    from onnx import TensorProto, helper

    x = np.random.default_rng(0).normal(size=4096).astype(np.float32)
    x[:4] = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 3.0e38]
    graph = helper.make_graph([helper.make_node("Cast", ["x"], ["h"], to=TensorProto.BFLOAT16),
                               helper.make_node("Cast", ["h"], ["y"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4096])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4096])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert np.array_equal(y, x.astype(ml_dtypes.bfloat16).astype(np.float32))
