"""Filling a DAG entry's fields from its operator, the same way for every reader.

In: a :class:`~extractor.dag.Layer` whose ``name``, ``inputs``, ``outputs`` and ``options`` are set
(options use TFLite's option names: ``stride_h``, ``padding``, ``fused_activation_function``, ...;
constant operands' ``shape`` is the stored array's shape, in the seed's layout).
Out: the same layer with the seed's fields (``type``, ``weights_shape``, ``ifms_shape``,
``ofms_shape``, ``strides``, quantization, ``activation``) and ours (``kernel_size``, ``pads``, ...).
"""

from __future__ import annotations

from fcm_core.errors import FcmError

from . import ops
from .dag import Layer


def _chw(shape: list[int], what: str) -> list[int]:
    """NHWC (batch 1) -> the seed's [C, H, W]."""
    if len(shape) != 4:
        raise FcmError(f"{what}: expected a 4-D NHWC feature map, got shape {shape}")
    return [shape[3], shape[1], shape[2]]


def _shaped(operand: dict | None, what: str, role: str) -> dict:
    """``operand`` where it is there with a shape (a corrupt file may leave either out)."""
    if operand is None or "shape" not in operand:
        raise FcmError(f"{what}: its {role} is missing (corrupt file?)")
    return operand


def _explicit_pads(padding, in_hw, kernel, strides_hw, dilation, what: str) -> list[int]:
    if padding not in ("SAME", "VALID"):
        raise FcmError(f"{what}: unknown padding {padding!r} (SAME or VALID; corrupt file?)")
    if min(*strides_hw, *dilation) < 1:
        raise FcmError(f"{what}: strides {list(strides_hw)} and dilations {list(dilation)} must be at least 1 (corrupt file?)")
    return ops.explicit_pads(padding, in_hw, kernel, strides_hw, dilation)


def describe(layer: Layer) -> Layer:
    """Fill the seed's fields and the extension fields of ``layer`` (see module docstring)."""
    name, operands, outputs = layer.name, layer.inputs or [], layer.outputs or []
    options = layer.options or {}
    data_operands = [o for o in operands if o is not None and "const" not in o]
    out0 = outputs[0] if outputs else {}
    what = f"layer {layer.id} ({name})"

    activation = options.get("fused_activation_function", ops.ACTIVATION_OPS.get(name, ops.NO_ACTIVATION))
    layer.activation = activation if isinstance(activation, str) else f"ACT{activation}"
    if name == "leaky_relu":
        layer.activation_params = {"alpha": options.get("alpha", 0.2)}
    elif name == "gelu":
        layer.activation_params = {"approximate": bool(options.get("approximate", False))}

    if name in ops.CONV_OPS:
        x, w = _shaped(operands[0] if operands else None, what, "input"), operands[1] if len(operands) > 1 else None
        out0 = _shaped(outputs[0] if outputs else None, what, "output")
        if w is None or "const" not in w:
            raise FcmError(f"{what} has non-constant weights, which are not supported")
        w_shape = list(w["shape"])
        kernel = (1, 1) if len(w_shape) == 2 else (w_shape[-2], w_shape[-1])
        layer.type = ops.conv_type(name, kernel)
        strides_hw = [int(options.get("stride_h", 1)), int(options.get("stride_w", 1))]
        dilation = [int(options.get("dilation_h_factor", 1)), int(options.get("dilation_w_factor", 1))]
        in_chw, out_chw = _chw(x["shape"], what), _chw(out0["shape"], what)
        layer.weights_shape = w_shape
        if layer.type == "dw":
            layer.depth_multiplier = max(1, w_shape[0] // max(in_chw[0], 1))
        elif w_shape[1] != in_chw[0]:
            if w_shape[1] <= 0 or in_chw[0] % w_shape[1]:
                raise FcmError(f"{what}: {w_shape[1]} weight channels do not divide {in_chw[0]} input channels")
            layer.groups = in_chw[0] // w_shape[1]
        layer.ifms_shape, layer.ofms_shape = in_chw, out_chw
        layer.strides = strides_hw[1]  # the seed's scalar stride is the width stride
        layer.strides_hw = strides_hw
        layer.kernel_size = list(kernel)
        layer.dilation = dilation
        layer.padding = options.get("padding", "VALID")
        layer.pads = _explicit_pads(layer.padding, tuple(in_chw[1:]), kernel, tuple(strides_hw), tuple(dilation), what)
        layer.has_bias = len(operands) > 2 and operands[2] is not None
        _quant_fields(layer, x, out0)
        return layer

    if name == "fully_connected":
        x, w = _shaped(operands[0] if operands else None, what, "input"), operands[1] if len(operands) > 1 else None
        layer.type = "fc"
        if w is not None and "const" in w:
            layer.weights_shape = list(w["shape"])
        layer.ifms_shape, layer.ofms_shape = list(x["shape"]), list(out0.get("shape", []))
        layer.strides = 1
        layer.has_bias = len(operands) > 2 and operands[2] is not None
        _quant_fields(layer, x, out0)
        return layer

    if name in ("max_pool_2d", "average_pool_2d", "l2_pool_2d"):
        kernel = (int(options.get("filter_height", 1)), int(options.get("filter_width", 1)))
        strides_hw = (int(options.get("stride_h", 1)), int(options.get("stride_w", 1)))
        layer.kernel_size, layer.strides_hw = list(kernel), list(strides_hw)
        layer.padding = options.get("padding", "VALID")
        x = _shaped(data_operands[0] if data_operands else None, what, "input")
        layer.pads = _explicit_pads(layer.padding, tuple(x["shape"][1:3]), kernel, strides_hw, (1, 1), what)

    if name == "mean":
        layer.type = "avgpool"

    # Other operators: the seed records the raw shape and quantization of the last computed
    # operand (for two-input ops the first operand's quantization is lost there; ``inputs``
    # keeps every operand's).
    ref = data_operands[-1] if data_operands else None
    if ref is not None:
        layer.ifms_shape = list(ref["shape"])
    if outputs:
        layer.ofms_shape = list(out0["shape"])
    _quant_fields(layer, ref, out0)
    return layer


def _quant_fields(layer: Layer, x: dict | None, out: dict) -> None:
    if x is not None and "scale" in x:
        layer.ifms_scales, layer.ifms_zero_points = x["scale"], x["zero_point"]
    if "scale" in out:
        layer.ofms_scales, layer.ofms_zero_points = out["scale"], out["zero_point"]


def link(layers: list[Layer]) -> None:
    """Fill ``parents`` (producers of computed operands, by id) and their mirror, ``children``."""
    for layer in layers:
        layer.parents = sorted({o["op"] for o in layer.inputs or [] if o is not None and "op" in o})
        layer.children = []
    for layer in layers:
        for parent in layer.parents:
            layers[parent].children.append(layer.id)
