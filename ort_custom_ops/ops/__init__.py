"""The FCM operators: their schema, the launch-plan text, and the custom-op library.

In: the op vocabulary (``fcm_core.vocabulary``). Out: ONNX nodes of the ``ai.fcm`` domain and
the library that runs them.

- ``schema``: node builders for every precision (fp32 ``Fused*``, int8 ``Q*``); ``standalone``: one-node models for tests and
  micro-benchmarks; ``launch_plan``: the CUDA launch-plan text the tuner writes and the kernels read;
- ``header``: the C++ header of the vocabulary (``csrc/vocabulary.h``);
- ``build``: compiles ``csrc/`` into ``lib/libfcm_ort_ops.so``; ``library``: finds and registers it.
"""
