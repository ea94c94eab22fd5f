"""GPU descriptions: what the cost model needs to know about a device.

In: a GPU name from the built-in table (``H100``, ``A100``, ``L4``, ...), ``auto`` (the local
GPU, found with ``nvidia-smi``), or a path to a ``.cfg`` file in the paper's ``KEY::VALUE`` format
(optionally with our extra keys, see :data:`CFG_KEYS`). Out: a :class:`GpuSpec`.

Figures of the built-in table are public specifications (vendor datasheets), rounded; dense
tensor-core rates (no sparsity). The launch overheads are this project's defaults, meant to be
replaced by measured values (``planner.costs.CostConstants``).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from fcm_core.errors import FcmError

KIB = 1024
MIB = 1024 * 1024
GB_S = 1e9
TFLOPS = 1e12


@dataclass(frozen=True)
class GpuSpec:
    name: str
    sm_count: int
    smem_per_sm: int  # bytes of shared memory per multiprocessor
    smem_per_block: int  # bytes a block may use (after opting in to the maximum)
    l2_bytes: int
    dram_bandwidth: float  # bytes/s
    peak_flops: dict[str, float]  # FLOP/s (OP/s for int8) by dtype: fp32 (CUDA cores), tf32/fp16/int8 (tensor cores where present)
    registers_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    l2_bandwidth: float | None = None  # bytes/s; None: a multiple of DRAM bandwidth (cost constants)
    launch_overhead: float = 4.0e-6  # seconds per kernel launched one by one
    graph_launch_overhead: float = 1.5e-6  # seconds per kernel inside a CUDA graph
    compute_capability: str | None = None
    source: str = "built-in table"
    defaulted: tuple[str, ...] = field(default_factory=tuple)  # fields a .cfg did not give

    def peak(self, dtype: str, tensor_cores: bool) -> float:
        """FLOP/s for ``dtype`` on tensor cores (when asked and present) or CUDA cores."""
        if tensor_cores and dtype in self.peak_flops:
            return self.peak_flops[dtype]
        if dtype == "fp16":
            return self.peak_flops.get("fp16_cuda", 2 * self.peak_flops["fp32"])
        if dtype == "int8":
            return self.peak_flops.get("int8_cuda", 4 * self.peak_flops["fp32"])  # dp4a
        return self.peak_flops["fp32"]

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["defaulted"] = list(self.defaulted)
        return out


def _gpu(name, sms, smem_sm_kib, smem_block_kib, l2_mib, bw_gbs, fp32, tf32, fp16, int8, cc, **extra) -> GpuSpec:
    peaks = {"fp32": fp32 * TFLOPS}
    for key, value in (("tf32", tf32), ("fp16", fp16), ("int8", int8)):
        if value:
            peaks[key] = value * TFLOPS
    return GpuSpec(name=name, sm_count=sms, smem_per_sm=smem_sm_kib * KIB, smem_per_block=smem_block_kib * KIB,
                   l2_bytes=int(l2_mib * MIB), dram_bandwidth=bw_gbs * GB_S, peak_flops=peaks, compute_capability=cc, **extra)


#: Public specifications. Keys are lower-case aliases.
_TABLE: dict[str, GpuSpec] = {}


def _register(spec: GpuSpec, *aliases: str) -> None:
    for alias in (spec.name, *aliases):
        _TABLE[_normalise(alias)] = spec


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_register(_gpu("H100 SXM", 132, 228, 227, 50, 3350, 67, 494.7, 989.4, 1978.9, "9.0"), "H100", "H100-SXM", "H100 SXM5", "H100 80GB HBM3")
_register(_gpu("H100 PCIe", 114, 228, 227, 50, 2000, 51, 378, 756, 1513, "9.0"), "H100-PCIe", "H100 PCIe 80GB")
_register(_gpu("H200", 132, 228, 227, 60, 4800, 67, 494.7, 989.4, 1978.9, "9.0"), "H200 SXM", "H200-SXM", "H200 141GB")
_register(_gpu("A100", 108, 164, 163, 40, 2039, 19.5, 156, 312, 624, "8.0"), "A100 SXM", "A100 80GB", "A100-SXM4-80GB")
_register(_gpu("A100 40GB", 108, 164, 163, 40, 1555, 19.5, 156, 312, 624, "8.0"), "A100-SXM4-40GB", "A100 PCIe 40GB")
_register(_gpu("L4", 58, 100, 99, 48, 300, 30.3, 60, 121, 242, "8.9"))
_register(_gpu("RTX 4090", 128, 100, 99, 72, 1008, 82.6, 82.6, 165.2, 660.6, "8.9"), "GeForce RTX 4090", "4090")
_register(_gpu("RTX A4000", 48, 100, 99, 4, 448, 19.2, 19.2, 76.7, 153.4, "8.6"), "A4000", "rtxa4000")
_register(_gpu("GTX 1660", 22, 64, 64, 1.5, 192, 5.0, None, None, None, "7.5", ),
          "GeForce GTX 1660", "gtx1660")
_register(_gpu("Jetson AGX Orin", 16, 192, 163, 4, 204.8, 5.3, 21.2, 42.5, 85, "8.7",
               launch_overhead=8.0e-6, graph_launch_overhead=3.0e-6), "Orin", "Jetson Orin")


def known_gpus() -> list[str]:
    return sorted({spec.name for spec in _TABLE.values()})


def lookup(name: str) -> GpuSpec | None:
    key = _normalise(name)
    if key in _TABLE:
        return _TABLE[key]
    # nvidia-smi names carry prefixes and memory/package suffixes ("NVIDIA H100 80GB HBM3"); a
    # bare prefix match would take an L40S for an L4, so only such suffixes may follow an alias
    key = key.removeprefix("nvidia").removeprefix("geforce").removeprefix("tesla")
    if key in _TABLE:
        return _TABLE[key]
    suffix = re.compile(r"^(\d+gb\w*|pcie\w*|sxm\w*|hbm\w*|nvl\w*)$")
    candidates = [(len(alias), spec) for alias, spec in _TABLE.items() if key.startswith(alias) and suffix.match(key[len(alias):])]
    if candidates:
        return max(candidates, key=lambda c: c[0])[1]
    return None


# --- the paper's .cfg format, with optional extra keys ------------------------------------------

#: Keys a .cfg may hold. The paper's files give SMs, L1 and shmem (KiB per SM) and warp_size;
#: the others are ours and optional: missing ones take the generic values below, and the plan
#: lists them under ``gpu.defaulted``.
CFG_KEYS = {
    "sms": "multiprocessor count",
    "l1": "L1/shared memory per SM, KiB",
    "shmem": "shared memory per SM, KiB",
    "shmem_per_block": "shared memory a block may use, KiB (default: shmem)",
    "warp_size": "threads per warp (unused)",
    "l2": "L2 cache, KiB",
    "dram_gbps": "DRAM bandwidth, GB/s",
    "fp32_tflops": "FP32 peak, TFLOP/s",
    "tf32_tflops": "TF32 tensor-core peak, TFLOP/s",
    "fp16_tflops": "FP16 tensor-core peak, TFLOP/s",
    "int8_tops": "INT8 tensor-core peak, TOP/s",
    "launch_us": "launch overhead per kernel, microseconds",
    "name": "a name for reports",
}
_GENERIC = {"l2": 4096, "dram_gbps": 500.0, "fp32_tflops": 10.0, "launch_us": 4.0}


def read_cfg(path: str | Path) -> GpuSpec:
    """A GPU from a ``KEY::VALUE`` file (the paper's ``hw_configs/*.cfg``, read as they are)."""
    path = Path(path)
    if not path.is_file():
        raise FcmError("no such GPU configuration file", path)
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise FcmError("not a text file", path) from None
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "::" not in line:
            raise FcmError(f"line {number}: expected KEY::VALUE, got {line!r}", path)
        key, value = (part.strip() for part in line.split("::", 1))
        key = key.replace(" ", "").lower()
        if key not in CFG_KEYS:
            raise FcmError(f"line {number}: unknown key {key!r} (known: {', '.join(CFG_KEYS)})", path)
        values[key] = value.replace(" ", "") if key != "name" else value

    def number(key: str, kind=float):
        try:
            result = kind(values[key])
        except ValueError:
            raise FcmError(f"{key}: {values[key]!r} is not a number", path) from None
        if result <= 0:
            raise FcmError(f"{key} must be positive, got {values[key]}", path)
        return result

    for required in ("sms", "shmem"):
        if required not in values:
            raise FcmError(f"missing {required}:: ({CFG_KEYS[required]})", path)
    defaulted = tuple(k for k in ("l2", "dram_gbps", "fp32_tflops", "launch_us") if k not in values)
    for key, value in _GENERIC.items():
        values.setdefault(key, str(value))
    smem = number("shmem", float)
    peaks = {"fp32": number("fp32_tflops") * TFLOPS}
    for key, dtype in (("tf32_tflops", "tf32"), ("fp16_tflops", "fp16"), ("int8_tops", "int8")):
        if key in values:
            peaks[dtype] = number(key) * TFLOPS
    launch = number("launch_us") * 1e-6
    return GpuSpec(
        name=values.get("name", path.stem),
        sm_count=number("sms", int),
        smem_per_sm=int(smem * KIB),
        smem_per_block=int(number("shmem_per_block") * KIB) if "shmem_per_block" in values else int(smem * KIB),
        l2_bytes=int(number("l2") * KIB),
        dram_bandwidth=number("dram_gbps") * GB_S,
        peak_flops=peaks,
        launch_overhead=launch,
        graph_launch_overhead=launch / 2.5,
        source=str(path),
        defaulted=defaulted,
    )


# --- the local GPU -------------------------------------------------------------------------------

def detect_local() -> GpuSpec:
    """The GPU of this machine, by its name (``nvidia-smi``), from the built-in table."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise FcmError("--gpu auto: no NVIDIA GPU found (nvidia-smi is not installed); name a GPU or a .cfg file")
    try:
        result = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FcmError(f"--gpu auto: nvidia-smi failed ({exc})") from None
    names = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not names:
        raise FcmError("--gpu auto: no NVIDIA GPU found (nvidia-smi lists none); name a GPU or a .cfg file")
    spec = lookup(names[0])
    if spec is None:
        raise FcmError(f"--gpu auto: found '{names[0]}', which is not in the built-in table ({', '.join(known_gpus())}); "
                       "name the closest one or describe it in a .cfg file")
    return dataclasses.replace(spec, source=f"detected ({names[0]})")


def resolve(gpu: str | GpuSpec) -> GpuSpec:
    """``--gpu`` value -> GpuSpec: a table name, ``auto``, or a .cfg path."""
    if isinstance(gpu, GpuSpec):
        return gpu
    if gpu == "auto":
        return detect_local()
    if gpu.endswith(".cfg") or Path(gpu).is_file():
        return read_cfg(gpu)
    spec = lookup(gpu)
    if spec is None:
        raise FcmError(f"unknown GPU '{gpu}' (known: {', '.join(known_gpus())}; or 'auto', or a .cfg file)")
    return spec
