"""Comparing the convolution layers of two DAGs by structure (for tests).

Two DAGs of one architecture can list operators in different orders and have different non-conv
operators (explicit ``pad`` vs padding on the conv, a dynamic reshape as 4 ops or 1, ...). What
must agree are the convolutions and how they connect: each conv is matched to one in the other
DAG with the same attributes and the same (already matched) nearest conv ancestors.
"""

from __future__ import annotations

from extractor.dag import Dag

CONV_FIELDS = ("type", "weights_shape", "ifms_shape", "ofms_shape", "strides", "activation")


def conv_ancestors(dag: Dag) -> dict[int, frozenset[int]]:
    """For each conv, the convs reached first when walking up its parents."""
    result: dict[int, frozenset[int]] = {}
    for layer in dag:
        if not layer.is_conv:
            continue
        found, stack, seen = set(), list(layer.parents), set()
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if dag[node].is_conv:
                found.add(node)
            else:
                stack.extend(dag[node].parents)
        result[layer.id] = frozenset(found)
    return result


def effective_pads(dag: Dag, layer_id: int) -> list[int]:
    """A conv's padding plus that of an explicit ``pad`` entry right before it."""
    layer = dag[layer_id]
    pads = list(layer.pads or [0, 0, 0, 0])
    parents = [dag[p] for p in layer.parents]
    if len(parents) == 1 and parents[0].name == "pad" and parents[0].padding_top is not None:
        pad = parents[0]
        pads = [pads[0] + pad.padding_top, pads[1] + pad.padding_bottom, pads[2] + pad.padding_left, pads[3] + pad.padding_right]
    return pads


def match_convs(ours: Dag, theirs: Dag, fields=CONV_FIELDS, key=None, ignore=None):
    """Map each conv of ``ours`` to a conv of ``theirs``; return (mapping, differences).

    ``key(dag, layer)`` gives the attributes compared (default: ``fields``). ``ignore`` is a
    set of (their id, field) pairs allowed to differ (they are reported in ``differences``)."""
    ignore = ignore or set()
    key = key or (lambda dag, layer: {f: getattr(layer, f) for f in fields})
    ours_up, theirs_up = conv_ancestors(ours), conv_ancestors(theirs)
    mapping: dict[int, int] = {}
    differences: dict[tuple[int, str], tuple] = {}
    taken: set[int] = set()
    for conv in ours.convs():
        wanted_up = frozenset(mapping[a] for a in ours_up[conv.id])
        mine = key(ours, conv)
        for candidate in theirs.convs():
            if candidate.id in taken or theirs_up[candidate.id] != wanted_up:
                continue
            other = key(theirs, candidate)
            differing = {f for f in mine if mine[f] != other[f]}
            if all((candidate.id, f) in ignore for f in differing):
                mapping[conv.id] = candidate.id
                taken.add(candidate.id)
                for f in differing:
                    differences[(candidate.id, f)] = (other[f], mine[f])
                break
        else:
            raise AssertionError(f"conv {conv.id} ({mine}) with conv ancestors {sorted(wanted_up)} has no counterpart")
    unmatched = [c.id for c in theirs.convs() if c.id not in taken]
    assert not unmatched, f"convs {unmatched} of the reference have no counterpart"
    return mapping, differences
