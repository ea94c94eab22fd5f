"""The per-group micro-benchmark's two sides compute the same thing (CPU): the fused node alone,
and its subgraph as the source model runs it (NCHW, without the layout changes of a channels-last
node's function body)."""

from __future__ import annotations

import numpy as np
import pytest

from fcm.measure import group_models, plain_feeds, value_shapes
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import TO_NHWC
from ort_custom_ops.ops.standalone import fused_model
from tests.support.specs import random_spec


@pytest.mark.parametrize("kind,scale", [("pwdwpw", False), ("pwpw", True), ("dwpw", False)])
def test_the_subgraph_in_the_source_layout_has_no_transposes(kind, scale, rng):
    spec = random_spec(rng, kind, 12, scale=scale, channels_last=True)
    model = fused_model(spec, 9, 7)
    shapes = value_shapes(model, 2)
    node = model.graph.node[0]
    alone, plain, data_inputs = group_models(model, node, shapes, source_layout=True)
    assert "Transpose" not in [n.op_type for n in plain.graph.node]
    x = plain.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in x] == [shapes["X"][i] for i in (0, 3, 1, 2)]  # NCHW
    feeds = {name: rng.uniform(-1, 1, shapes[name]).astype(np.float32) for name in data_inputs}
    (fused,) = make_session(alone).run(None, feeds)
    (nchw,) = make_session(plain, with_library=False).run(None, plain_feeds(plain, data_inputs, feeds))
    np.testing.assert_allclose(nchw.transpose(TO_NHWC), fused, rtol=1e-5, atol=1e-5 * float(np.abs(fused).max()))
    # without source_layout the body keeps its layout changes and the node's own inputs
    _, with_transposes, _ = group_models(model, node, shapes)
    assert [n.op_type for n in with_transposes.graph.node].count("Transpose") == 2
    assert plain_feeds(with_transposes, data_inputs, feeds).keys() == feeds.keys()
