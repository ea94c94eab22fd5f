"""The FCM op vocabulary: the one table of what a fused node can be.

In: nothing (this is the table). Out: the fused-op kinds (stage sequences, op type per
precision), the activations (attribute spelling, the DAG's spellings and standalone operators,
their standard ONNX form, their int8 form), the epilogues, the depthwise geometry the kernels take,
and the node attributes of every op per precision.

Who reads it: the planner builds its candidates from :data:`KINDS` and :data:`ACTIVATIONS`; the
lowering reads activations from ONNX graphs and writes nodes by it (``ort_custom_ops.lowering``,
``ort_custom_ops.ops.schema``); ``ort_custom_ops.ops.header`` writes the C++ header the kernels
are built with (``ort_custom_ops/csrc/vocabulary.h``), whose attribute reader refuses names this
table does not declare; a test checks the built library against this module. A precision (fp32,
fp16, bf16, int8) is a column here, not a second set of tables; the float precisions' two layouts
are one node attribute (:data:`LAYOUT_ATTRIBUTE`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DOMAIN = "ai.fcm"
DOMAIN_VERSION = 1

STAGE_TYPES = ("pw", "dw")  # pointwise [F, C] and depthwise [C, K, K] convolutions
DW_KERNELS = (3, 5, 7)
DW_STRIDES = (1, 2)


@dataclass(frozen=True)
class Precision:
    name: str
    op_prefix: str  # op types are <prefix>Fused<Stages>
    layouts: tuple[str, ...]  # the feature maps' layouts its ops take; more than one: chosen per node by LAYOUT_ATTRIBUTE
    element: str  # the feature maps' element type (ONNX's name of it: float, float16, bfloat16, int8)
    unit_roundoff: float = 0.0  # a float element's relative rounding error (half an ULP at 1): 2^-(mantissa bits + 1)


#: fp16 and bf16 ops compute what the fp32 ops do, with every input (X, weights, biases, scale) and
#: every stage's output (after its activation; after the residual add and its activation) in the
#: element type, rounded to nearest even, and fp32 accumulation.
PRECISIONS = {p.name: p for p in (Precision("fp32", "", ("NCHW", "NHWC"), "float", 2.0 ** -24),
                                  Precision("fp16", "Fp16", ("NCHW", "NHWC"), "float16", 2.0 ** -11),
                                  Precision("bf16", "Bf16", ("NCHW", "NHWC"), "bfloat16", 2.0 ** -8),
                                  Precision("int8", "Q", ("NHWC",), "int8"))}
#: The precisions whose fused ops are the float chain (one signature over an element type).
FLOAT_PRECISIONS = tuple(name for name, p in PRECISIONS.items() if p.unit_roundoff)

#: The node attribute that chooses a layout where a precision has two: 0 (the default) the first
#: (NCHW: X [N, C, H, W], Y [N, F, Ho, Wo]), 1 the second (NHWC, channels last: X [N, H, W, C],
#: Y [N, Ho, Wo, F], the residual X too). The weights are the same in both; so is the channel scale
#: S (N x C values: [N, C, 1, 1], or [N, 1, 1, C] with channels last).
LAYOUT_ATTRIBUTE = "channels_last"


@dataclass(frozen=True)
class Kind:
    """A fused-op kind: its stage sequence names it (``pwdwpw``) and its op types
    (``FusedPwDwPw``, ``QFusedPwDwPw``), one per precision it has ops in."""

    stages: tuple[str, ...]
    precisions: tuple[str, ...] = tuple(PRECISIONS)

    @property
    def name(self) -> str:
        return "".join(self.stages)

    @property
    def scale_input(self) -> int:
        """Where an op's channel scale S is among its inputs, when it has one: after X and each
        stage's weights and bias."""
        return 1 + 2 * len(self.stages)

    def op_type(self, precision: str = "fp32") -> str:
        if precision not in self.precisions:
            raise ValueError(f"the {self.name} kind has no {precision} op (it has {', '.join(self.precisions)} ones)")
        return PRECISIONS[precision].op_prefix + "Fused" + "".join(s.capitalize() for s in self.stages)


#: ``pw`` is one pointwise stage whose input is scaled per channel (a squeeze-and-excitation block's
#: projection, S the excitation): the scale needs the whole depthwise output before it, so no longer
#: chain takes that convolution, and fused it saves the scaling's pass over the block's widest
#: tensor; or one no longer group took, with an activation that would be a pass of its own (a
#: network's 1x1 head). Its ops are channels-last, float precisions only.
KINDS = {k.name: k for k in (Kind(("dw", "pw")), Kind(("pw", "dw")), Kind(("pw", "pw")), Kind(("pw", "dw", "pw")),
                             Kind(("pw",), FLOAT_PRECISIONS))}
