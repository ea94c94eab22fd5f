"""The seed paper's FusePlanner cost model and tiling search, re-implemented from its description.

In: a layer DAG (:class:`extractor.dag.Dag`, e.g. one of the seed's ``model_dag.json`` files) and a
GPU description read from one of the seed's ``.cfg`` files (:func:`read_seed_cfg`).
Out (:func:`paper_plan`): for every DW/PW layer its layer-by-layer (LBL) global-memory accesses
(GMA, element counts) and chosen tile ``(filters, h, w)``; for every candidate pair (PW→DW "pwdw",
DW→PW "dwpw", PW→PW "pwpw"; the second layer is the next conv layer in list order, as the paper
pairs them) the fused (FCM) GMA, the avoided accesses, the redundant computation, its ratio to the
avoided accesses, the tile and the fuse decision; and the fused pairs per kind and the not-fused
layers with their tiles, in the structure of the paper's printed output (:func:`parse_planner_output`).

The formulas are those of seed_repo_notes.md §3.2-3.4. The paper's code has defects; each one this
module reproduces is a field of :class:`Quirks`. ``paper_compatible=True`` (the default of
:func:`paper_plan`) turns them all on, because that reproduces the paper's figures;
``paper_compatible=False`` computes the corrected figures. Parts of the search that the notes leave
open (which tile sizes the memory checks count, when a tile is checked) were inferred from the
paper's printed outputs; docs/seed_compat.md says which, and how far the outputs are reproduced.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from extractor.dag import Dag, Layer
from fcm_core.errors import FcmError

#: COMP_TO_DM_ACCEPTED_RATIO: a pair is fused only if redundant computation / avoided < this.
FUSE_RATIO_LIMIT = 10.0
PATTERNS = ("pwdw", "dwpw", "pwpw")
#: Layer types the paper counts as convolutions when it looks for "the next conv layer".
CONV_TYPES = ("s", "dw", "pw")
REQUIRED_CFG_KEYS = ("sms", "l1", "shmem")

Tile = tuple[int, int, int]  # (filters, h, w), as the paper prints it


@dataclass(frozen=True)
class Quirks:
    """The paper's defects, each reproduced when True (all True: the paper's figures)."""

    #: ``dw_strides = pw_layer_specs['strides']``: PW→DW and DW→PW compute the halo with the PW stride.
    pw_stride_as_dw_stride: bool = True
    #: DW→PW evaluates the halo with ``filter_dim=1``, so its overlap term is always 0.
    dwpw_halo_always_zero: bool = True
    #: DW→PW takes |I| from the PW layer and |O| from the DW layer (the PW output never counts).
    dwpw_swapped_fms: bool = True
    #: DW LBL does not multiply the per-channel halo O_v by C.
    dw_halo_not_per_channel: bool = True
    #: Tile counts are fractions: F/f, and H/t for the first tile; ``1 + H//t`` after growth.
    fractional_tile_counts: bool = True
    #: The filter tile grows 1, 2, 4, ... while below F: the whole F is never tried.
    no_full_filter_tile: bool = True
    #: The tile-count, memory and size checks run on the previous tile (one step stale), so the
    #: search always costs one tile past the last that fits.
    stale_tile_checks: bool = True
    #: The DW search sizes its input tile once, before the loop: its memory check never binds.
    dw_input_tile_never_updated: bool = True
    #: Element counts are compared with KiB limits, as if every element were one byte.
    elements_as_bytes: bool = True
    #: The redundant-computation denominator has ``W·H·W·K²`` where ``C·H·W·K²`` belongs.
    redundant_comp_width_for_channels: bool = True
    #: The halo is dropped when the tile is taller than the map, whatever its width.
    halo_checks_height_only: bool = True
    #: The on-chip footprints the paper checks (inferred from its outputs; see docs/seed_compat.md):
    #: PW→DW output tile sized like the intermediate (stride ignored); DW→PW counts full-DW-depth
    #: tiles of the input size and no DW weights; PW→PW adds nothing for L1.
    paper_footprints: bool = True


PAPER = Quirks()
CORRECTED = Quirks(**{f.name: False for f in dataclasses.fields(Quirks)})


# --- GPU description --------------------------------------------------------------------------


def read_seed_cfg(path: str | os.PathLike) -> dict[str, int]:
    """Read a seed ``hw_configs/*.cfg`` file: ``KEY::VALUE`` lines -> ``{lower-cased key: int}``.

    Spaces are ignored (the paper strips them) and so are blank lines. Raises :class:`FcmError` for
    an unreadable file, a line that is not ``KEY::VALUE``, a value that is not a positive integer,
    or a missing ``SMs``, ``L1`` or ``shmem`` key (L1 and shmem are KiB per SM).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise FcmError(f"cannot read hw config: {exc}", path) from None
    cfg: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.replace(" ", "").replace("\t", "")
        if not line:
            continue
        key, sep, value = line.partition("::")
        if not sep or not key or "::" in value:
            raise FcmError(f"line {number}: expected KEY::VALUE, got {raw.strip()!r}", path)
        if not re.fullmatch(r"[0-9]+", value) or int(value) == 0:
            raise FcmError(f"line {number}: {key} must be a positive integer, got {value!r}", path)
        cfg[key.lower()] = int(value)
    missing = [key for key in REQUIRED_CFG_KEYS if key not in cfg]
    if missing:
        raise FcmError(f"missing key(s): {', '.join(missing)}", path)
    return cfg


@dataclass(frozen=True)
class Limits:
    """What a tile is checked against: SM count, and shared memory and L1 per SM in elements."""

    sms: int
    shmem: int
    l1: int

    @classmethod
    def from_cfg(cls, cfg: dict[str, int], bytes_per_element: int) -> "Limits":
        return cls(cfg["sms"], cfg["shmem"] * 1024 // bytes_per_element, cfg["l1"] * 1024 // bytes_per_element)


# --- small formulas -----------------------------------------------------------------------------


def pow2_ceil(x: int) -> int:
    p = 1
    while p < x:
        p *= 2
    return p


def fm_size(shape: list[int]) -> int:
    return math.prod(shape)


def tile_count(extent: int, tile: int, first: bool, quirks: Quirks) -> float:
    """Tiles along one dimension (the paper's count is one too many when the tile divides the extent)."""
    if not quirks.fractional_tile_counts:
        return math.ceil(extent / tile)
    return extent / tile if first else 1 + extent // tile


def spatial_tiles(h: int, w: int, th: int, tw: int, first: bool, quirks: Quirks) -> float:
    """N_t, the number of spatial tiles."""
    return tile_count(h, th, first, quirks) * tile_count(w, tw, first, quirks)


def filter_tile_count(filters: int, f: int, quirks: Quirks) -> float:
    """F_t = F / f."""
    return filters / f if quirks.fractional_tile_counts else math.ceil(filters / f)


def filter_tile_sizes(filters: int, quirks: Quirks) -> list[int]:
    """Filter-tile sizes tried: 1, 2, 4, ... below F, then F itself unless the paper's defect is on."""
    sizes = []
    f = 1
    while f < filters:
        sizes.append(f)
        f *= 2
    if not quirks.no_full_filter_tile:
        sizes.append(filters)
    return sizes


def halo_overlap(h: int, w: int, tile_h: int, tile_w: int, k: int, s: int, quirks: Quirks) -> int:
    """O_v: input elements per channel read twice because neighbouring tiles overlap (notes §3.2)."""
    if k <= s:
        return 0
    if quirks.halo_checks_height_only and tile_h > h:
        return 0
    rows = max(math.ceil(h / tile_h) - 1, 0) * (k - s) * w
    cols = max(math.ceil(w / tile_w) - 1, 0) * (k - s) * h
    return rows + cols


# --- the tiling search -------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """The tile a search chose and its GMA, in the search's own variables."""

    gma: float
    f: int
    h: int
    w: int


def grow_tiles(h0: int, w0: int) -> Iterator[tuple[int, int, bool]]:
    """``(h, w, is_first)`` in the order the paper tries them: width doubles first, then height."""
    h, w, step = h0, w0, 0
    while True:
        yield h, w, step == 0
        if step % 2 == 0:
            w *= 2
        else:
            h *= 2
        step += 1


TileCost = Callable[[int, int, int, bool], float]  # (f, h, w, is_first) -> GMA
TileCheck = Callable[[int, int, int, bool], bool]  # (f, h, w, is_first) -> fits


def search(
    filter_sizes: list[int],
    first_tile: tuple[int, int],
    limit: tuple[int, int],
    gma: TileCost,
    fits: TileCheck,
    quirks: Quirks,
) -> Choice | None:
    """Minimum-GMA tile over filter tiles × growing spatial tiles; None if no tile fits.

    ``fits`` is the tile-count and memory check and ``limit`` the power of two at or above the map.
    The paper checks a tile after costing it and then grows it, so the tile it costs next is the
    one after the last that passed (``stale_tile_checks``); the corrected search costs only tiles
    that pass. On a tie the first tile tried stays (the paper compares with ``<``).
    """
    best: Choice | None = None
    for f in filter_sizes:
        passed = fits(f, first_tile[0], first_tile[1], True)  # the first tile must pass itself
        for h, w, first in grow_tiles(*first_tile):
            within = h <= limit[0] and w <= limit[1]
            if quirks.stale_tile_checks:
                if not passed:
                    break
                passed = within and fits(f, h, w, first)  # decides whether the next tile is costed
            elif not (within and fits(f, h, w, first)):
                break
            cost = gma(f, h, w, first)
            if best is None or cost < best.gma:
                best = Choice(cost, f, h, w)
    return best


def fits_check(n_tiles: float, on_chip: float, with_l1: float, limits: Limits) -> bool:
    """Enough tiles for every SM; shared memory holds ``on_chip``; L1 holds ``with_l1``."""
    return n_tiles >= limits.sms and on_chip <= limits.shmem and with_l1 <= limits.l1


# --- layer-by-layer estimates ------------------------------------------------------------------


@dataclass(frozen=True)
class LayerEstimate:
    layer: int
    type: str
    gma: float
    tile: Tile


def estimate_dw(layer: Layer, limits: Limits, quirks: Quirks = PAPER) -> LayerEstimate | None:
    """DW LBL: ``|I| + |O| + 2·O_v(·C) + |W|·N_t``, depth-1 tiles; printed as (1, t/S, t/S)."""
    c, k, _ = layer.weights_shape
    _, h, w = layer.ifms_shape
    s = layer.strides
    start = pow2_ceil(k)

    def gma(f: int, th: int, tw: int, first: bool) -> float:
        overlap = halo_overlap(h, w, th, tw, k, s, quirks)
        if not quirks.dw_halo_not_per_channel:
            overlap *= c
        io = fm_size(layer.ifms_shape) + fm_size(layer.ofms_shape)
        return io + 2 * overlap + c * k * k * spatial_tiles(h, w, th, tw, first, quirks)

    def fits(f: int, th: int, tw: int, first: bool) -> bool:
        mh, mw = (start, start) if quirks.dw_input_tile_never_updated else (min(th, h), min(tw, w))
        on_chip = k * k + mh * mw  # one channel: weights + input tile
        n_tiles = c * spatial_tiles(h, w, th, tw, first, quirks)  # every channel is a tile
        return fits_check(n_tiles, on_chip, on_chip + (mh // s) * (mw // s), limits)

    best = search([1], (start, start), (pow2_ceil(h), pow2_ceil(w)), gma, fits, quirks)
    if best is None:
        return None
    return LayerEstimate(layer.id, "dw", best.gma, (1, best.h // s, best.w // s))


def estimate_pw(layer: Layer, limits: Limits, quirks: Quirks = PAPER) -> LayerEstimate | None:
    """PW LBL: ``F_t·|I| + |O| + |W|·N_t``, full-depth input tiles; printed as (f, t/S, t/S)."""
    filters, c = layer.weights_shape
    _, h, w = layer.ifms_shape
    s = layer.strides

    def gma(f: int, th: int, tw: int, first: bool) -> float:
        f_t = filter_tile_count(filters, f, quirks)
        weights = filters * c * spatial_tiles(h, w, th, tw, first, quirks)
        return f_t * fm_size(layer.ifms_shape) + fm_size(layer.ofms_shape) + weights

    def fits(f: int, th: int, tw: int, first: bool) -> bool:
        mh, mw = (th, tw) if quirks.paper_footprints else (min(th, h), min(tw, w))
        on_chip = f * c + c * mh * mw  # weight tile + input tile
        n_tiles = filter_tile_count(filters, f, quirks) * spatial_tiles(h, w, th, tw, first, quirks)
        return fits_check(n_tiles, on_chip, on_chip + f * mh * mw, limits)

    best = search(filter_tile_sizes(filters, quirks), (1, 1), (pow2_ceil(h), pow2_ceil(w)), gma, fits, quirks)
    if best is None:
        return None
    return LayerEstimate(layer.id, "pw", best.gma, (best.f, best.h // s, best.w // s))


def estimate_layer(layer: Layer, limits: Limits, quirks: Quirks = PAPER) -> LayerEstimate | None:
    """LBL estimate of a DW or PW layer; None for other layers (the paper gives standard convs −1)."""
    if layer.type == "dw":
        return estimate_dw(layer, limits, quirks)
    if layer.type == "pw":
        return estimate_pw(layer, limits, quirks)
    return None


# --- fused-pair estimates ----------------------------------------------------------------------


@dataclass(frozen=True)
class PairEstimate:
    kind: str
    first: int
    second: int
    gma: float | None  # None: no tile fits, and the pair is not fused
    tile: Tile | None
    redundant_comp: float  # PW→DW: halo recomputation as a fraction of the MACs; others −1, as in the paper
    avoided: float | None = None
    ratio: float | None = None  # redundant_comp / avoided, the quantity the paper thresholds
    fused: bool = False


def redundant_computation(pw: Layer, dw: Layer, overlap: int, quirks: Quirks) -> float:
    """PW→DW: ``O_v·C_in·F / (|I|·F + C_dw·H_dw·W_dw·K²)`` (paper: W_dw in place of C_dw)."""
    filters, c_in = pw.weights_shape
    c_dw, k, _ = dw.weights_shape
    _, h_dw, w_dw = dw.ifms_shape
    first_factor = w_dw if quirks.redundant_comp_width_for_channels else c_dw
    return overlap * c_in * filters / (fm_size(pw.ifms_shape) * filters + first_factor * h_dw * w_dw * k * k)


def estimate_pwdw(pw: Layer, dw: Layer, limits: Limits, quirks: Quirks = PAPER) -> PairEstimate:
    """PW→DW FCM: ``F_t·|I_pw| + |O_dw| + 2·O_v·C_in + (|W_pw|+|W_dw|)·N_t``.

    The search's h, w are the intermediate (DW input) tile, from pow2ceil(K)² up; f tiles the PW
    filters (= DW channels); the halo is recomputed from all C_in PW inputs. Printed: the PW input
    tile, h·S_pw × w·S_pw.
    """
    filters, c_in = pw.weights_shape
    _, h_pw, w_pw = pw.ifms_shape
    s_pw = pw.strides
    _, k, _ = dw.weights_shape
    _, h, w = dw.ifms_shape
    s_halo = s_pw if quirks.pw_stride_as_dw_stride else dw.strides

    def gma(f: int, th: int, tw: int, first: bool) -> float:
        f_t = filter_tile_count(filters, f, quirks)
        halo = 2 * halo_overlap(h, w, th, tw, k, s_halo, quirks) * c_in
        weights = (fm_size(pw.weights_shape) + fm_size(dw.weights_shape)) * spatial_tiles(h, w, th, tw, first, quirks)
        return f_t * fm_size(pw.ifms_shape) + fm_size(dw.ofms_shape) + halo + weights

    def fits(f: int, th: int, tw: int, first: bool) -> bool:
        mh, mw = min(th, h), min(tw, w)  # tiles are capped at the feature map
        middle = f * mh * mw
        on_chip = f * c_in + f * k * k + c_in * min(th * s_pw, h_pw) * min(tw * s_pw, w_pw) + middle
        out = middle if quirks.paper_footprints else f * (mh // dw.strides) * (mw // dw.strides)
        n_tiles = filter_tile_count(filters, f, quirks) * spatial_tiles(h, w, th, tw, first, quirks)
        return fits_check(n_tiles, on_chip, on_chip + out, limits)

    start = pow2_ceil(k)
    best = search(filter_tile_sizes(filters, quirks), (start, start), (pow2_ceil(h), pow2_ceil(w)), gma, fits, quirks)
    if best is None:
        return PairEstimate("pwdw", pw.id, dw.id, None, None, -1.0)
    overlap = halo_overlap(h, w, best.h, best.w, k, s_halo, quirks)
    tile = (best.f, best.h * s_pw, best.w * s_pw)
    return PairEstimate("pwdw", pw.id, dw.id, best.gma, tile, redundant_computation(pw, dw, overlap, quirks))


def estimate_dwpw(dw: Layer, pw: Layer, limits: Limits, quirks: Quirks = PAPER) -> PairEstimate:
    """DW→PW FCM: ``max(F_t,1)·|I| + |O| + 2·O_v·C_dw + (|W_pw|+|W_dw|)·N_t``.

    The search's h, w are the DW input tile, from K×K (a 1×1 intermediate tile) up, at full DW
    depth; f tiles the PW filters. Printed: (f, h, w).
    """
    filters, c_pw = pw.weights_shape
    c_dw, k, _ = dw.weights_shape
    _, h, w = dw.ifms_shape
    i_size = fm_size(pw.ifms_shape if quirks.dwpw_swapped_fms else dw.ifms_shape)
    o_size = fm_size(dw.ofms_shape if quirks.dwpw_swapped_fms else pw.ofms_shape)
    halo_k = 1 if quirks.dwpw_halo_always_zero else k
    halo_s = pw.strides if quirks.pw_stride_as_dw_stride else dw.strides

    def gma(f: int, th: int, tw: int, first: bool) -> float:
        f_t = filter_tile_count(filters, f, quirks)
        halo = 2 * halo_overlap(h, w, th, tw, halo_k, halo_s, quirks) * c_dw
        weights = (fm_size(pw.weights_shape) + fm_size(dw.weights_shape)) * spatial_tiles(h, w, th, tw, first, quirks)
        return max(f_t, 1) * i_size + o_size + halo + weights

    def fits(f: int, th: int, tw: int, first: bool) -> bool:
        mh, mw = min(th, h), min(tw, w)
        n_tiles = filter_tile_count(filters, f, quirks) * spatial_tiles(h, w, th, tw, first, quirks)
        if quirks.paper_footprints:
            # Inferred from the outputs: the PW weight tile and two full-depth tiles of the input
            # size on chip; for L1 a third one and the intermediate tile (t/K, the 1, 2, 4, ...
            # the search doubles) at full depth. The DW weights are not counted.
            on_chip = f * c_pw + 2 * c_dw * mh * mw
            return fits_check(n_tiles, on_chip, on_chip + c_dw * mh * mw + c_dw * (th // k) * (tw // k), limits)
        oh, ow = (mh - k) // dw.strides + 1, (mw - k) // dw.strides + 1
        on_chip = f * c_pw + c_dw * k * k + c_dw * mh * mw + c_dw * oh * ow  # weights, input, intermediate
        return fits_check(n_tiles, on_chip, on_chip + f * oh * ow, limits)

    best = search(filter_tile_sizes(filters, quirks), (k, k), (pow2_ceil(h), pow2_ceil(w)), gma, fits, quirks)
    if best is None:
        return PairEstimate("dwpw", dw.id, pw.id, None, None, -1.0)
    return PairEstimate("dwpw", dw.id, pw.id, best.gma, (best.f, best.h, best.w), -1.0)


def estimate_pwpw(pw1: Layer, pw2: Layer, limits: Limits, quirks: Quirks = PAPER) -> PairEstimate:
    """PW→PW FCM: ``max(1,F_t2)·|I_1| + |O_2| + (|W_1|·F_t2 + |W_2|)·N_t``.

    PW1's weights stay whole (each filter tile of PW2 recomputes all F1 intermediate channels);
    f tiles PW2's filters. Printed: (F1, h, w).
    """
    f1, c1 = pw1.weights_shape
    f2, c2 = pw2.weights_shape
    _, h, w = pw1.ifms_shape

    def gma(f: int, th: int, tw: int, first: bool) -> float:
        f_t = filter_tile_count(f2, f, quirks)
        weights = (f1 * c1 * f_t + f2 * c2) * spatial_tiles(h, w, th, tw, first, quirks)
        return max(1, f_t) * fm_size(pw1.ifms_shape) + fm_size(pw2.ofms_shape) + weights

    def fits(f: int, th: int, tw: int, first: bool) -> bool:
        mh, mw = min(th, h), min(tw, w)
        on_chip = f1 * c1 + f * f1 + c1 * mh * mw + f1 * mh * mw  # W1, W2 tile, input, intermediate
        out = 0 if quirks.paper_footprints else f * mh * mw
        n_tiles = filter_tile_count(f2, f, quirks) * spatial_tiles(h, w, th, tw, first, quirks)
        return fits_check(n_tiles, on_chip, on_chip + out, limits)

    best = search(filter_tile_sizes(f2, quirks), (1, 1), (pow2_ceil(h), pow2_ceil(w)), gma, fits, quirks)
    if best is None:
        return PairEstimate("pwpw", pw1.id, pw2.id, None, None, -1.0)
    return PairEstimate("pwpw", pw1.id, pw2.id, best.gma, (f1, best.h, best.w), -1.0)


PAIR_ESTIMATORS = {"pwdw": estimate_pwdw, "dwpw": estimate_dwpw, "pwpw": estimate_pwpw}


# --- selection ---------------------------------------------------------------------------------


def candidate_pairs(dag: Dag) -> dict[str, list[tuple[Layer, Layer]]]:
    """The paper's candidates: each conv layer and the next conv layer in list order (not graph edges)."""
    convs = [layer for layer in dag if layer.type in CONV_TYPES]
    pairs: dict[str, list[tuple[Layer, Layer]]] = {kind: [] for kind in PATTERNS}
    for first, second in zip(convs, convs[1:]):
        kind = first.type + second.type
        if kind in pairs:
            pairs[kind].append((first, second))
    return pairs


def decide(pair: PairEstimate, lbl_first: float, lbl_second: float) -> PairEstimate:
    """``avoided = LBL(i) + LBL(j) − FCM``; fuse iff avoided > 0 and redundant_comp / avoided < 10.

    The paper divides by ``avoided`` unguarded (ZeroDivisionError at 0); here 0 means not fused.
    """
    if pair.gma is None:
        return pair
    avoided = lbl_first + lbl_second - pair.gma
    ratio = pair.redundant_comp / avoided if avoided != 0 else math.inf
    fused = avoided > 0 and ratio < FUSE_RATIO_LIMIT
    return dataclasses.replace(pair, avoided=avoided, ratio=ratio, fused=fused)


def paper_plan(
    dag: Dag,
    cfg: dict[str, int],
    paper_compatible: bool = True,
    quirks: Quirks | None = None,
    bytes_per_element: int = 1,
) -> dict:
    """Run the paper's planner on ``dag`` for the GPU ``cfg`` (from :func:`read_seed_cfg`).

    ``paper_compatible`` selects :data:`PAPER` or :data:`CORRECTED`; ``quirks`` overrides that choice
    defect by defect. ``bytes_per_element`` sizes the memory checks unless ``elements_as_bytes``.

    Returns ``{"pwdw"|"dwpw"|"pwpw": {(i, j): tile}}`` for the fused pairs and ``"not_fused":
    {id: tile}`` for the DW/PW layers in no fused pair (the structure :func:`parse_planner_output`
    returns), plus ``"layers": {id: LayerEstimate}`` and ``"pairs": {kind: {(i, j): PairEstimate}}``.
    Each kind is decided on its own, as in the paper: a layer can be in several fused pairs.
    """
    if quirks is None:
        quirks = PAPER if paper_compatible else CORRECTED
    limits = Limits.from_cfg(cfg, 1 if quirks.elements_as_bytes else bytes_per_element)
    layers = {}
    for layer in dag:
        estimate = estimate_layer(layer, limits, quirks)
        if estimate is not None:
            layers[layer.id] = estimate
    pairs: dict[str, dict[tuple[int, int], PairEstimate]] = {}
    for kind, candidates in candidate_pairs(dag).items():
        pairs[kind] = {}
        for first, second in candidates:
            pair = PAIR_ESTIMATORS[kind](first, second, limits, quirks)
            if first.id in layers and second.id in layers:
                pair = decide(pair, layers[first.id].gma, layers[second.id].gma)
            pairs[kind][(first.id, second.id)] = pair
    plan: dict = {kind: {key: p.tile for key, p in pairs[kind].items() if p.fused} for kind in PATTERNS}
    in_fused_pair = {layer_id for kind in PATTERNS for key in plan[kind] for layer_id in key}
    plan["not_fused"] = {lid: est.tile for lid, est in layers.items() if lid not in in_fused_pair}
    plan["layers"] = layers
    plan["pairs"] = pairs
    return plan


# --- the paper's printed output ----------------------------------------------------------------

_SECTION = re.compile(r"^\*+\s*(pwdw|dwpw|pwpw|not fused)\s*\*+$")


def _whole_number(text: str, path: str | os.PathLike, number: int) -> int:
    try:
        value = float(text)  # the paper prints some tile sizes as floats ("1.0")
    except ValueError:
        raise FcmError(f"line {number}: {text!r} is not a number", path) from None
    if not value.is_integer():
        raise FcmError(f"line {number}: {text!r} is not a whole number", path)
    return int(value)


def parse_planner_output(path: str | os.PathLike) -> dict[str, dict]:
    """Read a saved stdout of the paper's planner (``planner_outputs/<model>__<gpu>.txt``).

    Returns ``{"pwdw"|"dwpw"|"pwpw": {(i, j): (f, h, w)}, "not_fused": {id: (f, h, w)}}``;
    raises :class:`FcmError` for anything else in the file.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FcmError(f"cannot read planner output: {exc}", path) from None
    out: dict[str, dict] = {kind: {} for kind in PATTERNS}
    out["not_fused"] = {}
    section: str | None = None
    key: int | tuple[int, int] | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("*"):  # a section header, or the closing row of stars
            match = _SECTION.match(line)
            section = match.group(1).replace(" ", "_") if match else None
            continue
        fields = line.split()
        if section is None:
            raise FcmError(f"line {number}: {line!r} is outside a section", path)
        if fields[0] == "layers:" and len(fields) == 3 and section != "not_fused":
            key = (_whole_number(fields[1], path, number), _whole_number(fields[2], path, number))
        elif fields[0] == "Layer:" and len(fields) == 2 and section == "not_fused":
            key = _whole_number(fields[1], path, number)
        elif fields[:2] == ["tile", "dims:"] and len(fields) == 5 and key is not None:
            out[section][key] = tuple(_whole_number(x, path, number) for x in fields[2:])
            key = None
        else:
            raise FcmError(f"line {number}: unexpected {line!r}", path)
    return out
