"""Run a fused model (fp32 or int8) on the CUDA provider twice, for `ncu` to time every kernel of it.

    FCM_CUDA_VERBOSE=1 ncu --metrics gpu__time_duration.sum -k regex:ChainKernel \
        python3 benchmarks/run_model_once.py MODEL.onnx BATCH

(FCM_CUDA_VERBOSE=1 prints each fused node's launch plan and its cost estimate.)
"""

import sys

import numpy as np
import onnx

from fcm.bench import _providers, _random_inputs, _session

path, batch = sys.argv[1], int(sys.argv[2])
model = onnx.load(path)
session = _session(model, True, _providers(False, False))
inputs = _random_inputs(model, batch, np.random.default_rng(0))  # of the model's input types (int8 models too)
for _ in range(2):
    session.run(None, inputs)
