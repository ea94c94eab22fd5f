"""The CUDA launch plan: one vocabulary for the tuner that writes plans and the kernels that read them.

In: a plan's fields, or its text. Out: the text the kernels parse (``csrc/plan_text.h``:
``pixels,HxW,f_tile,split,buffers,w1_direct[,cluster]`` for NCHW nodes, which run the chain
kernels; ``HxW,f_tile,split,stages[,groups]`` for channels-last nodes, which run the block kernels, or
``gemm`` for a channels-last lone PW node as one GEMM, ``dw+gemm`` for a DW->PW node and ``gemm+dw``
for a PW->DW node in two passes, ``gemm+dw+gemm`` for a PW->DW->PW node in three), a
node's ``cuda_plans`` attribute (``BATCH:plan;BATCH:plan``, the plans measured fastest per batch
size), a copy of a model whose fused nodes must run one plan (:func:`with_forced_plan`: how ``fcm
tune`` times a candidate and the GPU tests force one), and the plans ``fcm tune`` times for a fused node (:func:`plan_candidates`; for a
channels-last node the block kernels' own candidates for the GPU at hand, best estimates first,
then the separate passes and wide-region plans the estimate does not rank, from the library:
:func:`block_plan_candidates`). ``docs/cuda_kernels.md`` says what each field
divides.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from fcm_core import vocabulary

from .schema import DOMAIN, is_channels_last, nchw_dims


@dataclass(frozen=True)
class LaunchPlan:
    pixels: int  # output pixels per block the kernel is compiled for (64 or 128)
    tile_h: int
    tile_w: int
    f_tile: int  # output channels per block (0: the kernels' choice, for kinds without a last pointwise stage)
    split: int = 1  # blocks sharing a tile's intermediate channels
    buffers: int = 2  # chunk buffers (2: the next chunk loads while one computes)
    w1_direct: bool = False  # first-stage weights read from device memory instead of staged
    cluster: bool = False  # split shares added in a thread-block cluster (sm_90) instead of a workspace

    def text(self) -> str:
        fields = f"{self.pixels},{self.tile_h}x{self.tile_w},{self.f_tile},{self.split},{self.buffers},{int(self.w1_direct)}"
        return fields + (",1" if self.cluster else "")

    @classmethod
    def parse(cls, text: str) -> "LaunchPlan":
        """The plan of a text the kernels take; ValueError for any other."""
        try:
            pixels, tile, f_tile, split, buffers, w1_direct, *rest = text.split(",")
            tile_h, tile_w = tile.split("x")
            if len(rest) > 1:
                raise ValueError
            return cls(int(pixels), int(tile_h), int(tile_w), int(f_tile), int(split), int(buffers), bool(int(w1_direct)),
                       bool(int(rest[0])) if rest else False)
        except ValueError:
            raise ValueError(f"not a launch plan (pixels,HxW,f_tile,split,buffers,w1_direct[,cluster]): {text!r}") from None


def cuda_plans_text(plans: dict[int, str]) -> str:
    """The ``cuda_plans`` attribute of a node: its plan text per batch size, smallest batch first."""
    return ";".join(f"{batch}:{plan}" for batch, plan in sorted(plans.items()))


PLANS_ATTRIBUTE = "cuda_plans"
#: 1: a plan of cuda_plans that cannot run on the GPU at hand is an error naming why, where by
#: default it gives way to the kernels' own plan (a tune records the plans that cannot run).
STRICT_ATTRIBUTE = "cuda_plans_strict"
#: The ops that take launch plans: the float fused ops, in every float precision (the half ones run
#: the same kernels in their own element type).
PLANNED_OPS = frozenset(kind.op_type(precision) for kind in vocabulary.KINDS.values() for precision in kind.precisions
                        if precision in ("fp32", "fp16", "bf16"))
#: The kernels' debugging override: one plan forced on every node, ahead of the attributes.
PLAN_OVERRIDE = "FCM_CUDA_PLAN"


def with_forced_plan(model: onnx.ModelProto, plan: str, batch: int) -> onnx.ModelProto:
    """A copy of ``model`` whose float fused nodes run ``plan`` at batch size ``batch``, or fail
    saying why they cannot (``cuda_plans`` of that one plan, ``cuda_plans_strict=1``); other batch
    sizes get the kernels' own plans."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.domain != DOMAIN or node.op_type not in PLANNED_OPS:
            continue
        kept = [a for a in node.attribute if a.name not in (PLANS_ATTRIBUTE, STRICT_ATTRIBUTE)]
        del node.attribute[:]
        node.attribute.extend(kept + [onnx.helper.make_attribute(PLANS_ATTRIBUTE, cuda_plans_text({batch: plan})),
                                      onnx.helper.make_attribute(STRICT_ATTRIBUTE, 1)])
    return out


