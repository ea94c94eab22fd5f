#!/usr/bin/env bash
# Two computing warpgroups without a first stage, overlapped (FCM_CUDA_OVERLAP_HALVES=1) against
# one chunk at a time, on the GPU machine, without ONNX Runtime (PyTorch for the references and cuDNN):
#
#   benchmarks/overlap_halves.sh LIB OUT
#
# 1. block_kernel_check.py's cases with the overlap on (its "halves" cases force two-warpgroup plans
#    on DW->PW and PW problems: many chunks, an odd count, a ragged last chunk, one chunk);
# 2. compute-sanitizer memcheck and racecheck on those cases;
# 3. wide_groups.py (Xception's and MobileNet's DW->PW groups at batch 32 against cuDNN), each mode,
#    with the two-warpgroup plans forced besides the kernels' own.
# Writes OUT/checks.log, OUT/memcheck.log, OUT/racecheck.log, OUT/wide_{overlap,serial}.{log,json}.
set -uo pipefail
lib=$1 out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
plans="4x14,192,1,3,2;4x14,192,1,4,2;4x14,128,1,4,2;8x8,192,1,4,2;4x14,192,1,4,1"
FCM_CUDA_OVERLAP_HALVES=1 timeout 120 python3 benchmarks/block_kernel_check.py --lib "$lib" --no-bench --out "$out/checks.json" > "$out/checks.log" 2>&1
echo "checks rc=$?"; grep -E "FAIL|checks passed" "$out/checks.log"
for tool in memcheck racecheck; do
  FCM_CUDA_OVERLAP_HALVES=1 timeout 120 compute-sanitizer --tool $tool --error-exitcode 99 \
    python3 benchmarks/block_kernel_check.py --lib "$lib" --no-bench --filter "halves" > "$out/$tool.log" 2>&1
  echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|checks passed" "$out/$tool.log" | tail -2
done
for mode in overlap serial; do
  echo "== $mode"
  env $([ $mode = overlap ] && echo FCM_CUDA_OVERLAP_HALVES=1) timeout 200 python3 benchmarks/wide_groups.py --lib "$lib" \
    --plans "$plans" --out "$out/wide_$mode.json" 2>&1 | tee "$out/wide_$mode.log" | grep -v "^    "
done
