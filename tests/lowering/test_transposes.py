"""The layout cleanup's rules, one test each on a tiny model written as ONNX text: the operator
types after the rule, and the same outputs as before it on ONNX Runtime (CPU); then the cleanup as a
whole on chains of channels-last fused nodes."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_graphsurgeon as gs
import pytest
from onnx import numpy_helper

from ort_custom_ops.lowering import transposes
from ort_custom_ops.lowering.unfuse import unfuse
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import DOMAIN, TO_NCHW, TO_NHWC
from ort_custom_ops.ops.standalone import fused_model
from tests.support.means import reduction_model
from tests.support.specs import random_spec

HEADER = '<ir_version: 8, opset_import: ["" : 17]>'
NHWC, NCHW = "perm = [0, 2, 3, 1]", "perm = [0, 3, 1, 2]"


def parse(text: str, constants: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    model = onnx.parser.parse_model(HEADER + text)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in (constants or {}).items())
    return onnx.shape_inference.infer_shapes(model)


def run_rule(model: onnx.ModelProto, *rules, final=()) -> tuple[onnx.ModelProto, dict[str, int]]:
    graph = gs.import_onnx(model)
    counts = transposes.optimize(graph, rules, final)
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    onnx.checker.check_model(out)
    return out, counts


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def feeds(model: onnx.ModelProto, rng) -> dict[str, np.ndarray]:
    """Random values for the inputs that are not initializers, a symbolic dimension (the batch) as 2."""
    def shape(value) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else 2 for d in value.type.tensor_type.shape.dim]

    return {i.name: rng.uniform(-2, 2, shape(i)).astype(np.float32)
            for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}}


def assert_same_function(before: onnx.ModelProto, after: onnx.ModelProto, rng, with_library: bool = False) -> None:
    inputs = feeds(before, rng)
    expected = make_session(before, with_library=False).run(None, inputs)
    got = make_session(after, with_library=with_library).run(None, inputs)
    for want, have in zip(expected, got):
        assert have.shape == want.shape
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))


# --- cancel_pairs ---------------------------------------------------------------------------------

def test_inverse_transposes_cancel(rng):
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 5, 4, 3] y) {{
            a = Transpose <{NCHW}> (x)
            b = Transpose <{NHWC}> (a)
            y = Relu (b)
        }}""")
    after, counts = run_rule(model, transposes.cancel_pairs)
    assert op_types(after) == ["Relu"] and counts["cancel_pairs"] == 1
    assert_same_function(model, after, rng)


def test_other_transpose_pairs_compose_into_one(rng):
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 3, 5, 4] y) {{
            a = Transpose <{NHWC}> (x)
            b = Transpose <{NHWC}> (a)
            y = Relu (b)
        }}""")
    after, _ = run_rule(model, transposes.cancel_pairs)
    assert op_types(after) == ["Transpose", "Relu"]
    assert list(after.graph.node[0].attribute[0].ints) == list(transposes.compose(TO_NHWC, TO_NHWC))
    assert_same_function(model, after, rng)


def test_a_cancelled_pair_before_a_graph_output_keeps_its_name(rng):
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 5, 4, 3] y, float[2, 3, 5, 4] a) {{
            a = Transpose <{NCHW}> (x)
            y = Transpose <{NHWC}> (a)
        }}""")
    after, _ = run_rule(model, transposes.cancel_pairs)
    assert sorted(op_types(after)) == ["Identity", "Transpose"]
    assert [o.name for o in after.graph.output] == ["y", "a"]
    assert_same_function(model, after, rng)


# --- merge_siblings -------------------------------------------------------------------------------

def test_identical_transposes_of_one_tensor_merge(rng):
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 3, 5, 4] y, float[2, 3, 5, 4] z) {{
            a = Transpose <{NCHW}> (x)
            b = Transpose <{NCHW}> (x)
            y = Relu (a)
            z = Sigmoid (b)
        }}""")
    after, _ = run_rule(model, transposes.merge_siblings)
    assert sorted(op_types(after)) == ["Relu", "Sigmoid", "Transpose"]
    assert_same_function(model, after, rng)


# --- through_elementwise --------------------------------------------------------------------------

def test_a_unary_chain_between_inverse_transposes_runs_in_nhwc(rng):
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 5, 4, 3] y) {{
            a = Transpose <{NCHW}> (x)
            b = Clip (a, lo, hi)
            c = HardSwish (b)
            d = Sigmoid (c)
            y = Transpose <{NHWC}> (d)
        }}""", {"lo": np.float32(-1), "hi": np.float32(1.5)})
    after, counts = run_rule(model, transposes.cancel_pairs, transposes.through_elementwise)
    assert op_types(after) == ["Clip", "HardSwish", "Sigmoid"]
    assert counts["through_elementwise"] == 3
    assert_same_function(model, after, rng)


