"""Keras model -> :class:`~extractor.dag.Dag`, with the structure TFLite would give it.

In: a built ``keras.Model`` (functional or sequential, nested models inlined). Out: one DAG entry
per operator in execution order, named and shaped as the TFLite converter would emit them, so that
a model read from Keras and from its ``.tflite`` conversion have the same convolution layers:

- BatchNormalization is folded into the convolution / dense layer before it (when that layer
  feeds nothing else), otherwise it becomes ``mul`` + ``add``;
- a constant added to a convolution's output is folded into its bias;
- ReLU / ReLU6 / tanh activations are fused into the operator that produces their input when
  TFLite would (``fused_activation_function``); others stay operators (``hard_swish``,
  ``logistic``; swish is ``logistic`` + ``mul``);
- ``ZeroPadding2D`` stays an explicit ``pad`` entry; ``same`` padding is recorded on the conv;
- layers that compute nothing at inference (Dropout, noise, linear activations, identity) are
  not operators and produce no entry.

Unknown layers are kept as opaque entries (with their weights), with a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fcm_core.errors import FcmError, FcmWarning

from . import ops
from .dag import Dag, Layer
from .entry import describe, link

#: Keras activation function names -> the operators TFLite would emit for them.
_ACTIVATION_FUNCTIONS = {
    "relu": ["relu"],
    "relu6": ["relu6"],
    "sigmoid": ["logistic"],
    "tanh": ["tanh"],
    "hard_swish": ["hard_swish"],
    "hard_silu": ["hard_swish"],
    "swish": ["swish"],
    "silu": ["swish"],
    "hard_sigmoid": ["hard_sigmoid"],
    "gelu": ["gelu"],
    "softmax": ["softmax"],
    "leaky_relu": ["leaky_relu"],
}
_IDENTITY_LAYERS = frozenset(
    {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
     "AlphaDropout", "ActivityRegularization", "Identity", "Masking"}
)
_MERGE_LAYERS = {"Add": "add", "Subtract": "sub", "Multiply": "mul", "Maximum": "maximum", "Minimum": "minimum"}
_NUMPY_OPS = {"Add": "add", "Subtract": "sub", "Multiply": "mul", "Divide": "div", "TrueDivide": "div",
              "Maximum": "maximum", "Minimum": "minimum"}
_NN_OPS = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hard_swish",
           "HardSilu": "hard_swish", "Silu": "swish", "Swish": "swish", "HardSigmoid": "hard_sigmoid",
           "Softmax": "softmax", "Gelu": "gelu"}


@dataclass
class _Op:
    """An operator being built: TFLite name, operands (tensor keys or constants), one output."""

    name: str
    inputs: list[tuple[str, Any]]  # ("t", tensor key) or ("c", constant key)
    output: Any
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    opaque: bool = False
    class_name: str | None = None

    def tensor_inputs(self) -> list[Any]:
        return [key for kind, key in self.inputs if kind == "t"]


class _Builder:
    """Walks a Keras functional graph and emits TFLite-shaped operators."""

    def __init__(self, model: Any, where: str):
        self.where = where
        self.ops: list[_Op] = []
        self.shapes: dict[Any, list[int]] = {}
        self.alias: dict[int, Any] = {}  # id(KerasTensor) -> tensor key it stands for
        self.graph_inputs: dict[Any, int] = {}
        self.graph_outputs: list[Any] = []
        self._fresh = 0
        self.model = model

    # --- tensors --------------------------------------------------------------------------------
    def key(self, tensor: Any) -> Any:
        return self.alias.get(id(tensor), id(tensor))

    def fresh(self, shape: list[int]) -> tuple[str, int]:
        self._fresh += 1
        key = ("tmp", self._fresh)
        self.shapes[key] = list(shape)
        return key

    def remember(self, tensor: Any) -> Any:
        key = self.key(tensor)
        if key not in self.shapes:
            self.shapes[key] = [1 if d is None else int(d) for d in tensor.shape]
        return key

    # --- graph walk -----------------------------------------------------------------------------
    def build(self) -> None:
        graph = _functional(self.model)
        for index, tensor in enumerate(graph.inputs):
            self.graph_inputs[self.remember(tensor)] = index
        self._walk(graph.outputs)
        self.graph_outputs = [self.key(t) for t in graph.outputs]

    def _walk(self, outputs: list[Any]) -> None:
        """Emit every node the outputs depend on, producers first (iterative DFS)."""
        done: set[int] = set()
        stack: list[tuple[Any, bool]] = [(t, False) for t in reversed(list(outputs))]
        while stack:
            tensor, expanded = stack.pop()
            if self.key(tensor) in self.graph_inputs or id(tensor) in self.alias:
                continue
            history = getattr(tensor, "_keras_history", None)
            if history is None:
                raise FcmError("the model has a tensor that no layer produces", self.where)
            operation, node_index, _ = history
            node = operation._inbound_nodes[node_index]
            if id(node) in done:
                continue
            if node.is_input:
                # An input of a nested model that is not mapped is an input of the whole model.
                raise FcmError(f"input '{operation.name}' is not connected to the model's inputs", self.where)
            if not expanded:
                stack.append((tensor, True))
                for parent in reversed(list(node.input_tensors)):
                    stack.append((parent, False))
                continue
            done.add(id(node))
            self._emit(node)

    def _emit(self, node: Any) -> None:
        layer = node.operation
        for tensor in node.input_tensors:
            self.remember(tensor)
        inner = _functional(layer) if _is_model(layer) else None
        if inner is not None:
            self._inline(inner, node)
            return
        outputs = list(node.output_tensors)
        for tensor in outputs:
            self.remember(tensor)
        if len(outputs) != 1:
            self._opaque(node, f"{len(outputs)} outputs")
            return
        try:
            handled = self._translate(node, layer, outputs[0])
        except FcmError:
            raise
        except Exception as exc:  # a layer configuration we do not understand: keep it opaque
            self._opaque(node, f"{type(exc).__name__}: {exc}")
            return
        if not handled:
            self._opaque(node, "not supported")

    def _inline(self, inner: Any, node: Any) -> None:
        for inner_input, outer in zip(inner.inputs, node.input_tensors):
            self.alias[id(inner_input)] = self.key(outer)
        self._walk(inner.outputs)
        for inner_output, outer in zip(inner.outputs, node.output_tensors):
            self.alias[id(outer)] = self.key(inner_output)

    # --- emission helpers -----------------------------------------------------------------------
    def add(self, name: str, inputs: list, output: Any, *, consts=None, options=None, sources=None, **kw) -> _Op:
        op = _Op(name, inputs, output, dict(consts or {}), dict(options or {}), list(sources or []), **kw)
        self.ops.append(op)
        return op

    def activation_ops(self, kind: str, x: Any, output: Any, sources: list[str], params: dict | None = None) -> None:
        """Emit ``kind`` (a Keras activation) from tensor ``x`` to ``output``."""
        params = params or {}
        shape = self.shapes[x]
        if kind == "swish":  # x * sigmoid(x), as TFLite has it
            sig = self.fresh(shape)
            self.add("logistic", [("t", x)], sig, sources=sources)
            self.add("mul", [("t", x), ("t", sig)], output, sources=sources)
        elif kind == "hard_sigmoid":  # relu6(x + 3) / 6
            shifted = self.fresh(shape)
            relu = self.fresh(shape)
            self.add("add", [("t", x), ("c", "input1")], shifted, consts={"input1": np.float32(3.0)}, sources=sources)
            self.add("relu6", [("t", shifted)], relu, sources=sources)
            self.add("mul", [("t", relu), ("c", "input1")], output, consts={"input1": np.float32(1 / 6)}, sources=sources)
        elif kind == "softmax":
            self.add("softmax", [("t", x)], output, options={"beta": 1.0}, sources=sources)
        elif kind == "leaky_relu":
            self.add("leaky_relu", [("t", x)], output, options={"alpha": float(params.get("alpha", 0.2))}, sources=sources)
        elif kind == "gelu":
            self.add("gelu", [("t", x)], output, options={"approximate": bool(params.get("approximate", False))}, sources=sources)
        else:
            self.add(kind, [("t", x)], output, sources=sources)

    def split_activation(self, activation: Any, result_shape: list[int], output: Any) -> tuple[Any, str | None]:
        """For a layer with its own ``activation`` argument: the tensor its main operator writes
        (``output`` itself when the activation is linear) and the activation still to emit."""
        kind = _activation_name(activation)
        if kind in (None, "linear"):
            return output, None
        if kind not in _ACTIVATION_FUNCTIONS:
            raise ValueError(f"activation '{kind}'")
        return self.fresh(result_shape), kind

    def finish_activation(self, kind: str | None, pre: Any, output: Any, sources: list[str]) -> None:
        if kind is not None:
            self.activation_ops(_ACTIVATION_FUNCTIONS[kind][0], pre, output, sources)

    def _opaque(self, node: Any, reason: str) -> None:
        layer = node.operation
        for tensor in node.output_tensors:
            self.remember(tensor)
        consts = {}
        # a placeholder for an unregistered class holds the file's arrays in opaque_weights
        stored = getattr(layer, "opaque_weights", None) or getattr(layer, "weights", None) or []
        for index, weight in enumerate(stored):
            consts[f"weight{index}"] = _np(weight)
        inputs = [("t", self.key(t)) for t in node.input_tensors] + [("c", k) for k in consts]
        class_name = type(layer).__name__
        self.add("custom", inputs, self.key(node.output_tensors[0]), consts=consts, options={"custom_code": class_name},
                 sources=[layer.name], opaque=True, class_name=class_name)
        warnings.warn(f"{self.where}: layer '{layer.name}' ({class_name}) is not understood by the extractor ({reason}); "
                      "kept as an opaque entry", FcmWarning, stacklevel=3)

    # --- the layer catalogue --------------------------------------------------------------------
    def _translate(self, node: Any, layer: Any, out_tensor: Any) -> bool:
        cls = type(layer).__name__
        module = type(layer).__module__
        ins = [self.key(t) for t in node.input_tensors]
        out = self.key(out_tensor)
        out_shape = self.shapes[out]
        src = [layer.name]

        # Keras operations applied to tensors (x + 3.0, ops.relu(x), ...); their class names
        # (Add, Multiply, ...) are those of layers too, so they are told apart by module.
        if module.startswith("keras.src.ops"):
            return self._keras_op(node, cls, ins, out, src)
        if cls == "InputLayer":
            return True
        if cls in _IDENTITY_LAYERS or (cls == "Activation" and _activation_name(layer.activation) in (None, "linear")):
            self.alias[id(out_tensor)] = ins[0]
            return True

        if cls in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
            _require_channels_last(layer)
            target, activation = self.split_activation(layer.activation, out_shape, out)
            kernel = tuple(int(k) for k in layer.kernel_size)
            options = {
                "padding": layer.padding.upper(),
                "stride_h": int(layer.strides[0]),
                "stride_w": int(layer.strides[1]),
                "dilation_h_factor": int(layer.dilation_rate[0]),
                "dilation_w_factor": int(layer.dilation_rate[1]),
            }
            bias = _np(layer.bias) if getattr(layer, "use_bias", False) else None
            if cls == "Conv2D":
                kernel_array = _np(layer.kernel)  # (KH, KW, C/g, F)
                weights = kernel_array[0, 0].T if kernel == (1, 1) else kernel_array.transpose(3, 2, 0, 1)
                self._conv("conv_2d", ins[0], target, weights, bias, options, src)
            else:
                # (KH, KW, C, M); DepthwiseConv2D calls it kernel, SeparableConv2D depthwise_kernel
                depthwise = _np(layer.kernel if cls == "DepthwiseConv2D" else layer.depthwise_kernel)
                kh, kw, channels, multiplier = depthwise.shape
                dw_weights = depthwise.reshape(kh, kw, channels * multiplier).transpose(2, 0, 1)
                dw_options = dict(options, depth_multiplier=int(multiplier))
                if cls == "DepthwiseConv2D":
                    self._conv("depthwise_conv_2d", ins[0], target, dw_weights, bias, dw_options, src)
                else:  # SeparableConv2D: depthwise (no bias) then pointwise
                    mid_shape = list(out_shape[:3]) + [channels * multiplier]
                    mid = self.fresh(mid_shape)
                    self._conv("depthwise_conv_2d", ins[0], mid, dw_weights, None, dw_options, src)
                    pointwise = _np(layer.pointwise_kernel)[0, 0].T  # (F, C*M)
                    pw_options = {"padding": "VALID", "stride_h": 1, "stride_w": 1}
                    self._conv("conv_2d", mid, target, pointwise, bias, pw_options, src)
            self.finish_activation(activation, target, out, src)
            return True

        if cls == "Dense":
            target, activation = self.split_activation(layer.activation, out_shape, out)
            consts = {"weights": _np(layer.kernel).T.copy()}
            inputs = [("t", ins[0]), ("c", "weights")]
            if layer.use_bias:
                consts["bias"] = _np(layer.bias)
                inputs.append(("c", "bias"))
            self.add("fully_connected", inputs, target, consts=consts,
                     options={"keep_num_dims": len(self.shapes[ins[0]]) > 2}, sources=src)
            self.finish_activation(activation, target, out, src)
            return True

        if cls == "BatchNormalization":
            axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
            if axis not in (-1, len(self.shapes[ins[0]]) - 1):
                raise ValueError(f"BatchNormalization over axis {axis}")
            gamma = _np(layer.gamma) if layer.scale else np.ones_like(_np(layer.moving_mean))
            beta = _np(layer.beta) if layer.center else np.zeros_like(_np(layer.moving_mean))
            scale = gamma / np.sqrt(_np(layer.moving_variance).astype(np.float64) + layer.epsilon)
            shift = beta - _np(layer.moving_mean) * scale
            self.add("batch_norm", [("t", ins[0])], out,
                     consts={"scale": scale.astype(np.float32), "shift": shift.astype(np.float32)}, sources=src)
            return True

        if cls == "Activation":
            kind = _activation_name(layer.activation)
            if kind not in _ACTIVATION_FUNCTIONS:
                return False
            self.activation_ops(_ACTIVATION_FUNCTIONS[kind][0], ins[0], out, src)
            return True
        if cls == "ReLU":
            max_value = None if layer.max_value is None else float(layer.max_value)
            slope, threshold = float(layer.negative_slope), float(layer.threshold)
            if threshold != 0.0:
                return False
            if slope == 0.0 and max_value is None:
                self.add("relu", [("t", ins[0])], out, sources=src)
            elif slope == 0.0 and max_value == 6.0:
                self.add("relu6", [("t", ins[0])], out, sources=src)
            elif max_value is None:
                self.add("leaky_relu", [("t", ins[0])], out, options={"alpha": slope}, sources=src)
            else:
                return False
            return True
        if cls == "LeakyReLU":
            slope = float(getattr(layer, "negative_slope", getattr(layer, "alpha", 0.3)))
            self.add("leaky_relu", [("t", ins[0])], out, options={"alpha": slope}, sources=src)
            return True
        if cls == "Softmax":
            axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
            if axis not in (-1, len(out_shape) - 1, [-1]):
                return False
            self.add("softmax", [("t", ins[0])], out, options={"beta": 1.0}, sources=src)
            return True

        if cls == "ZeroPadding2D":
            _require_channels_last(layer)
            (top, bottom), (left, right) = layer.padding
            paddings = np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32)
            self.add("pad", [("t", ins[0]), ("c", "input1")], out, consts={"input1": paddings}, sources=src)
            return True
        if cls in ("MaxPooling2D", "AveragePooling2D"):
            _require_channels_last(layer)
            options = {"padding": layer.padding.upper(), "stride_h": int(layer.strides[0]), "stride_w": int(layer.strides[1]),
                       "filter_height": int(layer.pool_size[0]), "filter_width": int(layer.pool_size[1])}
            self.add("max_pool_2d" if cls == "MaxPooling2D" else "average_pool_2d", [("t", ins[0])], out,
                     options=options, sources=src)
            return True
        if cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            _require_channels_last(layer)
            name = "mean" if cls == "GlobalAveragePooling2D" else "reduce_max"
            self.add(name, [("t", ins[0]), ("c", "input1")], out, consts={"input1": np.array([1, 2], np.int32)},
                     options={"keep_dims": bool(layer.keepdims)}, sources=src)
            return True

        if cls in _MERGE_LAYERS:
            self._chain(_MERGE_LAYERS[cls], ins, out, src)
            return True
        if cls == "Average":
            total = self.fresh(out_shape)
            self._chain("add", ins, total, src)
            self.add("mul", [("t", total), ("c", "input1")], out, consts={"input1": np.float32(1 / len(ins))}, sources=src)
            return True
        if cls == "Concatenate":
            axis = int(layer.axis) % len(out_shape)
            self.add("concatenation", [("t", k) for k in ins], out, options={"axis": axis}, sources=src)
            return True

        if cls in ("Reshape", "Flatten"):
            target = [-1] + [int(d) for d in out_shape[1:]]
            self.add("reshape", [("t", ins[0]), ("c", "input1")], out, consts={"input1": np.array(target, np.int32)},
                     sources=src)
            return True

        if cls == "Rescaling":
            scale = np.asarray(_np_or_value(layer.scale), np.float32)
            offset = np.asarray(_np_or_value(layer.offset), np.float32)
            if not (np.any(scale != 1) or np.any(offset != 0)):
                self.alias[id(out_tensor)] = ins[0]
            else:
                self._affine(ins[0], out, scale, offset, src)
            return True
        if cls == "Normalization":
            if getattr(layer, "invert", False):
                return False
            mean = _np(layer.mean).astype(np.float32)
            std = np.maximum(np.sqrt(_np(layer.variance).astype(np.float64)), 1e-7).astype(np.float32)
            has_mean, has_std = bool(np.any(mean != 0)), bool(np.any(std != 1))
            if not (has_mean or has_std):
                self.alias[id(out_tensor)] = ins[0]
                return True
            shifted = self.fresh(self.shapes[ins[0]]) if has_mean and has_std else out
            if has_mean:
                self.add("sub", [("t", ins[0]), ("c", "input1")], shifted, consts={"input1": mean}, sources=src)
            if has_std:
                self.add("div", [("t", shifted if has_mean else ins[0]), ("c", "input1")], out, consts={"input1": std}, sources=src)
            return True

        return False

    def _keras_op(self, node: Any, cls: str, ins: list, out: Any, src: list[str]) -> bool:
        args = list(node.arguments.args)
        if cls in _NUMPY_OPS and len(args) == 2 and not node.arguments.kwargs:
            operands, consts = [], {}
            for position, arg in enumerate(args):
                if _is_tensor(arg):
                    operands.append(("t", self.key(arg)))
                else:
                    consts[f"input{position}"] = np.asarray(arg, np.float32)
                    operands.append(("c", f"input{position}"))
            self.add(_NUMPY_OPS[cls], operands, out, consts=consts, sources=src)
            return True
        if cls in _NN_OPS and len(ins) == 1:
            kind = _NN_OPS[cls]
            self.activation_ops(_ACTIVATION_FUNCTIONS[kind][0], ins[0], out, src)
            return True
        return False

    def _conv(self, name: str, x: Any, out: Any, weights: np.ndarray, bias: np.ndarray | None, options: dict, src: list[str]) -> None:
        consts = {"weights": np.ascontiguousarray(weights, np.float32)}
        inputs = [("t", x), ("c", "weights")]
        if bias is not None:
            consts["bias"] = np.asarray(bias, np.float32)
            inputs.append(("c", "bias"))
        self.add(name, inputs, out, consts=consts, options=options, sources=src)

    def _chain(self, name: str, ins: list, out: Any, src: list[str]) -> None:
        """An n-ary merge as a chain of binary operators."""
        current = ins[0]
        for position, other in enumerate(ins[1:]):
            last = position == len(ins) - 2
            target = out if last else self.fresh(self.shapes[out])
            self.add(name, [("t", current), ("t", other)], target, sources=src)
            current = target

    def _affine(self, x: Any, out: Any, scale: np.ndarray, offset: np.ndarray, src: list[str]) -> None:
        """x * scale + offset, leaving out a factor of 1 or an offset of 0."""
        has_scale, has_offset = bool(np.any(scale != 1)), bool(np.any(offset != 0))
        mid = self.fresh(self.shapes[x]) if has_scale and has_offset else out
        if has_scale:
            self.add("mul", [("t", x), ("c", "input1")], mid, consts={"input1": scale}, sources=src)
        if has_offset:
            self.add("add", [("t", mid if has_scale else x), ("c", "input1")], out, consts={"input1": offset}, sources=src)


# --- folding, as the TFLite converter does ----------------------------------------------------

def _consumers(op_list: list[_Op], graph_outputs: list[Any]) -> dict[Any, int]:
    count: dict[Any, int] = {}
    for op in op_list:
        for key in op.tensor_inputs():
            count[key] = count.get(key, 0) + 1
    for key in graph_outputs:
        count[key] = count.get(key, 0) + 1
    return count


def _fold(op_list: list[_Op], graph_outputs: list[Any], shapes: dict[Any, list[int]]) -> list[_Op]:
    producer = {op.output: op for op in op_list}
    consumers = _consumers(op_list, graph_outputs)
    removed: set[int] = set()

    def sole_producer(op: _Op, kinds: tuple[str, ...]) -> _Op | None:
        """The producer of op's first operand, if it is of ``kinds``, feeds only ``op`` and has no
        activation fused yet."""
        kind, key = op.inputs[0]
        if kind != "t":
            return None
        prev = producer.get(key)
        if prev is None or prev.name not in kinds or consumers.get(key, 0) != 1 or id(prev) in removed:
            return None
        if prev.options.get("fused_activation_function", ops.NO_ACTIVATION) != ops.NO_ACTIVATION:
            return None
        return prev

    def absorb(prev: _Op, op: _Op) -> None:
        prev.output = op.output
        prev.sources += [s for s in op.sources if s not in prev.sources]
        producer[prev.output] = prev
        removed.add(id(op))

    result: list[_Op] = []
    for op in op_list:
        if op.name == "batch_norm":
            prev = sole_producer(op, ("conv_2d", "depthwise_conv_2d", "fully_connected"))
            scale, shift = op.consts["scale"].astype(np.float64), op.consts["shift"].astype(np.float64)
            if prev is not None and _fold_affine(prev, scale, shift):
                absorb(prev, op)
                continue
            # not foldable: x * scale + shift, as two operators
            mid = ("bn", id(op))
            shapes[mid] = shapes[op.inputs[0][1]]
            result.append(_Op("mul", [op.inputs[0], ("c", "input1")], mid, {"input1": scale.astype(np.float32)}, {}, op.sources))
            result.append(_Op("add", [("t", mid), ("c", "input1")], op.output, {"input1": shift.astype(np.float32)}, {}, op.sources))
            producer[mid] = result[-2]
            producer[op.output] = result[-1]
            consumers[mid] = 1
            continue
        if op.name in ("add", "sub") and len(op.inputs) == 2 and op.inputs[1][0] == "c":
            prev = sole_producer(op, ("conv_2d", "depthwise_conv_2d", "fully_connected"))
            constant = op.consts[op.inputs[1][1]].astype(np.float64)
            if prev is not None and _broadcasts_per_channel(constant, _out_channels(prev)):
                sign = 1.0 if op.name == "add" else -1.0
                if _fold_affine(prev, np.ones(_out_channels(prev)), sign * np.broadcast_to(constant.reshape(-1), (_out_channels(prev),))):
                    absorb(prev, op)
                    continue
        if op.name in ops.ACTIVATION_OPS and ops.ACTIVATION_OPS[op.name] in ops.FUSABLE_ACTIVATIONS:
            prev = sole_producer(op, tuple(ops.OPS_WITH_FUSED_ACTIVATION))
            if prev is not None:
                prev.options["fused_activation_function"] = ops.ACTIVATION_OPS[op.name]
                absorb(prev, op)
                continue
        result.append(op)
    return [op for op in result if id(op) not in removed]


def _out_channels(op: _Op) -> int:
    return int(op.consts["weights"].shape[0])


def _broadcasts_per_channel(constant: np.ndarray, channels: int) -> bool:
    return constant.size in (1, channels) and all(d == 1 for d in constant.shape[:-1])


def _fold_affine(op: _Op, scale: np.ndarray, shift: np.ndarray) -> bool:
    """op(x) * scale + shift, per output channel, folded into op's weights and bias."""
    channels = _out_channels(op)
    if scale.size != channels or shift.size != channels:
        return False
    weights = op.consts["weights"].astype(np.float64)
    op.consts["weights"] = (weights * scale.reshape((-1,) + (1,) * (weights.ndim - 1))).astype(np.float32)
    bias = op.consts.get("bias")
    bias = np.zeros(channels) if bias is None else bias.astype(np.float64)
    op.consts["bias"] = (bias * scale + shift).astype(np.float32)
    if ("c", "bias") not in op.inputs:
        op.inputs.append(("c", "bias"))
    return True


