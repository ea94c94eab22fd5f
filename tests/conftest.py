"""Shared test fixtures: fresh random generators, the reference models converted once per session."""

from __future__ import annotations

import os

import numpy as np
import pytest
from tests.support.fixtures import CHEAP, SEED, keras_model


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_collection_modifyitems(config, items):
    if not SEED.is_dir():
        raise pytest.UsageError(f"the shared fixtures are missing: {SEED} (set FCM_SHARED to the shared/ folder)")


@pytest.fixture
def rng():
    # fresh inputs each run: the seed comes from the clock unless FCM_TEST_SEED pins it
    seed = int(os.environ.get("FCM_TEST_SEED", np.random.SeedSequence().entropy % (2**32)))
    print(f"random seed: {seed} (FCM_TEST_SEED={seed} repeats this run)")
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """``fcm convert`` of the cheap reference models (H100, batch 32): name -> ConvertResult."""
    from fcm.pipeline.convert import ConvertOptions, convert

    results = {}
    for name in CHEAP:
        out = tmp_path_factory.mktemp(name) / f"{name}.onnx"
        results[name] = convert(keras_model(name, logits=True), out, ConvertOptions(gpu="H100", batch=32))
    return results
