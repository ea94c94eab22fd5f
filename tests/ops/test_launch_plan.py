"""The launch-plan vocabulary: Python's LaunchPlan has the fields of the C++ PlanText, in order, and
its text round-trips; the cuda_plans attribute it writes is one the kernels accept, and so is a
plan forced on a model's fused nodes."""

from __future__ import annotations

import dataclasses
import re

import pytest

from ort_custom_ops.ops.header import HEADER
from ort_custom_ops.ops.launch_plan import LaunchPlan, cuda_plans_text

PLAN_TEXT_H = HEADER.with_name("plan_text.h")


def test_the_python_plan_has_the_fields_of_the_cpp_plan():
    source = PLAN_TEXT_H.read_text()
    struct = re.search(r"struct PlanText \{(.*?)\};", source, re.S).group(1)
    fields = re.findall(r"\b([a-z_0-9]+)\s*=\s*0", struct)
    assert fields == list(LaunchPlan.__dataclass_fields__)


@pytest.mark.parametrize("text", ["64,8x8,32,1,2,0", "128,8x16,128,4,1,1", "64,4x16,16,8,2,0,1"])
def test_a_plan_text_round_trips(text):
    assert LaunchPlan.parse(text).text() == text


@pytest.mark.parametrize("text", ["64,8x8,32,1,2", "64,8x8,32,1,2,0,1,1", "64,8,32,1,2,0"])
def test_other_text_is_not_a_plan(text):
    with pytest.raises(ValueError, match="not a launch plan"):
        LaunchPlan.parse(text)


def test_cuda_plans_lists_batches_in_order():
    assert cuda_plans_text({32: "64,8x8,64,2,2,0", 1: "64,4x16,32,12,2,0"}) == "1:64,4x16,32,12,2,0;32:64,8x8,64,2,2,0"


def test_a_forced_plan_is_written_into_the_fused_nodes(rng):
    """with_forced_plan: a copy whose fused nodes carry the one plan at the batch size, strict (the
    original untouched, an earlier cuda_plans replaced); the CPU kernels accept it and compute the same."""
    import numpy as np
    import onnx

    from ort_custom_ops.ops.launch_plan import PLANS_ATTRIBUTE, STRICT_ATTRIBUTE, with_forced_plan
    from ort_custom_ops.ops.library import make_session
    from ort_custom_ops.ops.standalone import fused_model
    from tests.support.specs import random_spec

    model = fused_model(random_spec(rng, "pwdwpw", 8, expand=24, out=8))
    model.graph.node[0].attribute.append(onnx.helper.make_attribute(PLANS_ATTRIBUTE, "1:64,8x8,16,1,2,0"))
    forced = with_forced_plan(model, "128,8x16,32,2,1,0", 3)
    values = {a.name: onnx.helper.get_attribute_value(a) for a in forced.graph.node[0].attribute}
    assert values[PLANS_ATTRIBUTE] == b"3:128,8x16,32,2,1,0" and values[STRICT_ATTRIBUTE] == 1
    assert [a.name for a in forced.graph.node[0].attribute].count(PLANS_ATTRIBUTE) == 1
    assert STRICT_ATTRIBUTE not in {a.name for a in model.graph.node[0].attribute}
    x = rng.normal(size=(3, 8, 10, 10)).astype(np.float32)
    (plain,), (planned,) = (make_session(m).run(None, {"X": x}) for m in (model, forced))
    assert np.array_equal(plain, planned)


