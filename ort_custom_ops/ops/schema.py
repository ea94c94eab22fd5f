"""The FCM operator set: node builders for every precision, from the op vocabulary.

In (fp32): a description of one fused convolutional module (:class:`FcmSpec`: its stages with weights
in the layout the kernels take, activations, depthwise geometry, residual, tiling). Out: the ONNX
node of our domain that computes it (:meth:`FcmSpec.node`), and the same computation in standard
ONNX operators (:meth:`FcmSpec.reference_nodes`), which is what a model-local function body holds
when none is taken from a model.

Domain ``ai.fcm``, version 1. Op types by kind: ``FusedDwPw``, ``FusedPwDw``, ``FusedPwPw``,
``FusedPwDwPw``. Inputs: ``X`` [N, C, H, W], then per stage ``W`` and ``B`` (pointwise W [F, C],
depthwise W [C, K, K]), and an optional ``S`` [N, C, 1, 1] scaling X's channels (a pointwise first
stage only). Output ``Y`` [N, F, Ho, Wo]. With ``channels_last=1`` X and Y (and so the residual)
are NHWC: X [N, H, W, C], Y [N, Ho, Wo, F]; the weights are the same, and S may also be
[N, 1, 1, C] (the same N x C values); the function body is then the NCHW body between a Transpose
of X (and a Reshape of S) and a Transpose of Y (:func:`channels_last_body`). The attributes are
listed in :data:`ATTRIBUTES` (and ``csrc/spec.h``).

Also in the float precisions, one convolution layer of its own (:class:`ConvLayer`,
:func:`conv_layer_node`): op types ``Conv``, ``Fp16Conv``, ``Bf16Conv``, channels last only. Inputs
``X`` [N, H, W, C], ``W`` [F, C / group, KH, KW] (ONNX's Conv layout), ``B`` [F]; output ``Y``
[N, Ho, Wo, F]: the activation of the convolution plus its bias (dilations 1; ``group`` 1, or C = F
for a depthwise one). Attributes ``kernel_shape``, ``strides``, ``pads`` (ONNX's order), ``group``,
``stage1_activation`` (``stage1_clip``) and ``channels_last`` = 1. Its function body is ONNX's
Conv and the activation between the layout changes of :func:`channels_last_body`, in half precision
made as a fused node's is (below). And the spatial mean of a channels-last map (:class:`MeanLayer`,
:func:`mean_layer_node`): op types ``Mean``, ``Fp16Mean``, ``Bf16Mean``, input ``X`` [N, H, W, C],
output ``Y`` [N, 1, 1, C] (``keepdims`` = 1, the default) or [N, C] (0), attributes ``keepdims`` and
``channels_last`` = 1; its function body is ONNX's ReduceMean over axes [1, 2], in half precision on
the widened map (fp32 sums, the mean rounded once).

In half precision (``FcmSpec.precision`` fp16 or bf16; :func:`half_body`): op types
``Fp16Fused*`` / ``Bf16Fused*``, every input and the output in the element type, the same attributes
less ``allow_tf32``. The function body of an fp16 node is the fp32 body converted by
onnxconverter-common's float16 converter (ONNX Runtime runs fp16 Conv on the CPU and CUDA providers),
its means (:data:`FP32_REDUCTIONS`) computed in fp32 between Casts, as the fp16 kernels sum;
that of a bf16 node widens its inputs to fp32, runs the fp32 body with each operator's output rounded
to bf16 (a Cast to bf16 and back) and returns bf16, because ONNX Runtime has no bf16 Conv kernel on
any provider (nor bf16 arithmetic on the CPU).

In (int8): one layer's (or one fused chain's) integer weights, int32 biases, per-channel weight
scales and the quantization of its input and output (:class:`Quant`, :class:`Requant`,
:class:`Chain`). Out: the ``Q*`` node computing it as TFLite's int8 kernels do, with its weights as
named arrays. Every int8 tensor is NHWC; the kernels are ``csrc/int8_ops.h``. Op types:
``QConv`` (one convolution, standard or depthwise), ``QFused<Stages>`` (a chain of stages, each
requantized to int8 as between TFLite layers, optionally + the residual ADD of the chain's input),
``QAdd`` (TFLite's int8 ADD), ``QMean`` (XNNPACK's int8 MEAN over H and W). Weight layouts
(TFLite's): standard W [F, KH, KW, C]; depthwise [KH, KW, C * M]; pointwise [F, C]; bias int32
[F]. Attributes (``fcm_core.vocabulary.FUSED_ATTRIBUTES["int8"]`` and ``INT8_LAYER_ATTRIBUTES``):
``scheme`` (``fp32``: XNNPACK's float32 rescale; ``fixed_point``: the builtin kernels' Q31
multiplier and rounding shift); the input's ``x_scale``, ``x_zero_point``; per convolution
``w_scales``, ``y_scale``, ``y_zero_point``, ``clamp`` (the fused activation's range in output
integers), prefixed ``stage<i>_`` in a chain, and optionally an activation ``table`` (256 int8
values applied to the requantized value + 128) with ``table_y_scale``, ``table_y_zero_point``;
QConv's geometry, a chain's ``dw_*`` and ``residual`` with ``residual_y_scale``,
``residual_y_zero_point``, ``residual_clamp``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import ml_dtypes
import numpy as np
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper

from fcm_core import vocabulary
from fcm_core.vocabulary import DOMAIN, DOMAIN_VERSION, LAYOUT_ATTRIBUTE, SCHEMES, TILING_KEYS

#: DAG/plan activation names -> attribute spelling, and the clip bounds some imply.
FROM_PLAN_ACTIVATION = vocabulary.FROM_DAG_ACTIVATION
PLAN_CLIP_BOUNDS = vocabulary.DAG_CLIP_BOUNDS

#: fp32 op type and stage sequence of each kind, and the activation spellings (from the vocabulary).
OP_TYPES = {name: kind.op_type("fp32") for name, kind in vocabulary.KINDS.items()}
KIND_STAGES = {name: kind.stages for name, kind in vocabulary.KINDS.items()}
ACTIVATIONS = tuple(vocabulary.ACTIVATIONS)
#: Every attribute an fp32 FCM node may carry (a function body must declare them all).
ATTRIBUTES = vocabulary.expand(vocabulary.FUSED_ATTRIBUTES["fp32"])
#: The float precisions' element types: numpy's, and ONNX's.
NUMPY_TYPES = {"fp32": np.dtype(np.float32), "fp16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16)}
ONNX_TYPES = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
DECLARED = vocabulary.op_attributes()
#: Permutations between the layouts: NCHW -> NHWC and back.
TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)


def is_channels_last(node) -> bool:
    """Whether a fused node (``onnx.NodeProto`` or graphsurgeon node) takes and returns NHWC tensors."""
    if isinstance(node, NodeProto):
        return any(a.name == LAYOUT_ATTRIBUTE and a.i == 1 for a in node.attribute)
    return int(node.attrs.get(LAYOUT_ATTRIBUTE, 0)) == 1


def is_fused_group(node: NodeProto) -> bool:
    """Whether ``node`` is a fused group's node (a fused kind of the domain, in any precision); a
    convolution layer (``Conv``) is not one."""
    return node.domain == DOMAIN and vocabulary.kind_of(node.op_type) is not None


def nchw_dims(shape: Sequence, channels_last: bool) -> tuple:
    """(n, c, h, w) of a feature map's shape in the given layout."""
    n, a, b, c = shape
    return (n, c, a, b) if channels_last else (n, a, b, c)


