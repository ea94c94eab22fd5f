#!/usr/bin/env bash
# Each MobileNetV2 block kernel timed alone by Nsight Compute, at batch 1 and 32, without ONNX
# Runtime (GPU machine): what a block costs by itself, to set against its time in a stream of
# launches (block_kernel_check.py's CUDA-graph replays, the model's timeline), whose difference is
# the launches' and dependencies' share.
#
#   benchmarks/kernel_durations.sh LIB OUT
#
# Nsight Compute leaves the clocks and caches as they are (--clock-control none --cache-control none):
# by default it locks the SMs at their base clock and flushes L2 before each kernel, which about
# doubled these kernels' durations (2026-12-06: 22-26 us at batch 1 against 10-16 us replayed).
#
# Writes OUT/ncu_b{1,32}.csv (ncu's raw rows: every kernel of three launches per block, PyTorch's
# set-up kernels included) and prints per kernel its duration, the busiest SM's active cycles and
# the grid.
set -uo pipefail
lib=$1 out=$2
mkdir -p "$out"
for batch in 1 32; do
  timeout 300 ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum,sm__cycles_active.max,launch__grid_size --csv \
    python3 benchmarks/block_kernel_check.py --lib "$lib" --profile x --profile-batch $batch > "$out/ncu_b$batch.csv" 2> "$out/ncu_b$batch.err"
  echo "batch $batch: ncu rc=$?"
  python3 - "$out/ncu_b$batch.csv" <<'PY'
import csv, io, sys
text = open(sys.argv[1]).read()
rows = list(csv.reader(io.StringIO(text[text.find('"ID"'):])))
head = rows[0]
kernel, metric, value, unit, ident = (head.index(k) for k in ("Kernel Name", "Metric Name", "Metric Value", "Metric Unit", "ID"))
to_us = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
launches = {}
for row in rows[1:]:
    number = float(row[value].replace(",", "")) * (to_us.get(row[unit], 1.0) if row[metric] == "gpu__time_duration.sum" else 1.0)
    launches.setdefault(int(row[ident]), {"kernel": row[kernel]})[row[metric]] = number
for key in sorted(launches):
    d = launches[key]
    print(f"{key:4d} {d.get('gpu__time_duration.sum', 0):8.2f} us  {d.get('sm__cycles_active.max', 0):9.0f} cycles  "
          f"grid {d.get('launch__grid_size', 0):6.0f}  {d['kernel'][:60]}")
PY
done
