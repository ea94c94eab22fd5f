"""A DAG, with its fusion groups, as a self-contained HTML page (``fcm inspect --html``).

In: a :class:`~extractor.dag.Dag` and optionally a plan (``Plan.to_json()`` dict). Out: one HTML
string with inline CSS and SVG (no scripts, no external resources): one row per entry in
execution order, edges drawn in lanes so that branches sit side by side, and each fusion group's
entries shaded in its colour with the group's kind and predicted saving beside them.
"""

from __future__ import annotations

import html

from extractor.dag import Dag, Layer

ROW = 26
LANE = 18
TEXT_X = 40  # text starts this far right of the last lane
PALETTE = ["#e8f1fb", "#fdf0e0", "#e9f6ea", "#f6e8f5", "#fff8d6", "#e6f5f6", "#f2ece4", "#eef0fc"]
STROKE = ["#3b7dd8", "#e08a1e", "#3a9a44", "#b04aa8", "#b79a00", "#2a9aa5", "#8a6a44", "#5b63d6"]


def _lanes(dag: Dag) -> list[int]:
    """A column per entry: an entry continues its first parent's lane when it is that parent's
    last consumer, otherwise it takes the leftmost lane free at its row."""
    busy_until: dict[int, int] = {}  # lane -> last row its current occupant's edges reach
    lane_of: list[int] = []
    for layer in dag:
        end = max(layer.children, default=layer.id)
        lane = None
        for parent in layer.parents:
            candidate = lane_of[parent]
            if busy_until.get(candidate, -1) <= layer.id and max(dag[parent].children) == layer.id:
                lane = candidate
                break
        if lane is None:
            lane = next(l for l in range(len(dag) + 1) if busy_until.get(l, -1) < layer.id)
        lane_of.append(lane)
        busy_until[lane] = end
    return lane_of


def _label(layer: Layer) -> str:
    parts = [f"{layer.id}", layer.name]
    if layer.type:
        parts.append(f"[{layer.type}]")
    if layer.ifms_shape or layer.ofms_shape:
        parts.append("x".join(map(str, layer.ifms_shape or [])) + " → " + "x".join(map(str, layer.ofms_shape or [])))
    if layer.kernel_size:
        parts.append(f"k{layer.kernel_size[0]}/s{(layer.strides_hw or [layer.strides])[0]}")
    elif layer.is_conv and layer.strides:
        parts.append(f"s{layer.strides}")
    if layer.activation not in ("0", None):
        parts.append(layer.activation)
    if layer.opaque:
        parts.append("(opaque)")
    return "  ".join(parts)


def render_html(dag: Dag, plan: dict | None = None, title: str = "DAG") -> str:
    lanes = _lanes(dag)
    width_lanes = (max(lanes, default=0) + 1) * LANE
    text_x = width_lanes + TEXT_X
    group_of: dict[int, dict] = {}
    for group in (plan or {}).get("groups", []):
        for entry in group["entries"]:
            group_of[entry] = group
    height = len(dag) * ROW + 20
    width = text_x + 760
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="12">']

    # group shading behind the rows, and a label with the kind and the predicted saving
    for group in (plan or {}).get("groups", []):
        colour = PALETTE[group["id"] % len(PALETTE)]
        stroke = STROKE[group["id"] % len(STROKE)]
        for entry in group["entries"]:
            y = entry * ROW + 10
            svg.append(f'<rect x="2" y="{y + 1}" width="{width - 4}" height="{ROW - 2}" fill="{colour}" stroke="{stroke}" '
                       f'stroke-width="0.6" rx="3"/>')
        first = min(group["entries"])
        saved = group["predicted"]["saved_time_us"]
        svg.append(f'<text x="{width - 8}" y="{first * ROW + 10 + 17}" text-anchor="end" fill="{stroke}" font-weight="bold">'
                   f'group {group["id"]}: {html.escape(group["kind"])}, saves {saved:.1f} us</text>')

    # edges: down the parent's lane, then across into the child's
    for layer in dag:
        for parent in layer.parents:
            x1, y1 = lanes[parent] * LANE + 12, parent * ROW + 10 + ROW / 2
            x2, y2 = lanes[layer.id] * LANE + 12, layer.id * ROW + 10 + ROW / 2
            if x1 == x2:
                path = f"M{x1},{y1} L{x2},{y2}"
            else:
                bend = y2 - ROW / 2
                path = f"M{x1},{y1} L{x1},{bend} Q{x1},{y2} {x2},{y2}"
            svg.append(f'<path d="{path}" fill="none" stroke="#777" stroke-width="1.2"/>')

    for layer in dag:
        x, y = lanes[layer.id] * LANE + 12, layer.id * ROW + 10 + ROW / 2
        fill = "#222" if layer.is_conv else "#fff"
        if layer.id in group_of:
            fill = STROKE[group_of[layer.id]["id"] % len(STROKE)] if layer.is_conv else "#fff"
        shape = (f'<rect x="{x - 5}" y="{y - 5}" width="10" height="10" fill="{fill}" stroke="#222"/>' if layer.is_conv
                 else f'<circle cx="{x}" cy="{y}" r="4.5" fill="{fill}" stroke="#222"/>')
        svg.append(shape)
        svg.append(f'<text x="{text_x}" y="{y + 4}" fill="{"#999" if layer.opaque else "#111"}">{html.escape(_label(layer))}</text>')
    svg.append("</svg>")

    summary = ""
    if plan:
        totals = plan["totals"]
        summary = (f"<p>{html.escape(plan['gpu']['name'])}, batch {plan['batch']}, {html.escape(plan['dtype'])}: "
                   f"{totals['groups']} groups fuse {totals['convs_fused']} of {totals['convs']} convolutions "
                   f"({totals['dw_fused']} of {totals['dw_convs']} depthwise); predicted "
                   f"{totals['unfused']['time_us'] / 1e3:.3f} ms → {totals['fused']['time_us'] / 1e3:.3f} ms, "
                   f"{totals['unfused']['launches']} → {totals['fused']['launches']} kernel launches.</p>")
    legend = ("<p class='legend'>■ convolution (coloured: in a fusion group) &nbsp; ○ other operator &nbsp; "
              "shaded rows: the entries one fused node replaces</p>")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:16px;color:#111} h1{font-size:18px} "
        "p{font-size:13px;max-width:900px} .legend{color:#555}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{summary}{legend}\n" + "\n".join(svg) + "\n</body></html>\n"
    )
