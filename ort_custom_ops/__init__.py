"""ONNX Runtime custom operators for fused convolutional modules (FCMs).

Not implemented yet: the op schema, the graph rewrite and the C++/CUDA kernel library will live
here (see DESIGN.md §5).
"""
