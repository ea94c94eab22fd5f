"""Lowering: a model and its fusion plan -> an ONNX model of FCM ops.

In: a source model (Keras, TFLite, SavedModel), its DAG and a plan. Out: the fused ONNX model.

- ``export``: source model -> standard ONNX (tf2onnx); ``normalize``: its canonical form;
- ``patterns``: reading small ONNX patterns (activations, pads, channel scales); ``rules``: one
  pattern -> replacement rule per FCM kind; ``rewrite``: the planned groups found in the graph and
  replaced by FCM nodes with function bodies, then the graph cleaned up; ``transposes``: the layout
  cleanup around channels-last fused nodes (Transposes cancelled and moved, one rule per rewrite);
  ``layers``: the Convs left between those layout changes (the stem) as channels-last convolution
  layers of the domain;
- ``int8``: a full-integer DAG -> an int8 ONNX model built layer by layer, groups fused;
- ``unfuse``: fused nodes back to the subgraphs they replaced.
"""
