"""Where one profiled kernel's warps stall, by CUDA source line, from an Nsight Compute report.

    ncu --set full -k regex:FusedBlockKernel -s 2 -c 1 -f -o /tmp/r python3 benchmarks/block_kernel_check.py \\
        --lib LIB --profile "56x56 24-144-24"
    ncu -i /tmp/r.ncu-rep --page source --csv --print-source sass | gzip > sass.csv.gz
    python3 benchmarks/ncu_source_lines.py sass.csv.gz LIB [TOP [UNIT]]

In: the report's SASS source page (CSV, gzipped or not: per instruction its address, its stall
samples and how often it ran) and the library the kernel came from (built with -lineinfo). Out: the
share of stall samples and of executed instructions per innermost source line of the project's
CUDA headers (with UNIT, the number of chunks x computing warps of the launch, also per chunk
and warp), then per line of block_kernel.cuh (the call site in the kernel's own code), so that
an inlined helper's cost shows where it is called. The instructions are matched to their lines
through the library's own cubin (cuobjdump -xelf, nvdisasm -gi): ncu's CUDA source page needs the
sources at their build path, this does not. cuobjdump and nvdisasm come with the CUDA toolkit (or
PyPI's nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm).
"""

from __future__ import annotations

import collections
import csv
import gzip
import io
import re
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_FILES = ("block_kernel.cuh", "depthwise.cuh", "pipeline.cuh", "block_gemm.cuh", "tile_layout.cuh", "epilogue.h")


def read_sass_page(path: str) -> tuple[str, list[tuple[int, int, int]]]:
    """(kernel name, [(offset from the kernel's first instruction, stall samples, executions)])."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as fh:
        rows = list(csv.reader(fh))
    kernel = rows[0][1]
    header = rows[1]
    address, samples, executed = (header.index(c) for c in ("Address", "Warp Stall Sampling (All Samples)", "Instructions Executed"))
    out, base = [], None
    for row in rows[2:]:
        try:
            at = int(row[address], 16)
            base = at if base is None else base
            out.append((at - base, int(row[samples].replace(",", "")), int(row[executed].replace(",", ""))))
        except (ValueError, IndexError):
            continue
    return kernel, out


def line_chains(library: str, mangled_prefix: str) -> dict[int, tuple[str, ...]]:
    """Offset -> source lines (innermost first, each inlined at the next) of the first kernel whose
    mangled name starts with ``mangled_prefix``, from the library's cubins."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["cuobjdump", "-xelf", "all", str(Path(library).resolve())], cwd=tmp, check=True, capture_output=True)
        for cubin in sorted(Path(tmp).glob("*.cubin")):
            text = subprocess.run(["nvdisasm", "-gi", str(cubin)], check=True, capture_output=True, text=True).stdout
            start = text.find(f"\n.text.{mangled_prefix}")
            if start < 0:
                continue
            end = text.find("\n\t.section", start + 1)
            chains, pending, last = {}, [], ("?",)
            for line in text[start:end if end > 0 else None].splitlines():
                found = re.search(r'//## File "([^"]+)", line (\d+)', line)
                if found:
                    pending.append(f"{Path(found.group(1)).name}:{found.group(2)}")
                    continue
                found = re.match(r"\s+/\*([0-9a-f]{4,})\*/", line)
                if found:
                    if pending:
                        last, pending = tuple(pending), []
                    chains[int(found.group(1), 16)] = last
            return chains
    raise SystemExit(f"no kernel {mangled_prefix}... in {library}")


def mangled_prefix(kernel: str) -> str:
    """The mangled-name prefix of a FusedBlockKernel<NF, exact[, groups]> instance from its demangled name."""
    found = re.search(r"FusedBlockKernel<\(int\)(\d+), \(bool\)(\d)(?:, \(int\)(\d+))?>", kernel)
    if not found:
        raise SystemExit(f"not a fused-block kernel: {kernel}")
    groups = f"Li{found.group(3)}E" if found.group(3) else ""
    return f"_ZN3fcm5block16FusedBlockKernelILi{found.group(1)}ELb{found.group(2)}E{groups}"


def main() -> None:
    page, library = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    unit = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    kernel, instructions = read_sass_page(page)
    chains = line_chains(library, mangled_prefix(kernel))
    inner, site, runs = collections.Counter(), collections.Counter(), collections.Counter()
    total_samples = sum(s for _, s, _ in instructions) or 1
    total_runs = sum(e for _, _, e in instructions) or 1
    for offset, samples, executed in instructions:
        chain = chains.get(offset, ("?",))
        project = [c for c in chain if c.split(":")[0] in PROJECT_FILES] or [chain[0]]
        inner[project[0]] += samples
        runs[project[0]] += executed
        calls = [c for c in chain if c.startswith("block_kernel.cuh")]
        site[calls[0] if calls else project[0]] += samples
    # With `unit` (how often the per-chunk code runs: chunks x computing warps, e.g. 1568 units x 5
    # chunks x 4 warps), a line's executions read as instructions per chunk and warp.
    print(f"{kernel}: {total_samples} stall samples, {total_runs} warp instructions executed"
          + (f", {total_runs / unit:.0f} per {unit}" if unit else ""))
    print("stall%  executed%" + ("  per unit" if unit else "") + "  innermost line")
    for line, samples in inner.most_common(top):
        per = f"  {runs[line] / unit:8.1f}" if unit else ""
        print(f"{100 * samples / total_samples:5.1f}  {100 * runs[line] / total_runs:8.1f}{per}   {line}")
    print("stall%  line of block_kernel.cuh")
    for line, samples in site.most_common(top):
        print(f"{100 * samples / total_samples:5.1f}   {line}")


if __name__ == "__main__":
    main()