def test_per_channel_and_scalar_constants_are_permuted(rng):
    """A per-channel [C, 1, 1] operand of NCHW tensors becomes [1, 1, 1, C]; a scalar stays."""
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 5, 4, 3] y) {{
            a = Transpose <{NCHW}> (x)
            b = Add (a, shift)
            c = Mul (scale, b)
            d = Div (c, six)
            y = Transpose <{NHWC}> (d)
        }}""", {"shift": rng.normal(size=(3, 1, 1)), "scale": rng.normal(size=(1, 3, 1, 1)), "six": np.float32(6)})
    after, _ = run_rule(model, transposes.cancel_pairs, transposes.through_elementwise)
    assert op_types(after) == ["Add", "Mul", "Div"]
    shapes = {i.name: list(i.dims) for i in after.graph.initializer}
    assert sorted(shapes.values()) == [[], [1, 1, 1, 3], [1, 1, 1, 3]]
    assert_same_function(model, after, rng)


def test_two_transposed_operands_meet_in_nhwc(rng):
    model = parse(f"""
        g (float[2, 5, 4, 3] x, float[2, 5, 4, 3] z) => (float[2, 5, 4, 3] y) {{
            a = Transpose <{NCHW}> (x)
            b = Transpose <{NCHW}> (z)
            c = Add (a, b)
            d = Relu (c)
            y = Transpose <{NHWC}> (d)
        }}""")
    after, _ = run_rule(model, transposes.cancel_pairs, transposes.through_elementwise)
    assert op_types(after) == ["Add", "Relu"]
    assert_same_function(model, after, rng)


def test_nothing_moves_where_it_would_transpose_more(rng):
    """Add(Transpose(x), z) feeding a Conv: moving the Add would transpose z and the sum instead of x."""
    model = parse(f"""
        g (float[2, 5, 4, 3] x, float[2, 3, 5, 4] z) => (float[2, 2, 5, 4] y) {{
            a = Transpose <{NCHW}> (x)
            b = Add (a, z)
            y = Conv (b, w)
        }}""", {"w": rng.normal(size=(2, 3, 1, 1))})
    after, counts = run_rule(model, *transposes.RULES)
    assert op_types(after) == op_types(model) and sum(counts.values()) == 0


def test_an_equal_cost_move_goes_toward_nhwc(rng):
    """Relu between an NCHW input and a Transpose to NHWC: as many elements either way, so the Relu
    moves into NHWC (the Transpose to its input), never back."""
    model = parse(f"""
        g (float[2, 3, 5, 4] z) => (float[2, 5, 4, 3] y) {{
            a = Relu (z)
            b = Transpose <{NHWC}> (a)
            y = Sigmoid (b)
        }}""")
    after, counts = run_rule(model, transposes.through_elementwise)
    assert op_types(after) == ["Transpose", "Relu", "Sigmoid"] and counts["through_elementwise"] == 1
    assert_same_function(model, after, rng)
    again, counts = run_rule(after, *transposes.RULES)
    assert op_types(again) == op_types(after) and sum(counts.values()) == 0


# --- through_reduction ----------------------------------------------------------------------------

def test_global_pooling_and_squeeze_read_nhwc_directly(rng):
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 3] y) {{
            a = Transpose <{NCHW}> (x)
            b = GlobalAveragePool (a)
            y = Squeeze (b, axes)
        }}""")
    model.graph.initializer.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    after, _ = run_rule(model, transposes.through_reduction)
    assert op_types(after) == ["ReduceMean", "Squeeze"]
    assert_same_function(model, after, rng)


