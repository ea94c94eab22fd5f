"""ONNX Runtime custom operators for fused convolutional modules (FCMs), and the rewrite that uses them.

In: an exported ONNX model, its DAG and a fusion plan. Out: the fused ONNX model, and the
custom-op library that runs it.

- ``export``: source model -> ONNX (tf2onnx); ``normalize``: canonical form (folded BN, no
  needless transposes, recognised activations);
- ``schema``: the ``ai.fcm`` operator set; ``patterns`` and ``rewrite``: planned groups -> fused
  nodes with function bodies; ``standalone``: one-node models for tests and micro-benchmarks;
- ``csrc/``: the C++ (CPU) and CUDA kernels, built by ``build`` into ``lib/libfcm_ort_ops.so``;
  ``library``: finding it and making sessions with it registered.
"""

from .library import library_path, make_session, session_options

__all__ = ["library_path", "make_session", "session_options"]
