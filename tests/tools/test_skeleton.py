"""Weight-free model copies keep a fused model and its unfused original equivalent."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fcm.skeleton import main as skeleton
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.standalone import fused_model, reference_model
from tests.support.specs import random_spec


def test_pack_and_unpack(tmp_path, rng):
    spec = random_spec(rng, "pwdwpw", 48, expand=160, out=48, residual=True)
    (tmp_path / "in").mkdir()
    onnx.save(fused_model(spec), tmp_path / "in" / "m.onnx")
    onnx.save(reference_model(spec), tmp_path / "in" / "m.unfused.onnx")
    assert skeleton(["pack", str(tmp_path / "in"), "-o", str(tmp_path / "packed")]) == 0
    packed = onnx.load(tmp_path / "packed" / "m.onnx")
    big = [t for t in packed.graph.initializer if t.doc_string]
    assert big and all(not t.raw_data and not t.float_data for t in big)
    assert (tmp_path / "packed" / "m.onnx").stat().st_size < (tmp_path / "in" / "m.onnx").stat().st_size / 3
    assert skeleton(["unpack", str(tmp_path / "packed"), "-o", str(tmp_path / "out")]) == 0
    fused, plain = onnx.load(tmp_path / "out" / "m.onnx"), onnx.load(tmp_path / "out" / "m.unfused.onnx")
    original = {t.name: numpy_helper.to_array(t) for t in fused_model(spec).graph.initializer}
    for tensor in fused.graph.initializer:  # new values, same shapes and per-channel statistics
        array = numpy_helper.to_array(tensor)
        assert array.shape == original[tensor.name].shape
        if tensor.name.startswith("W") and array.size * 4 >= 4096:
            assert not np.array_equal(array, original[tensor.name])
            rows = array.reshape(array.shape[0], -1)
            expected = original[tensor.name].reshape(array.shape[0], -1)
            # each channel's spread is kept (a 3x3 channel has only 9 values: compare on average)
            ratio = rows.std(axis=1) / expected.std(axis=1)
            assert abs(float(np.mean(ratio)) - 1) < 0.15
    x = rng.normal(size=(2, 48, 9, 11)).astype(np.float32)
    (a,) = make_session(fused).run(None, {"X": x})
    (b,) = make_session(plain, with_library=False).run(None, {"X": x})
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


def test_a_transposed_copy_of_a_weight_is_filled_alike(tmp_path, rng):
    """A pointwise Conv between channels-last neighbours becomes MatMul(x, W^T) in the fused model:
    refilled, the matrix is still the unfused Conv's kernel transposed."""
    import onnx.parser
    import onnx_graphsurgeon as gs

    from ort_custom_ops.lowering import transposes

    unfused = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 5, 4, 48] x) => (float[2, 5, 4, 32] y) {
            a = Transpose <perm = [0, 3, 1, 2]> (x)
            b = Conv (a, w, bias)
            y = Transpose <perm = [0, 2, 3, 1]> (b)
        }""")
    unfused.graph.initializer.extend([numpy_helper.from_array(rng.normal(size=(32, 48, 1, 1)).astype(np.float32), "w"),
                                      numpy_helper.from_array(rng.normal(size=32).astype(np.float32), "bias")])
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(unfused))
    transposes.optimize(graph)
    fused = gs.export_onnx(graph)
    assert [n.op_type for n in fused.graph.node] == ["MatMul", "Add"]
    (tmp_path / "in").mkdir()
    onnx.save(fused, tmp_path / "in" / "m.onnx")
    onnx.save(unfused, tmp_path / "in" / "m.unfused.onnx")
    assert skeleton(["pack", str(tmp_path / "in"), "-o", str(tmp_path / "packed")]) == 0
    assert skeleton(["unpack", str(tmp_path / "packed"), "-o", str(tmp_path / "out")]) == 0
    matrix = next(numpy_helper.to_array(t) for t in onnx.load(tmp_path / "out" / "m.onnx").graph.initializer
                  if t.name != "bias")
    kernel = next(numpy_helper.to_array(t) for t in onnx.load(tmp_path / "out" / "m.unfused.onnx").graph.initializer
                  if t.name == "w")
    assert not np.array_equal(kernel, numpy_helper.to_array(unfused.graph.initializer[0]))
    np.testing.assert_array_equal(matrix, kernel.reshape(32, 48).T)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_weight_scaled_by_a_folded_factor_is_filled_alike(dtype, tmp_path, rng):
    """A factor the rewrite folds into a fused node's weights (MobileNetV3's x / 6) leaves a weight
    that is the unfused one times a constant, up to the rounding of its type (in fp16 the folded
    product is rounded again): refilled, it is the refilled unfused weight times that factor."""
    import onnx.parser

    elem = "float16" if dtype == np.float16 else "float"
    unfused = onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g ({elem}[4, 96] x) => ({elem}[4, 64] y) {{
            a = MatMul (x, w)
            y = Mul (a, sixth)
        }}""")
    weight = rng.normal(size=(96, 64)).astype(dtype)
    sixth = np.array(1 / 6, dtype)
    unfused.graph.initializer.extend([numpy_helper.from_array(weight, "w"), numpy_helper.from_array(sixth, "sixth")])
    fused = onnx.parser.parse_model(f"""<ir_version: 8, opset_import: ["" : 17]>
        g ({elem}[4, 96] x) => ({elem}[4, 64] y) {{
            y = MatMul (x, w_times_sixth)
        }}""")
    folded = (weight.astype(np.float32) / 6).astype(dtype)  # folded in fp32, stored in the model's type
    fused.graph.initializer.append(numpy_helper.from_array(folded, "w_times_sixth"))
    (tmp_path / "in").mkdir()
    onnx.save(fused, tmp_path / "in" / "m.onnx")
    onnx.save(unfused, tmp_path / "in" / "m.unfused.onnx")
    assert skeleton(["pack", str(tmp_path / "in"), "-o", str(tmp_path / "packed")]) == 0
    note = onnx.load(tmp_path / "packed" / "m.onnx").graph.initializer[0].doc_string
    assert '"factor"' in note
    assert skeleton(["unpack", str(tmp_path / "packed"), "-o", str(tmp_path / "out")]) == 0
    refilled = numpy_helper.to_array(onnx.load(tmp_path / "out" / "m.onnx").graph.initializer[0])
    source = {t.name: numpy_helper.to_array(t) for t in onnx.load(tmp_path / "out" / "m.unfused.onnx").graph.initializer}["w"]
    assert not np.array_equal(source, weight)
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(refilled.astype(np.float64), source.astype(np.float64) / 6, rtol=2 * eps, atol=eps * np.abs(source).max())


