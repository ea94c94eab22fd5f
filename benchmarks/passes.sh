#!/usr/bin/env bash
# The fused stages as separate passes (dw+gemm: a depthwise pass, then CUTLASS's GEMM; gemm+dw+gemm:
# a GEMM, a depthwise pass, a GEMM) on the GPU machine, without ONNX Runtime (PyTorch for the
# references and the cuDNN / cuBLAS baselines):
#
#   benchmarks/passes.sh LIB OUT
#
# 1. block_kernel_check.py's cases (its "two passes" and "three passes" cases force the plans:
#    Xception's 728 channels, MobileNetV2's 7x7 block, residuals, strides 2 with 5x5 and 7x7
#    kernels, clips), outputs poisoned;
# 2. compute-sanitizer memcheck and racecheck on those cases;
# 3. MobileNetV2's blocks at batch 32 and 1, each with the kernels' own plan and gemm+dw+gemm
#    (checked against a float64 reference first), beside cuDNN unfused;
# 4. wide_groups.py: Xception's and MobileNet's DW->PW groups at batch 32, each with the kernels'
#    own plan and dw+gemm, beside cuDNN and cuBLAS.
# Writes OUT/checks.{log,json}, OUT/memcheck.log, OUT/racecheck.log, OUT/blocks.{log,json},
# OUT/wide.{log,json}.
set -uo pipefail
lib=$1 out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1
timeout 150 python3 benchmarks/block_kernel_check.py --lib "$lib" --no-bench --out "$out/checks.json" > "$out/checks.log" 2>&1
echo "checks rc=$?"; grep -E "FAIL|checks passed" "$out/checks.log"
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 99 \
    python3 benchmarks/block_kernel_check.py --lib "$lib" --no-bench --filter " passes" > "$out/$tool.log" 2>&1
  echo "$tool rc=$?"; grep -E "ERROR SUMMARY|RACECHECK SUMMARY|checks passed" "$out/$tool.log" | tail -2
done
timeout 200 python3 benchmarks/block_kernel_check.py --lib "$lib" --filter "batch 32" --plans "gemm+dw+gemm" \
  --out "$out/blocks.json" > "$out/blocks.log" 2>&1
echo "blocks rc=$?"; sed -n '/^batch/,$p' "$out/blocks.log"
timeout 250 python3 benchmarks/wide_groups.py --lib "$lib" --plans "dw+gemm" --out "$out/wide.json" 2>&1 | tee "$out/wide.log" | grep -v "^    "
