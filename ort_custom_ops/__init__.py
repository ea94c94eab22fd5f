"""ONNX Runtime custom operators for fused convolutional modules (FCMs), and the lowering that emits them.

In: a source model, its DAG and a fusion plan. Out: the fused ONNX model, and the custom-op
library that runs it. Two subpackages, by role:

- ``lowering``: export (tf2onnx), normalize, patterns, rules (one per FCM kind), rewrite, the
  int8 model built from a DAG, unfuse;
- ``ops``: the ``ai.fcm`` operators' schema (every precision, from ``fcm_core.vocabulary``), the
  CUDA launch-plan text, one-node models, the C++ vocabulary header, and the library: ``csrc/``
  (what every device shares at its top, ``csrc/cpu/`` the CPU kernels, ``csrc/cuda/`` the CUDA
  ops and kernels), built by ``ops.build`` into
  ``lib/libfcm_ort_ops.so`` and found and registered by ``ops.library``.
"""

from .ops.library import library_path, make_session, session_options

__all__ = ["library_path", "make_session", "session_options"]