# --- entries ----------------------------------------------------------------------------------

def read_keras(model: Any, where: str = "<keras model>") -> Dag:
    """Read a built Keras model into a DAG (see module docstring)."""
    if not getattr(model, "built", False) or not getattr(_functional(model), "inputs", None):
        raise FcmError("the Keras model is not built (call it on an input or give it an Input layer)", where)
    builder = _Builder(model, where)
    builder.build()
    graph_outputs = builder.graph_outputs
    op_list = _fold(builder.ops, graph_outputs, builder.shapes)

    layers: list[Layer] = []
    weights: dict[str, np.ndarray] = {}
    produced: dict[Any, int] = {}
    for op_id, op in enumerate(op_list):
        operands: list[dict[str, Any]] = []
        for kind, value in op.inputs:
            if kind == "c":
                array = np.asarray(op.consts[value])
                weights[f"{op_id}/{value}"] = np.ascontiguousarray(array)
                operands.append({"const": value, "shape": list(array.shape), "dtype": str(array.dtype)})
                continue
            if value in produced:
                operand = {"op": produced[value]}
            elif value in builder.graph_inputs:
                operand = {"graph_input": builder.graph_inputs[value]}
            else:
                raise FcmError(f"internal: operand of '{op.name}' from {op.sources} has no producer", where)
            operand.update(shape=builder.shapes[value], dtype="float32")
            operands.append(operand)
        out = {"shape": builder.shapes[op.output], "dtype": "float32"}
        if op.output in graph_outputs:
            out["model_output"] = graph_outputs.index(op.output)
        produced[op.output] = op_id
        options = {k: v for k, v in op.options.items()}
        source = {"format": "keras", "layers": op.sources}
        if op.class_name:
            source["class_name"] = op.class_name
        layer = Layer(name=op.name, id=op_id, inputs=operands, outputs=[out], options=options or None, source=source,
                      opaque=True if op.opaque else None)
        try:
            describe(layer)
        except FcmError as exc:
            raise FcmError(exc.message, where) from None
        if op.name == "pad":
            top, bottom = (int(v) for v in op.consts["input1"][1])
            left, right = (int(v) for v in op.consts["input1"][2])
            layer.padding_top, layer.padding_bottom, layer.padding_left, layer.padding_right = top, bottom, left, right
        layers.append(layer)
    link(layers)
    dag = Dag(layers, weights)
    missing = [k for k in graph_outputs if k not in produced]
    if missing:
        raise FcmError("a model output is a model input or produced by nothing; nothing to extract", where)
    return dag


# --- small helpers ----------------------------------------------------------------------------

def _np(variable: Any) -> np.ndarray:
    return np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)


def _np_or_value(value: Any) -> Any:
    return _np(value) if hasattr(value, "numpy") else value


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "_keras_history")


def _is_model(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _functional(model: Any) -> Any:
    """The functional graph behind a model (Sequential keeps one internally)."""
    inner = getattr(model, "_functional", None)
    return inner if inner is not None else model


def _activation_name(activation: Any) -> str | None:
    if activation is None:
        return None
    if isinstance(activation, str):
        return activation
    name = getattr(activation, "__name__", None)
    return name


def _require_channels_last(layer: Any) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise FcmError(f"layer '{layer.name}' uses data_format={layer.data_format!r}; only channels_last models are supported")