def fused_node(kind: str, precision: str, inputs: Sequence[str], output: str, name: str, attributes: dict,
               overload: str | None = None) -> NodeProto:
    """The node of a fused kind in a precision; every attribute must be one the vocabulary declares
    for its op type (the kernels refuse the others)."""
    return _domain_node(vocabulary.KINDS[kind].op_type(precision), inputs, output, name, attributes, overload)


def conv_layer_node(precision: str, inputs: Sequence[str], output: str, name: str, attributes: dict,
                    overload: str | None = None) -> NodeProto:
    """The float ``Conv`` layer's node (:class:`ConvLayer`) in a precision (``Conv``, ``Fp16Conv``,
    ``Bf16Conv``): ``inputs`` X, W, B; every attribute must be one the vocabulary declares for it."""
    if precision not in vocabulary.FLOAT_PRECISIONS:
        raise ValueError(f"no float layer in {precision!r} (one of {', '.join(vocabulary.FLOAT_PRECISIONS)})")
    return _domain_node(vocabulary.layer_op_type("Conv", precision), inputs, output, name, attributes, overload)


def mean_layer_node(precision: str, x: str, y: str, name: str, keepdims: bool = True,
                    overload: str | None = None) -> NodeProto:
    """The float ``Mean`` layer's node (:class:`MeanLayer`) in a precision (``Mean``, ``Fp16Mean``,
    ``Bf16Mean``): the mean over H and W of ``x`` [N, H, W, C]."""
    return MeanLayer(keepdims, precision).node([x], y, name, overload)


