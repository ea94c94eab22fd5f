"""Run one fused node of a converted model on the GPU a few times (for `ncu` to profile).

    ncu --set detailed -k regex:ChainKernel -c 1 python3 benchmarks/profile_group.py MODEL.onnx NODE BATCH
"""

import sys

import numpy as np
import onnx

from fcm.measure import cuda_session, group_models, providers, value_shapes

model = onnx.load(sys.argv[1])
node = next(n for n in model.graph.node if n.name == sys.argv[2])
batch = int(sys.argv[3])
shapes = value_shapes(model, batch)
alone, _, data_inputs = group_models(model, node, shapes)
session = cuda_session(alone, True, providers(False, False))
feeds = {name: np.random.default_rng(0).uniform(-1, 1, shapes[name]).astype(np.float32) for name in data_inputs}
for _ in range(3):
    session.run(None, feeds)
print("ran", node.name, node.op_type, {k: shapes[k] for k in data_inputs})
