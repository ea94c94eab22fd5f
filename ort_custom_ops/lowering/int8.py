"""Full-integer TFLite models -> int8 ONNX models of FCM ops.

In: the DAG of a full-integer TFLite model (as extracted: int8 weights with per-channel scales,
int32 biases, the scale and zero point of every tensor), the planner's fusion groups
(:class:`planner.groups.Candidate`), and a requantization scheme (``fp32``: XNNPACK's arithmetic, the
interpreter's default; ``fixed_point``: TFLite's builtin kernels). Out: an ONNX model, NHWC with the
TFLite model's input and output dtypes and a dynamic batch, that ONNX Runtime runs with the FCM
library (CPU) with TFLite's integer semantics:

- each planned group is one fused int8 node (``QFusedPwDwPw`` ...), a folded PAD becoming its
  depthwise padding and a residual ADD its epilogue;
- every other convolution, depthwise convolution and fully connected layer is a one-stage
  ``QConv`` (FULLY_CONNECTED between two Reshapes); ADD is ``QAdd``, MEAN over H and W ``QMean``;
- PAD is ONNX's Pad filled with the zero point; RESHAPE a Reshape; QUANTIZE between uint8 and int8
  of one scale integer Cast/Add/Cast (and a Clip where the shift can leave the range); SOFTMAX DequantizeLinear, Softmax, QuantizeLinear (the
  oracle, ``extractor.integer.run_integer``, computes it in float too); LOGISTIC a Gather from its
  256-entry table; MUL (broadcasting, ``fp32`` scheme only) exact integer and float32 ops;
- the SHAPE/STRIDED_SLICE/PACK layers that only compute a RESHAPE's target shape are left out.

A layer with no such form is an :class:`~fcm_core.errors.FcmError` naming it; nothing is dropped. A
group whose layers do not fit a fused int8 node (a standalone activation, a squeeze-and-excitation
scale, quantization that changes inside a PAD) is built layer by layer, with a note saying why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from onnx import ModelProto, TensorProto, helper, numpy_helper

from extractor.dag import Dag, Layer
from extractor.integer import ACTIVATION_TABLES, RANGES, activation_range, mul
from fcm_core.errors import FcmError
from fcm_core.vocabulary import ACTIVATIONS, EPILOGUES, FROM_DAG_ACTIVATION, KINDS

from ..ops.schema import SCHEMES, Chain, ChainStage, Quant, Requant, add_node, conv_node, make_model, mean_node

ONNX_TYPES = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int32": TensorProto.INT32}
#: DAG operators the int8 model represents.
SUPPORTED = ("conv_2d", "depthwise_conv_2d", "fully_connected", "add", "pad", "mean", "softmax", "quantize",
             "reshape", "squeeze", "mul", *ACTIVATION_TABLES)


#: Operators that compute a RESHAPE's target shape at run time (Keras's Reshape/Flatten under a
#: dynamic batch: SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE); int32, unquantized.
SHAPE_OPERATORS = ("shape", "strided_slice", "pack", "concatenation", "gather", "slice", "cast")


def shape_layers(dag: Dag) -> set[int]:
    """The layers that only compute a RESHAPE's target shape (int32 tensors feeding other such
    layers or a RESHAPE's shape operand): the int8 model leaves them out, since its Reshape takes
    the DAG's static output shape with a dynamic batch."""
    consumers: dict[int, list[tuple[Layer, int]]] = {}
    for layer in dag:
        for position, ref in enumerate(layer.inputs or []):
            if ref is not None and "op" in ref:
                consumers.setdefault(ref["op"], []).append((layer, position))
    found: set[int] = set()
    for layer in reversed(list(dag)):
        if layer.name not in SHAPE_OPERATORS or not layer.outputs:
            continue
        if any(out.get("dtype") not in ("int32", "int64") or "scale" in out for out in layer.outputs):
            continue
        users = consumers.get(layer.id, [])
        if users and all(user.id in found or (user.name in ("reshape", "squeeze") and position > 0)
                         for user, position in users):
            found.add(layer.id)
    return found