def _domain_node(op_type: str, inputs: Sequence[str], output: str, name: str, attributes: dict,
                 overload: str | None) -> NodeProto:
    unknown = sorted(set(attributes) - set(DECLARED[op_type]))
    if unknown:
        raise ValueError(f"{op_type} has no attributes {unknown} in the op vocabulary")
    node = helper.make_node(op_type, list(inputs), [output], name=name, domain=DOMAIN, **attributes)
    if overload:
        node.overload = overload
    return node


@dataclass
class Activation:
    name: str = "none"  # one of ACTIVATIONS
    clip: tuple[float, float] | None = None  # bounds for "clip"

    def __post_init__(self):
        if self.name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.name!r}")
        info = vocabulary.ACTIVATIONS[self.name]
        if info.kernel != info.name:  # an alias of a kernel activation with fixed bounds (relu6: clip to [0, 6])
            self.name, self.clip = info.kernel, next(iter(info.dag.values()))
        if self.name == "clip" and self.clip is None:
            raise ValueError("a clip activation needs its bounds")

    def attributes(self, prefix: str) -> dict:
        out = {f"{prefix}_activation": self.name}
        if self.name == "clip":
            out[f"{prefix}_clip"] = [float(self.clip[0]), float(self.clip[1])]
        return out


@dataclass
class StageSpec:
    type: str  # "pw" or "dw"
    weight: np.ndarray  # pw [F, C], dw [C, K, K]
    bias: np.ndarray
    activation: Activation = field(default_factory=Activation)
    stride: int = 1  # dw
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # dw: top, left, bottom, right (ONNX order)

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1] if self.type == "pw" else self.weight.shape[0])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[1]) if self.type == "dw" else 1


