"""Human-readable views of a DAG: the ``fcm inspect`` table and totals.

In: a :class:`~extractor.dag.Dag` (ours or the seed's; weights are not needed). Out: text.
Parameters and MACs are computed from the entries' shapes, so seed files work as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .dag import Dag, Layer

DTYPE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "int8": 1}


def _prod(values) -> int:
    return int(math.prod(values)) if values else 1


def _fmt_shape(shape) -> str:
    return "x".join(str(v) for v in shape) if shape else "-"


def layer_params(layer: Layer) -> int:
    """Weights (+ bias) of a conv or fc layer, from its shapes."""
    if layer.is_conv and layer.weights_shape:
        weights = _prod(layer.weights_shape)
        out_channels = layer.weights_shape[0]
    elif layer.type == "fc":
        if layer.weights_shape:
            weights, out_channels = _prod(layer.weights_shape), layer.weights_shape[0]
        elif layer.ifms_shape and layer.ofms_shape:
            weights, out_channels = layer.ifms_shape[-1] * layer.ofms_shape[-1], layer.ofms_shape[-1]
        else:
            return 0
    else:
        return 0
    return weights + (out_channels if layer.has_bias is not False else 0)


def layer_macs(layer: Layer) -> int:
    """Multiply-accumulates of one inference at batch 1."""
    if layer.is_conv and layer.weights_shape and layer.ofms_shape:
        _, out_h, out_w = layer.ofms_shape
        return out_h * out_w * _prod(layer.weights_shape)
    if layer.type == "fc":
        return layer_params(layer) - (layer.ofms_shape[-1] if layer.ofms_shape and layer.has_bias is not False else 0)
    return 0


def fm_elements(shape) -> int:
    """Elements of a feature map at batch 1 (conv shapes are [C,H,W]; others carry batch 1)."""
    return _prod(shape) if shape else 0


@dataclass
class Totals:
    layers: int
    convs: dict[str, int]
    fc: int
    other_ops: int
    opaque: int
    params: int
    macs: int
    fm_bytes_written: int
    conv_traffic_bytes: int
    batch: int
    dtype: str


def totals(dag: Dag, batch: int = 1, dtype: str = "fp32") -> Totals:
    size = DTYPE_BYTES[dtype]
    convs = {"s": 0, "dw": 0, "pw": 0}
    fc = other = opaque = 0
    params = macs = written = conv_traffic = 0
    for layer in dag:
        if layer.is_conv:
            convs[layer.type] += 1
            conv_traffic += fm_elements(layer.ifms_shape) + fm_elements(layer.ofms_shape)
        elif layer.type == "fc":
            fc += 1
        else:
            other += 1
        opaque += bool(layer.opaque)
        params += layer_params(layer)
        macs += layer_macs(layer)
        written += fm_elements(layer.ofms_shape)
    return Totals(len(dag), convs, fc, other, opaque, params, macs * batch, written * batch * size,
                  conv_traffic * batch * size, batch, dtype)


def format_table(dag: Dag) -> str:
    header = ("id", "op", "type", "input", "output", "kernel/stride", "activation", "parents", "children")
    rows = [header]
    for layer in dag:
        geometry = "-"
        if layer.kernel_size:
            stride = layer.strides_hw or [layer.strides] * 2
            geometry = f"{layer.kernel_size[0]}x{layer.kernel_size[1]}/{stride[0]}"
            if layer.dilation and layer.dilation != [1, 1]:
                geometry += f" d{layer.dilation[0]}"
        elif layer.strides is not None and layer.is_conv:
            geometry = f"?/{layer.strides}"
        name = layer.name + (" (opaque)" if layer.opaque else "")
        rows.append(
            (
                str(layer.id),
                name,
                layer.type or "",
                _fmt_shape(layer.ifms_shape),
                _fmt_shape(layer.ofms_shape),
                geometry,
                layer.activation if layer.activation != "0" else "",
                ",".join(map(str, layer.parents)),
                ",".join(map(str, layer.children)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _human(n: float, unit: str) -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.3g} {prefix}{unit}".replace("  ", " ")
        n /= 1000
    return f"{n} {unit}"  # pragma: no cover


def format_totals(t: Totals) -> str:
    convs = t.convs
    lines = [
        f"layers: {t.layers}  (convolutions: {sum(convs.values())} = {convs['dw']} depthwise + {convs['pw']} pointwise + "
        f"{convs['s']} standard; fully connected: {t.fc}; other ops: {t.other_ops}"
        + (f"; opaque: {t.opaque}" if t.opaque else "") + ")",
        f"parameters: {t.params:,} ({_human(t.params, 'params')})",
        f"MACs at batch {t.batch}: {t.macs:,} ({_human(t.macs, 'MAC')})",
        f"feature maps written at batch {t.batch}, {t.dtype}: {t.fm_bytes_written:,} bytes ({_human(t.fm_bytes_written, 'B')})",
        f"convolution traffic layer by layer (each reads its input and writes its output once): "
        f"{t.conv_traffic_bytes:,} bytes ({_human(t.conv_traffic_bytes, 'B')})",
    ]
    return "\n".join(lines)
