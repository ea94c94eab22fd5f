"""Weight-free model copies keep a fused model and its unfused original equivalent."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from fcm.skeleton import main as skeleton
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.standalone import fused_model, reference_model
from tests.support.specs import random_spec


def test_pack_and_unpack(tmp_path, rng):
    spec = random_spec(rng, "pwdwpw", 48, expand=160, out=48, residual=True)
    (tmp_path / "in").mkdir()
    onnx.save(fused_model(spec), tmp_path / "in" / "m.onnx")
    onnx.save(reference_model(spec), tmp_path / "in" / "m.unfused.onnx")
    assert skeleton(["pack", str(tmp_path / "in"), "-o", str(tmp_path / "packed")]) == 0
    packed = onnx.load(tmp_path / "packed" / "m.onnx")
    big = [t for t in packed.graph.initializer if t.doc_string]
    assert big and all(not t.raw_data and not t.float_data for t in big)
    assert (tmp_path / "packed" / "m.onnx").stat().st_size < (tmp_path / "in" / "m.onnx").stat().st_size / 3
    assert skeleton(["unpack", str(tmp_path / "packed"), "-o", str(tmp_path / "out")]) == 0
    fused, plain = onnx.load(tmp_path / "out" / "m.onnx"), onnx.load(tmp_path / "out" / "m.unfused.onnx")
    original = {t.name: numpy_helper.to_array(t) for t in fused_model(spec).graph.initializer}
    for tensor in fused.graph.initializer:  # new values, same shapes and per-channel statistics
        array = numpy_helper.to_array(tensor)
        assert array.shape == original[tensor.name].shape
        if tensor.name.startswith("W") and array.size * 4 >= 4096:
            assert not np.array_equal(array, original[tensor.name])
            rows = array.reshape(array.shape[0], -1)
            expected = original[tensor.name].reshape(array.shape[0], -1)
            # each channel's spread is kept (a 3x3 channel has only 9 values: compare on average)
            ratio = rows.std(axis=1) / expected.std(axis=1)
            assert abs(float(np.mean(ratio)) - 1) < 0.15
    x = rng.normal(size=(2, 48, 9, 11)).astype(np.float32)
    (a,) = make_session(fused).run(None, {"X": x})
    (b,) = make_session(plain, with_library=False).run(None, {"X": x})
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()