@dataclass
class FcmSpec:
    kind: str
    stages: list[StageSpec]
    residual: bool = False
    residual_activation: Activation = field(default_factory=Activation)
    has_scale: bool = False  # an S input multiplies X's channels
    tiling: dict = field(default_factory=dict)
    channels_last: bool = False  # X and Y NHWC (see the module docstring)
    precision: str = "fp32"  # fp32, fp16 or bf16: the element type of every input and of the output

    def __post_init__(self):
        if self.kind not in OP_TYPES:
            raise ValueError(f"unknown FCM kind {self.kind!r}")
        if tuple(s.type for s in self.stages) != KIND_STAGES[self.kind]:
            raise ValueError(f"{self.kind} needs stages {KIND_STAGES[self.kind]}")
        if self.precision not in NUMPY_TYPES:
            raise ValueError(f"unknown precision {self.precision!r} (one of {', '.join(NUMPY_TYPES)})")

    @property
    def op_type(self) -> str:
        return vocabulary.KINDS[self.kind].op_type(self.precision)

    @property
    def depthwise(self) -> StageSpec | None:
        return next((s for s in self.stages if s.type == "dw"), None)

    def attributes(self) -> dict:
        attrs: dict = {}
        for index, stage in enumerate(self.stages, 1):
            attrs.update(stage.activation.attributes(f"stage{index}"))
        dw = self.depthwise
        if dw is not None:
            attrs.update(dw_kernel=dw.kernel, dw_stride=dw.stride, dw_pads=[int(p) for p in dw.pads])
        if self.residual:
            attrs["residual"] = 1
            attrs.update(self.residual_activation.attributes("residual"))
        if self.channels_last:
            attrs[LAYOUT_ATTRIBUTE] = 1
        for key in TILING_KEYS:
            if self.tiling.get(key):
                attrs[key] = int(self.tiling[key])
        return attrs

    def input_names(self, prefix: str, x: str, scale: str | None = None) -> list[str]:
        names = [x]
        for index in range(1, len(self.stages) + 1):
            names += [f"{prefix}W{index}", f"{prefix}B{index}"]
        if self.has_scale:
            names.append(scale or f"{prefix}S")
        return names

    def node(self, inputs: Sequence[str], output: str, name: str, overload: str | None = None) -> NodeProto:
        return fused_node(self.kind, self.precision, inputs, output, name, self.attributes(), overload)

    def weights(self, prefix: str) -> dict[str, np.ndarray]:
        """The weights and biases in the kernels' layout and the precision's element type (rounded to nearest even)."""
        arrays = {}
        dtype = NUMPY_TYPES[self.precision]
        for index, stage in enumerate(self.stages, 1):
            arrays[f"{prefix}W{index}"] = np.ascontiguousarray(np.asarray(stage.weight, np.float32).astype(dtype))
            arrays[f"{prefix}B{index}"] = np.ascontiguousarray(np.asarray(stage.bias, np.float32).astype(dtype))
        return arrays

    def reference_nodes(self, x: str, weight_names: Sequence[str], y: str, scale: str | None = None, prefix: str = "r") -> list[NodeProto]:
        """The same computation in standard ONNX (opset >= 14): reshapes of the kernel-layout
        weights, Conv, the activations, the residual Add; between the layout changes of
        :func:`channels_last_body` when the node is channels last; in the spec's precision
        (:func:`half_body`). ``weight_names``: W1, B1, W2, B2, ..."""
        body = self._nchw_nodes(x, weight_names, y, scale, prefix)
        body = channels_last_body(body, x, y, scale, prefix) if self.channels_last else body
        inputs = [x, *weight_names] + ([scale] if scale else [])
        return body if self.precision == "fp32" else half_body(body, self.precision, inputs, y)

    def _nchw_nodes(self, x: str, weight_names: Sequence[str], y: str, scale: str | None, prefix: str) -> list[NodeProto]:
        nodes: list[NodeProto] = []
        current = x
        if self.has_scale:
            nodes.append(helper.make_node("Mul", [x, scale], [f"{prefix}_scaled"]))
            current = f"{prefix}_scaled"
        for index, stage in enumerate(self.stages, 1):
            w, b = weight_names[2 * index - 2], weight_names[2 * index - 1]
            shape = [stage.out_channels, stage.in_channels, 1, 1] if stage.type == "pw" else [stage.out_channels, 1, stage.kernel, stage.kernel]
            nodes.append(helper.make_node("Constant", [], [f"{prefix}_shape{index}"], value_ints=shape))
            nodes.append(helper.make_node("Reshape", [w, f"{prefix}_shape{index}"], [f"{prefix}_w{index}"]))
            conv_out = f"{prefix}_conv{index}"
            attrs = {}
            if stage.type == "dw":
                attrs = dict(group=stage.out_channels, kernel_shape=[stage.kernel, stage.kernel],
                             strides=[stage.stride, stage.stride], pads=[stage.pads[0], stage.pads[1], stage.pads[2], stage.pads[3]])
            nodes.append(helper.make_node("Conv", [current, f"{prefix}_w{index}", b], [conv_out], **attrs))
            current = activation_nodes(nodes, stage.activation, conv_out, f"{prefix}_act{index}")
        if self.residual:
            nodes.append(helper.make_node("Add", [current, x], [f"{prefix}_sum"]))
            current = activation_nodes(nodes, self.residual_activation, f"{prefix}_sum", f"{prefix}_ract")
        nodes.append(helper.make_node("Identity", [current], [y]))
        return nodes


def channels_last_body(body: list[NodeProto], x: str, y: str, scale: str | None = None,
                       prefix: str = "fcm") -> list[NodeProto]:
    """A function body computing on NCHW tensors ``x`` (and ``scale``) into ``y``, made to take and
    return NHWC ones: ``x`` transposed to NCHW first, ``scale`` (N x C values, [N, C, 1, 1] or
    [N, 1, 1, C]) reshaped to [N, C, 1, 1], and the result transposed back to ``y``."""
    rename = {x: f"{prefix}_x_nchw", y: f"{prefix}_y_nchw"}
    head = [helper.make_node("Transpose", [x], [rename[x]], perm=list(TO_NCHW))]
    if scale is not None:
        rename[scale] = f"{prefix}_s_nchw"
        head += [helper.make_node("Constant", [], [f"{prefix}_s_shape"], value_ints=[0, -1, 1, 1]),
                 helper.make_node("Reshape", [scale, f"{prefix}_s_shape"], [rename[scale]])]
    return head + renamed_nodes(body, rename) + [helper.make_node("Transpose", [rename[y]], [y], perm=list(TO_NHWC))]


def renamed_nodes(nodes: Sequence[NodeProto], names: dict[str, str]) -> list[NodeProto]:
    """Copies of ``nodes`` with the inputs and outputs named in ``names`` renamed."""
    out = []
    for node in nodes:
        copy = NodeProto()
        copy.CopyFrom(node)
        copy.input[:] = [names.get(name, name) for name in copy.input]
        copy.output[:] = [names.get(name, name) for name in copy.output]
        out.append(copy)
    return out