#: Tiles per block size tried (pixels: (tile_h, tile_w), ...), and the splits and output-channel tiles.
TILES = ((64, ((8, 8), (4, 16))), (128, ((8, 16),)))
SPLITS = (1, 2, 4, 8, 16, 32)
F_TILES = (64, 32, 16)
# A split adds its shares through a workspace of split x the output (or in a cluster, below): worth
# timing only while the unsplit grid leaves SMs idle (fewer blocks than a few waves on current
# GPUs, 132 SMs x up to 4 blocks each) and while the workspace stays small (each timed session
# keeps its own until it is freed; gigabytes per plan at batch 32 exhaust the GPU within one group).
SPLIT_BELOW_BLOCKS = 1024
SPLIT_WORKSPACE_BYTES = 256 << 20
# Splits of 2 to 16 are timed both ways, shares through the workspace and in a cluster (a seventh
# plan field of 1): the cluster saves the second kernel but must fit a GPC whole, so which wins
# depends on the group. A cluster plan fails (and is skipped) on GPUs before sm_90.
CLUSTER_MAX = 16


def round16(v: int) -> int:
    return -(-v // 16) * 16


def effective_split(split: int, chunks: int) -> int:
    """The split the kernels run for a requested one: at most one per 32-channel chunk, and none
    that would leave a share empty (as ForcedPlan clamps it)."""
    split = max(1, min(split, chunks))
    while split > 1 and -(-chunks // -(-chunks // split)) != split:
        split -= 1
    return split


def plan_candidates(node: onnx.NodeProto, shapes: dict[str, list[int]], initializers: dict) -> list[str]:
    """Distinct launch plans ("pixels,HxW,f_tile,split,buffers,w1_direct[,cluster]") worth timing for a fused
    node at the batch ``shapes`` are for: each tile clamped to the output, each output-channel tile to
    the output channels, each split to the intermediate channels' 32-channel chunks; splits only
    where the unsplit grid is small and the workspace too (SPLIT_BELOW_BLOCKS)."""
    n, f, out_h, out_w = shapes[node.output[0]]
    last_pointwise = node.op_type in ("FusedDwPw", "FusedPwPw", "FusedPwDwPw")
    if node.op_type.startswith("FusedPw"):
        first = initializers.get(node.input[1])
        intermediate = int(first.dims[0]) if first is not None else int(shapes[node.input[1]][0])
    else:
        intermediate = int(shapes[node.input[0]][1])
    chunks = -(-intermediate // 32)
    plans, seen = [], set()
    for pixels, tiles in TILES:
        largest_f = 256 if pixels == 64 else 128
        f_tiles = sorted({min(t, round16(f)) for t in (largest_f, *F_TILES)}) if last_pointwise else [0]
        splits = sorted({effective_split(s, chunks) for s in (*SPLITS, chunks)}) if last_pointwise else [1]
        for tile_h, tile_w in tiles:
            tile_h, tile_w = min(tile_h, out_h), min(tile_w, out_w)
            for f_tile in f_tiles:
                blocks = n * -(-out_h // tile_h) * -(-out_w // tile_w) * (-(-f // f_tile) if f_tile else 1)
                for split in splits:
                    if split > 1 and (blocks >= SPLIT_BELOW_BLOCKS or 4 * split * n * f * out_h * out_w > SPLIT_WORKSPACE_BYTES):
                        continue
                    key = (pixels, tile_h, tile_w, f_tile, split)
                    if key not in seen:
                        seen.add(key)
                        plans.append(LaunchPlan(pixels, tile_h, tile_w, f_tile, split).text())
                        if 1 < split <= CLUSTER_MAX:
                            plans.append(LaunchPlan(pixels, tile_h, tile_w, f_tile, split, cluster=True).text())
    return plans


#: Block-kernel plans fcm tune times per channels-last node: the best this many by the kernels' estimate.
BLOCK_CANDIDATES = 16


def _attribute(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def block_problem_dims(node: onnx.NodeProto, shapes: dict[str, list[int]], initializers: dict) -> list[int]:
    """The 18 numbers the library's ``FcmBlockCandidates`` takes for a channels-last node at the
    batch ``shapes`` are for: n, h, w, c, m, f, kernel, stride, pad_top, pad_left, out_h, out_w,
    scale_batch, pw1, dw, pwl, residual, tf32."""
    kind = vocabulary.kind_of(node.op_type)[0]
    stages = kind.stages  # (the half ops: the fp32 kernels' candidates)
    n, c, h, w = nchw_dims(shapes[node.input[0]], True)
    _, f, out_h, out_w = nchw_dims(shapes[node.output[0]], True)
    # (a single pointwise stage runs as a last stage, its input streamed in chunks: cuda_op.cu)
    pw1 = stages[0] == "pw" and len(stages) > 1
    first = initializers.get(node.input[1])
    m = (int(first.dims[0]) if first is not None else int(shapes[node.input[1]][0])) if pw1 else c
    dw = "dw" in stages
    kernel = int(_attribute(node, "dw_kernel", 3)) if dw else 1
    stride = int(_attribute(node, "dw_stride", 1)) if dw else 1
    pads = list(_attribute(node, "dw_pads", [(kernel - 1) // 2] * 4)) if dw else [0, 0, 0, 0]
    pwl = stages[-1] == "pw"
    # a channel scale S [scale_batch, C]
    scale = node.input[kind.scale_input] if len(node.input) > kind.scale_input else ""
    scale_batch = int(shapes[scale][0]) if scale and scale in shapes else 0
    return [n, h, w, c, m, f if pwl else 0, kernel, stride, pads[0], pads[1], out_h, out_w, scale_batch, int(pw1),
            int(dw), int(pwl), int(_attribute(node, "residual", 0)), int(_attribute(node, "allow_tf32", 1))]


def parse_block_candidates(text: str, top: int = BLOCK_CANDIDATES) -> list[str]:
    """The plan texts of ``FcmBlockCandidates``' lines ("HxW,f,split,stages (...), ..., ~12.3 us"),
    lowest estimate first, at most ``top``."""
    ranked = []
    for line in text.splitlines():
        plan, _, rest = line.partition(" (")
        estimate = rest.rpartition("~")[2].split(" ")[0]
        try:
            ranked.append((float(estimate), plan))
        except ValueError:
            continue
    ranked.sort()
    return [plan for _, plan in ranked[:top]]


def block_candidates_for(dims: list[int], top: int = BLOCK_CANDIDATES) -> list[str]:
    """The block kernels' candidate plans on this GPU for a channels-last problem given as
    :func:`block_problem_dims`'s 18 numbers: the best ``top`` by the kernels' estimate, best first,
    then the plans the estimate does not rank against those (the library's "unranked" ones): the
    separate passes where they take the problem (their estimate is fitted to FP32 times, and a half
    node is ranked on its FP32 problem) and the wide-region plans (a PW->DW->PW tile at stride 2
    whose input region is 129 to 256 pixels), which the kernels never choose themselves
    (``benchmarks/2026-12-06-h100-wide-regions``): only a tune, timing them, can keep one. The
    library plans them (it knows what fits the device); [] from a library without the block
    kernels."""
    import ctypes

    from .library import library_path

    library = ctypes.CDLL(str(library_path()))
    if not hasattr(library, "FcmBlockCandidates"):
        return []

    def plans(entry: str, keep: int) -> list[str]:
        out = ctypes.create_string_buffer(1 << 20)
        getattr(library, entry)((ctypes.c_int * 18)(*dims), out, len(out))
        return parse_block_candidates(out.value.decode(), keep)

    ranked = plans("FcmBlockCandidates", top)
    unranked = plans("FcmUnrankedCandidates", 1 << 16) if hasattr(library, "FcmUnrankedCandidates") else []
    return ranked + [plan for plan in unranked if plan not in ranked]


def block_plan_candidates(node: onnx.NodeProto, shapes: dict[str, list[int]], initializers: dict,
                          top: int = BLOCK_CANDIDATES) -> list[str]:
    """The block kernels' candidate plans for a channels-last node on this GPU, best estimates first."""
    return block_candidates_for(block_problem_dims(node, shapes, initializers), top)


def node_plan_candidates(node: onnx.NodeProto, shapes: dict[str, list[int]], initializers: dict) -> list[str]:
    """The plans fcm tune times for a fused node: the block kernels' for a channels-last node, the
    chain kernels' grid for an NCHW one."""
    if is_channels_last(node):
        return block_plan_candidates(node, shapes, initializers)
    return plan_candidates(node, shapes, initializers)