def quantization(dag: Dag) -> str:
    """``"float"`` (nothing quantized), ``"full"`` (every computed tensor int8/uint8 with a scale:
    what this module converts) or ``"hybrid"`` (some of both, or int8 weights with float
    activations: dynamic-range or float-I/O quantization)."""
    quantized = unquantized = int8_weights = False
    shapes = shape_layers(dag)
    for layer in dag:
        if layer.id in shapes:
            continue
        for out in layer.outputs or []:
            if out.get("dtype") in RANGES and "scale" in out:
                quantized = True
            else:
                unquantized = True
        for ref in layer.inputs or []:
            int8_weights |= ref is not None and "const" in ref and ref.get("dtype") in ("int8", "uint8")
    if not quantized:
        return "hybrid" if int8_weights else "float"
    return "hybrid" if unquantized else "full"


def check_full_integer(dag: Dag, where: str | None = None) -> None:
    """Raise an FcmError naming the first layer that keeps the model from the int8 path: a float
    output, or a quantization scale (of an input, an output or the weights) that is not a positive
    number, which TFLite's integer arithmetic and the int8 ops need."""
    shapes = shape_layers(dag)
    for layer in dag:
        if layer.id in shapes:
            continue
        for out in layer.outputs or []:
            if out.get("dtype") not in RANGES or "scale" not in out:
                raise FcmError(f"layer {layer.id} ({layer.name}) outputs {out.get('dtype', 'unquantized')} values: only "
                               "full-integer models (int8/uint8 tensors throughout: TFLite's full-integer "
                               "quantization) convert on the int8 path; hybrid and float-I/O models do not", where)
        scales = [("output", out["scale"]) for out in layer.outputs or []]
        scales += [(f"input {i}", ref["scale"]) for i, ref in enumerate(layer.inputs or []) if ref is not None and "scale" in ref]
        if dag.has_weight(layer.id, "weights_scales"):
            scales += [("weights", s) for s in np.ravel(dag.weight(layer.id, "weights_scales"))]
        for what, scale in scales:
            if not (math.isfinite(float(scale)) and float(scale) > 0):
                raise FcmError(f"layer {layer.id} ({layer.name}): a quantization scale of its {what} is {float(scale):g}; "
                               "TFLite's integer arithmetic needs positive ones (corrupt file?)", where)


@dataclass
class BuildResult:
    model: ModelProto
    fused: list[dict] = field(default_factory=list)  # {"group", "kind", "node", "layers", "replaced"}
    skipped: list[dict] = field(default_factory=list)  # {"group", "kind", "layers", "reason"}


class _NotFusable(Exception):
    pass


def _quant(ref: dict) -> Quant:
    return Quant(float(ref["scale"]), int(ref["zero_point"]))


def _same_quant(a: dict, b: dict) -> bool:
    return (np.float32(a["scale"]) == np.float32(b["scale"]) and int(a["zero_point"]) == int(b["zero_point"])
            and a.get("dtype") == b.get("dtype"))


def _onnx_pads(tblr) -> tuple[int, int, int, int]:
    """DAG/planner order (top, bottom, left, right) -> ONNX order (top, left, bottom, right)."""
    top, bottom, left, right = (int(p) for p in tblr)
    return top, left, bottom, right