def test_a_kept_dims_reduction_transposes_only_its_small_result(rng):
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 3, 1, 1] y) {{
            a = Transpose <{NCHW}> (x)
            y = ReduceMean <axes = [2, 3], keepdims = 1> (a)
        }}""")
    after, _ = run_rule(model, transposes.through_reduction)
    assert op_types(after) == ["ReduceMean", "Transpose"]
    small = [v for v in after.graph.value_info if v.name == after.graph.node[1].input[0]]
    assert [d.dim_value for d in small[0].type.tensor_type.shape.dim] == [2, 1, 1, 3]
    assert_same_function(model, after, rng)


def test_a_reduction_reads_nhwc_where_its_result_goes_back_to_nhwc(rng):
    """A squeeze-and-excitation branch: the NCHW map also feeds a Conv, but the mean goes to NHWC."""
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 1, 1, 3] y, float[2, 2, 5, 4] z) {{
            a = Transpose <{NCHW}> (x)
            b = GlobalAveragePool (a)
            c = Transpose <{NHWC}> (b)
            y = Relu (c)
            z = Conv (a, w)
        }}""", {"w": rng.normal(size=(2, 3, 1, 1))})
    after, _ = run_rule(model, transposes.through_reduction, transposes.cancel_pairs)
    assert sorted(op_types(after)) == ["Conv", "ReduceMean", "Relu", "Transpose"]
    assert [n.input[0] for n in after.graph.node if n.op_type == "ReduceMean"] == ["x"]
    assert_same_function(model, after, rng)


def test_a_free_reduction_reads_nhwc_and_leaves_the_transpose_to_others(rng):
    """The mean of the NHWC source, moved to [N, C, 1, 1] by a Transpose of unit dimensions (which
    moves no data), costs nothing more: the reduction reads NHWC, so that its Transpose may go later."""
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 3, 1, 1] y, float[2, 3, 5, 4] z) {{
            a = Transpose <{NCHW}> (x)
            y = GlobalAveragePool (a)
            z = Relu (a)
        }}""")
    after, _ = run_rule(model, transposes.through_reduction)
    assert sorted(op_types(after)) == ["ReduceMean", "Relu", "Transpose", "Transpose"]
    assert [n.input[0] for n in after.graph.node if n.op_type == "ReduceMean"] == ["x"]
    assert_same_function(model, after, rng)


def test_a_reduction_keeps_its_transpose_where_moving_it_moves_data(rng):
    """A mean over H alone: its result [N, C, 1, W] transposed still moves data, and the Transpose
    before it stays for the Relu anyway."""
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 3, 1, 4] y, float[2, 3, 5, 4] z) {{
            a = Transpose <{NCHW}> (x)
            y = ReduceMean <axes = [2], keepdims = 1> (a)
            z = Relu (a)
        }}""")
    after, counts = run_rule(model, transposes.through_reduction)
    assert op_types(after) == op_types(model) and counts["through_reduction"] == 0


# --- through_pointwise_conv -----------------------------------------------------------------------

def test_a_pointwise_conv_between_nhwc_neighbours_is_a_matmul(rng):
    """The projection of a squeeze-and-excitation block: NHWC in, NHWC out, so the Conv becomes
    MatMul(x, W^T) + bias with no Transpose left."""
    model = parse(f"""
        g (float[2, 5, 4, 6] x, float[2, 1, 1, 6] s) => (float[2, 5, 4, 3] y) {{
            a = Mul (x, s)
            b = Transpose <{NCHW}> (a)
            c = Conv (b, w, bias)
            d = Transpose <{NHWC}> (c)
            y = Relu (d)
        }}""", {"w": rng.normal(size=(3, 6, 1, 1)), "bias": rng.normal(size=3)})
    after, counts = run_rule(model, *transposes.RULES)
    assert op_types(after) == ["Mul", "MatMul", "Add", "Relu"] and counts["through_pointwise_conv"] == 1
    matrix = {i.name: list(i.dims) for i in after.graph.initializer}
    assert [6, 3] in matrix.values()
    assert_same_function(model, after, rng)


def test_a_pointwise_conv_without_bias_read_in_both_layouts(rng):
    """The output also feeds an NCHW reader: one Transpose back for it, fewer elements than before."""
    model = parse(f"""
        g (float[2, 5, 4, 6] x) => (float[2, 5, 4, 2] y, float[2, 2, 5, 4] z) {{
            b = Transpose <{NCHW}> (x)
            c = Conv (b, w)
            y = Transpose <{NHWC}> (c)
            z = Sigmoid (c)
        }}""", {"w": rng.normal(size=(2, 6, 1, 1))})
    after, counts = run_rule(model, transposes.cancel_pairs, transposes.through_pointwise_conv)
    assert sorted(op_types(after)) == ["MatMul", "Sigmoid", "Transpose"]
    assert transposes.transpose_count(after) == 1
    assert_same_function(model, after, rng)


