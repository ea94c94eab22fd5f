#!/usr/bin/env bash
# GPU time of every kernel of a model, fused and unfused, from Nsight Compute (run from the
# repository root on the GPU machine, after run_gpu.sh's setup: onnxruntime-gpu in
# /tmp/ortgpu-site, the library built, the zoo unpacked in /tmp/fcm-zoo).
#
#   MODELS="mobilenet_v2" BATCHES="1 32" OUT=... benchmarks/profile_kernels.sh
#
# Writes $OUT/kernels/<model>_<fused|unfused>_b<batch>.csv (ncu's CSV: one row per kernel launch
# and metric) and <model>_fused_b<batch>.plans (each fused node's launch plan).
set -uo pipefail
OUT=${OUT:-/tmp/fcm-gpu}
mkdir -p "$OUT/kernels"
export PYTHONPATH=/tmp/ortgpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
MODELS=${MODELS:-mobilenet_v2}
BATCHES=${BATCHES:-1 32}
METRICS=gpu__time_duration.sum,launch__grid_size,launch__registers_per_thread,launch__shared_mem_per_block_dynamic
for m in $MODELS; do
  for b in $BATCHES; do
    for kind in fused unfused; do
      model=/tmp/fcm-zoo/$m/$m.onnx layout=""
      [ $kind = unfused ] && model=/tmp/fcm-zoo/$m/$m.unfused.onnx layout=nhwc
      FCM_CUDA_VERBOSE=1 timeout 300 ncu --profile-from-start off --metrics $METRICS --csv python3 benchmarks/run_model_once.py "$model" "$b" $layout \
        > "$OUT/kernels/${m}_${kind}_b$b.csv" 2> "$OUT/kernels/${m}_${kind}_b$b.plans"
      echo "$m $kind b$b: exit $?, $(grep -c gpu__time_duration "$OUT/kernels/${m}_${kind}_b$b.csv") kernels"
    done
  done
done
