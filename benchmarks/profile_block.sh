#!/usr/bin/env bash
# Nsight Compute profile of one fused-block kernel launch (a MobileNetV2 block at batch 32, run by
# block_kernel_check.py --profile), on the GPU machine:
#
#   benchmarks/profile_block.sh LIB "56x56 24-144-24" [OUT]
#
# Prints the warp-state figures (why warps wait), then the SASS instructions with the most stall
# samples and the instruction mix (ncu_hot_lines.py). Keeps OUT/block.ncu-rep.
set -uo pipefail
lib=$1 block=$2 out=${3:-/tmp}
ncu --clock-control none --set full --import-source yes -k regex:FusedBlockKernel -s 2 -c 1 -f -o "$out/block" \
  python3 benchmarks/block_kernel_check.py --lib "$lib" --profile "$block" > /dev/null
ncu -i "$out/block.ncu-rep" --page raw --csv 2>/dev/null | python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
names, values = rows[0], rows[-1]
keep = ("gpu__time_duration.sum", "smsp__issue_active.avg.per_cycle_active", "smsp__warps_active.avg.per_cycle_active",
        "launch__registers_per_thread", "launch__occupancy_limit_shared_mem", "launch__occupancy_limit_registers")
stalls = []
for n, v in zip(names, values):
    if n in keep:
        print(f"{n:60s} {v}")
    if n.startswith("smsp__average_warp_latency_issue_stalled_") and n.endswith(".ratio"):
        try:
            stalls.append((float(v.replace(",", "")), n[len("smsp__average_warp_latency_issue_stalled_"):-len(".ratio")]))
        except ValueError:
            pass
print("stall cycles per issued instruction, by reason:")
for v, n in sorted(stalls, reverse=True)[:12]:
    print(f"  {n:30s} {v:8.2f}")
'
# the CUDA source lines with the most stall samples (built with -lineinfo)
ncu -i "$out/block.ncu-rep" --page source --csv --print-source cuda 2>/dev/null | python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin))
head = next(i for i, r in enumerate(rows) if any(c.startswith("Warp Stall Sampling (All") for c in r))
header = rows[head]
col = next(i for i, c in enumerate(header) if c.startswith("Warp Stall Sampling (All"))
src = header.index("Source") if "Source" in header else len(header) - 1
lines = []
for r in rows[head + 1:]:
    if len(r) == len(header) and r[col].replace(",", "").isdigit():
        lines.append((int(r[col].replace(",", "")), r))
total = sum(n for n, _ in lines) or 1
print(f"stall samples by CUDA source line (total {total}); columns: {header[:3]}")
for n, r in sorted(lines, key=lambda x: -x[0])[:40]:
    print(f"{100 * n / total:5.1f}%  {r[0][:6]:>6} {r[src].strip()[:120]}")
'
python3 benchmarks/ncu_hot_lines.py "$out/block.ncu-rep" 10
