"""The op vocabulary is one table: the C++ header, the built library, the Python schema and the
planner all agree with ``fcm_core.vocabulary``. (The C++ attribute reader also refuses to read a
name the table does not declare for the op, so a C++ attribute missing from the table fails every
kernel test that creates that op.)"""

from __future__ import annotations

import ctypes
import json

import onnx
import pytest

from fcm_core import vocabulary
from ort_custom_ops.ops import header
from ort_custom_ops.ops.library import library_path, make_session
from ort_custom_ops.ops.schema import ATTRIBUTES, OP_TYPES, fused_node
from planner import groups


def test_the_header_is_generated_from_the_table():
    assert header.HEADER.read_text() == header.render(), "run python -m ort_custom_ops.ops.header"


def test_the_built_library_has_the_tables_vocabulary():
    library = ctypes.CDLL(str(library_path()))
    library.FcmLibraryVocabulary.restype = ctypes.c_char_p
    built = json.loads(library.FcmLibraryVocabulary().decode())
    assert built == json.loads(header.text()), "the library was built from another vocabulary: rebuild it (make setup)"


def test_every_fused_op_of_the_table_is_registered_for_each_precision():
    """A node of every kind and precision is known to the library: the session is refused for
    its attributes or shapes, never because the op type is unknown."""
    for kind in vocabulary.KINDS.values():
        for precision in kind.precisions:
            node = fused_node(kind.name, precision, ["X"], "Y", "n", {})
            graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, None)],
                                           [onnx.helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)])
            model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17),
                                                                 onnx.helper.make_opsetid(vocabulary.DOMAIN, 1)])
            with pytest.raises(Exception) as info:
                make_session(model)
            assert "is not a registered function/op" not in str(info.value), (kind.op_type(precision), str(info.value))


def test_a_kind_has_ops_only_in_its_precisions():
    """The single pointwise stage (``pw``) has float ops only: asking for its int8 op is an error
    naming the precisions it has, and the built library registers none."""
    assert vocabulary.KINDS["pw"].precisions == vocabulary.FLOAT_PRECISIONS
    with pytest.raises(ValueError, match="the pw kind has no int8 op"):
        vocabulary.KINDS["pw"].op_type("int8")
    assert "QFusedPw" not in vocabulary.op_attributes() and vocabulary.kind_of("QFusedPw") is None
    assert vocabulary.kind_of("Bf16FusedPw") == (vocabulary.KINDS["pw"], "bf16")


def test_python_schema_and_planner_read_the_table():
    assert OP_TYPES == {name: kind.op_type("fp32") for name, kind in vocabulary.KINDS.items()}
    assert set(ATTRIBUTES) == set(vocabulary.expand(vocabulary.FUSED_ATTRIBUTES["fp32"]))
    assert groups.KINDS == {kind.stages: name for name, kind in vocabulary.KINDS.items()}
    assert groups.SUPPORTED_ACTIVATIONS == set(vocabulary.FROM_DAG_ACTIVATION)
    with pytest.raises(ValueError, match="no attributes"):
        fused_node("dwpw", "fp32", ["X"], "Y", "n", {"not_an_attribute": 1})


def test_every_int8_table_activation_has_its_integer_table():
    """An activation whose int8 form is a table is an operator ``extractor.integer`` tabulates (or
    x times one, as swish is x * sigmoid(x)): the int8 lowering builds the table from there."""
    from extractor.integer import ACTIVATION_TABLES

    by_onnx = {a.onnx: a for a in vocabulary.ACTIVATIONS.values()}
    for activation in vocabulary.ACTIVATIONS.values():
        if activation.int8 == "table":
            tabulated = by_onnx[activation.onnx.removeprefix("x*")]
            assert set(tabulated.standalone) & set(ACTIVATION_TABLES), activation.name
