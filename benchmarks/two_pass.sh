#!/usr/bin/env bash
# DW->PW in two passes (the dw+gemm plan: a depthwise pass, then CUTLASS's GEMM) on the GPU machine,
# without ONNX Runtime (PyTorch for the references and the cuDNN / cuBLAS baselines):
#
#   benchmarks/two_pass.sh LIB OUT
#
# 1. block_kernel_check.py's cases (its "two passes" cases force the plan: Xception's 728 channels,
#    a residual with a 5x5 kernel, stride 2 with a 7x7 kernel and clips), outputs poisoned;
# 2. compute-sanitizer memcheck and racecheck on the two-pass cases;
# 3. wide_groups.py: Xception's and MobileNet's DW->PW groups at batch 32, each with the kernels' own
#    plan and dw+gemm (checked against a float64 reference), beside cuDNN and cuBLAS.
# Writes OUT/checks.{log,json}, OUT/memcheck.log, OUT/racecheck.log, OUT/wide.{log,json}.
set -uo pipefail
lib=$1 out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
timeout 150 python3 benchmarks/block_kernel_check.py --lib "$lib" --no-bench --out "$out/checks.json" > "$out/checks.log" 2>&1
echo "checks rc=$?"; grep -E "FAIL|checks passed" "$out/checks.log"
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 99 \
    python3 benchmarks/block_kernel_check.py --lib "$lib" --no-bench --filter "two passes" > "$out/$tool.log" 2>&1
  echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|checks passed" "$out/$tool.log" | tail -2
done
timeout 250 python3 benchmarks/wide_groups.py --lib "$lib" --plans "dw+gemm" --out "$out/wide.json" 2>&1 | tee "$out/wide.log" | grep -v "^    "