class _Builder:
    def __init__(self, dag: Dag, scheme: str):
        self.dag, self.scheme = dag, scheme
        self.nodes: list = []
        self.arrays: dict[str, np.ndarray] = {}
        outputs = dag.model_outputs()
        self.output_names = {key: ("output" if len(outputs) == 1 else f"output_{k}") for k, key in enumerate(outputs)}

    # --- tensors -------------------------------------------------------------------------------
    def name(self, ref: dict) -> str:
        if "graph_input" in ref:
            return "input" if self._single_input else f"input_{ref['graph_input']}"
        return self.output_of(ref["op"], ref.get("output", 0))

    def output_of(self, layer_id: int, index: int = 0) -> str:
        return self.output_names.get((layer_id, index), f"t{layer_id}" + (f"_{index}" if index else ""))

    def const(self, name: str, array: np.ndarray) -> str:
        self.arrays[name] = array
        return name

    @staticmethod
    def data(layer: Layer, count: int = 1) -> list[dict]:
        """The layer's computed operands (at least ``count`` of them, else an FcmError)."""
        refs = [ref for ref in layer.inputs or [] if ref is not None and "const" not in ref]
        if len(refs) < count:
            raise FcmError(f"layer {layer.id} ({layer.name}): expected {count} computed operand(s), found {len(refs)}")
        return refs

    def int8_ref(self, layer: Layer, ref: dict) -> dict:
        if ref.get("dtype") != "int8" or "scale" not in ref:
            raise FcmError(f"layer {layer.id} ({layer.name}): takes a {ref.get('dtype')} tensor; the int8 ops take "
                           "int8 (uint8 only at the model's input and output, through QUANTIZE)")
        return ref

    def out_ref(self, layer: Layer) -> dict:
        if not layer.outputs or len(layer.outputs) != 1:
            raise FcmError(f"layer {layer.id} ({layer.name}): expected one output")
        return layer.outputs[0]

    # --- convolution parameters ------------------------------------------------------------------
    def conv_parameters(self, conv: Layer) -> tuple[np.ndarray, np.ndarray, Requant]:
        """(weights as the DAG keeps them, int32 bias, requantization) of a convolution layer."""
        dag = self.dag
        weights = dag.weight(conv.id, "weights")
        if weights.dtype != np.int8:
            raise FcmError(f"layer {conv.id} ({conv.name}): weights are {weights.dtype}, not int8")
        if dag.has_weight(conv.id, "weights_zero_points") and np.any(dag.weight(conv.id, "weights_zero_points")):
            raise FcmError(f"layer {conv.id} ({conv.name}): weights with non-zero zero points are not TFLite int8")
        filters = weights.shape[0]
        bias = dag.weight(conv.id, "bias") if dag.has_weight(conv.id, "bias") else np.zeros(filters, np.int32)
        if bias.dtype != np.int32 or bias.shape != (filters,):
            raise FcmError(f"layer {conv.id} ({conv.name}): bias must be int32 [{filters}], not {bias.dtype} {list(bias.shape)}")
        scales = np.asarray(dag.weight(conv.id, "weights_scales"), np.float32).ravel()
        if scales.size == 1:
            scales = np.full(filters, scales[0], np.float32)  # per-tensor weights
        if scales.size != filters:
            raise FcmError(f"layer {conv.id} ({conv.name}): {scales.size} weight scales for {filters} filters")
        out = self.out_ref(conv)
        if out.get("dtype") != "int8":
            raise FcmError(f"layer {conv.id} ({conv.name}): output is {out.get('dtype')}, the int8 ops produce int8")
        y = _quant(out)
        clamp = activation_range(conv.activation, conv.activation_params, y.scale, y.zero_point, "int8")
        return weights, bias, Requant(scales, y, clamp)

    # --- one layer at a time ---------------------------------------------------------------------
    def layer(self, layer: Layer) -> None:
        method = getattr(self, f"_{layer.name}", None) if layer.name in SUPPORTED else None
        if layer.name in ACTIVATION_TABLES:
            method = self._lookup
        if method is None or layer.opaque:
            raise FcmError(f"layer {layer.id} ({layer.name}): no int8 form in the FCM int8 model "
                           f"(supported: {', '.join(SUPPORTED)})")
        method(layer)

    def _conv(self, layer: Layer, depthwise: bool) -> None:
        x = self.int8_ref(layer, self.data(layer)[0])
        weights, bias, requant = self.conv_parameters(layer)
        if depthwise:
            onnx_w = weights.transpose(1, 2, 0)  # [C * M, KH, KW] -> [KH, KW, C * M]
        else:
            onnx_w = weights if weights.ndim == 2 else weights.transpose(0, 2, 3, 1)  # [F, C, KH, KW] -> [F, KH, KW, C]
        strides = layer.strides_hw or [layer.strides or 1] * 2
        node, arrays = conv_node(f"layer{layer.id}", self.name(x), self.output_of(layer.id), _quant(x), onnx_w, bias,
                                 requant, depthwise=depthwise, strides=strides, dilations=layer.dilation or (1, 1),
                                 pads=_onnx_pads(layer.pads or (0, 0, 0, 0)), scheme=self.scheme)
        self.nodes.append(node)
        self.arrays.update(arrays)

    def _conv_2d(self, layer: Layer) -> None:
        if (layer.groups or 1) != 1:
            raise FcmError(f"layer {layer.id} (conv_2d): grouped convolutions have no int8 form here")
        self._conv(layer, depthwise=False)

    def _depthwise_conv_2d(self, layer: Layer) -> None:
        self._conv(layer, depthwise=True)

    def _fully_connected(self, layer: Layer) -> None:
        x = self.int8_ref(layer, self.data(layer)[0])
        weights, bias, requant = self.conv_parameters(layer)
        if weights.ndim != 2:
            raise FcmError(f"layer {layer.id} (fully_connected): weights must be [F, C]")
        stem = f"layer{layer.id}"
        flat = self.const(f"{stem}_in_shape", np.array([-1, 1, 1, weights.shape[1]], np.int64))
        self.nodes.append(helper.make_node("Reshape", [self.name(x), flat], [f"{stem}_nhwc"], name=f"{stem}_reshape_in"))
        node, arrays = conv_node(stem, f"{stem}_nhwc", f"{stem}_conv", _quant(x), weights, bias, requant,
                                 scheme=self.scheme)
        self.nodes.append(node)
        self.arrays.update(arrays)
        self.reshape_to(layer, f"{stem}_conv", f"{stem}_reshape_out")

    def reshape_to(self, layer: Layer, source: str, node_name: str) -> None:
        """A Reshape of ``source`` to the layer's output shape, batch dynamic."""
        shape = list(self.out_ref(layer).get("shape") or [])
        if not shape:
            raise FcmError(f"layer {layer.id} ({layer.name}): its output shape is unknown")
        target = self.const(f"layer{layer.id}_out_shape", np.array([-1] + [int(d) for d in shape[1:]], np.int64))
        self.nodes.append(helper.make_node("Reshape", [source, target], [self.output_of(layer.id)], name=node_name))

    def _reshape(self, layer: Layer) -> None:
        x = self.data(layer)[0]
        in_shape, out_shape = x.get("shape") or [], self.out_ref(layer).get("shape") or []
        if not in_shape or not out_shape or in_shape[0] != out_shape[0] or not _same_quant(x, self.out_ref(layer)):
            raise FcmError(f"layer {layer.id} ({layer.name}): only reshapes that keep the batch and the quantization "
                           "have an int8 form here")
        self.reshape_to(layer, self.name(x), f"layer{layer.id}")

    _squeeze = _reshape

    def _add(self, layer: Layer) -> None:
        a, b = (self.int8_ref(layer, r) for r in self.data(layer, 2)[:2])
        if list(a.get("shape") or []) != list(b.get("shape") or []):
            raise FcmError(f"layer {layer.id} (add): broadcasting ADD ({a.get('shape')} + {b.get('shape')}) has no int8 form here")
        y = _quant(self.out_ref(layer))
        clamp = activation_range(layer.activation, layer.activation_params, y.scale, y.zero_point, "int8")
        self.nodes.append(add_node(f"layer{layer.id}", self.name(a), self.name(b), self.output_of(layer.id),
                                   _quant(a), _quant(b), y, clamp))

    def _pad(self, layer: Layer) -> None:
        x = self.int8_ref(layer, self.data(layer)[0])
        if not _same_quant(x, self.out_ref(layer)):
            raise FcmError(f"layer {layer.id} (pad): its output quantization differs from its input's")
        paddings = np.asarray(self.dag.weight(layer.id, "input1"), np.int64).reshape(-1, 2)
        if paddings.shape[0] != len(x.get("shape") or []) or np.any(paddings < 0):
            raise FcmError(f"layer {layer.id} (pad): paddings {paddings.tolist()} do not fit its input")
        stem = f"layer{layer.id}"
        pads = self.const(f"{stem}_pads", np.concatenate([paddings[:, 0], paddings[:, 1]]).astype(np.int64))
        value = self.const(f"{stem}_value", np.array(int(x["zero_point"]), np.int8))  # padding reads as zero
        self.nodes.append(helper.make_node("Pad", [self.name(x), pads, value], [self.output_of(layer.id)], name=stem,
                                           mode="constant"))

    def _mean(self, layer: Layer) -> None:
        x = self.int8_ref(layer, self.data(layer)[0])
        rank = len(x.get("shape") or [])
        axes = sorted({int(a) % max(rank, 1) for a in np.atleast_1d(self.dag.weight(layer.id, "input1"))})
        if rank != 4 or axes != [1, 2]:
            raise FcmError(f"layer {layer.id} (mean): only the mean over H and W of a 4-D tensor has an int8 form here "
                           f"(axes {axes} of a {rank}-D tensor)")
        keepdims = bool((layer.options or {}).get("keep_dims"))
        self.nodes.append(mean_node(f"layer{layer.id}", self.name(x), self.output_of(layer.id), _quant(x),
                                    _quant(self.out_ref(layer)), keepdims))

    def _softmax(self, layer: Layer) -> None:
        x, out = self.data(layer)[0], self.out_ref(layer)
        stem = f"layer{layer.id}"

        def scalars(tag: str, ref: dict) -> list[str]:
            return [self.const(f"{stem}_{tag}_scale", np.array(ref["scale"], np.float32)),
                    self.const(f"{stem}_{tag}_zero_point", np.array(ref["zero_point"], np.dtype(ref["dtype"])))]

        self.nodes.append(helper.make_node("DequantizeLinear", [self.name(x), *scalars("x", x)], [f"{stem}_real"],
                                           name=f"{stem}_dequantize"))
        logits = f"{stem}_real"
        beta = float((layer.options or {}).get("beta", 1.0))
        if beta != 1.0:
            factor = self.const(f"{stem}_beta", np.array(beta, np.float32))
            self.nodes.append(helper.make_node("Mul", [logits, factor], [f"{stem}_scaled"], name=f"{stem}_beta"))
            logits = f"{stem}_scaled"
        self.nodes.append(helper.make_node("Softmax", [logits], [f"{stem}_probabilities"], name=stem, axis=-1))
        self.nodes.append(helper.make_node("QuantizeLinear", [f"{stem}_probabilities", *scalars("y", out)],
                                           [self.output_of(layer.id)], name=f"{stem}_quantize"))

    def _lookup(self, layer: Layer) -> None:
        """An activation operator with a table (LOGISTIC: ``extractor.integer.ACTIVATION_TABLES``,
        exact in both schemes) as that table: Gather of the table at the input integer + 128."""
        x, out = self.int8_ref(layer, self.data(layer)[0]), self.out_ref(layer)
        if out.get("dtype") != "int8":
            raise FcmError(f"layer {layer.id} ({layer.name}): output is {out.get('dtype')}, the int8 ops produce int8")
        stem = f"layer{layer.id}"
        table = self.const(f"{stem}_table", ACTIVATION_TABLES[layer.name]((float(x["scale"]), int(x["zero_point"])),
                                                                          (float(out["scale"]), int(out["zero_point"])),
                                                                          "int8", self.scheme))
        offset = self.const(f"{stem}_offset", np.array(128, np.int32))
        self.nodes += [
            helper.make_node("Cast", [self.name(x)], [f"{stem}_i32"], name=f"{stem}_cast", to=TensorProto.INT32),
            helper.make_node("Add", [f"{stem}_i32", offset], [f"{stem}_index"], name=f"{stem}_index"),
            helper.make_node("Gather", [table, f"{stem}_index"], [self.output_of(layer.id)], name=stem, axis=0),
        ]

    def _mul(self, layer: Layer) -> None:
        """MUL of two int8 tensors (broadcasting as numpy does), XNNPACK's arithmetic
        (``extractor.integer.mul``) in standard ops, each exact: the zero-point-shifted product in
        int32, converted to float32, times the float32 factor a_scale x b_scale / y_scale, clamped
        to the activation range minus the zero point, rounded half to even, plus the zero point."""
        if self.scheme != "fp32":
            raise FcmError(f"layer {layer.id} (mul): MUL has an int8 form for the fp32 scheme (XNNPACK) only, not "
                           f"{self.scheme}")
        a, b = (self.int8_ref(layer, r) for r in self.data(layer, 2)[:2])
        out = self.out_ref(layer)
        if out.get("dtype") != "int8":
            raise FcmError(f"layer {layer.id} (mul): output is {out.get('dtype')}, the int8 ops produce int8")
        y = _quant(out)
        lo, hi = activation_range(layer.activation, layer.activation_params, y.scale, y.zero_point, "int8")
        stem = f"layer{layer.id}"
        factor = np.float32(a["scale"]) * np.float32(b["scale"]) / np.float32(y.scale)
        shifted = []
        for tag, ref in (("a", a), ("b", b)):
            zp = self.const(f"{stem}_{tag}_zp", np.array(int(ref["zero_point"]), np.int32))
            self.nodes += [
                helper.make_node("Cast", [self.name(ref)], [f"{stem}_{tag}_i32"], name=f"{stem}_{tag}_cast",
                                 to=TensorProto.INT32),
                helper.make_node("Sub", [f"{stem}_{tag}_i32", zp], [f"{stem}_{tag}_shifted"], name=f"{stem}_{tag}_sub"),
            ]
            shifted.append(f"{stem}_{tag}_shifted")
        self.nodes += [
            helper.make_node("Mul", shifted, [f"{stem}_acc"], name=f"{stem}_product"),
            helper.make_node("Cast", [f"{stem}_acc"], [f"{stem}_acc_f"], name=f"{stem}_acc_float", to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{stem}_acc_f", self.const(f"{stem}_factor", np.array(factor, np.float32))],
                             [f"{stem}_scaled"], name=f"{stem}_rescale"),
            helper.make_node("Clip", [f"{stem}_scaled", self.const(f"{stem}_lo", np.array(lo - y.zero_point, np.float32)),
                                      self.const(f"{stem}_hi", np.array(hi - y.zero_point, np.float32))],
                             [f"{stem}_clipped"], name=f"{stem}_clip"),
            helper.make_node("Round", [f"{stem}_clipped"], [f"{stem}_rounded"], name=f"{stem}_round"),
            helper.make_node("Add", [f"{stem}_rounded", self.const(f"{stem}_zp", np.array(y.zero_point, np.float32))],
                             [f"{stem}_biased"], name=f"{stem}_zero_point"),
            helper.make_node("Cast", [f"{stem}_biased"], [self.output_of(layer.id)], name=stem, to=TensorProto.INT8),
        ]

    def _quantize(self, layer: Layer) -> None:
        """QUANTIZE between integer types of one scale: the zero point moves (uint8 <-> int8)."""
        x, out = self.data(layer)[0], self.out_ref(layer)
        if x.get("dtype") not in RANGES or "scale" not in x:
            raise FcmError(f"layer {layer.id} (quantize): quantizes {x.get('dtype')} values; the int8 path takes "
                           "uint8/int8 model inputs")
        if np.float32(x["scale"]) != np.float32(out["scale"]):
            raise FcmError(f"layer {layer.id} (quantize): a QUANTIZE that changes the scale has no int8 form here")
        stem = f"layer{layer.id}"
        shift = self.const(f"{stem}_shift", np.array(int(out["zero_point"]) - int(x["zero_point"]), np.int32))
        lo, hi = RANGES[out["dtype"]]
        x_lo, x_hi = RANGES[x["dtype"]]
        moved = int(out["zero_point"]) - int(x["zero_point"])
        self.nodes += [
            helper.make_node("Cast", [self.name(x)], [f"{stem}_wide"], name=f"{stem}_widen", to=TensorProto.INT32),
            helper.make_node("Add", [f"{stem}_wide", shift], [f"{stem}_moved"], name=f"{stem}_move"),
        ]
        last = f"{stem}_moved"
        if x_lo + moved < lo or x_hi + moved > hi:  # uint8 <-> int8 with zero points 128 apart never clips
            bounds = [self.const(f"{stem}_lo", np.array(lo, np.int32)), self.const(f"{stem}_hi", np.array(hi, np.int32))]
            self.nodes.append(helper.make_node("Clip", [last, *bounds], [f"{stem}_clipped"], name=f"{stem}_clip"))
            last = f"{stem}_clipped"
        self.nodes.append(helper.make_node("Cast", [last], [self.output_of(layer.id)], name=stem,
                                           to=ONNX_TYPES[out["dtype"]]))

    # --- fused groups ----------------------------------------------------------------------------
    def activation_table(self, conv: Layer, epilogue: list[int]) -> tuple[np.ndarray, Quant]:
        """The activation after ``conv`` (``epilogue``: an operator with a table, e.g. LOGISTIC, or
        that operator and the MUL of x by it, e.g. swish) as one table on the convolution's int8
        output, and the quantization of its output: each entry what the layers compute for that
        output value (``extractor.integer``), so the table equals them exactly."""
        layers = [self.dag[i] for i in epilogue]
        refs = [self.out_ref(conv)] + [self.out_ref(layer) for layer in layers]
        if layers[0].name not in ACTIVATION_TABLES or len(layers) > 2 or any(r.get("dtype") != "int8" for r in refs):
            raise _NotFusable(f"layer {conv.id}: an activation with no int8 table "
                              f"({', '.join(ACTIVATION_TABLES)}, or x times one of them)")
        t, s = _quant(refs[0]), _quant(refs[1])
        first = ACTIVATION_TABLES[layers[0].name](t.pair(), s.pair(), "int8", self.scheme)
        if len(layers) == 1:
            return first, s
        if self.scheme != "fp32" or layers[1].name != "mul":
            raise _NotFusable(f"layer {conv.id}: the MUL of x by its activation has an int8 form in the fp32 "
                              "scheme only")
        product, out = layers[1], refs[2]
        codes = np.arange(-128, 128, dtype=np.int32).astype(np.int8)
        y = _quant(out)
        clamp = activation_range(product.activation, product.activation_params, y.scale, y.zero_point, "int8")
        table = mul(codes, first, t.pair(), s.pair(), y.scale, y.zero_point, clamp, "int8", "fp32")
        return table, y

    def chain(self, candidate) -> tuple[Chain, dict]:
        """The fused int8 node's description of a planned group, and the tensor it reads; raises
        _NotFusable with the reason when the group's layers do not fit one."""
        dag = self.dag
        if "int8" not in KINDS[candidate.kind].precisions:
            raise _NotFusable(f"the {candidate.kind} kind has no int8 op")
        if candidate.residual_epilogue:
            raise _NotFusable("an activation after the residual ADD is a separate int8 layer")
        first = dag[candidate.stages[0].first_entry]
        x = self.int8_ref(first, self.data(first)[0])
        chain = Chain(candidate.kind, _quant(x))
        previous = x
        for stage in candidate.stages:
            conv = dag[stage.conv]
            if stage.se_scale is not None and "int8" not in EPILOGUES["channel_scale"]:
                raise _NotFusable(f"layer {conv.id}: a channel scale (squeeze-and-excitation) is a separate int8 layer")
            if stage.epilogue and ACTIVATIONS[FROM_DAG_ACTIVATION[stage.activation]].int8 != "table":
                raise _NotFusable(f"layer {conv.id}: a standalone activation is a separate int8 layer")
            for entry in stage.prologue:  # a PAD (its padding becomes the stage's)
                pad = dag[entry]
                if pad.name != "pad" or not _same_quant(self.data(pad)[0], self.out_ref(pad)):
                    raise _NotFusable(f"layer {pad.id}: a {pad.name} that changes quantization")
            conv_in = self.data(conv)[0]
            if not _same_quant(conv_in, previous):
                raise _NotFusable(f"layer {conv.id}: its input's quantization differs from the previous stage's output")
            weights, bias, requant = self.conv_parameters(conv)
            if stage.epilogue:
                requant.table, requant.table_y = self.activation_table(conv, stage.epilogue)
            if stage.type == "dw":
                chain.stages.append(ChainStage("dw", weights.transpose(1, 2, 0), bias, requant,
                                               stride=int((conv.strides_hw or [conv.strides or 1])[0]),
                                               pads=_onnx_pads(stage.pads)))
            else:
                chain.stages.append(ChainStage("pw", weights.reshape(weights.shape[0], -1), bias, requant))
            previous = self.out_ref(dag[stage.output])
        if candidate.residual_add is not None:
            add = dag[candidate.residual_add]
            refs = self.data(add, 2)
            last = next((r for r in refs if r.get("op") == candidate.stages[-1].output), None)
            skip = next((r for r in refs if r is not last), None)
            if last is None or skip is None or not _same_quant(skip, x) or not _same_quant(last, previous):
                raise _NotFusable(f"layer {add.id}: the residual ADD's operands are quantized unlike the group's tensors")
            y = _quant(self.out_ref(add))
            chain.residual = Requant(np.ones(1, np.float32), y,
                                     activation_range(add.activation, add.activation_params, y.scale, y.zero_point, "int8"))
        return chain, x

    def group(self, number: int, candidate, chain: Chain, x: dict) -> dict:
        name = f"group{number}_{candidate.kind}"
        node, arrays = chain.node(name, self.name(x), self.output_of(candidate.output), self.scheme)
        self.nodes.append(node)
        self.arrays.update(arrays)
        return {"group": number, "kind": candidate.kind, "node": name, "layers": candidate.convs,
                "replaced": candidate.entries, "residual": candidate.residual_add is not None}

    @property
    def _single_input(self) -> bool:
        return len(self.graph_inputs()) == 1

    def graph_inputs(self) -> dict[int, dict]:
        found = {}
        for layer in self.dag:
            for ref in layer.inputs or []:
                if ref is not None and "graph_input" in ref:
                    found.setdefault(int(ref["graph_input"]), ref)
        return dict(sorted(found.items()))