@pytest.mark.parametrize("conv", ["kernel_shape = [3, 3], pads = [1, 1, 1, 1]", "strides = [2, 2]", "group = 2"])
def test_only_plain_pointwise_convs_become_matmuls(conv, rng):
    shape = [3, 3, 3, 3] if "kernel" in conv else [4, 3, 1, 1] if "group" in conv else [4, 6, 1, 1]
    model = parse(f"""
        g (float[2, 4, 4, 6] x) => (float[2, 4, 4, 4] y) {{
            b = Transpose <{NCHW}> (x)
            c = Conv <{conv}> (b, w)
            y = Transpose <{NHWC}> (c)
        }}""".replace("float[2, 4, 4, 4] y", "float[2, 2, 2, 4] y" if "strides" in conv else
                      "float[2, 4, 4, 3] y" if "kernel" in conv else "float[2, 4, 4, 4] y"),
        {"w": rng.normal(size=shape)})
    after, counts = run_rule(model, transposes.through_pointwise_conv)
    assert counts["through_pointwise_conv"] == 0 and op_types(after) == op_types(model)


def test_a_pointwise_conv_stays_where_nhwc_would_move_more(rng):
    """Input NHWC but the output, four times wider, read in NCHW: cancelling the input Transpose would
    need a bigger one on the output."""
    model = parse(f"""
        g (float[2, 5, 4, 2] x) => (float[2, 8, 5, 4] y) {{
            b = Transpose <{NCHW}> (x)
            y = Conv (b, w)
        }}""", {"w": rng.normal(size=(8, 2, 1, 1))})
    after, counts = run_rule(model, transposes.through_pointwise_conv)
    assert counts["through_pointwise_conv"] == 0 and op_types(after) == ["Transpose", "Conv"]


# --- unit_transposes_to_reshapes ------------------------------------------------------------------

def test_a_transpose_of_unit_dimensions_becomes_a_reshape(rng):
    model = parse(f"""
        g (float[2, 6, 1, 1] x, float[2, 5, 4, 3] z) => (float[2, 1, 1, 6] y, float[2, 3, 5, 4] w) {{
            y = Transpose <{NHWC}> (x)
            w = Transpose <{NCHW}> (z)
        }}""")
    after, counts = run_rule(model, final=(transposes.unit_transposes_to_reshapes,))
    assert op_types(after) == ["Reshape", "Transpose"] and counts["unit_transposes_to_reshapes"] == 1
    assert_same_function(model, after, rng)


# --- unit_products_to_gemm -----------------------------------------------------------------------

def _gemm(model: onnx.ModelProto):
    (node,) = [n for n in model.graph.node if n.op_type == "Gemm"]
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return node, [constants.get(name) for name in node.input]


@pytest.mark.parametrize("batch", ["2", "N"])
@pytest.mark.parametrize("bias_shape", [(3,), (1, 1, 1, 3), (1, 3)])
def test_a_unit_product_and_its_bias_become_a_gemm(batch, bias_shape, rng):
    """A classifier head's projection of pooled [N, 1, 1, C] values: Gemm of the rows, W as [F, C],
    the bias folded in as [F], the result reshaped back into the tensor the Relu reads."""
    w, bias = rng.normal(size=(6, 3)), rng.normal(size=bias_shape)
    model = parse(f"""
        g (float[{batch}, 1, 1, 6] x) => (float[{batch}, 1, 1, 3] y) {{
            p = MatMul (x, w)
            q = Add (p, bias)
            y = Relu (q)
        }}""", {"w": w, "bias": bias})
    after, counts = run_rule(model, final=(transposes.unit_products_to_gemm,))
    assert op_types(after) == ["Reshape", "Gemm", "Reshape", "Relu"] and counts["unit_products_to_gemm"] == 1
    gemm, (_, matrix, folded) = _gemm(after)
    assert [(a.name, a.i) for a in gemm.attribute] == [("transB", 1)]
    np.testing.assert_array_equal(matrix, w.T.astype(np.float32))
    np.testing.assert_array_equal(folded, bias.reshape(3).astype(np.float32))
    assert matrix.dtype == folded.dtype == np.float32
    assert after.graph.node[2].output[0] == "q" and after.graph.node[3].input[0] == "q"
    assert_same_function(model, after, rng)


