#!/usr/bin/env bash
# GPU time of every kernel of a model, fused and unfused, from Nsight Compute (run from the
# repository root on the GPU machine, after run_gpu.sh's setup: onnxruntime-gpu in
# /tmp/ortgpu-site, the library built, the zoo unpacked in /tmp/fcm-zoo).
#
#   MODELS="mobilenet_v2" BATCHES="1 32" OUT=... benchmarks/profile_kernels.sh
#
# Writes $OUT/kernels/<model>_<fused|unfused>_b<batch>.csv (ncu's CSV: one row per kernel launch
# and metric) and <model>_fused_b<batch>.plans (each fused node's launch plan).
# FUSED=tuned profiles <model>.tuned.onnx (from tune_gpu.sh) instead of the planner's <model>.onnx;
# SIDES="fused" leaves the unfused model out; LAYOUT= runs both without prefer_nhwc; DETAIL=1 adds
# DRAM bytes, occupancy, issue rate and the main warp-stall reasons to the time (several replays per
# kernel; summarize them with benchmarks/kernel_metrics.py).
set -uo pipefail
OUT=${OUT:-/tmp/fcm-gpu}
mkdir -p "$OUT/kernels"
export PYTHONPATH=/tmp/ortgpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
MODELS=${MODELS:-mobilenet_v2}
BATCHES=${BATCHES:-1 32}
METRICS=gpu__time_duration.sum,launch__grid_size,launch__registers_per_thread,launch__shared_mem_per_block_dynamic
if [ -n "${DETAIL:-}" ]; then
  METRICS=$METRICS,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem
  detail="dram__bytes_read.sum dram__bytes_write.sum sm__warps_active.avg.pct_of_peak_sustained_active"
  detail="$detail smsp__issue_active.avg.per_cycle_active smsp__average_warps_active_per_issue_active.ratio"
  for stall in long_scoreboard barrier short_scoreboard mio_throttle math_pipe_throttle wait lg_throttle not_selected; do
    detail="$detail smsp__average_warps_issue_stalled_${stall}_per_issue_active.ratio"
  done
  # one unknown name fails the whole profile: keep those this ncu and GPU list (all if none listed)
  known=$(ncu --query-metrics 2>/dev/null | awk '{print $1}')
  for metric in $detail; do
    if [ -z "$known" ] || grep -qx "${metric%%.*}" <<< "$known"; then METRICS=$METRICS,$metric; else echo "ncu does not know $metric: left out"; fi
  done
fi
for m in $MODELS; do
  for b in $BATCHES; do
    for kind in ${SIDES:-fused unfused}; do
      # both sides with prefer_nhwc (LAYOUT= turns it off), the setting fcm bench finds best for each:
      # with it on one side only, the other side's unfused convolutions run NCHW and the sums mislead
      model=/tmp/fcm-zoo/$m/$m.${FUSED:+$FUSED.}onnx layout=${LAYOUT-nhwc}
      [ $kind = unfused ] && model=/tmp/fcm-zoo/$m/$m.unfused.onnx
      FCM_CUDA_VERBOSE=1 timeout 300 ncu --profile-from-start off --metrics $METRICS --csv python3 benchmarks/run_model_once.py "$model" "$b" $layout \
        > "$OUT/kernels/${m}_${kind}_b$b.csv" 2> "$OUT/kernels/${m}_${kind}_b$b.plans"
      echo "$m $kind b$b: exit $?, $(grep -c gpu__time_duration "$OUT/kernels/${m}_${kind}_b$b.csv") kernels"
    done
  done
done
