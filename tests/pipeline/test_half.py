"""`fcm convert --precision fp16|bf16`: the six reference architectures (small inputs) and two Keras
models outside the zoo convert and verify in both precisions; what the half model is made of; the
model against Keras here, independently of the conversion's own verification; --io half; errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from extractor.sources import SourceOptions
from fcm.cli import main
from fcm.pipeline.convert import ConvertOptions, convert
from fcm.pipeline.verify import derived_bound
from fcm_core.errors import FcmError
from fcm_core.vocabulary import PRECISIONS, kind_of, layer_of, layer_op_type
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import DOMAIN
from ort_custom_ops.ops.standalone import float_io
from tests.cli.test_errors import fcm, one_error_line
from tests.support.fixtures import MOB_V2_TFLITE

ZOO = ["MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "Xception"]
SAMPLES = 64  # random images the conversion's agreement is measured on (the default is 256)


def _fused(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN]


def _check_structure(result, precision: str, io_half: bool = False) -> None:
    fused, unfused = onnx.load(result.files["fused"]), onnx.load(result.files["unfused"])
    element = {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}[precision]
    nodes = _fused(fused)
    assert nodes and all((kind_of(n.op_type) or layer_of(n.op_type))[1] == precision for n in nodes)
    assert not _fused(unfused)
    functions = {(f.name, f.overload) for f in fused.functions}
    assert all((n.op_type, n.overload) in functions for n in nodes) and len(functions) == len(nodes)
    assert not any(a.name == "allow_tf32" for n in nodes for a in n.attribute)
    weights = {t.name: t for t in fused.graph.initializer}
    assert all(weights[name].data_type == element for n in nodes for name in n.input if name in weights)
    for model in (fused, unfused):
        edges = list(model.graph.input) + list(model.graph.output)
        want = element if io_half else onnx.TensorProto.FLOAT
        assert all(v.type.tensor_type.elem_type == want for v in edges)
        if not io_half:  # one Cast at each input and output (the fused model's input Cast may be folded into its stem)
            first = [n for n in model.graph.node if model.graph.input[0].name in n.input]
            last = [n for n in model.graph.node if model.graph.output[0].name in n.output]
            stem = [layer_op_type("Conv", precision)] if model is fused else []
            assert [n.op_type for n in first] in (["Cast"], stem) and [n.op_type for n in last] == ["Cast"]
    verification = result.checks[0]
    assert verification.passed() and verification.precision == precision
    assert verification.bound >= derived_bound(precision, verification.depth)
    assert len(verification.nodes) == len(nodes)
    assert all(n.difference <= n.bound(precision) < verification.bound for n in verification.nodes)
    assert verification.pair_bound >= derived_bound(precision, verification.pair_depth)
    assert result.summary and precision in result.summary[0]
    report = result.files["report"].read_text()
    assert f"# Conversion report ({precision})" in report and "top-1" in report


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("name", ZOO)
def test_the_reference_architectures_convert_and_verify(name, precision, tmp_path):
    size = 71 if name == "Xception" else 96  # Xception's smallest input
    result = convert(f"keras:{name}", tmp_path / f"{name}.onnx",
                     ConvertOptions(gpu="H100", batch=32, precision=precision, samples=SAMPLES,
                                    source=SourceOptions(input_size=size, logits=True)))
    assert result.precision == precision
    _check_structure(result, precision)


def _outside_the_zoo(kind: str):
    """Two DW/PW models of the kinds users train, at input sizes the zoo does not use: an inverted-
    residual network with squeeze-and-excitation and hard-swish (64x48), and a separable-convolution
    network with swish and a 5x5 depthwise stride 2 (80x80)."""
    import keras

    from extractor.sources import randomize_batchnorm

    keras.utils.set_random_seed(11)
    L = keras.layers
    if kind == "se_hardswish":
        inputs = keras.Input((64, 48, 3))
        x = L.Activation("hard_swish")(L.BatchNormalization()(L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inputs)))
        for expand, out, stride in ((48, 16, 1), (64, 24, 2), (96, 24, 1)):
            y = L.ReLU(6.0)(L.BatchNormalization()(L.Conv2D(expand, 1, use_bias=False)(x)))
            y = L.Activation("hard_swish")(L.BatchNormalization()(L.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(y)))
            s = L.GlobalAveragePooling2D(keepdims=True)(y)
            s = L.Activation("hard_sigmoid")(L.Conv2D(expand, 1)(L.ReLU()(L.Conv2D(expand // 4, 1)(s))))
            y = L.Multiply()([y, s])
            y = L.BatchNormalization()(L.Conv2D(out, 1, use_bias=False)(y))
            x = L.Add()([x, y]) if stride == 1 and out == x.shape[-1] else y
    else:
        inputs = keras.Input((80, 80, 3))
        x = L.Activation("swish")(L.BatchNormalization()(L.Conv2D(24, 3, strides=2, padding="same", use_bias=False)(inputs)))
        for filters, kernel, stride in ((32, 3, 1), (48, 5, 2), (64, 3, 1)):
            x = L.Activation("swish")(L.BatchNormalization()(L.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False)(x)))
            x = L.Activation("swish")(L.BatchNormalization()(L.Conv2D(filters, 1, use_bias=False)(x)))
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(10)(x))
    randomize_batchnorm(model, np.random.default_rng(12))
    return model


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("kind", ["se_hardswish", "separable_swish"])
def test_models_outside_the_zoo_convert_and_verify_and_match_keras(kind, precision, tmp_path, rng):
    model = _outside_the_zoo(kind)
    result = convert(model, tmp_path / f"{kind}.onnx", ConvertOptions(gpu="H100", precision=precision, samples=SAMPLES))
    _check_structure(result, precision)
    # independently of the conversion's verification: the fused model (kernels, then function bodies) against Keras
    fused = onnx.load(result.files["fused"])
    x = rng.uniform(-1, 1, (3, *model.input_shape[1:])).astype(np.float32)
    want = model.predict(x, verbose=0)
    bound = result.checks[0].bound * np.abs(want).max()
    for with_library in (True, False):
        session = make_session(fused, with_library=with_library)
        (got,) = session.run(None, {session.get_inputs()[0].name: x})
        assert got.dtype == np.float32 and np.abs(got - want).max() <= bound


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_io_half_makes_the_inputs_and_outputs_half(precision, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["-q", "convert", "keras:MobileNetV3Small", "--input-size", "64", "--logits", "--gpu", "H100",
                 "--precision", precision, "--io", "half", "--samples", "16", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{precision}; verified against the source model on 16 random images" in printed
    fused = onnx.load(out)
    element = {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}[precision]
    assert fused.graph.input[0].type.tensor_type.elem_type == element
    assert fused.graph.output[0].type.tensor_type.elem_type == element
    if precision == "fp16":  # (bf16: the first operator is kept in fp32, after a Cast)
        assert fused.graph.node[0].op_type != "Cast"  # numpy has fp16: the model runs on fp16 arrays as they are
        session = make_session(fused)
        x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float16)
        (y,) = session.run(None, {session.get_inputs()[0].name: x})
        assert y.dtype == np.float16 and y.shape == (2, 1000) and np.isfinite(y).all()
    else:  # ONNX Runtime's Python API passes no bf16 arrays: through Casts
        (y,) = make_session(float_io(fused)).run(None, {fused.graph.input[0].name: np.zeros((1, 64, 64, 3), np.float32)})
        assert y.shape == (1, 1000) and np.isfinite(y).all()


def test_a_model_that_rescales_its_input_is_calibrated_and_verified_on_pixel_values(tmp_path, capsys):
    """keras.applications' MobileNetV3 rescales pixel values 0-255 itself: its random BatchNormalization
    statistics come from such inputs, the half verification's images take them, and both models
    record the range for fcm verify and fcm tune; a model without that rescaling keeps [-1, 1], and
    one without the record reads as [-1, 1]."""
    from extractor.sources import DEFAULT_INPUT_RANGE, PIXEL_RANGE, keras_application, keras_input_range
    from fcm.pipeline.verify import recorded_input_range

    out = tmp_path / "m.onnx"
    assert main(["-q", "convert", "keras:MobileNetV3Small", "--input-size", "64", "--logits", "--gpu", "H100",
                 "--precision", "fp16", "--samples", "16", "-o", str(out)]) == 0
    for path in (out, tmp_path / "m.unfused.onnx"):
        assert recorded_input_range(onnx.load(path)) == PIXEL_RANGE
    assert "values in [0, 255]" in (tmp_path / "m.report.md").read_text()
    assert main(["-q", "verify", str(out), "--batch", "2"]) == 0
    assert keras_input_range(keras_application("MobileNetV2", SourceOptions(input_size=96))) == DEFAULT_INPUT_RANGE
    assert recorded_input_range(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))) == DEFAULT_INPUT_RANGE


@pytest.mark.parametrize("command", [["convert", "keras:MobileNetV2", "-o", "m.onnx"], ["bench", "m.unfused.onnx"]])
def test_a_bad_precision_is_one_line_and_exit_2(command):
    result = fcm(*command, "--precision", "fp8")
    one_error_line(result, "argument --precision: invalid choice: 'fp8' (choose from 'fp32', 'fp16', 'bf16')")


def test_precision_errors(tmp_path, capsys):
    out = str(tmp_path / "m.onnx")
    assert main(["convert", str(MOB_V2_TFLITE), "--precision", "fp16", "-o", out]) == 2
    assert "full-integer model converts to int8 only" in capsys.readouterr().err
    assert main(["convert", "keras:MobileNetV2", "--int8", "--precision", "bf16", "-o", out]) == 2
    assert "--int8 and --dtype int8 make an int8 one" in capsys.readouterr().err
    assert main(["convert", "keras:MobileNetV2", "--io", "half", "-o", out]) == 2
    assert "--io half needs --precision fp16 or bf16" in capsys.readouterr().err
    assert main(["convert", "keras:MobileNetV2", "--precision", "fp16", "--input-range", "1", "-o", out]) == 2
    assert "--input-range must be LO,HI" in capsys.readouterr().err
    assert main(["convert", "keras:MobileNetV2", "--precision", "fp16", "--samples", "0", "-o", out]) == 2
    assert "at least one sample" in capsys.readouterr().err
    with pytest.raises(FcmError, match="unknown precision 'half'"):
        convert("keras:MobileNetV2", out, ConvertOptions(precision="half"))
    assert not list(tmp_path.iterdir())


def test_the_agreement_margin_keeps_the_uncertainty_of_a_small_sample():
    """A share measured as 100% on 16 inputs still tolerates one miss in 16 (the plain standard
    error of 100% is zero); on the default 256 inputs the 5-point floor rules, and a share well
    below 100% gets its usual four standard errors."""
    from fcm.pipeline.verify import AGREEMENT_MARGIN, agreement_margin

    assert agreement_margin(1.0, 16) > 1 / 16
    assert agreement_margin(1.0, 256) == AGREEMENT_MARGIN
    plain = 4 * np.sqrt(0.5 * 0.5 / 256)
    assert abs(agreement_margin(0.5, 256) - plain) < 0.002
    assert agreement_margin(0.9, 64) > agreement_margin(0.9, 256) > AGREEMENT_MARGIN


def test_agreement_is_held_to_the_lower_of_the_emulation_and_the_unfused_half_model():
    """A fused half model must agree with the source on top-1 / top-5 as well as the precision's own
    computation does, or as ONNX Runtime's unfused half model does where that is lower (the
    alternative a user has); the latter's own agreement is not a failure of the conversion."""
    from fcm.pipeline.verify import PRECISION_REFERENCE, HalfCheck, HalfVerification

    def report(fused_top1: float, unfused_top1: float) -> HalfVerification:
        checks = [HalfCheck(PRECISION_REFERENCE, 64, 0.0, 1.0, 1.0, 1.0),
                  HalfCheck("unfused fp16 ONNX", 64, 0.0, 1.0, unfused_top1, 1.0),
                  HalfCheck("fused ONNX with the FCM library", 64, 0.0, 1.0, fused_top1, 1.0)]
        return HalfVerification("fp16", 10, 0.01, "derived", checks, [], (0.0, 1.0))

    assert report(1.0, 1.0).passed()
    assert report(0.75, 0.75).passed()  # as good as ONNX Runtime's own half model
    problems = report(0.75, 1.0).problems()  # worse than both
    assert len(problems) == 1 and "fused ONNX with the FCM library agrees on top-1 for 75.0%" in problems[0]
    problems = report(0.5, 0.75).problems()  # worse than the alternative too
    assert len(problems) == 1 and "unfused fp16 ONNX for 75.0%" in problems[0]