MAX_STAGES = max(len(k.stages) for k in KINDS.values())
#: Kinds of one stage (channels-last only): a window of a chain only where that stage takes a
#: channel scale, else the planner's second pass over what a chain's selection left
#: (``planner.groups.lone_pointwise``).
SINGLE_STAGE_KINDS = tuple(name for name, k in KINDS.items() if len(k.stages) == 1)


@dataclass(frozen=True)
class ActivationInfo:
    """One activation a stage's epilogue applies.

    ``name``: the attribute spelling (``stage<i>_activation``); ``kernel``: what the kernels run
    (``relu6`` is a clip to [0, 6]); ``dag``: the DAG's fused-activation spellings that mean it,
    each with the clip bounds it implies; ``standalone``: DAG operators that apply it on their own
    (operator -> spelling); ``onnx``: its standard ONNX form: ``"Op"`` (one unary operator),
    ``"Clip"`` (with bounds), ``"x*Op"`` (x times a unary operator of x), ``""`` (identity);
    ``int8``: how the int8 ops apply it: ``"range"`` (a clamp of the requantized value),
    ``"table"`` (a 256-entry table on the int8 output), or None."""

    name: str
    kernel: str
    dag: dict[str, tuple[float, float] | None]
    standalone: dict[str, str] = field(default_factory=dict)
    onnx: str = ""
    int8: str | None = None