def _value_info(name: str, ref: dict, where: str) -> "helper.ValueInfoProto":
    if ref.get("dtype") not in ONNX_TYPES:
        raise FcmError(f"{where} is {ref.get('dtype')}; the int8 model takes and gives uint8/int8 tensors")
    shape = ["N"] + [int(d) for d in (ref.get("shape") or [None])[1:]]
    return helper.make_tensor_value_info(name, ONNX_TYPES[ref["dtype"]], shape)


def build(dag: Dag, groups: list, scheme: str = "fp32") -> BuildResult:
    """The int8 ONNX model of ``dag`` with ``groups`` (planner candidates, e.g. ``[g.candidate for g in
    plan.groups]``; none: every layer on its own) fused."""
    if scheme not in SCHEMES:
        raise FcmError(f"unknown requantization scheme {scheme!r} (one of {', '.join(SCHEMES)})")
    check_full_integer(dag)
    builder = _Builder(dag, scheme)
    result_fused, skipped = [], []
    absorbed: dict[int, tuple[int, object, Chain, dict]] = {}  # first entry -> the group starting there
    members: set[int] = shape_layers(dag)  # left out: the Reshapes take static shapes
    for number, candidate in enumerate(groups):
        try:
            chain, x = builder.chain(candidate)
        except _NotFusable as reason:
            skipped.append({"group": number, "kind": candidate.kind, "layers": candidate.convs, "reason": str(reason)})
            continue
        absorbed[min(candidate.entries)] = (number, candidate, chain, x)
        members.update(candidate.entries)
    for layer in dag:
        if layer.id in absorbed:
            number, candidate, chain, x = absorbed[layer.id]
            result_fused.append(builder.group(number, candidate, chain, x))
        elif layer.id not in members:
            builder.layer(layer)
    inputs = [_value_info(builder.name(ref), ref, f"model input {k}") for k, ref in builder.graph_inputs().items()]
    outputs = []
    for (layer_id, index), name in builder.output_names.items():
        outputs.append(_value_info(name, dag[layer_id].outputs[index], f"model output {name}"))
    initializers = [numpy_helper.from_array(array, name) for name, array in builder.arrays.items()]
    graph = helper.make_graph(builder.nodes, "fcm_int8", inputs, outputs, initializers)
    return BuildResult(make_model(graph), result_fused, skipped)
