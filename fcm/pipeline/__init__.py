"""The conversion pipeline: a model -> a verified fused ONNX model.

In: a model specification and options. Out: the fused model and its companions (``convert``).

- ``convert``: the steps every precision runs; ``precisions``: what fp32 and int8 do differently
  (lower, verify, report); ``verify``, ``report``, ``inputs``: verification, the report, inputs to
  run models on; ``quantize``: a Keras model -> a full-integer TFLite model (``--int8``).
"""

from .convert import ConvertOptions, ConvertResult, convert

__all__ = ["ConvertOptions", "ConvertResult", "convert"]