def test_a_unit_product_without_bias_writes_its_own_output(rng):
    """No Add after it: a Gemm of two inputs, the MatMul's output (here a graph output too) written by
    the Reshape back."""
    model = parse("""
        g (float[2, 1, 1, 6] x) => (float[2, 1, 1, 4] p, float[2, 1, 1, 4] y) {
            p = MatMul (x, w)
            y = Sigmoid (p)
        }""", {"w": rng.normal(size=(6, 4))})
    after, counts = run_rule(model, final=(transposes.unit_products_to_gemm,))
    assert sorted(op_types(after)) == ["Gemm", "Reshape", "Reshape", "Sigmoid"] and counts["unit_products_to_gemm"] == 1
    _, inputs = _gemm(after)
    assert len(inputs) == 2 and inputs[1].shape == (4, 6)
    assert [o.name for o in after.graph.output] == ["p", "y"]
    assert [n.op_type for n in after.graph.node if "p" in n.output] == ["Reshape"]
    assert_same_function(model, after, rng)


@pytest.mark.parametrize("also_read", [False, True])
def test_a_gemm_reads_through_the_reshape_a_unit_transpose_became(also_read, rng):
    """The pooled map [N, C, 1, 1] moved to NHWC by a unit Transpose: the final rules make that a
    Reshape, then the Gemm's rows reshape the map itself, and the first Reshape goes unless it has
    another reader."""
    model = parse(f"""
        g (float[2, 6, 1, 1] x) => (float[2, 1, 1, 3] y{", float[2, 1, 1, 6] t" if also_read else ""}) {{
            t = Transpose <{NHWC}> (x)
            p = MatMul (t, w)
            y = Add (p, bias)
        }}""", {"w": rng.normal(size=(6, 3)), "bias": rng.normal(size=3)})
    after, counts = run_rule(model, final=transposes.FINAL)
    assert counts["unit_transposes_to_reshapes"] == counts["unit_products_to_gemm"] == 1
    assert op_types(after) == ["Reshape"] * also_read + ["Reshape", "Gemm", "Reshape"]
    gemm, _ = _gemm(after)
    assert [n.input[0] for n in after.graph.node if gemm.input[0] in n.output] == ["x"]
    assert_same_function(model, after, rng)


@pytest.mark.parametrize("case", ["second reader", "product is an output", "batch bias", "channel-first bias",
                                  "one-value bias", "variable bias"])
def test_a_bias_that_is_not_the_products_own_stays_an_add(case, rng):
    """The product becomes a Gemm, but the Add stays where the product has another reader (or is a
    graph output) or the bias is not F values along the last axis (it also broadcasts over the batch
    or the first axes, or is one value for all)."""
    bias = {"batch bias": (2, 1, 1, 3), "channel-first bias": (3, 1, 1), "one-value bias": (1,)}.get(case, (3,))
    out = "float[2, 3, 1, 3] y" if case == "channel-first bias" else "float[2, 1, 1, 3] y"
    extra = {"second reader": ", float[2, 1, 1, 3] z", "product is an output": ", float[2, 1, 1, 3] p"}.get(case, "")
    model = parse(f"""
        g (float[2, 1, 1, 6] x{", float[3] b" if case == "variable bias" else ""}) => ({out}{extra}) {{
            p = MatMul (x, w)
            y = Add (p, {"b" if case == "variable bias" else "bias"})
            {"z = Relu (p)" if case == "second reader" else ""}
        }}""", {"w": rng.normal(size=(6, 3))} | ({} if case == "variable bias" else {"bias": rng.normal(size=bias)}))
    after, counts = run_rule(model, final=(transposes.unit_products_to_gemm,))
    assert counts["unit_products_to_gemm"] == 1 and "Add" in op_types(after)
    _, inputs = _gemm(after)
    assert len(inputs) == 2
    assert_same_function(model, after, rng)