def test_block_candidates_ranked_by_estimate():
    """fcm tune's plans for a channels-last node: the library's candidate lines, lowest estimate
    first (the two-pass plan among them), cut to the number asked for; lines that are not plans are
    skipped."""
    from ort_custom_ops.ops.launch_plan import parse_block_candidates

    text = ("8x8,24,1,3 (TMA, TF32), 74240 B shared, 1568 units on 396 CTAs, 3 per SM, ~11.1 us\n"
            "4x16,24,2,4 (TMA, TF32), 96768 B shared, 1568 units on 264 CTAs, 2 per SM, ~9.5 us\n"
            "no plan: a tile holds 1 to 64 output pixels\n"
            "2x28,32,1,0 (cp.async, FP32), 110080 B shared, 448 units on 264 CTAs, 2 per SM, ~30.0 us\n"
            "dw+gemm (depthwise pass, then CUTLASS's TF32 GEMM), 802816 B workspace, ~10.2 us\n")
    assert parse_block_candidates(text) == ["4x16,24,2,4", "dw+gemm", "8x8,24,1,3", "2x28,32,1,0"]
    assert parse_block_candidates(text, top=1) == ["4x16,24,2,4"]


def test_block_problem_of_a_channels_last_node(rng):
    """The numbers the block kernels' planner takes for a node, read from its shapes and attributes."""
    import onnx

    from ort_custom_ops.ops.launch_plan import block_problem_dims
    from ort_custom_ops.ops.standalone import fused_model
    from tests.support.specs import random_spec

    spec = random_spec(rng, "pwdwpw", 24, kernel=5, stride=2, pads=(1, 2, 2, 1), expand=96, out=40, channels_last=True)
    model = fused_model(spec)
    node = model.graph.node[0]
    initializers = {i.name: i for i in model.graph.initializer}
    shapes = {node.input[0]: [32, 28, 28, 24], node.output[0]: [32, 14, 14, 40]}
    dims = block_problem_dims(node, shapes, initializers)
    assert dims == [32, 28, 28, 24, 96, 40, 5, 2, 1, 2, 14, 14, 0, 1, 1, 1, 0, 1]
    assert onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "channels_last")) == 1
    # the same module in fp16 (the half kernels take the fp32 kernels' plans): the same problem
    half = fused_model(dataclasses.replace(spec, precision="fp16"))
    assert half.graph.node[0].op_type == "Fp16FusedPwDwPw"
    assert block_problem_dims(half.graph.node[0], shapes, {i.name: i for i in half.graph.initializer}) == dims
    # a lone PW with a channel scale: its rows (one per image, or one shared) where its shape is known
    scaled = fused_model(random_spec(rng, "pw", 48, out=24, scale=True, channels_last=True)).graph.node[0]
    scale = scaled.input[3]
    shapes = {scaled.input[0]: [32, 7, 7, 48], scaled.output[0]: [32, 7, 7, 24]}
    assert block_problem_dims(scaled, {**shapes, scale: [32, 48]}, {})[12] == 32
    assert block_problem_dims(scaled, {**shapes, scale: [1, 48]}, {})[12] == 1
    assert block_problem_dims(scaled, shapes, {})[12] == 0


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_a_forced_plan_reaches_half_nodes(rng, precision):
    """fcm tune times plans on half nodes too: with_forced_plan writes the plan into an fp16 or bf16
    fused node, and the CPU kernels accept it and compute the same."""
    import numpy as np
    import onnx

    from ort_custom_ops.ops.launch_plan import PLANS_ATTRIBUTE, with_forced_plan
    from ort_custom_ops.ops.library import make_session
    from ort_custom_ops.ops.standalone import float_io, fused_model
    from tests.support.specs import random_spec

    model = fused_model(dataclasses.replace(random_spec(rng, "pwdwpw", 8, expand=24, out=8, channels_last=True),
                                            precision=precision))
    forced = with_forced_plan(model, "8x8,16,1,3", 2)
    values = {a.name: onnx.helper.get_attribute_value(a) for a in forced.graph.node[0].attribute}
    assert values[PLANS_ATTRIBUTE] == b"2:8x8,16,1,3"
    x = rng.normal(size=(2, 10, 10, 8)).astype(np.float32)
    (plain,), (planned,) = (make_session(float_io(m)).run(None, {"X": x}) for m in (model, forced))
    assert np.array_equal(plain, planned)