def activation_nodes(nodes: list[NodeProto], activation: Activation, x: str, prefix: str) -> str:
    """Append standard ONNX nodes applying ``activation`` to ``x``; return the result's name."""
    form = vocabulary.ACTIVATIONS[activation.name].onnx
    if not form:
        return x
    out = f"{prefix}_out"
    if form == "Clip":
        for bound, value in (("lo", activation.clip[0]), ("hi", activation.clip[1])):  # tensors: a converter retypes them
            nodes.append(helper.make_node("Constant", [], [f"{prefix}_{bound}"],
                                          value=helper.make_tensor(f"{prefix}_{bound}", TensorProto.FLOAT, [], [float(value)])))
        nodes.append(helper.make_node("Clip", [x, f"{prefix}_lo", f"{prefix}_hi"], [out]))
    elif form.startswith("x*"):  # x * op(x)
        gate = f"{prefix}_{form[2:].lower()[:3]}"
        nodes.append(helper.make_node(form[2:], [x], [gate]))
        nodes.append(helper.make_node("Mul", [x, gate], [out]))
    else:
        nodes.append(helper.make_node(form, [x], [out]))
    return out


def make_function(spec: FcmSpec, body: list[NodeProto], inputs: Sequence[str], output: str, overload: str,
                  opset: int):
    """A model-local function for one fused node (:func:`domain_function`)."""
    return domain_function(spec.op_type, body, inputs, output, overload, opset)


def domain_function(op_type: str, body: list[NodeProto], inputs: Sequence[str], output: str, overload: str,
                    opset: int):
    """A model-local function for one node of the domain: its op type, its own body (told apart from
    other nodes' by ``overload``), every attribute the vocabulary declares for the op type."""
    function = helper.make_function(DOMAIN, op_type, list(inputs), [output], body,
                                    [helper.make_opsetid("", opset)], attributes=list(DECLARED[op_type]))
    function.overload = overload
    return function


#: Operators that move values without arithmetic: a rounded computation does not round their outputs.
VALUE_PRESERVING = ("Constant", "Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten", "Pad",
                    "Concat", "Shape", "Gather", "Slice", "Split", "Cast")


def rounded_nodes(nodes: Sequence[NodeProto], precision: str, keep: Sequence[str] = (),
                  outputs: Sequence[str] = ()) -> list[NodeProto]:
    """``nodes`` (fp32) with the output of each arithmetic operator (not in :data:`VALUE_PRESERVING`
    nor ``keep``) rounded to ``precision``: a Cast to it and back to fp32 after it. The tensors named
    in ``outputs`` are returned in ``precision`` instead (a Cast to it, named as the tensor)."""
    element = ONNX_TYPES[precision]
    out: list[NodeProto] = []
    for node in nodes:
        copy = NodeProto()
        copy.CopyFrom(node)
        targets = list(copy.output)
        rounded = copy.op_type not in VALUE_PRESERVING and copy.op_type not in keep
        cast = [name for name in targets if rounded or name in outputs]
        copy.output[:] = [f"{name}_exact" if name in cast else name for name in targets]
        out.append(copy)
        for name in cast:
            if name in outputs:
                out.append(helper.make_node("Cast", [f"{name}_exact"], [name], to=element))
            else:
                out.append(helper.make_node("Cast", [f"{name}_exact"], [f"{name}_rounded"], to=element))
                out.append(helper.make_node("Cast", [f"{name}_rounded"], [name], to=TensorProto.FLOAT))
    return out


#: Operators an fp16 function body computes in fp32 (between Casts): sums that fp16 would round at
#: every step.
FP32_REDUCTIONS = ("ReduceMean",)


def half_body(body: list[NodeProto], precision: str, inputs: Sequence[str], output: str,
              opset: int = 17) -> list[NodeProto]:
    """An fp32 function body (formal ``inputs``, ``output``; standard operators of ``opset``) made
    to take and return ``precision`` (fp16 or bf16; see the module docstring)."""
    if precision == "fp16":
        return _fp16_body(body, inputs, output, opset)
    if precision != "bf16":
        raise ValueError(f"no half-precision body for {precision!r}")
    widened = {name: f"{name}_fp32" for name in inputs}
    casts = [helper.make_node("Cast", [name], [wide], to=TensorProto.FLOAT) for name, wide in widened.items()]
    # (no body node writes a formal input, so only reads are renamed)
    return casts + rounded_nodes(renamed_nodes(body, widened), precision, outputs=[output])


