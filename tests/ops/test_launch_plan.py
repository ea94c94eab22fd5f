"""The launch-plan vocabulary: Python's LaunchPlan has the fields of the C++ PlanText, in order, and
its text round-trips; the cuda_plans attribute it writes is one the kernels accept."""

from __future__ import annotations

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
