"""Run a fused model (fp32 or int8) on the CUDA provider: one warm-up run, then one run inside a
profiler range, for `ncu` to time every kernel of it.

    FCM_CUDA_VERBOSE=1 ncu --profile-from-start off --metrics gpu__time_duration.sum -k regex:ChainKernel \
        python3 benchmarks/run_model_once.py MODEL.onnx BATCH [nhwc]

(FCM_CUDA_VERBOSE=1 prints each fused node's launch plan and its cost estimate. With
--profile-from-start off, ncu sees only the second run: no first-use work such as cuDNN's
algorithm search. `nhwc` turns on the provider's prefer_nhwc, ONNX Runtime's faster setting for
unfused models at larger batches.)
"""

import ctypes
import sys

import numpy as np
import onnx

from fcm.measure import cuda_session, providers, random_feeds

path, batch = sys.argv[1], int(sys.argv[2])
model = onnx.load(path)
session = cuda_session(model, True, providers(False, "nhwc" in sys.argv[3:]))
inputs = random_feeds(model, batch, np.random.default_rng(0))  # of the model's input types (int8 models too)
session.run(None, inputs)
cuda = ctypes.CDLL("libcuda.so.1")  # the driver's profiler range: the context ONNX Runtime made current
cuda.cuProfilerStart()
session.run(None, inputs)
cuda.cuProfilerStop()
