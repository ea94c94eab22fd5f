"""FCM toolchain: fused depthwise/pointwise convolutions for ONNX Runtime.

The pipeline lives in three packages beside this one:

- ``extractor``: Keras / TFLite model -> layer DAG (JSON) + weights (``.npz``)
- ``planner``: DAG + GPU description -> fusion plan (JSON)
- ``ort_custom_ops``: plan + ONNX model -> fused ONNX model, and the custom-op library that runs it

``fcm`` itself holds what ties them together: the command-line tool (``fcm.cli``) and the
error type every stage raises for bad input (``fcm_core.errors``).
"""

__version__ = "0.1.0"
