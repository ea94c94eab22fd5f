"""The GPU cost model: bytes moved, FLOPs, launches and predicted time of kernels.

In: shapes (from DAG entries or fusion groups), a :class:`~planner.gpus.GpuSpec`, a batch size,
a dtype and :class:`CostConstants`. Out: :class:`KernelCost` records, for

- the layer-by-layer baseline: each DAG entry as ONNX Runtime's CUDA provider runs it (one
  library kernel per conv, plus one elementwise kernel per activation it does not fuse, per
  residual add, ...);
- a fused group for a given tiling (:func:`fused_cost`), and the best tiling under the GPU's
  shared-memory, register and occupancy limits (:func:`best_tiling`).

Bytes are counted per memory level: *DRAM* bytes are the unique bytes a kernel must move (each
input once, each output once, weights once) unless the tensor fits in L2 next to its producer;
*L2* bytes add what tiling re-reads (halos, inputs re-read per output-channel tile, weights per
block). Time is the slower of memory and compute, stretched by how well the blocks fill the
GPU, plus a launch overhead; at batch 1 on a large-L2 GPU the launch term dominates.

Every efficiency and overhead is a field of :class:`CostConstants`, so that measured times can
calibrate the model (``CostConstants.from_json``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from fcm_core.errors import FcmError

from .gpus import GpuSpec

DTYPE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "int8": 1}
INPUT_CHUNK = 32  # input channels a fused kernel stages in shared memory at a time
# The fused-block kernels (the float ops' channels-last nodes): their compiled output-channel widths
# and the most output-channel slices their plans take (ort_custom_ops/csrc/cuda/block/block_launch.cu)
BLOCK_WIDTHS = (16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192)
BLOCK_MAX_SLICES = 16


@dataclass
class CostConstants:
    """Tunable constants of the model (defaults: rough values, to be replaced by calibration)."""

    dram_efficiency: float = 0.75  # achieved share of DRAM bandwidth for streaming kernels
    l2_bandwidth_factor: float = 2.5  # L2 bandwidth = factor x DRAM bandwidth (GPU spec gives none)
    l2_resident_fraction: float = 0.5  # a tensor in this share of L2 is served from L2
    compute_efficiency: dict[str, float] = field(
        default_factory=lambda: {"dw": 0.30, "pw_cuda": 0.55, "pw_tensor": 0.45, "elementwise": 1.0}
    )
    library_efficiency: dict[str, float] = field(  # the baseline's library kernels vs the ideal
        default_factory=lambda: {"dw": 0.55, "pw": 0.75, "s": 0.6, "fc": 0.6, "elementwise": 0.85, "other": 0.7}
    )
    fused_efficiency: float = 0.8  # our fused kernels vs the ideal
    cuda_graphs: bool = True  # launch overhead of kernels replayed in a CUDA graph
    min_kernel_time: float = 2.0e-6  # no kernel takes less, however small
    blocks_per_sm_to_saturate: float = 2.0  # fewer blocks than this per SM leave the GPU partly idle
    threads_per_block: int = 256
    max_accumulators_per_thread: int = 64
    baseline_fused_activations: tuple[str, ...] = ("RELU",)  # what ORT's CUDA Conv fuses

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "CostConstants":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise FcmError(f"unknown cost constants: {', '.join(sorted(unknown))}")
        merged = cls()
        for key, value in data.items():
            default = getattr(merged, key)
            if isinstance(default, dict):
                value = {**default, **value}
            elif isinstance(default, tuple):
                value = tuple(value)
            setattr(merged, key, value)
        return merged

    @classmethod
    def load(cls, path: str | Path) -> "CostConstants":
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise FcmError(f"cannot read cost constants ({exc})", path) from None


@dataclass
class Device:
    """A GPU with the constants applied: the rates the model uses."""

    gpu: GpuSpec
    constants: CostConstants
    dtype: str
    batch: int
    weights_resident: bool = False  # all weights fit in L2 with room to spare (batch-1 inference)
    tiling_cache: dict = field(default_factory=dict, repr=False)  # same stages -> same best tiling

    @property
    def elem(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def dram_bw(self) -> float:
        return self.gpu.dram_bandwidth * self.constants.dram_efficiency

    @property
    def l2_bw(self) -> float:
        return self.gpu.l2_bandwidth or self.gpu.dram_bandwidth * self.constants.l2_bandwidth_factor

    @property
    def launch(self) -> float:
        return self.gpu.graph_launch_overhead if self.constants.cuda_graphs else self.gpu.launch_overhead

    def resident(self, nbytes: float) -> bool:
        return nbytes <= self.constants.l2_resident_fraction * self.gpu.l2_bytes

    def tensor_time(self, nbytes: float) -> float:
        """Time to stream one whole tensor once (read or write)."""
        return nbytes / (self.l2_bw if self.resident(nbytes) else self.dram_bw)

    def weights_time(self, nbytes: float) -> float:
        return nbytes / (self.l2_bw if self.weights_resident else self.dram_bw)


@dataclass
class KernelCost:
    """What one kernel launch costs."""

    dram_bytes: float = 0.0  # unique bytes through device memory (before L2 residency)
    l2_bytes: float = 0.0  # all global-memory traffic, re-reads included
    flops: float = 0.0
    launches: int = 0
    time: float = 0.0  # seconds

    def __add__(self, other: "KernelCost") -> "KernelCost":
        return KernelCost(self.dram_bytes + other.dram_bytes, self.l2_bytes + other.l2_bytes, self.flops + other.flops,
                          self.launches + other.launches, self.time + other.time)

    def to_json(self) -> dict:
        return {"dram_bytes": int(self.dram_bytes), "l2_bytes": int(self.l2_bytes), "flops": int(self.flops),
                "launches": self.launches, "time_us": round(self.time * 1e6, 3)}


ZERO = KernelCost()


def _finish(device: Device, memory_time: float, compute_time: float, utilization: float, efficiency: float) -> float:
    busy = max(memory_time, compute_time) / max(efficiency, 1e-6) / max(utilization, 1e-6)
    return device.launch + max(busy, device.constants.min_kernel_time)


def utilization(device: Device, blocks: float, blocks_per_sm: int) -> float:
    """Share of the GPU a grid keeps busy: too few blocks leave SMs idle; many blocks run in
    waves of ``sm_count x blocks_per_sm``, the last one partly empty."""
    blocks = max(1.0, blocks)
    saturating = device.gpu.sm_count * device.constants.blocks_per_sm_to_saturate
    if blocks <= saturating:
        return blocks / saturating
    slots = device.gpu.sm_count * max(1, blocks_per_sm)
    return blocks / (math.ceil(blocks / slots) * slots) if blocks > slots else 1.0


def _library_utilization(device: Device, output_elements: float, moved_bytes: float, macs: float) -> float:
    """A library kernel splits its work by outputs, by data and by reduction (split-K), into
    blocks of a few thousand outputs, tens of KB or tens of thousands of MACs."""
    blocks = max(output_elements / 4096, moved_bytes / 32768, macs / 65536, 1.0)
    per_sm = max(1, device.gpu.max_threads_per_sm // device.constants.threads_per_block)
    return utilization(device, blocks, per_sm)


def library_kernel(device: Device, kind: str, inputs: list[float], outputs: list[float], weights: float = 0.0,
                   flops: float = 0.0, tensor_cores: bool = False) -> KernelCost:
    """One library kernel (cuDNN conv, elementwise op) that reads each input and writes each
    output once (sizes in elements, per image)."""
    b, n = device.elem, device.batch
    in_bytes = [e * b * n for e in inputs]
    out_bytes = [e * b * n for e in outputs]
    w_bytes = weights * b
    moved = sum(in_bytes) + sum(out_bytes) + w_bytes
    memory = sum(device.tensor_time(x) for x in in_bytes + out_bytes) + device.weights_time(w_bytes)
    total_flops = flops * n
    compute_class = "dw" if kind == "dw" else ("pw_tensor" if tensor_cores else "pw_cuda") if kind in ("pw", "s", "fc") else "elementwise"
    compute = total_flops / (device.gpu.peak(device.dtype, tensor_cores) * device.constants.compute_efficiency[compute_class])
    efficiency = device.constants.library_efficiency.get(kind, device.constants.library_efficiency["other"])
    time = _finish(device, memory, compute, _library_utilization(device, sum(outputs) * n, moved, total_flops / 2), efficiency)
    return KernelCost(moved, moved, total_flops, 1, time)


# --- fused groups --------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageShape:
    """One convolution of a fused chain, as the cost model sees it (per image)."""

    type: str  # "dw" or "pw"
    in_channels: int
    out_channels: int
    in_hw: tuple[int, int]  # unpadded input
    out_hw: tuple[int, int]
    kernel: int = 1
    stride: int = 1

    @property
    def macs_per_output(self) -> int:
        return self.kernel * self.kernel if self.type == "dw" else self.in_channels


@dataclass(frozen=True)
class Tiling:
    """How a fused kernel splits its work: each block computes a ``tile_h x tile_w`` patch of
    ``tile_f`` output channels of the last stage, streaming the widest intermediate channel
    dimension in chunks of ``chunk`` (PW->DW->PW). With ``split > 1`` the input channels of the
    last (pointwise) stage are divided among ``split`` blocks, each adding its partial sums into
    the output (zeroed first): more parallelism for small feature maps, no recomputation."""

    tile_h: int
    tile_w: int
    tile_f: int
    chunk: int = 0
    split: int = 1

    def to_json(self) -> dict:
        out = {"tile_h": self.tile_h, "tile_w": self.tile_w, "tile_f": self.tile_f}
        if self.chunk:
            out["chunk"] = self.chunk
        if self.split > 1:
            out["split"] = self.split
        return out


@dataclass
class FusedEstimate:
    tiling: Tiling
    cost: KernelCost
    blocks: int
    smem_bytes: int
    recompute_ratio: float  # FLOPs done / FLOPs needed (halo and channel-tile recomputation)


def _regions(stages: list[StageShape], tile_h: int, tile_w: int) -> list[tuple[int, int]]:
    """Spatial extents each stage's output must cover for one output tile; regions[0] is the
    input region of the first stage (halos grow backwards through depthwise stages; padding
    is never computed, so no region exceeds the feature map)."""
    regions = [(min(tile_h, stages[-1].out_hw[0]), min(tile_w, stages[-1].out_hw[1]))]
    for stage in reversed(stages):
        h, w = regions[0]
        if stage.type == "dw":
            h = min((h - 1) * stage.stride + stage.kernel, stage.in_hw[0])
            w = min((w - 1) * stage.stride + stage.kernel, stage.in_hw[1])
        regions.insert(0, (h, w))
    return regions


def _needed_channels(stages: list[StageShape], tile_f: int, split: int = 1) -> list[int]:
    """Channels of each stage's output one block computes (needed[0]: of the input it reads):
    a depthwise stage needs only its own channels upstream, a pointwise one all of them (the
    last one, a share of them when its reduction is split among blocks)."""
    needed = [min(tile_f, stages[-1].out_channels)]
    for position, stage in enumerate(reversed(stages)):
        if stage.type == "dw":
            needed.insert(0, needed[0])
        elif position == 0 and split > 1:
            needed.insert(0, math.ceil(stage.in_channels / split))
        else:
            needed.insert(0, stage.in_channels)
    return needed


def block_kernel_shared_bytes(stages: list[StageShape], elem: int) -> int | None:
    """Shared memory the least of the fused-block kernels' launch plans needs for a chain (None: no
    compiled width covers its outputs in the slices a plan takes), as they lay it out for a one-pixel
    tile: a first pointwise stage keeps its whole input region on chip (a slab per 128 bytes of input
    channels, its rows the region and the rows the depthwise stage's 2 x 8 (stride 2: 2 x 4) blocks
    read past it, rounded to 1 KiB) and its output for the depthwise stage (rows of 144 bytes), and
    stages its weights 32 rows by all input channels a chunk in a ring of three stages (the plans the
    kernels rank have rings of three or four: resident weights only where a plan is forced); a last
    pointwise stage stages f_tile rows a chunk and double-buffers its 64-row operand. One-pixel
    PW->PW chains (squeeze-and-excitation branches) run other kernels: 0."""
    first, last = stages[0], stages[-1]
    if len(stages) == 2 and first.type == last.type == "pw" and tuple(first.in_hw) == (1, 1):
        return 0
    slab, chunk, ring = 128, 32, 3
    # a single pointwise stage runs as a last stage, its input staged a chunk of channels at a time
    first_pointwise = first.type == "pw" and len(stages) > 1
    last_pointwise = last.type == "pw"
    depthwise = next((s for s in stages if s.type == "dw"), None)
    rows = 1  # of a one-pixel tile's region, with the depthwise blocks' reads past it
    if depthwise is not None:
        k, stride = depthwise.kernel, depthwise.stride
        block_w = 8 if stride == 1 else 4
        rows = max(k * k, (stride + k - 1) * k + (block_w - 1) * stride + k)
    rows = math.ceil(rows / 8) * 8
    need = 512 + 1024  # barriers, alignment
    if first_pointwise:
        slabs = math.ceil(first.in_channels * elem / slab)
        need += slabs * math.ceil(rows * slab / 1024) * 1024 + ring * slabs * chunk * slab
        if depthwise is not None:
            need += math.ceil(rows * 144 / 1024) * 1024
    elif len(stages) == 1:
        need += ring * 64 * slab  # the chunk's input rows
    if last_pointwise:
        f_tile = next((w for w in BLOCK_WIDTHS if w >= math.ceil(last.out_channels / BLOCK_MAX_SLICES)), None)
        if f_tile is None:
            return None
        need += ring * math.ceil(f_tile * slab / 1024) * 1024 + 2 * 64 * slab
    return need


def _runs_block_kernels(gpu) -> bool:
    """Whether the fused-block kernels run on ``gpu``: sm_80 and later (a GPU whose compute
    capability its description does not give, such as a .cfg file's, is not held to their limits)."""
    try:
        return gpu.compute_capability is not None and float(gpu.compute_capability) >= 8.0
    except ValueError:
        return False


def _block_macs(stage: StageShape, inputs_in_block: int) -> int:
    """MACs per output element a block does: a pointwise stage reduces over the input channels
    the block holds (a share of them when the reduction is split)."""
    return stage.kernel * stage.kernel if stage.type == "dw" else inputs_in_block


def fused_cost(device: Device, stages: list[StageShape], tiling: Tiling, side_inputs: float = 0.0,
               residual: bool = False) -> FusedEstimate | None:
    """Cost of one fused kernel with ``tiling``; None if it does not fit the GPU.

    ``side_inputs``: extra elements read per image (an SE scale). ``residual``: the group adds
    its input to its output (read again unless the input tile covers it: stride 1, all channels).
    """
    c = device.constants
    b, n = device.elem, device.batch
    out_h, out_w = stages[-1].out_hw
    tiles_h, tiles_w = math.ceil(out_h / tiling.tile_h), math.ceil(out_w / tiling.tile_w)
    tiles_f = math.ceil(stages[-1].out_channels / tiling.tile_f)
    split = tiling.split
    if split > 1 and (stages[-1].type != "pw" or split > stages[-1].in_channels):
        return None
    if device.dtype != "int8" and _runs_block_kernels(device.gpu):  # else a slow fallback would run the chain
        least = block_kernel_shared_bytes(stages, b)
        if least is None or least > device.gpu.smem_per_block:
            return None
    blocks = n * tiles_h * tiles_w * tiles_f * split
    regions = _regions(stages, tiling.tile_h, tiling.tile_w)
    needed = _needed_channels(stages, tiling.tile_f, split)

    # accumulators of the last stage live in registers
    accumulators = needed[-1] * tiling.tile_h * tiling.tile_w
    if accumulators > c.max_accumulators_per_thread * c.threads_per_block:
        return None
    # On chip: intermediates a later stage reads (with their halos), and the input tile. The
    # input is streamed through in channel chunks; a PW->DW->PW kernel makes one pass over it per
    # chunk of its expanded channels, so it keeps the input tile resident when that fits and
    # re-reads it (from L2) otherwise.
    chunk = tiling.chunk or needed[1]
    intermediates = 0
    for index in range(1, len(stages)):
        channels = min(chunk, needed[index]) if len(stages) == 3 else needed[index]
        intermediates += channels * regions[index][0] * regions[index][1]
    region0 = regions[0][0] * regions[0][1]
    input_passes = 1
    input_tile = min(needed[0], INPUT_CHUNK) * region0
    if len(stages) == 3:
        resident = needed[0] * region0
        if (intermediates + resident) * b <= device.gpu.smem_per_block:
            input_tile = resident
        else:
            input_passes = math.ceil(needed[1] / chunk)
    smem = (intermediates + input_tile) * b
    if smem > device.gpu.smem_per_block:
        return None

    # FLOPs actually done: each stage over its region, for the channels the block needs. Depthwise
    # stages run on CUDA cores; pointwise ones on tensor cores unless the dtype is plain fp32.
    done = needed_flops = 0.0
    compute = 0.0
    for index, stage in enumerate(stages):
        region = regions[index + 1]
        per_block = 2.0 * needed[index + 1] * region[0] * region[1] * _block_macs(stage, needed[index])
        done += per_block * blocks
        needed_flops += 2.0 * stage.out_channels * stage.out_hw[0] * stage.out_hw[1] * stage.macs_per_output * n
        tensor_cores = stage.type == "pw" and device.dtype != "fp32"
        compute_class = "dw" if stage.type == "dw" else "pw_tensor" if tensor_cores else "pw_cuda"
        compute += per_block * blocks / (device.gpu.peak(device.dtype, tensor_cores) * c.compute_efficiency[compute_class])

    in_elems = stages[0].in_channels * stages[0].in_hw[0] * stages[0].in_hw[1]
    out_elems = stages[-1].out_channels * out_h * out_w
    weight_elems = sum(s.out_channels * s.macs_per_output for s in stages)
    input_bytes = in_elems * b * n
    output_bytes = out_elems * b * n
    side_bytes = side_inputs * b * n
    residual_bytes = 0.0
    if residual and (any(s.stride != 1 for s in stages) or needed[0] < stages[0].in_channels or tiles_f > 1):
        residual_bytes = input_bytes
    # re-reads: every block reads its halo'd input region and its weights (served by L2)
    input_reads = blocks * needed[0] * region0 * b * input_passes
    weight_reads = blocks * sum(needed[i + 1] * _block_macs(s, needed[i]) for i, s in enumerate(stages)) * b
    # split reductions: the output is zeroed, then every share adds into it (read-modify-write in L2)
    partial_bytes = 2.0 * split * output_bytes if split > 1 else 0.0
    dram = input_bytes + output_bytes + weight_elems * b + side_bytes + residual_bytes
    l2 = input_reads + output_bytes + weight_reads + side_bytes + residual_bytes + partial_bytes

    memory = (device.tensor_time(input_bytes) + device.tensor_time(output_bytes) + device.weights_time(weight_elems * b)
              + device.tensor_time(side_bytes) + device.tensor_time(residual_bytes))
    memory = max(memory, l2 / device.l2_bw)

    per_sm = min(device.gpu.max_threads_per_sm // c.threads_per_block, max(1, device.gpu.smem_per_sm // max(smem, 1)))
    time = _finish(device, memory, compute, utilization(device, blocks, per_sm), c.fused_efficiency)
    launches = 1
    if split > 1:  # zeroing the output first: one more (memset) node
        time += device.launch + device.tensor_time(output_bytes)
        launches = 2
    cost = KernelCost(dram, l2, done, launches, time)
    return FusedEstimate(tiling, cost, blocks, smem, done / needed_flops if needed_flops else 1.0)


def _tile_sizes(extent: int) -> list[int]:
    sizes = {extent}
    size = 1
    while size < extent:
        sizes.add(size)
        size *= 2
    for divisor in (2, 4, 7):
        if extent % divisor == 0:
            sizes.add(extent // divisor)
    return sorted(sizes)


def _channel_tiles(channels: int) -> list[int]:
    sizes = {channels}
    size = 8
    while size < channels:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def best_tiling(device: Device, stages: list[StageShape], side_inputs: float = 0.0, residual: bool = False) -> FusedEstimate | None:
    """The tiling with the lowest predicted time; None if none fits the GPU."""
    key = (tuple(stages), side_inputs, residual, device.weights_resident)
    if key not in device.tiling_cache:
        device.tiling_cache[key] = _search_tilings(device, stages, side_inputs, residual)
    return device.tiling_cache[key]


def _search_tilings(device: Device, stages: list[StageShape], side_inputs: float, residual: bool) -> FusedEstimate | None:
    out_h, out_w = stages[-1].out_hw
    best: FusedEstimate | None = None
    chunks = [0]
    if len(stages) == 3:
        widest = max(s.out_channels for s in stages[:-1])
        chunks = [c for c in (8, 16, 32, 64) if c <= widest] or [widest]
    splits = [1]
    if stages[-1].type == "pw":
        splits += [s for s in (2, 4, 8, 16) if s * 8 <= stages[-1].in_channels]
    for tile_h, tile_w, tile_f, chunk, split in itertools.product(_tile_sizes(out_h), _tile_sizes(out_w),
                                                                  _channel_tiles(stages[-1].out_channels), chunks, splits):
        estimate = fused_cost(device, stages, Tiling(tile_h, tile_w, tile_f, chunk, split), side_inputs, residual)
        if estimate is None:
            continue
        if best is None or estimate.cost.time < best.cost.time - 1e-12:
            best = estimate
    return best