def _fp16_body(body: list[NodeProto], inputs: Sequence[str], output: str, opset: int) -> list[NodeProto]:
    """The fp32 body through onnxconverter-common's float16 converter (only :data:`FP32_REDUCTIONS`
    kept in fp32)."""
    import warnings

    from onnxconverter_common import float16

    graph = helper.make_graph(list(body), "body", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    with warnings.catch_warnings():  # it warns of each value it clamps to fp16's range, and of none that matter here
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(model, keep_io_types=False, op_block_list=list(FP32_REDUCTIONS),
                                                     check_fp16_ready=False)
    return list(converted.graph.node)


# --- float convolution layers --------------------------------------------------------------------

#: The formal inputs and output of a ``Conv`` layer's function.
CONV_LAYER_INPUTS = ("X", "W", "B")
CONV_LAYER_AFFINE_INPUTS = ("XS", "XB")  # an input scale and shift ([C] or [1]: a model's input normalization)
CONV_LAYER_OUTPUT = "Y"


class FloatLayer:
    """What the float layers (``fcm_core.vocabulary.FLOAT_LAYER_ATTRIBUTES``) share: ``layer``, the
    table's name of it, and ``precision``, which names the op type."""

    layer = ""
    precision: str

    def __post_init__(self):
        if self.precision not in NUMPY_TYPES:
            raise ValueError(f"unknown precision {self.precision!r} (one of {', '.join(NUMPY_TYPES)})")

    @property
    def op_type(self) -> str:
        return vocabulary.layer_op_type(self.layer, self.precision)


@dataclass
class ConvLayer(FloatLayer):
    """One float ``Conv`` layer (``fcm_core.vocabulary.FLOAT_LAYER_ATTRIBUTES``): X [N, H, W, C],
    W [F, C / group, KH, KW] (ONNX's Conv layout), B [F] -> act(conv(X, W) + B) [N, Ho, Wo, F], all in
    the precision's element type; dilations 1, ``group`` 1 or C (= F, depthwise). ``input_affine``: two
    more inputs, XS and XB ([C] or [1]), and the convolution reads X * XS + XB (zero outside the image)."""

    kernel_shape: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right (ONNX order)
    group: int = 1
    activation: Activation = field(default_factory=Activation)
    precision: str = "fp32"
    input_affine: bool = False
    layer = "Conv"

    @property
    def inputs(self) -> tuple[str, ...]:
        """Its function's formal inputs."""
        return CONV_LAYER_INPUTS + (CONV_LAYER_AFFINE_INPUTS if self.input_affine else ())

    def conv_attributes(self) -> dict:
        """The attributes it shares with ONNX's Conv."""
        return dict(kernel_shape=[int(k) for k in self.kernel_shape], strides=[int(s) for s in self.strides],
                    pads=[int(p) for p in self.pads], group=int(self.group))

    def attributes(self) -> dict:
        return {**self.conv_attributes(), **self.activation.attributes("stage1"), LAYOUT_ATTRIBUTE: 1}

    def node(self, inputs: Sequence[str], output: str, name: str, overload: str | None = None) -> NodeProto:
        return conv_layer_node(self.precision, inputs, output, name, self.attributes(), overload)

    def reference_nodes(self, x: str, w: str, b: str, y: str, prefix: str = "fcm",
                        affine: Sequence[str] = ()) -> list[NodeProto]:
        """The same computation in standard ONNX: ONNX's Conv and the activation on NCHW tensors,
        between the layout changes of :func:`channels_last_body`, in the layer's precision
        (:func:`half_body`); with ``input_affine``, X * XS + XB first (``affine``: their names)."""
        head, conv_input = [], x
        if self.input_affine:
            scale, shift = affine
            head = [helper.make_node("Mul", [x, scale], [f"{prefix}_x_scaled"]),
                    helper.make_node("Add", [f"{prefix}_x_scaled", shift], [f"{prefix}_x_affine"])]
            conv_input = f"{prefix}_x_affine"
        nodes = [helper.make_node("Conv", [conv_input, w, b], [f"{prefix}_conv"], **self.conv_attributes())]
        current = activation_nodes(nodes, self.activation, f"{prefix}_conv", f"{prefix}_act")
        nodes.append(helper.make_node("Identity", [current], [y]))
        body = head + channels_last_body(nodes, conv_input, y, prefix=prefix)
        inputs = [x, w, b, *(affine if self.input_affine else ())]
        return body if self.precision == "fp32" else half_body(body, self.precision, inputs, y)

    def function(self, overload: str, opset: int):
        """The model-local function of one such node (formal inputs :attr:`inputs`)."""
        body = self.reference_nodes(*CONV_LAYER_INPUTS, CONV_LAYER_OUTPUT, affine=CONV_LAYER_AFFINE_INPUTS)
        return domain_function(self.op_type, body, self.inputs, CONV_LAYER_OUTPUT, overload, opset)


# --- float spatial-mean layers -------------------------------------------------------------------

#: The formal input and output of a ``Mean`` layer's function.
MEAN_LAYER_INPUT = "X"
MEAN_LAYER_OUTPUT = "Y"
MEAN_AXES = (1, 2)  # H and W of an NHWC map


@dataclass
class MeanLayer(FloatLayer):
    """One float ``Mean`` layer (``fcm_core.vocabulary.FLOAT_LAYER_ATTRIBUTES``): X [N, H, W, C] ->
    the mean over H and W, Y [N, 1, 1, C] (``keepdims``) or [N, C], in the precision's element type;
    the sums in fp32 and the mean rounded once."""

    keepdims: bool = True
    precision: str = "fp32"
    layer = "Mean"

    def attributes(self) -> dict:
        return {"keepdims": int(self.keepdims), LAYOUT_ATTRIBUTE: 1}

    def node(self, inputs: Sequence[str], output: str, name: str, overload: str | None = None) -> NodeProto:
        return _domain_node(self.op_type, inputs, output, name, self.attributes(), overload)

    def reference_nodes(self, x: str, y: str, opset: int, prefix: str = "fcm") -> list[NodeProto]:
        """The same computation in standard ONNX of ``opset``: ReduceMean over axes [1, 2] (an input
        from opset 18, an attribute before), in half precision on X widened to fp32 with the mean
        rounded once (:func:`half_body`)."""
        if opset >= 18:
            axes = f"{prefix}_axes"
            body = [helper.make_node("Constant", [], [axes], value=helper.make_tensor(axes, TensorProto.INT64, [2], MEAN_AXES)),
                    helper.make_node("ReduceMean", [x, axes], [y], keepdims=int(self.keepdims))]
        else:
            body = [helper.make_node("ReduceMean", [x], [y], axes=list(MEAN_AXES), keepdims=int(self.keepdims))]
        return body if self.precision == "fp32" else half_body(body, self.precision, [x], y, opset)

    def function(self, overload: str, opset: int):
        """The model-local function of one such node."""
        body = self.reference_nodes(MEAN_LAYER_INPUT, MEAN_LAYER_OUTPUT, opset)
        return domain_function(self.op_type, body, [MEAN_LAYER_INPUT], MEAN_LAYER_OUTPUT, overload, opset)


# --- int8 ----------------------------------------------------------------------------------------

INT8_OPSET = 17  # the standard operators around the int8 ops (Reshape, Pad, Softmax, QuantizeLinear, ...)
IR_VERSION = 10  # read by every onnxruntime this project supports


def make_model(graph: GraphProto) -> ModelProto:
    """A model of ``graph`` importing the standard opset and the FCM domain."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", INT8_OPSET), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)],
                              producer_name="fcm")
    model.ir_version = IR_VERSION
    return model


@dataclass(frozen=True)
class Quant:
    """A tensor's quantization: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    def attributes(self, prefix: str) -> dict:
        return {f"{prefix}scale": float(self.scale), f"{prefix}zero_point": int(self.zero_point)}

    def pair(self) -> tuple[float, int]:
        return float(self.scale), int(self.zero_point)


@dataclass
class Requant:
    """What a convolution's accumulators become: per-channel weight scales, the output tensor's
    quantization and the clamp of its fused activation (output integers)."""

    w_scales: np.ndarray
    y: Quant
    clamp: tuple[int, int] = (-128, 127)
    table: np.ndarray | None = None  # an activation on the int8 output: 256 int8 values, index value + 128
    table_y: Quant | None = None  # the quantization of the table's output

    def attributes(self, prefix: str) -> dict:
        attrs = {f"{prefix}w_scales": [float(s) for s in np.asarray(self.w_scales, np.float32).ravel()],
                 **self.y.attributes(f"{prefix}y_"), f"{prefix}clamp": [int(self.clamp[0]), int(self.clamp[1])]}
        if self.table is not None:
            attrs[f"{prefix}table"] = [int(v) for v in np.asarray(self.table).ravel()]
            attrs.update(self.table_y.attributes(f"{prefix}table_y_"))
        return attrs


def _check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown requantization scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    return scheme


def conv_node(name: str, x: str, y: str, x_quant: Quant, weights: np.ndarray, bias: np.ndarray | None,
              requant: Requant, *, depthwise: bool = False, strides=(1, 1), dilations=(1, 1), pads=(0, 0, 0, 0),
              scheme: str = "fp32") -> tuple[NodeProto, dict[str, np.ndarray]]:
    """One convolution layer as a ``QConv`` node; ``weights`` in the layout above, ``pads`` top,
    left, bottom, right."""
    weights = np.ascontiguousarray(weights, np.int8)
    kernel = weights.shape[:2] if depthwise else (weights.shape[1:3] if weights.ndim == 4 else (1, 1))
    arrays = {f"{name}_W": weights}
    inputs = [x, f"{name}_W"]
    if bias is not None:
        arrays[f"{name}_B"] = np.ascontiguousarray(bias, np.int32)
        inputs.append(f"{name}_B")
    node = helper.make_node(
        "QConv", inputs, [y], name=name, domain=DOMAIN, scheme=_check_scheme(scheme), depthwise=int(depthwise),
        kernel_shape=[int(k) for k in kernel], strides=[int(s) for s in strides], dilations=[int(d) for d in dilations],
        pads=[int(p) for p in pads], **x_quant.attributes("x_"), **requant.attributes(""))
    return node, arrays


@dataclass
class ChainStage:
    type: str  # "pw" [F, C] or "dw" [K, K, C]
    weights: np.ndarray
    bias: np.ndarray
    requant: Requant
    stride: int = 1  # dw
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # dw: top, left, bottom, right


@dataclass
class Chain:
    """A fused chain: its stages (a kind of ``KIND_STAGES``), its input's quantization, and the
    residual ADD (output quantization and clamp) when the chain adds its input to its output."""

    kind: str
    x: Quant
    stages: list[ChainStage] = field(default_factory=list)
    residual: Requant | None = None  # w_scales unused

    def node(self, name: str, x: str, y: str, scheme: str = "fp32") -> tuple[NodeProto, dict[str, np.ndarray]]:
        if tuple(s.type for s in self.stages) != KIND_STAGES[self.kind]:
            raise ValueError(f"a {self.kind} chain needs stages {KIND_STAGES[self.kind]}")
        attrs = {"scheme": _check_scheme(scheme), **self.x.attributes("x_")}
        inputs, arrays = [x], {}
        for index, stage in enumerate(self.stages, 1):
            attrs.update(stage.requant.attributes(f"stage{index}_"))
            if stage.type == "dw":
                attrs.update(dw_kernel=int(stage.weights.shape[0]), dw_stride=int(stage.stride),
                             dw_pads=[int(p) for p in stage.pads])
            arrays[f"{name}_W{index}"] = np.ascontiguousarray(stage.weights, np.int8)
            arrays[f"{name}_B{index}"] = np.ascontiguousarray(stage.bias, np.int32)
            inputs += [f"{name}_W{index}", f"{name}_B{index}"]
        if self.residual is not None:
            attrs.update(residual=1, **self.residual.y.attributes("residual_y_"),
                         residual_clamp=[int(c) for c in self.residual.clamp])
        return fused_node(self.kind, "int8", inputs, y, name, attrs), arrays


def add_node(name: str, a: str, b: str, y: str, a_quant: Quant, b_quant: Quant, y_quant: Quant,
             clamp: tuple[int, int] = (-128, 127)) -> NodeProto:
    """TFLite's int8 ADD of two tensors of one shape."""
    return helper.make_node("QAdd", [a, b], [y], name=name, domain=DOMAIN, **a_quant.attributes("a_"),
                            **b_quant.attributes("b_"), **y_quant.attributes("y_"), clamp=[int(c) for c in clamp])


def mean_node(name: str, x: str, y: str, x_quant: Quant, y_quant: Quant, keepdims: bool = False) -> NodeProto:
    """XNNPACK's int8 MEAN over H and W of [N, H, W, C]: [N, C] (or [N, 1, 1, C] with ``keepdims``)."""
    return helper.make_node("QMean", [x], [y], name=name, domain=DOMAIN, keepdims=int(keepdims),
                            **x_quant.attributes("x_"), **y_quant.attributes("y_"))
