"""A hand-broken fused model gives an ONNX Runtime error, never a crash: attributes and weight
shapes are checked when the kernel is created, input shapes when it runs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import Activation, FcmSpec, StageSpec
from ort_custom_ops.ops.standalone import fused_model
from tests.support.fcm_numpy import run_spec


def _spec(rng, **options) -> FcmSpec:
    c, e, f = 6, 10, 6
    return FcmSpec("pwdwpw", [
        StageSpec("pw", rng.normal(size=(e, c)).astype(np.float32), np.zeros(e, np.float32), Activation("relu6")),
        StageSpec("dw", rng.normal(size=(e, 3, 3)).astype(np.float32), np.zeros(e, np.float32), Activation("relu6"), 1, (1, 1, 1, 1)),
        StageSpec("pw", rng.normal(size=(f, e)).astype(np.float32), np.zeros(f, np.float32)),
    ], residual=True, **options)


def _set_attribute(model: onnx.ModelProto, name: str, value) -> None:
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])


def _replace_initializer(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    for index, init in enumerate(model.graph.initializer):
        if init.name == name:
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(array, name))


def _expect_ort_error(model: onnx.ModelProto, words: str, x=None, **feeds) -> None:
    x = np.ones((1, 6, 8, 8), np.float32) if x is None else x
    with pytest.raises(Exception) as info:
        make_session(model, with_library=True).run(None, {"X": x, **feeds})
    assert type(info.value).__module__.startswith("onnxruntime"), type(info.value)
    assert words in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "attribute, value, words",
    [
        ("dw_kernel", 4, "dw_kernel must be 3, 5 or 7"),
        ("dw_kernel", 5, "weights are 3x3 but dw_kernel is 5"),
        ("dw_stride", -1, "dw_stride must be 1 or 2"),
        ("dw_stride", 3, "dw_stride must be 1 or 2"),
        ("dw_pads", [1, 1, 1], "dw_pads must hold 4 integers, not [1, 1, 1]"),
        ("dw_pads", [3, 0, 0, 0], "dw_pads must be in [0, 3)"),
        ("stage2_activation", "gelu", "unknown stage2_activation 'gelu'"),
        ("stage3_activation", "clip", "needs stage3_clip"),
        ("stage1_clip", [6.0, 0.0], "lo <= hi"),
        ("residual", 2, "residual must be 0 or 1"),
        ("channels_last", 2, "channels_last must be 0 or 1"),
        ("split", 0, "tiling attributes"),
        ("cuda_plans", "1:64,8x8,16,2", "must read BATCH:pixels,HxW"),
        ("cuda_plans", "one:64,8x8,16,2,2,0", "must read BATCH:pixels,HxW"),
        ("cuda_plans", "0:64,8x8,16,2,2,0", "must read BATCH:pixels,HxW"),
        ("cuda_plans", "1:64,8x8,16,2,2,0,1,1", "must read BATCH:pixels,HxW"),
        ("cuda_plans", "1:64,8x8,16,2,2,0,1x", "must read BATCH:pixels,HxW"),
        ("cuda_plans", "2:64,8x8,16,2,2,0;2:128,8x16,16,1,2,0", "lists batch 2 twice"),
        ("cuda_plans_strict", 2, "cuda_plans_strict must be 0 or 1"),
    ],
)
def test_bad_attributes(attribute, value, words, rng):
    model = fused_model(_spec(rng))
    _set_attribute(model, attribute, value)
    _expect_ort_error(model, words)


@pytest.mark.parametrize("value, name, words", [
    (b"\xffrelu\x00", "fcm0", "unknown stage2_activation '\\xffrelu\\x00'"),
    ("g\u00e9lu\u2013", "n\u00e6\u200b", "FCM node 'n\u00e6\u200b': unknown stage2_activation 'g\u00e9lu\u2013'"),
    (b"\xc3(\xed\xa0\x80\xf4\x90\x80\x80", "a\nb", "FCM node 'a\\x0ab': unknown stage2_activation '\\xc3(\\xed\\xa0\\x80\\xf4\\x90\\x80\\x80'"),
])
def test_error_messages_quote_the_model_s_bytes_as_utf8(value, name, words, rng):
    """A message quoting the model's text (an attribute value, the node's name) reaches Python as an
    ONNX Runtime error: its UTF-8 is kept, other bytes (malformed sequences, encoded surrogates,
    code points past U+10FFFF, control characters) become \\xNN, where the binding would have
    raised UnicodeDecodeError instead."""
    model = fused_model(_spec(rng))
    model.graph.node[0].name = name
    _set_attribute(model, "stage2_activation", value)
    _expect_ort_error(model, words)


@pytest.mark.parametrize("plans, accepted", [
    ("3:8x8,64,1,3", True), ("3:8x8,64,1,3,2", True),   # the block kernels' plan, and with two warpgroups
    ("3:gemm", True),                                    # a lone PW as one GEMM (the text only: CPU kernels here)
    ("3:dw+gemm", True),                                 # DW->PW in two passes (the same)
    ("3:gemm+dw", True),                                 # PW->DW in two passes (the same)
    ("3:gemm+dw+gemm", True),                            # PW->DW->PW in three passes (the same)
    ("3:8x8,64,1,3,2,1", False), ("3:8x8,64,1", False), ("3:8x8,64,1,3,x", False), ("3:64,8x8,16,2,2,0", False),
    ("3:dw+gemm,1", False), ("3:gemm,1", False), ("3:gemm+gemm", False), ("3:dw", False),
])
def test_block_plans_on_a_channels_last_node(plans, accepted, rng):
    """A channels_last node's cuda_plans entries read BATCH:HxW,f_tile,split,stages[,groups],
    BATCH:gemm, BATCH:dw+gemm, BATCH:gemm+dw or BATCH:gemm+dw+gemm: checked when ONNX Runtime creates
    the kernel, on any provider."""
    model = fused_model(_spec(rng, channels_last=True))
    _set_attribute(model, "cuda_plans", plans)
    x = rng.normal(size=(3, 8, 8, 6)).astype(np.float32)
    if accepted:
        (planned,) = make_session(model, with_library=True).run(None, {"X": x})
        assert planned.shape[0] == 3
    else:
        _expect_ort_error(model, "must read BATCH:HxW,f_tile,split,stages[,groups] (e.g. 32:8x8,24,1,3), BATCH:gemm, "
                                 "BATCH:dw+gemm, BATCH:gemm+dw or BATCH:gemm+dw+gemm", x=x)


def test_tuned_plans_do_not_change_the_cpu_kernels(rng):
    """cuda_plans is for the CUDA kernels: the CPU kernels accept it and compute the same."""
    spec = _spec(rng)
    model = fused_model(spec)
    x = rng.normal(size=(2, 6, 8, 8)).astype(np.float32)
    (plain,) = make_session(model, with_library=True).run(None, {"X": x})
    _set_attribute(model, "cuda_plans", "2:64,4x8,16,1,2,0;32:128,8x16,32,2,1,0")
    (tuned,) = make_session(model, with_library=True).run(None, {"X": x})
    assert np.array_equal(plain, tuned)


@pytest.mark.parametrize(
    "replaced, words",
    [
        ({"W1": (10, 6, 1)}, "weights must be [F, C], rank 2"),
        ({"W2": (10, 3)}, "weights must be [C, K, K], rank 3"),
        ({"W2": (9, 3, 3), "B2": (9,)}, "stage 1 produces 10 channels but stage 2 reads 9"),
        ({"W3": (5, 10), "B3": (5,)}, "residual needs as many output channels"),
        ({"B2": (7,)}, "bias has 7 values for 10 channels"),
    ],
)
def test_mismatched_weight_shapes(replaced, words, rng):
    model = fused_model(_spec(rng))
    for name, shape in replaced.items():
        _replace_initializer(model, name, rng.normal(size=shape).astype(np.float32))
    _expect_ort_error(model, words)


def test_wrong_dtype(rng):
    model = fused_model(_spec(rng))
    _replace_initializer(model, "W1", rng.normal(size=(10, 6)).astype(np.float64))
    with pytest.raises(Exception) as info:
        make_session(model, with_library=True)
    assert type(info.value).__module__.startswith("onnxruntime")
    assert "type" in str(info.value).lower()


def test_wrong_input_shape_at_run_time(rng):
    model = fused_model(_spec(rng))
    model.graph.input[0].type.tensor_type.ClearField("shape")  # so that the kernel, not the session, sees it
    _expect_ort_error(model, "input has 5 channels, the first stage takes 6", x=np.ones((1, 5, 8, 8), np.float32))
    _expect_ort_error(model, "input must be 4-D", x=np.ones((6, 8, 8), np.float32))


def test_weights_given_at_run_time_are_checked(rng):
    """Weights that are graph inputs (no static shape) are checked on each call."""
    spec = _spec(rng)
    model = fused_model(spec)
    w1 = [i for i in model.graph.initializer if i.name == "W1"][0]
    model.graph.initializer.remove(w1)
    model.graph.input.append(helper.make_tensor_value_info("W1", onnx.TensorProto.FLOAT, None))
    session = make_session(model, with_library=True)
    x = rng.normal(size=(2, 6, 5, 7)).astype(np.float32)
    (y,) = session.run(None, {"X": x, "W1": spec.stages[0].weight})
    np.testing.assert_allclose(y, run_spec(spec, x), atol=1e-4 * np.abs(y).max(), rtol=0)
    with pytest.raises(Exception) as info:
        session.run(None, {"X": x, "W1": np.ones((9, 6), np.float32)})
    assert "FCM node 'fcm0': stage 1 bias has 10 values for 9 channels" in str(info.value)


def test_wrong_input_shape_at_run_time_channels_last(rng):
    """A channels-last node reads C from X's last axis: an NCHW tensor given to it is an error."""
    model = fused_model(_spec(rng, channels_last=True))
    model.graph.input[0].type.tensor_type.ClearField("shape")
    _expect_ort_error(model, "input has 8 channels, the first stage takes 6", x=np.ones((1, 6, 8, 8), np.float32))
    _expect_ort_error(model, "input must be 4-D [N, H, W, C] (channels_last)", x=np.ones((8, 8, 6), np.float32))


@pytest.mark.parametrize("channels_last, shape, words", [
    (False, (2, 1, 1, 6), "the channel scale must be [N or 1, C, 1, 1]"),  # [N, 1, 1, C]: channels last only
    (False, (2, 6, 2, 1), "the channel scale must be [N or 1, C, 1, 1]"),
    (True, (2, 6, 2, 1), "the channel scale must be [N or 1, C, 1, 1] or [N or 1, 1, 1, C]"),
    (True, (2, 1, 1, 5), "the channel scale must be"),
    (True, (3, 1, 1, 6), "the channel scale must be"),  # neither 1 nor N
])
def test_wrong_scale_shape_at_run_time(channels_last, shape, words, rng):
    spec = _spec(rng, channels_last=channels_last, has_scale=True)
    model = fused_model(spec)
    model.graph.input[1].type.tensor_type.ClearField("shape")
    x = np.ones((2, 8, 8, 6) if channels_last else (2, 6, 8, 8), np.float32)
    _expect_ort_error(model, words, x=x, S=np.ones(shape, np.float32))
