"""FCM toolchain: fused depthwise/pointwise convolutions for ONNX Runtime.

The stages live in packages beside this one, each importing only those below it (the layering is
checked by tests/test_architecture.py, docs/architecture.md draws it):

- ``fcm_core``: the error type, atomic file output and the op vocabulary every layer shares;
- ``extractor``: Keras / TFLite model -> layer DAG (JSON) + weights (``.npz``);
- ``planner``: DAG + GPU description -> fusion plan (JSON);
- ``ort_custom_ops``: plan + model -> fused ONNX model (``lowering``), and the custom-op library
  that runs it (``ops``).

``fcm`` ties them together, top to bottom: the command line (``fcm.cli``, one module per
subcommand in ``fcm.commands``); the tools (``bench``, ``tune``, ``zoo``, ``skeleton``); the
measurement module (``measure``); the conversion pipeline (``pipeline``).
"""

__version__ = "0.1.0"
