"""Models of one reduction: a spatial mean in the layout cleanup's form (a MatMul of the transposed NHWC
map by a column of 1/(H*W)) and what fp16 computes for it, and a reduction over given axes as ONNX
writes it."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
from onnx import TensorProto, helper, numpy_helper


def spatial_mean_model(h: int = 6, w: int = 5, c: int = 3, batch: int = 2) -> onnx.ModelProto:
    """x [batch, h, w, c] -> Relu -> mean over H and W (the layout cleanup's MatMul of a row of
    1/(h*w)) -> Sigmoid -> y [batch, c], fp32."""
    import onnx_graphsurgeon as gs

    from ort_custom_ops.lowering import transposes

    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("ReduceMean", ["r"], ["m"], axes=[1, 2], keepdims=0),
             helper.make_node("Sigmoid", ["m"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, h, w, c])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, c])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    imported = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    assert transposes.optimize(imported, rules=(), final=(transposes.spatial_means_to_products,)) == {
        "spatial_means_to_products": 1}
    model = gs.export_onnx(imported)
    model.ir_version = 10
    return model


def fp16_mean_reference(x: np.ndarray) -> np.ndarray:
    """Sigmoid of the spatial mean of Relu(x) as fp16 computes it: x and Relu's output rounded, the
    mean summed exactly and rounded once, the column's 1/(H*W) rounded to fp16."""
    r = np.maximum(x.astype(np.float16), 0).astype(np.float64)
    column = float(np.float16(1 / (x.shape[1] * x.shape[2])))
    m = (r.sum(axis=(1, 2)) * column).astype(np.float16).astype(np.float64)
    return 1 / (1 + np.exp(-m))


def reduction_model(opset: int, axes: list[int], keepdims: int, shape: str = "2, 5, 4, 3", op: str = "ReduceMean",
                    extra: str = "", element: str = "float") -> onnx.ModelProto:
    """x [shape] of ``element`` -> op over ``axes`` (an attribute before opset 18, an input from it) ->
    Sigmoid -> y, shapes inferred."""
    if opset >= 18 and op == "ReduceMean" or opset >= 13 and op == "ReduceSum":
        reduce = f"m = {op} <keepdims = {keepdims}{extra}> (x, axes)"
    else:
        reduce = f"m = {op} <axes = {list(axes)}, keepdims = {keepdims}{extra}> (x)"
    model = onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : {opset}]>
        g ({element}[{shape}] x) => ({element} y) {{
            {reduce}
            y = Sigmoid (m)
        }}""")
    if "(x, axes)" in reduce:
        model.graph.initializer.append(numpy_helper.from_array(np.array(list(axes), np.int64), "axes"))
    return onnx.shape_inference.infer_shapes(model)
