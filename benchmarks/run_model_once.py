"""Run a fused model on the CUDA provider twice, for `ncu` to time every kernel of it.

    FCM_CUDA_VERBOSE=1 ncu --metrics gpu__time_duration.sum -k regex:ChainKernel \
        python3 benchmarks/run_model_once.py MODEL.onnx BATCH

(FCM_CUDA_VERBOSE=1 prints each fused node's launch plan and its cost estimate.)
"""

import sys

import numpy as np
import onnx

from fcm.bench import _providers, _session

path, batch = sys.argv[1], int(sys.argv[2])
session = _session(onnx.load(path), True, _providers(False, False))
first = session.get_inputs()[0]
x = np.random.default_rng(0).uniform(-1, 1, (batch,) + tuple(first.shape[1:])).astype(np.float32)
for _ in range(2):
    session.run(None, {first.name: x})