ACTIVATIONS = {a.name: a for a in (
    ActivationInfo("none", "none", {"0": None}, int8="range"),
    ActivationInfo("relu", "relu", {"RELU": None}, {"relu": "RELU"}, "Relu", "range"),
    ActivationInfo("relu6", "clip", {"RELU6": (0.0, 6.0)}, {"relu6": "RELU6"}, "Clip", "range"),
    ActivationInfo("clip", "clip", {"CLIP": None, "RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0)},
                   {"relu_n1_to_1": "RELU_N1_TO_1", "relu_0_to_1": "RELU_0_TO_1"}, "Clip", "range"),
    ActivationInfo("hard_swish", "hard_swish", {"HARD_SWISH": None}, {"hard_swish": "HARD_SWISH"}, "HardSwish"),
    ActivationInfo("swish", "swish", {"SWISH": None}, {}, "x*Sigmoid", "table"),
    ActivationInfo("sigmoid", "sigmoid", {"SIGMOID": None}, {"logistic": "SIGMOID"}, "Sigmoid", "table"),
)}

#: What the kernels run, in the order of the C++ ``Act`` enum.
KERNEL_ACTIVATIONS = tuple(dict.fromkeys(a.kernel for a in ACTIVATIONS.values()))
#: The DAG's activation spellings the fused ops take -> attribute spelling, and the clip bounds some imply.
FROM_DAG_ACTIVATION = {spelling: a.name for a in ACTIVATIONS.values() for spelling in a.dag}
DAG_CLIP_BOUNDS = {spelling: bounds for a in ACTIVATIONS.values() if a.name == "clip"
                   for spelling, bounds in a.dag.items() if bounds is not None}
#: DAG operators that apply an activation on their own -> the DAG's spelling of it.
STANDALONE_ACTIVATIONS = {op: spelling for a in ACTIVATIONS.values() for op, spelling in a.standalone.items()}

#: What may follow a stage besides its activation, and which precisions take it.
EPILOGUES = {
    "residual": ("fp32", "fp16", "bf16", "int8"),  # the group's input added to the last stage's output, then residual_activation
    "channel_scale": ("fp32", "fp16", "bf16"),  # an input S (N x C values) multiplying X's channels before a first pointwise stage
    "activation_table": ("int8",),  # stage<i>_table: 256 int8 values applied to a stage's int8 output
}

#: The attributes of the float chain ops (fp32, fp16, bf16): what they compute, then the launch plans
#: and the planner's tiling. fp32 adds allow_tf32 (half-precision tensor cores take their operands as
#: they are).
_CHAIN_ATTRIBUTES = ("stage{i}_activation", "stage{i}_clip", "dw_kernel", "dw_stride", "dw_pads", "residual",
                     "residual_activation", "residual_clip", LAYOUT_ATTRIBUTE)
_PLAN_ATTRIBUTES = ("cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch")
#: The attributes of each op, per precision. ``stage{i}_...`` stands for stage1_... to stage3_...
FUSED_ATTRIBUTES = {
    "fp32": _CHAIN_ATTRIBUTES + ("allow_tf32",) + _PLAN_ATTRIBUTES,
    "fp16": _CHAIN_ATTRIBUTES + _PLAN_ATTRIBUTES,
    "bf16": _CHAIN_ATTRIBUTES + _PLAN_ATTRIBUTES,
    "int8": ("scheme", "x_scale", "x_zero_point", "stage{i}_w_scales", "stage{i}_y_scale", "stage{i}_y_zero_point",
             "stage{i}_clamp", "stage{i}_table", "stage{i}_table_y_scale", "stage{i}_table_y_zero_point",
             "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_y_scale", "residual_y_zero_point",
             "residual_clamp"),
}
#: The int8 layers that are not fused chains, and their attributes.
INT8_LAYER_ATTRIBUTES = {
    "QConv": ("scheme", "depthwise", "kernel_shape", "strides", "dilations", "pads", "x_scale", "x_zero_point",
              "w_scales", "y_scale", "y_zero_point", "clamp", "table", "table_y_scale", "table_y_zero_point"),
    "QAdd": ("a_scale", "a_zero_point", "b_scale", "b_zero_point", "y_scale", "y_zero_point", "clamp"),
    "QMean": ("keepdims", "x_scale", "x_zero_point", "y_scale", "y_zero_point"),
}
#: The convolution layers the float precisions also run on their own, channels-last: op type
#: <prefix><layer> (``Conv``, ``Fp16Conv``, ``Bf16Conv``, as int8's ``QConv``). ``Conv`` is one
#: KxK convolution (standard, or depthwise: ``group`` = channels) with its bias and activation, for
#: the convolutions no group takes, such as a network's stem (few input channels, so a direct
#: convolution on the CUDA cores, bias and activation in its epilogue, in one pass over memory).
#: X [N, H, W, C], W [F, C / group, K, K] (ONNX's Conv layout), B [F], Y [N, Ho, Wo, F]; optional
#: inputs XS and XB ([C] or [1]) make the convolution read X * XS + XB (a model's input normalization,
#: folded: ``ort_custom_ops.lowering.layers.fold_input_affines``). In fp16
#: and bf16 the sum plus bias is rounded to the element type before the activation, and the result
#: again, as ONNX's Conv and activation operators in that type compute them.
#:
#: ``Mean`` is the spatial mean of a channels-last map, one deterministic pass over it (a network's
#: global average pool, a squeeze-and-excitation mean): X [N, H, W, C] -> Y [N, 1, 1, C] (``keepdims``
#: 1, the default) or [N, C] (0), Y[n, c] = the sum over h, w of X[n, h, w, c], divided by H * W. Half
#: types widen X to fp32, sum in fp32 and round the mean once to the element type (ONNX's ReduceMean
#: on the widened map, then a Cast).
FLOAT_LAYER_ATTRIBUTES = {
    "Conv": ("kernel_shape", "strides", "pads", "group", "stage1_activation", "stage1_clip", LAYOUT_ATTRIBUTE),
    "Mean": ("keepdims", LAYOUT_ATTRIBUTE),
}
#: The planner's tiling as node attributes (a record of its cost model's figures).
TILING_KEYS = ("tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch")
SCHEMES = ("fp32", "fixed_point")  # int8 requantization: XNNPACK's float rescale, the builtin kernels' Q31


def expand(names: tuple[str, ...]) -> tuple[str, ...]:
    """Attribute names with ``stage{i}`` written out for every stage a kind may have."""
    out: list[str] = []
    for name in names:
        out += [name.format(i=i) for i in range(1, MAX_STAGES + 1)] if "{i}" in name else [name]
    return tuple(out)


def op_attributes() -> dict[str, tuple[str, ...]]:
    """Every op type of the domain -> the attributes it may carry (``stage{i}`` written out)."""
    table = {kind.op_type(p): expand(FUSED_ATTRIBUTES[p]) for kind in KINDS.values() for p in kind.precisions}
    table.update({op: expand(names) for op, names in INT8_LAYER_ATTRIBUTES.items()})
    table.update({layer_op_type(layer, p): names for layer, names in FLOAT_LAYER_ATTRIBUTES.items()
                  for p in FLOAT_PRECISIONS})
    return table


def layer_op_type(layer: str, precision: str = "fp32") -> str:
    """The op type of a float layer (:data:`FLOAT_LAYER_ATTRIBUTES`) in a precision: ``Fp16Conv``."""
    return PRECISIONS[precision].op_prefix + layer


def layer_of(op_type: str) -> tuple[str, str] | None:
    """The layer and float precision of a layer op type (``Bf16Conv`` -> (Conv, bf16)); None for others."""
    for layer in FLOAT_LAYER_ATTRIBUTES:
        for precision in FLOAT_PRECISIONS:
            if layer_op_type(layer, precision) == op_type:
                return layer, precision
    return None


def kind_of(op_type: str) -> tuple[Kind, str] | None:
    """The kind and precision of a fused op type (``QFusedDwPw`` -> (dwpw, int8)); None for others."""
    for kind in KINDS.values():
        for precision in kind.precisions:
            if kind.op_type(precision) == op_type:
                return kind, precision
    return None
