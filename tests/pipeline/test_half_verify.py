"""The half-precision verification can fail: a fused model whose kernels or weights are wrong by less
than a careless bound would allow is refused, by the check that applies. And the path without the
library (the function bodies) agrees with ONNX Runtime's unfused half model within the bound of two
half computations of the model; a user's session on a host without CUDA kernels runs it."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from fcm.pipeline import verify
from fcm.pipeline.convert import ConvertOptions, convert
from fcm.pipeline.inputs import image_like_inputs
from fcm_core.errors import FcmError
from ort_custom_ops.ops.library import cuda_unavailable_reason, library_path, make_session
from ort_custom_ops.ops.schema import DOMAIN, is_fused_group
from ort_custom_ops.ops.standalone import float_io
from tests.support.tiny import tiny_keras

SAMPLES = 48


@pytest.fixture(scope="module", params=["fp16", "bf16"])
def captured(request, tmp_path_factory):
    """A small Keras model converted in one precision, and what its verification was given."""
    calls = []
    real = verify.verify_half

    def capture(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    folder = tmp_path_factory.mktemp(request.param)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(verify, "verify_half", capture)
        result = convert(tiny_keras(folder), folder / "tiny.onnx",
                         ConvertOptions(gpu="H100", precision=request.param, samples=SAMPLES))
    (args, kwargs), = calls
    return request.param, result, args, kwargs


def _again(captured, edit) -> None:
    """The verification run again with the fused half model changed by ``edit``."""
    precision, _, args, kwargs = captured
    source, _, models, *rest = args
    fused = onnx.ModelProto()
    fused.CopyFrom(models["fused"])
    edit(fused)
    verify.verify_half(source, precision, {**models, "fused": fused}, *rest, **kwargs)


def test_the_conversion_passed_every_check(captured):
    precision, result, _, _ = captured
    check = result.checks[0]
    assert check.passed() and check.nodes and check.model_pairs
    assert check.bound <= 0.2 if precision == "fp16" else check.bound <= 0.9  # not a bound that holds anything


def test_the_pair_bound_takes_the_larger_conditioning_measure(captured):
    """The whole-model check's conditioning is the larger of the unfused half model's own spread and
    how far rounding every operator's output moves the model (ONNX Runtime's CPU provider computes
    much of its half model in fp32, so the first can understate it), and its bound says which."""
    precision, result, _, _ = captured
    check = result.checks[0]
    assert verify.conditioning(0.01, "spread", 0.05, "rounded") == (0.05, "rounded")
    assert verify.conditioning(0.05, "spread", 0.01, "rounded") == (0.05, "spread")
    own = next(c for c in check.checks if c.name == verify.PRECISION_REFERENCE)
    assert check.pair_bound >= 2 * own.relative and check.pair_bound >= verify.derived_bound(precision, check.pair_depth)


def _clip_from(low: float):
    """An edit: every relu6 stage of the fused nodes clips from ``low`` instead of 0. The kernels follow
    the attribute; the function bodies, and the definition the tight check compares with, do not."""

    def edit(model):
        for node in model.graph.node:
            if node.domain == DOMAIN:
                for attribute in node.attribute:
                    if attribute.name.endswith("_clip") and list(attribute.floats) == [0.0, 6.0]:
                        attribute.floats[:] = [low, 6.0]
    return edit


def test_a_kernel_that_clips_at_the_wrong_value_fails_the_tight_check(captured):
    with pytest.raises(FcmError, match="differs from its definition in ONNX Runtime's operators"):
        _again(captured, _clip_from(0.05))


def test_wrong_weights_fail_the_bound_against_the_source(captured):
    """One fused node's last weights 30% too large: the kernel and its definition agree (both read
    them), the comparison with the fp32 source does not."""

    def scale_weights(model):
        node = [n for n in model.graph.node if n.domain == DOMAIN][-1]
        weights = {t.name: t for t in model.graph.initializer}
        name = [i for i in node.input if i in weights][-2]  # the last stage's weights (before its bias)
        tensor = weights[name]
        values = numpy_helper.to_array(tensor)
        tensor.CopyFrom(numpy_helper.from_array((values.astype(np.float32) * 1.3).astype(values.dtype), name))

    with pytest.raises(FcmError, match=r"verification failed \((fp16|bf16)\): fused ONNX with the FCM library "
                                       r"(is off by|agrees on top)"):
        _again(captured, scale_weights)


def _inputs(model, rng, count=8):
    return [a.astype(np.float32) for a in image_like_inputs(float_io(model), count, rng)]


def test_the_function_bodies_agree_with_the_unfused_half_model(captured, rng):
    precision, result, _, _ = captured
    fused, unfused = onnx.load(result.files["fused"]), onnx.load(result.files["unfused"])
    (x,) = _inputs(unfused, rng)
    (want,) = make_session(unfused, with_library=False).run(None, {unfused.graph.input[0].name: x})
    (got,) = make_session(fused, with_library=False).run(None, {fused.graph.input[0].name: x})
    check = result.checks[0]
    assert np.abs(got - want).max() <= check.pair_bound * np.abs(want).max()
    assert got.dtype == np.float32 and got.shape == want.shape


@pytest.mark.skipif(cuda_unavailable_reason() is None, reason="a host that can run the CUDA kernels registers more")
def test_a_users_session_runs_the_function_bodies(captured, rng):
    """Registering the library as a user does (no config entry): no half op is registered, so ONNX
    Runtime runs the function bodies, bit for bit what it runs without the library."""
    _, result, _, _ = captured
    fused = onnx.load(result.files["fused"])
    (x,) = _inputs(fused, rng)
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(library_path()))
    session = ort.InferenceSession(fused.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {fused.graph.input[0].name: x})
    (bodies,) = make_session(fused, with_library=False).run(None, {fused.graph.input[0].name: x})
    np.testing.assert_array_equal(got, bodies)
    # what tells them apart: a hand-edited attribute, which the reference kernels follow and the bodies do not
    edited = onnx.ModelProto()
    edited.CopyFrom(fused)
    _clip_from(0.5)(edited)
    session = ort.InferenceSession(edited.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (kernels,) = make_session(edited).run(None, {fused.graph.input[0].name: x})
    np.testing.assert_array_equal(session.run(None, {fused.graph.input[0].name: x})[0], bodies)
    assert np.abs(kernels - bodies).max() > 0.01 * np.abs(bodies).max()


def test_fcm_verify_holds_a_half_model_to_the_unfused_half_model(captured, tmp_path, capsys):
    from fcm.cli import main

    precision, result, _, _ = captured
    fused_path = result.files["fused"]
    assert main(["verify", str(fused_path), "--batch", "16"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"on the CPU, {precision}, the library's CPU reference kernels" in line and "FAILED" not in line
    assert "derived: 5 x sqrt(" in line or "twice the" in line  # which bound applied
    edited = onnx.load(fused_path)
    _clip_from(0.5)(edited)
    onnx.save(edited, tmp_path / "tiny.onnx")
    assert main(["verify", str(tmp_path / "tiny.onnx"), "--against", str(result.files["unfused"]), "--batch", "16"]) == 2
    captured_io = capsys.readouterr()
    assert "FAILED" in captured_io.out and "fcm: error:" in captured_io.err


def test_fcm_tune_takes_a_half_model(captured, tmp_path):
    """fcm tune --unfuse on an fp16 or bf16 model: the group runs as its subgraph in that precision,
    the tuned model stays in it, and its outputs are checked against the unfused half model within
    the half bound."""
    import json

    from fcm.cli import main
    from fcm.pipeline.verify import model_precision

    precision, result, _, _ = captured
    fused = onnx.load(result.files["fused"])
    names = [n.name for n in fused.graph.node if is_fused_group(n)]
    out = tmp_path / "tiny.tuned.onnx"
    assert main(["tune", str(result.files["fused"]), "--unfuse", names[0], "-o", str(out)]) == 0
    tuned = onnx.load(out)
    assert model_precision(tuned) == precision
    assert [n.name for n in tuned.graph.node if is_fused_group(n)] == names[1:]
    check = json.loads((tmp_path / "tiny.tuned.tune.json").read_text())["output_check"]
    assert check["against"] == str(result.files["unfused"]) and check["relative_error"] <= check["bound"]
