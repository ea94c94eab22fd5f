"""Half precision: a model from the rewrite (or its unfused form) computed in fp16 or bf16.

In: an fp32 ONNX model, fused (``ai.fcm`` fp32 nodes with their function bodies) or not, a
precision (``fp16`` or ``bf16``) and whether its inputs and outputs become half too. Out
(:func:`to_half`): the same model in that precision:

- the standard operators through onnxconverter-common's float16 converter, the operators of
  :func:`kept_fp32` computed in fp32 between Casts (the converter's op block list); by default one
  Cast at each model input and output (``io_half``: none, the inputs and outputs in the precision);
- the fused nodes and the layers (``Conv``, ``Mean``) are kept out of the converter's handling of
  operators: it only types the tensors around them, and they are typed here: the precision's op type
  (``Fp16FusedPwDwPw``, ``Fp16Conv``, ``Fp16Mean``: a mean layer sums in fp32 itself, so it is not
  wrapped in Casts as a ReduceMean of :data:`FP16_KEPT` is), weights rounded to it, the function body
  of :func:`ort_custom_ops.ops.schema.half_body`; an input Cast that only a stem layer reads is
  folded into it (:func:`fold_input_casts`);
- bf16: the converter has no bf16 mode (onnxconverter-common issue 268), and ONNX Runtime has no
  bf16 Conv on any provider nor bf16 arithmetic on the CPU. :func:`to_half` makes the bf16 model
  itself: every float tensor between operators is bf16 (half the bytes), every standard operator
  that computes (all but the reshapes of :data:`BF16_DIRECT`) widens its inputs to fp32 with a
  Cast, computes in fp32 and rounds its output to bf16 with a Cast; weights are stored in bf16
  (those of standard operators behind a Cast, which ONNX Runtime folds when it loads the model).
  So each operator's output is rounded to bf16, as in a bf16 computation with fp32 accumulation,
  but the operators between the fused nodes compute in fp32: only the fused nodes are bf16 kernels.

What stays fp32 in fp16 (:data:`FP16_KEPT`): the converter's default block list, and the
reductions and the softmax, whose fp16 sums lose accuracy (the squeeze-and-excitation mean, the
global average pool). The MatMuls that compute such a mean (:func:`spatial_mean_nodes`: the layout
cleanup's form of a ReduceMean over H and W of an NHWC map, a product with a column of 1/(H*W))
and the Transposes they read are fp16 products with fp32 sums (ONNX Runtime's CUDA provider
multiplies fp16 matrices with cuBLAS's fp32 compute type unless told otherwise; its CPU provider
computes them in fp32): the map is read once in fp16, where widening it first cost a Cast writing
twice its bytes and a product reading them (EfficientNetB0's sixteen means read 74 M values at
batch 32). Only a column whose 1/(H*W) is below fp16's smallest normal value (more than 2^14
pixels: it would lose digits as a subnormal) keeps its product fp32 (:func:`fp32_mean_nodes`, by
name: the converter's node block list), the column fp32 and the Cast to fp32 before the Transpose,
which ONNX Runtime folds into the product only where nothing stands between them. In bf16 the
column stays fp32 too, the Transpose widens its input like an operator that computes, the product
reads it in fp32, and the mean is the fp32 one rounded once.

Three bugs of the converter (1.16) are worked around here: an initializer shared by a kept and a
converted operator stays fp32 for both (issue 304, pull request 329: it is copied first); a Cast to
fp32 in the source keeps ``to=float`` while its output is retyped fp16 (issue 320, pull request
326: such Casts are retargeted); and the Casts it adds are named after their node, so that two
unnamed nodes' collide (every node is named first).

Also here: :func:`rounded_model`, the fp32 model with each operator's output rounded to a precision
(a Cast to it and back): what a correct half-precision computation of the model gives, on any
provider, for the conversion's verification bound.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fcm_core.vocabulary import DOMAIN, kind_of, layer_of, layer_op_type, op_attributes

from ..ops.schema import NUMPY_TYPES, VALUE_PRESERVING, half_body, renamed_nodes, rounded_nodes
from ..ops.standalone import float_io
from .transposes import spatial_mean_products, spatial_mean_transposes

HALF_PRECISIONS = ("fp16", "bf16")
#: Operators a bf16 model runs on bf16 tensors as they are: they only reshape, and ONNX Runtime has
#: kernels for every tensor type for them on the CPU and CUDA providers.
BF16_DIRECT = ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Transpose")
#: Operators fp16 models keep in fp32, besides the converter's default block list.
FP16_KEPT = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "GlobalAveragePool", "Softmax", "LogSoftmax")


def kept_fp32(model: onnx.ModelProto, precision: str) -> list[str]:
    """The op types ``model`` computes in fp32 when converted to ``precision`` (see the module docstring)."""
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    if precision == "fp16":
        return sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP16_KEPT))
    present = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}
    return sorted(present - set(BF16_DIRECT))


def spatial_mean_nodes(model: onnx.ModelProto) -> list[str]:
    """The names of ``model``'s MatMuls that compute a spatial mean
    (:func:`ort_custom_ops.lowering.transposes.spatial_mean_products`) and of the Transposes they
    read."""
    return [node.name for node in _mean_nodes(model)]


def fp32_mean_nodes(model: onnx.ModelProto, precision: str) -> list[str]:
    """The names of the spatial means' MatMuls and Transposes that ``precision`` computes in fp32:
    in bf16 all of them, in fp16 those whose column of 1/(H*W) is not a normal fp16 value (see the
    module docstring)."""
    return [node.name for node in _mean_nodes(model, fp32_only=precision)]


def _mean_nodes(model: onnx.ModelProto, fp32_only: str | None = None) -> list[onnx.NodeProto]:
    """The spatial means' MatMuls and the Transposes that are their first inputs' producers; with
    ``fp32_only`` (a precision), only those it computes in fp32."""
    products = spatial_mean_products(model)
    if fp32_only == "fp16":
        columns = {t.name: t for t in model.graph.initializer}
        tiny = np.finfo(np.float16).tiny
        products = [node for node in products if numpy_helper.to_array(columns[node.input[1]]).flat[0] < tiny]
    return spatial_mean_transposes(model, products) + products


def to_half(model: onnx.ModelProto, precision: str, io_half: bool = False) -> onnx.ModelProto:
    """``model`` computed in ``precision`` (see the module docstring)."""
    from onnxconverter_common import float16

    if precision not in HALF_PRECISIONS:
        raise ValueError(f"unknown half precision {precision!r} (one of {', '.join(HALF_PRECISIONS)})")
    if precision == "bf16":
        half = _bf16_model(model)
        _type_fused_nodes(half, "bf16")
        half = half if io_half else float_io(half)
    else:
        source = _named_nodes(model)
        products = fp32_mean_nodes(source, precision)
        _unshare_initializers(source, set(kept_fp32(model, precision)), set(products))
        source_casts = {n.output[0] for n in source.graph.node if n.op_type == "Cast"}
        with warnings.catch_warnings():  # it warns of each value it clamps to fp16's range (weights never reach it)
            warnings.simplefilter("ignore")
            half = float16.convert_float_to_float16(source, keep_io_types=not io_half,
                                                    op_block_list=kept_fp32(model, precision),
                                                    node_block_list=products, check_fp16_ready=False)
        _retarget_source_casts(half, source_casts)
        _type_fused_nodes(half, precision)
    fold_input_casts(half)
    onnx.checker.check_model(half)
    return half


def fold_input_casts(model: onnx.ModelProto) -> int:
    """Folds each Cast of an fp32 model input to a half type that only half convolution layers of
    group 1 read (as their X: a network's stem) into those layers: they read the fp32 input and round
    it to their type as they read it (``conv_layer.h``), which is what the Cast computed, without its
    pass over the input; their function bodies begin with that rounding (a CastLike to W's type).
    Returns how many Casts went."""
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, index))
    fp32_inputs = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT}
    outputs = {o.name for o in model.graph.output}
    functions = {(f.domain, f.name, f.overload): f for f in model.functions}
    halves = {TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}

    def takes_float(node: onnx.NodeProto, index: int, precision: str) -> bool:
        group = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "group"), 1)
        return (node.domain == DOMAIN and node.op_type == layer_op_type("Conv", precision) and index == 0 and group == 1
                and (node.domain, node.op_type, node.overload) in functions)

    folded = 0
    for cast in list(model.graph.node):
        to = next((a.i for a in cast.attribute if a.name == "to"), None)
        if cast.op_type != "Cast" or cast.domain not in ("", "ai.onnx") or to not in halves or cast.input[0] not in fp32_inputs:
            continue
        users = readers.get(cast.output[0], [])
        if not users or cast.output[0] in outputs or not all(takes_float(n, i, halves[to]) for n, i in users):
            continue
        for node, _ in users:
            node.input[0] = cast.input[0]
            _round_input_first(functions[(node.domain, node.op_type, node.overload)])
        model.graph.node.remove(cast)
        folded += 1
    return folded


def _round_input_first(function: onnx.FunctionProto) -> None:
    """A layer's function body made to take an fp32 X too: X rounded to W's type first (CastLike; on a
    half X, nothing changes)."""
    x, w = function.input[0], function.input[1]
    typed = f"{x}_typed"
    # (no body node writes a formal input, so only reads are renamed)
    body = [helper.make_node("CastLike", [x, w], [typed])] + renamed_nodes(function.node, {x: typed})
    del function.node[:]
    function.node.extend(body)


def with_half_reductions(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The fp16 ``model`` with its kept reductions (:data:`FP16_KEPT`) computed in fp16, as the
    converter's default block list leaves them: each such operator between a Cast of an fp16 value
    to fp32 and Casts of its output back to fp16 reads the fp16 value, and the readers of those Casts
    read its output. ONNX Runtime's anchor in a configuration of its own: faster where means over
    large maps are many (EfficientNetB0 FP16 at batch 32 on an H100: 2.591 ms against 2.857); its
    accuracy is not the verification's. None where ``model`` has no such operator."""
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}

    def cast_to(node, element) -> bool:
        return node is not None and node.op_type == "Cast" and any(a.name == "to" and a.i == element for a in node.attribute)

    sources, renamed = {}, {}  # renamed: each dropped narrowing Cast's output -> the reduction's
    for index, node in enumerate(graph.node):
        if node.op_type not in FP16_KEPT or node.domain not in ("", "ai.onnx") or node.output[0] in graph_outputs:
            continue
        widen, narrows = producers.get(node.input[0]), readers.get(node.output[0], [])
        if not cast_to(widen, TensorProto.FLOAT) or not narrows or not all(cast_to(r, TensorProto.FLOAT16) for r in narrows):
            continue
        sources[index] = widen.input[0]
        for narrow in narrows:
            renamed[narrow.output[0]] = node.output[0]
    if not sources:
        return None
    half = onnx.ModelProto()
    half.CopyFrom(model)
    nodes = []
    for index, node in enumerate(half.graph.node):
        if node.op_type == "Cast" and node.output[0] in renamed:
            continue
        if index in sources:
            node.input[0] = sources[index]
        node.input[:] = [renamed.get(name, name) for name in node.input]
        nodes.append(node)
    for name in graph_outputs & renamed.keys():  # a dropped Cast's output that is the graph's: the same values under its name
        nodes.append(helper.make_node("Identity", [renamed[name]], [name], name=f"{name}__identity"))
    # the widening Casts nothing reads any more
    read = {name for node in nodes for name in node.input} | graph_outputs
    nodes = [n for n in nodes if n.op_type != "Cast" or any(o in read for o in n.output)]
    del half.graph.node[:]
    half.graph.node.extend(nodes)
    retyped = {graph.node[index].output[0] for index in sources}
    kept_info = [v for v in half.graph.value_info if v.name not in retyped and v.name not in renamed]
    del half.graph.value_info[:]
    half.graph.value_info.extend(kept_info)
    onnx.checker.check_model(half)
    return half


def rounded_model(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """The fp32 ``model`` (unfused) with its weights and each operator's output rounded to
    ``precision``, the operators :func:`kept_fp32` keeps for fp16 and the spatial means'
    MatMuls and their Transposes that ``precision`` computes in fp32 (:func:`fp32_mean_nodes`, with
    their columns) left exact."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    products = _mean_nodes(copy, fp32_only=precision)
    columns = {node.input[1] for node in products if node.op_type == "MatMul"}
    dtype = NUMPY_TYPES[precision]
    for tensor in copy.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT and tensor.name not in columns:
            values = numpy_helper.to_array(tensor).astype(dtype).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    nodes = []
    for node in copy.graph.node:
        nodes.extend([node] if node in products else rounded_nodes([node], precision, keep=FP16_KEPT))
    del copy.graph.node[:]
    copy.graph.node.extend(nodes)
    return copy


def _named_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every node named (the converter names the Casts it adds after their node:
    unnamed nodes' would collide)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    taken = {n.name for n in copy.graph.node}
    for index, node in enumerate(copy.graph.node):
        if not node.name:
            node.name = next(name for k in range(index, index + len(taken) + 1)
                             if (name := f"{node.op_type}_{k}") not in taken)
            taken.add(node.name)
    return copy


def _unshare_initializers(model: onnx.ModelProto, kept: set[str], kept_nodes: set[str]) -> None:
    """No float initializer of ``model`` left feeding both a kept operator (op type in ``kept``, or
    node named in ``kept_nodes``) and a converted one: the kept ones read their own copy (the
    converter would leave a shared one fp32 for both)."""
    graph = model.graph

    def is_kept(node) -> bool:
        return node.op_type in kept or node.name in kept_nodes

    floats = {t.name: t for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    users: dict[str, set[bool]] = {}
    for node in graph.node:
        for name in node.input:
            if name in floats:
                users.setdefault(name, set()).add(is_kept(node))
    for name, kinds in users.items():
        if len(kinds) == 2:
            duplicate = onnx.TensorProto()
            duplicate.CopyFrom(floats[name])
            duplicate.name = f"{name}__fp32"
            graph.initializer.append(duplicate)
            for node in graph.node:
                if is_kept(node):
                    node.input[:] = [duplicate.name if i == name else i for i in node.input]


def _retarget_source_casts(model: onnx.ModelProto, source_casts: set[str]) -> None:
    """The source's Casts to fp32 whose outputs the converter retyped fp16 cast to fp16."""
    half_values = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in source_casts and node.output[0] in half_values:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                    attribute.i = TensorProto.FLOAT16


def _bf16_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with bf16 inputs, outputs and tensors between operators (see the module docstring);
    its fused nodes still fp32 nodes on bf16 tensors, for :func:`_type_fused_nodes`."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    products = spatial_mean_products(inferred)
    # exact 1/(H*W), and the transposed maps the products read: they stay fp32 (the Transpose widens)
    exact = {node.input[1] for node in products} | {node.input[0] for node in products}
    floats = {v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)
              if v.type.tensor_type.elem_type == TensorProto.FLOAT} - exact
    weights, nodes, widened = [], [], {}

    def wide(name: str) -> str:  # the fp32 value of a bf16 tensor, one Cast per tensor
        if name not in widened:
            widened[name] = f"{name}__fp32"
            nodes.append(helper.make_node("Cast", [name], [widened[name]], to=TensorProto.FLOAT))
        return widened[name]

    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.FLOAT and tensor.name not in exact:
            values = numpy_helper.to_array(tensor).astype(NUMPY_TYPES["bf16"])
            weights.append(numpy_helper.from_array(values, tensor.name))
            floats.add(tensor.name)
        else:
            weights.append(tensor)
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ValueError(f"{node.name}: {node.op_type} with a subgraph has no bf16 form here")
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        widens = node.op_type not in BF16_DIRECT or node.op_type == "Transpose" and node.output[0] in exact
        if node.domain != DOMAIN and widens:
            copy.input[:] = [wide(name) if name in floats else name for name in node.input]
            narrowed = [name for name in node.output if name in floats]
            copy.output[:] = [f"{name}__exact" if name in narrowed else name for name in node.output]
            nodes.append(copy)
            for name in narrowed:
                nodes.append(helper.make_node("Cast", [f"{name}__exact"], [name], to=TensorProto.BFLOAT16))
        else:
            nodes.append(copy)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(weights)
    del graph.value_info[:]
    for value in list(graph.input) + list(graph.output):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT and value.name not in exact:
            value.type.tensor_type.elem_type = TensorProto.BFLOAT16
    return inferred


def _typed_op(node: onnx.NodeProto, precision: str) -> str | None:
    """The op type in ``precision`` of an fp32 node of the domain (a fused kind's or a float layer's);
    None for any other node."""
    if node.domain != DOMAIN:
        return None
    kind, layer = kind_of(node.op_type), layer_of(node.op_type)
    if kind is not None and kind[1] == "fp32":
        return kind[0].op_type(precision)
    if layer is not None and layer[1] == "fp32":
        return layer_op_type(layer[0], precision)
    return None


def _type_fused_nodes(model: onnx.ModelProto, precision: str) -> None:
    """The fp32 nodes of the domain (fused groups and float layers) as nodes of ``precision``: op
    type, attributes, function bodies. Their weights are the converter's (or :func:`_bf16_model`'s)
    like every initializer's."""
    functions = {(f.domain, f.name, f.overload): f for f in model.functions}
    declared = op_attributes()
    typed = []
    for node in model.graph.node:
        op_type = _typed_op(node, precision)
        if op_type is None:
            continue
        function = functions.pop((node.domain, node.op_type, node.overload), None)
        node.op_type = op_type
        allowed = set(declared[op_type])
        kept = [a for a in node.attribute if a.name in allowed]
        del node.attribute[:]
        node.attribute.extend(kept)
        if function is not None:
            opset = next((o.version for o in function.opset_import if o.domain in ("", "ai.onnx")), 17)
            body = half_body(list(function.node), precision, list(function.input), function.output[0], opset)
            half = helper.make_function(DOMAIN, node.op_type, list(function.input), list(function.output), body,
                                        list(function.opset_import), attributes=sorted(allowed))
            half.overload = function.overload
            typed.append(half)
    remaining = list(functions.values())
    del model.functions[:]
    model.functions.extend(remaining + typed)


def rounding_depth(model: onnx.ModelProto, shared: bool = True) -> int:
    """The most roundings to a half precision on one path from an input to an output of the fp32
    ``model`` (unfused) computed in it: the input's and each layer's weights' (unless not
    ``shared``: two half computations of the model with the same weights and inputs differ only in
    the others), and per operator that computes (not one of :data:`VALUE_PRESERVING`) its output's.
    The verification's bounds grow with its square root (``fcm.pipeline.verify.derived_bound``)."""
    graph = model.graph
    weights = {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT} if shared else set()
    inputs = {i.name: int(shared) for i in graph.input if i.name not in weights}
    return path_roundings(graph.node, inputs, [o.name for o in graph.output], weights)


def widened(model: onnx.ModelProto) -> onnx.ModelProto:
    """A half-precision model (unfused) computed in fp32 on the same weights and inputs: every fp16
    and bf16 type, Cast and initializer made fp32 (exact: each half value is an fp32 value). How far
    its outputs are from the model's measures how much the model's own roundings of its operators'
    outputs move them."""
    half = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
    copy = onnx.ModelProto()
    copy.CopyFrom(float_io(model))
    graph = copy.graph
    if any(n.domain == DOMAIN for n in graph.node):
        raise ValueError("widened() takes an unfused model")
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.tensor_type.elem_type in half:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    for index, tensor in enumerate(graph.initializer):
        if tensor.data_type in half:
            values = numpy_helper.to_array(tensor).astype(np.float32)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(values, tensor.name))
    inputs = {i.name for i in graph.input}
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type == "Cast" and node.input[0] in inputs:  # the input's rounding stays: the same inputs
            nodes.append(helper.make_node("Cast", [f"{node.output[0]}__half"], [node.output[0]], to=TensorProto.FLOAT))
            node.output[0] = f"{node.output[0]}__half"
            continue
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i in half:
                attribute.i = TensorProto.FLOAT
            elif attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in half:
                attribute.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attribute.t).astype(np.float32),
                                                             attribute.t.name))
    del graph.node[:]
    graph.node.extend(nodes)
    return copy


def path_roundings(nodes, inputs: dict[str, int], outputs: list[str], weights: set[str] = frozenset()) -> int:
    """The most roundings on one path through ``nodes`` (in topological order) to ``outputs``:
    ``inputs`` (name -> roundings it arrives with), one per computing operator, one more where it
    reads one of ``weights`` (rounded once each)."""
    depth = dict(inputs)
    for node in nodes:
        before = max((depth.get(name, 0) for name in node.input if name), default=0)
        own = 0 if node.op_type in VALUE_PRESERVING else 1 + any(name in weights for name in node.input)
        for name in node.output:
            depth[name] = before + own
    return max((depth.get(name, 0) for name in outputs), default=0)