def test_a_spatial_mean_s_averaging_column_travels_as_it_is(tmp_path, rng):
    """A ReduceMean over H and W of an NHWC map becomes a MatMul by a [H*W, 1] column of 1/(H*W): at
    56x56 the column is as large as a weight, but random values in its place would compute no mean."""
    import onnx.parser
    import onnx_graphsurgeon as gs

    from ort_custom_ops.lowering import transposes

    model = onnx.parser.parse_model("""<ir_version: 8, opset_import: ["" : 17]>
        g (float[2, 56, 56, 8] x) => (float[2, 8] y) {
            a = MatMul (x, w)
            y = ReduceMean <axes = [1, 2], keepdims = 0> (a)
        }""")
    model.graph.initializer.append(numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w"))
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    assert transposes.optimize(graph, rules=(), final=(transposes.spatial_means_to_products,)) == {
        "spatial_means_to_products": 1}
    product = gs.export_onnx(graph)
    w = np.tile(rng.normal(size=(1, 1024)).astype(np.float32), (2, 1))  # a large weight, for contrast
    product.graph.initializer.append(numpy_helper.from_array(w, "w2"))
    (tmp_path / "in").mkdir()
    onnx.save(product, tmp_path / "in" / "m.onnx")
    assert skeleton(["pack", str(tmp_path / "in"), "-o", str(tmp_path / "packed")]) == 0
    packed = {t.name: t for t in onnx.load(tmp_path / "packed" / "m.onnx").graph.initializer}
    assert packed["w2"].doc_string and not packed["w2"].raw_data
    assert skeleton(["unpack", str(tmp_path / "packed"), "-o", str(tmp_path / "out")]) == 0
    refilled = onnx.load(tmp_path / "out" / "m.onnx")
    column = next(numpy_helper.to_array(t) for t in refilled.graph.initializer if t.dims == [3136, 1])
    np.testing.assert_array_equal(column, np.full((3136, 1), 1 / 3136, np.float32))
    x = rng.normal(size=(2, 56, 56, 8)).astype(np.float32)
    (y,) = make_session(refilled, with_library=False).run(None, {"x": x})
    w = {t.name: numpy_helper.to_array(t) for t in refilled.graph.initializer}["w"]  # small: kept
    np.testing.assert_allclose(y, (x @ w).mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)


def test_dag_weights_travel_with_the_skeleton(converted, tmp_path):
    """A conversion's DAG weights are rebuilt on unpack from the refilled unfused model, so the
    rewrite maps every DAG convolution to the same Conv as on the real files (fcm tune rewrites the
    source with the groups it keeps)."""
    import shutil

    import onnx_graphsurgeon as gs

    from extractor.dag import Dag
    from ort_custom_ops.lowering.rewrite import map_convs

    result = converted["MobileNet"]
    (tmp_path / "in").mkdir()
    for path in result.files.values():
        shutil.copy2(path, tmp_path / "in" / path.name)
    stem = result.output.stem
    assert skeleton(["pack", str(tmp_path / "in"), "-o", str(tmp_path / "packed")]) == 0
    assert not (tmp_path / "packed" / f"{stem}.weights.npz").exists()
    assert (tmp_path / "packed" / f"{stem}.dag_weights.json").is_file()
    assert skeleton(["unpack", str(tmp_path / "packed"), "-o", str(tmp_path / "out")]) == 0

    def conv_names(folder):
        dag = Dag.load(folder / f"{stem}.dag.json", folder / f"{stem}.weights.npz")
        graph = gs.import_onnx(onnx.load(folder / f"{stem}.unfused.onnx"))
        return {layer: node.name for layer, node in map_convs(dag, graph).items()}

    real, refilled = conv_names(tmp_path / "in"), conv_names(tmp_path / "out")
    assert len(real) == len(Dag.load(result.files["dag"]).convs()) and refilled == real
    out = Dag.load(tmp_path / "out" / f"{stem}.dag.json", tmp_path / "out" / f"{stem}.weights.npz")
    real_dag = Dag.load(result.files["dag"], result.files["weights"])
    layer = next(iter(real))
    assert out.weight(layer, "weights").shape == real_dag.weight(layer, "weights").shape
    assert not np.array_equal(out.weight(layer, "weights"), real_dag.weight(layer, "weights"))