@pytest.mark.parametrize("case", ["spatial", "variable weights", "unknown channels"])
def test_other_products_stay_matmuls(case, rng):
    """Not a product of pooled values by constant weights: H x W other than 1 x 1, weights computed
    in the graph, or C unknown."""
    x = {"spatial": "float[2, 2, 1, 6] x", "unknown channels": "float[2, 1, 1, C] x"}.get(case, "float[2, 1, 1, 6] x")
    y = "float[2, 2, 1, 3] y" if case == "spatial" else "float[2, 1, 1, 3] y"
    weights = ", float[6, 3] w" if case == "variable weights" else ""
    model = parse(f"""
        g ({x}{weights}) => ({y}) {{
            p = MatMul (x, w)
            y = Add (p, bias)
        }}""", {"bias": rng.normal(size=3)} | ({} if weights else {"w": rng.normal(size=(6, 3))}))
    after, counts = run_rule(model, final=(transposes.unit_products_to_gemm,))
    assert counts["unit_products_to_gemm"] == 0 and op_types(after) == ["MatMul", "Add"]


def test_a_pooled_pointwise_conv_between_nhwc_neighbours_ends_as_a_gemm(rng):
    """The whole cleanup on a squeeze-and-excitation projection at 1x1: the Conv becomes MatMul + Add
    in NHWC, and the final rules make that a Gemm between Reshapes."""
    model = parse(f"""
        g (float[2, 1, 1, 6] x) => (float[2, 1, 1, 3] y) {{
            b = Transpose <{NCHW}> (x)
            c = Conv (b, w, bias)
            d = Transpose <{NHWC}> (c)
            y = Relu (d)
        }}""", {"w": rng.normal(size=(3, 6, 1, 1)), "bias": rng.normal(size=3)})
    after, counts = run_rule(model, *transposes.RULES, final=transposes.FINAL)
    assert op_types(after) == ["Reshape", "Gemm", "Reshape", "Relu"]
    assert counts["through_pointwise_conv"] == 1 and counts["unit_products_to_gemm"] == 1


# --- spatial_means_to_products -------------------------------------------------------------------

def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("opset, axes", [(13, [1, 2]), (18, [1, 2]), (13, [-3, -2]), (18, [2, -3])])
@pytest.mark.parametrize("keepdims", [1, 0])
def test_a_mean_over_h_and_w_of_nhwc_is_a_matrix_product(opset, axes, keepdims, rng):
    model = reduction_model(opset, axes, keepdims)
    after, counts = run_rule(model, final=(transposes.spatial_means_to_products,))
    assert op_types(after) == ["Reshape", "Transpose", "MatMul", "Reshape", "Sigmoid"]
    assert counts["spatial_means_to_products"] == 1
    constants = _initializers(after)
    reshape, transpose, product, back = after.graph.node[:4]
    assert list(constants[reshape.input[1]]) == [-1, 20, 3]
    assert [a.ints for a in transpose.attribute if a.name == "perm"] == [[0, 2, 1]]
    assert list(constants[back.input[1]]) == ([-1, 1, 1, 3] if keepdims else [-1, 3])
    column = constants[product.input[1]]
    assert column.shape == (20, 1) and column.dtype == np.float32 and np.all(column == np.float32(1 / 20))
    assert transpose.input[0] == reshape.output[0] and product.input[0] == transpose.output[0]
    assert back.input[0] == product.output[0]
    assert back.output[0] == model.graph.node[0].output[0]  # the Sigmoid still reads the mean's tensor
    assert transposes.is_spatial_mean_product(product, constants)
    assert_same_function(model, after, rng)


def test_a_spatial_mean_with_a_symbolic_batch_is_a_product_for_any_batch(rng):
    model = reduction_model(18, [1, 2], 0, shape="N, 5, 4, 3")
    after, counts = run_rule(model, final=(transposes.spatial_means_to_products,))
    assert counts["spatial_means_to_products"] == 1
    for batch in (1, 3):
        x = rng.normal(size=(batch, 5, 4, 3)).astype(np.float32)
        (y,) = make_session(after, with_library=False).run(None, {"x": x})
        np.testing.assert_allclose(y, 1 / (1 + np.exp(-x.mean(axis=(1, 2)))), rtol=1e-5)


@pytest.mark.parametrize("case", ["axes [2, 3]", "axis 1 alone", "symbolic H", "ReduceSum", "ReduceMax",
                                  "every axis", "rank 3"])
