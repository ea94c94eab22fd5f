#!/usr/bin/env bash
# Nsight Compute profile of one fused-block kernel launch (a MobileNetV2 block at batch 32, run by
# block_kernel_check.py --profile), on the GPU machine:
#
#   benchmarks/profile_block.sh LIB "56x56 24-144-24" [OUT]
#   UNIT=31360 benchmarks/profile_block.sh ...   # also instructions per chunk and computing warp
#                                                # (UNIT = units x chunks x 4 warps of the launch)
#   SCRIPT=benchmarks/wide_groups.py benchmarks/profile_block.sh LIB "xc 14x14 728-728"   # another case list
#
# Prints the warp-state figures (why warps wait), the stall samples by CUDA source line
# (ncu_source_lines.py), then the SASS instructions with the most stall samples and the
# instruction mix (ncu_hot_lines.py). Keeps OUT/block.ncu-rep and OUT/block_sass.csv.gz.
set -uo pipefail
lib=$1 block=$2 out=${3:-/tmp}
ncu --clock-control none --set full --import-source yes -k regex:FusedBlockKernel -s 2 -c 1 -f -o "$out/block" \
  python3 "${SCRIPT:-benchmarks/block_kernel_check.py}" --lib "$lib" --profile "$block" > /dev/null
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
    # every stall-reason metric the report has (names differ between sections and ncu versions:
    # warp-cycles per issued instruction, or sampled warps), largest first
    if "issue_stalled_" in n and "not_issued" not in n:
        try:
            stalls.append((float(v.replace(",", "")), n))
        except ValueError:
            pass
print("stall reasons (per issued instruction, or samples):")
for v, n in sorted(stalls, reverse=True)[:16]:
    print(f"  {n:70s} {v:12.2f}")
'
# the CUDA source lines with the most stall samples (the library built with -lineinfo)
ncu -i "$out/block.ncu-rep" --page source --csv --print-source sass 2>/dev/null | gzip > "$out/block_sass.csv.gz"
python3 benchmarks/ncu_source_lines.py "$out/block_sass.csv.gz" "$lib" 25 ${UNIT:-0}
python3 benchmarks/ncu_hot_lines.py "$out/block.ncu-rep" 10
