"""Keras MobileNet V1/V2 and Xception at 224: our conv layers match the seed's DAGs (which the
seed extracted from the TFLite conversions of the same architectures)."""

from __future__ import annotations

import math
import warnings

import pytest

from extractor.dag import Dag
from extractor.keras_reader import read_keras
from fcm_core.errors import FcmWarning
from tests.support.fixtures import keras_model, seed_dag_path
from tests.support.dag_compare import match_convs

#: The seed infers strides from width ratios; for Xception's stride-2 1x1 shortcut convs on odd
#: sizes (109 -> 55, 55 -> 28) that gives 1. Ours come from the layer: 2.
SEED_STRIDE_DEFECTS = {"xce_r": {(8, "strides"): (1, 2), (16, "strides"): (1, 2)}}


@pytest.mark.parametrize(
    "architecture, seed_model",
    [("MobileNet", "mob_v1"), ("MobileNetV2", "mob_v2"), ("Xception", "xce_r")],
)
def test_conv_layers_match_seed(architecture, seed_model):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FcmWarning)  # every layer of these models is understood
        ours = read_keras(keras_model(architecture, logits=False), architecture)
    seed = Dag.load(seed_dag_path(seed_model))
    expected = SEED_STRIDE_DEFECTS.get(seed_model, {})
    mapping, differences = match_convs(ours, seed, ignore=set(expected))
    assert len(mapping) == len(seed.convs())
    assert differences == expected
    # ours are the layers' real strides: SAME convs give ceil(in / stride) outputs
    for layer in ours.convs():
        if layer.padding == "SAME":
            assert layer.ofms_shape[1] == math.ceil(layer.ifms_shape[1] / layer.strides_hw[0])
            assert layer.ofms_shape[2] == math.ceil(layer.ifms_shape[2] / layer.strides_hw[1])


def test_xception_shortcut_strides_are_read_from_the_layers():
    ours = read_keras(keras_model("Xception", logits=False), "Xception")
    shortcuts = [c for c in ours.convs() if c.type == "pw" and c.source["layers"][0].startswith("conv2d")]
    assert [c.strides for c in shortcuts] == [2, 2, 2, 2]
    assert [c.ofms_shape[1] for c in shortcuts] == [55, 28, 14, 7]