def test_other_reductions_stay(case):
    model = {
        "axes [2, 3]": lambda: reduction_model(13, [2, 3], 1),
        "axis 1 alone": lambda: reduction_model(18, [1], 1),
        "symbolic H": lambda: reduction_model(13, [1, 2], 1, shape="2, H, 4, 3"),
        "ReduceSum": lambda: reduction_model(13, [1, 2], 1, op="ReduceSum"),
        "ReduceMax": lambda: reduction_model(13, [1, 2], 1, op="ReduceMax"),
        "every axis": lambda: onnx.shape_inference.infer_shapes(onnx.parser.parse_model(
            """<ir_version: 8, opset_import: ["" : 18]>
            g (float[2, 5, 4, 3] x) => (float y) { y = ReduceMean (x) }""")),
        "rank 3": lambda: reduction_model(13, [1, 2], 1, shape="5, 4, 3"),
    }[case]()
    after, counts = run_rule(model, final=(transposes.spatial_means_to_products,))
    assert counts["spatial_means_to_products"] == 0 and op_types(after) == op_types(model)


def test_only_an_averaging_column_makes_a_spatial_mean_product():
    node = onnx.helper.make_node("MatMul", ["x", "r"], ["y"])
    assert transposes.is_spatial_mean_product(node, {"r": np.full((7, 1), 1 / 7, np.float32)})
    for column in (np.full((7, 1), 2 / 7, np.float32), np.full((7, 2), 1 / 7, np.float32),
                   np.linspace(0, 2 / 7, 7, dtype=np.float32)[:, None]):
        assert not transposes.is_spatial_mean_product(node, {"r": column})
    assert not transposes.is_spatial_mean_product(node, {})  # not a constant
    reversed_operands = onnx.helper.make_node("MatMul", ["r", "x"], ["y"])
    assert not transposes.is_spatial_mean_product(reversed_operands, {"r": np.full((7, 1), 1 / 7, np.float32)})


def test_the_cleanup_ends_a_squeeze_and_excitation_mean_as_a_product(rng):
    """An NCHW GlobalAveragePool of a transposed NHWC map: the pool reads NHWC (a ReduceMean over
    [1, 2]), its Transpose of unit dimensions becomes a Reshape, and the mean a MatMul."""
    model = parse(f"""
        g (float[2, 5, 4, 3] x) => (float[2, 3, 1, 1] y) {{
            a = Transpose <{NCHW}> (x)
            y = GlobalAveragePool (a)
        }}""")
    after, counts = run_rule(model, *transposes.RULES, final=transposes.FINAL)
    assert "ReduceMean" not in op_types(after) and op_types(after).count("MatMul") == 1
    assert counts["through_reduction"] == 1 and counts["spatial_means_to_products"] == 1
    assert transposes.transpose_count(after) == 0
    assert_same_function(model, after, rng)


# --- fold_scale -----------------------------------------------------------------------------------

def test_a_channels_last_node_takes_its_scale_as_nhwc(rng):
    spec = random_spec(rng, "pwdwpw", 6, scale=True, channels_last=True)
    model = fused_model(spec, 5, 7)
    model.graph.input[1].CopyFrom(onnx.helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, [2, 1, 1, 6]))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    model.graph.node.insert(0, onnx.helper.make_node("Transpose", ["s"], ["S"], perm=list(TO_NCHW)))
    model = onnx.shape_inference.infer_shapes(model)
    after, counts = run_rule(model, transposes.fold_scale)
    assert op_types(after) == ["FusedPwDwPw"] and after.graph.node[0].input[-1] == "s"
    for with_library in (True, False):
        assert_same_function(model, after, rng, with_library=with_library)


def test_an_nchw_node_keeps_its_scale_transpose(rng):
    spec = random_spec(rng, "pwpw", 6, scale=True)
    model = fused_model(spec, 5, 7)
    model.graph.input[1].CopyFrom(onnx.helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, [2, 1, 1, 6]))
    model.graph.node.insert(0, onnx.helper.make_node("Transpose", ["s"], ["S"], perm=list(TO_NCHW)))
    after, counts = run_rule(onnx.shape_inference.infer_shapes(model), transposes.fold_scale)
    assert counts["fold_scale"] == 0 and op_types(after) == ["Transpose", "FusedPwPw"]


# --- the cleanup as a whole -----------------------------------------------------------------------

def _between_transposes(spec, x: str, y: str, name: str, scale: str | None = None) -> tuple[list, dict]:
    """A channels-last node of ``spec`` as the rewrite emits it: NCHW in and out, Transposes around."""
    weights = {f"{name}_{k}": v for k, v in spec.weights("").items()}
    node = spec.node([f"{x}_{name}"] + list(weights) + ([scale] if scale else []), f"{y}_{name}", name)
    return [onnx.helper.make_node("Transpose", [x], [f"{x}_{name}"], perm=list(TO_NHWC)), node,
            onnx.helper.make_node("Transpose", [f"{y}_{name}"], [y], perm=list(TO_NCHW))], weights


def _chain(rng, nhwc_input: bool) -> onnx.ModelProto:
    """input -> fused -> Relu -> fused -> Add(that, the Relu's output) -> Clip -> Conv 3x3, each fused node
    channels last between Transposes (as the rewrite emits them)."""
    first = random_spec(rng, "pwdwpw", 8, channels_last=True)
    c = first.stages[-1].out_channels
    second = random_spec(rng, "dwpw", c, out=c, channels_last=True)
    nodes, weights = [], {}
    if nhwc_input:
        nodes.append(onnx.helper.make_node("Transpose", ["x_nhwc"], ["x"], perm=list(TO_NCHW)))
    for part in (_between_transposes(first, "x", "a", "f1"), ([onnx.helper.make_node("Relu", ["a"], ["b"])], {}),
                 _between_transposes(second, "b", "c", "f2")):
        nodes += part[0]
        weights.update(part[1])
    nodes += [onnx.helper.make_node("Add", ["c", "b"], ["d"]), onnx.helper.make_node("Clip", ["d", "lo", "hi"], ["e"]),
              onnx.helper.make_node("Conv", ["e", "w"], ["y"])]
    weights.update(lo=np.float32(0), hi=np.float32(6), w=rng.normal(size=(4, c, 3, 3)))  # 3x3: needs NCHW
    source = ("x_nhwc", [2, 9, 7, 8]) if nhwc_input else ("x", [2, 8, 9, 7])
    graph = onnx.helper.make_graph(
        nodes, "chain", [onnx.helper.make_tensor_value_info(source[0], onnx.TensorProto.FLOAT, source[1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()])
    functions = [fused_model(first).functions[0], fused_model(second).functions[0]]
    functions[1].overload = "g1"
    model = onnx.helper.make_model(graph, opset_imports=list(fused_model(first).opset_import), functions=functions)
    model.ir_version = 10
    for node in model.graph.node:
        if node.domain:
            node.overload = "g0" if node.name == "f1" else "g1"
    return onnx.shape_inference.infer_shapes(model)


@pytest.mark.parametrize("nhwc_input", [False, True])
def test_a_chain_of_fused_nodes_and_activations_stays_nhwc(nhwc_input, rng):
    """The one Transpose left is before the Conv, and one after the input where it is NCHW."""
    model = _chain(rng, nhwc_input)
    after, _ = run_rule(model, *transposes.RULES)
    kinds = op_types(after)
    assert kinds.count("Transpose") == (1 if nhwc_input else 2), kinds
    assert kinds[-2:] == ["Transpose", "Conv"]  # the Conv needs NCHW
    for with_library in (True, False):
        assert_same_function(model, after, rng, with_library=with_library)


@pytest.mark.parametrize("names", [["f1"], ["f2"], ["f1", "f2"]])
def test_unfusing_channels_last_nodes_adds_at_most_their_bodies_transposes(names, rng):
    """``unfuse`` puts each function body (NCHW between two Transposes) in its node's place, and the
    layout cleanup runs over the result: the same function, at most two more Transposes a node."""
    model = _chain(rng, nhwc_input=True)
    graph = gs.import_onnx(model)
    transposes.optimize(graph)
    optimized = gs.export_onnx(graph)
    optimized.functions.extend(model.functions)
    for node in optimized.graph.node:
        node.overload = {"f1": "g0", "f2": "g1"}.get(node.name, "")
    assert transposes.transpose_count(optimized) == 1
    plain = unfuse(optimized, names)
    assert len([n for n in plain.graph.node if n.domain == DOMAIN]) == 2 - len(names) == len(plain.functions)
    assert transposes.transpose_count(plain) <= 1 + 2 * len(names)
    for with_library in (True, False):
        assert_same_function(model, plain, rng, with_library=with_library)


def test_the_final_rules_keep_the_spatial_mean_a_reduction_only_at_batch_1():
    assert transposes.spatial_means_to_products not in transposes.final_rules(1)
    for batch in (0, 2, 32):  # 0: not known, planned as for the default batch
        assert transposes.final_rules(batch) == transposes.FINAL
    assert transposes.unit_products_to_gemm in transposes.final_rules(1)
