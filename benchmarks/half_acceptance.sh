#!/usr/bin/env bash
# The half-precision models against their anchors on the GPU machine (run from the repository root):
# each model tuned at batch 32 (`fcm tune`), then benched against ONNX Runtime on its unfused half
# model and torch.compile in the same precision, channels-last, in each mode of TORCH_MODES, at each
# batch of BATCHES (`fcm bench`). One call may not hold every step: the tuned models stay in
# $TUNED (default /tmp/fcm-half-tuned) for the next call on the same machine, and a model already
# tuned there is not tuned again.
#
# Expects: onnxruntime-gpu staged into /tmp/ortgpu-site (../shared/device/stage-ort-gpu); the library
# ($FCM_ORT_LIBRARY, else ort_custom_ops/lib/); the models as weight-free skeletons in $MODELS_DIR
# (default .device/half), made here by benchmarks/half_models.sh (`fcm convert --precision fp16`,
# each named by its torchvision architecture: mobilenet_v2, mobilenet_v3_large, efficientnet_b0,
# mobilenet_v3_small, which `fcm bench` takes for its torch.compile anchor).
#
#   MODELS="mobilenet_v2 efficientnet_b0" BATCHES=1,32 TORCH_MODES=max-autotune,reduce-overhead \
#     benchmarks/half_acceptance.sh [tune] [bench] [cache]        (default: tune and bench)
#
# max-autotune compiles for 3-5 minutes per model and batch on an H100: one model a call. Its
# compile caches (TORCHINDUCTOR_CACHE_DIR, default /tmp/fcm-inductor) stay on the machine for the
# next call; INDUCTOR_CACHE=<a .tar.gz of them from an earlier lease> starts from that one (the
# kernel choices max-autotune made there, on a GPU of the same kind alone, spare the minutes of
# autotuning; the report's compile_s is then the cached compile's), and the step `cache` packs them
# into $OUT/inductor-cache.tar.gz. Writes into $OUT (default /tmp/fcm-half): device.txt,
# <model>.tune.{log,json}, bench_<model>_b<batches>/ and its log, packed into results.tar.gz after
# each step, and prints each bench table.
set -uo pipefail
OUT=${OUT:-/tmp/fcm-half}
TUNED=${TUNED:-/tmp/fcm-half-tuned}
MODELS_DIR=${MODELS_DIR:-.device/half}
MODELS=${MODELS:-"mobilenet_v2 mobilenet_v3_large efficientnet_b0"}
BATCHES=${BATCHES:-1,32}
TORCH_MODES=${TORCH_MODES:-reduce-overhead}
PRECISION=${PRECISION:-fp16}
steps=${*:-tune bench}
export PYTHONPATH=/tmp/ortgpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/fcm-inductor}
mkdir -p "$OUT" "$TUNED"
if [ -n "${INDUCTOR_CACHE:-}" ] && [ ! -d "$TORCHINDUCTOR_CACHE_DIR" ]; then
  mkdir -p "$TORCHINDUCTOR_CACHE_DIR" && tar -xzf "$INDUCTOR_CACHE" -C "$TORCHINDUCTOR_CACHE_DIR" || exit 1
fi
[ -d "$TUNED/source" ] || python3 -m fcm.skeleton unpack "$MODELS_DIR" -o "$TUNED/source" > /dev/null || exit 1
{
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c "import onnxruntime as o; print('onnxruntime', o.__version__)"
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" 2>&1 | tail -1
  sha1sum "${FCM_ORT_LIBRARY:-ort_custom_ops/lib/libfcm_ort_ops.so}"
} > "$OUT/device.txt" 2>&1
started=$(date +%s)
for m in $MODELS; do
  src=$TUNED/source/$m
  for step in $steps; do
    case $step in
      tune)
        [ -f "$TUNED/$m.onnx" ] && continue
        cp "$src.unfused.onnx" "$TUNED/$m.unfused.onnx"
        python3 -m fcm tune "$src.onnx" --batch 32 --runs 10 --warmup 3 -o "$TUNED/$m.onnx" > "$OUT/$m.tune.log" 2>&1
        echo "tune $m: rc $? after $(( $(date +%s) - started )) s: $(tail -1 "$OUT/$m.tune.log")"
        cp "$TUNED/$m.tune.json" "$OUT/" 2>/dev/null ;;
      bench)
        fused=$TUNED/$m.onnx
        [ -f "$fused" ] || { echo "bench $m: not tuned: the untuned model"; fused=$src.onnx; }
        run=bench_${m}_b${BATCHES//,/_}
        python3 -m fcm bench "$src.unfused.onnx" --fused "$fused" --torch "$m" --batch "$BATCHES" --no-micro --runs 50 \
          --precision "$PRECISION" --torch-modes "$TORCH_MODES" -o "$OUT/$run" > "$OUT/$run.log" 2>&1
        echo "bench $m ($BATCHES, $TORCH_MODES): rc $? after $(( $(date +%s) - started )) s"
        grep -A8 "^## The alternatives" "$OUT/$run/bench.md" | grep "^|" ;;
      cache) ;;  # (after the models)
      *) echo "unknown step $step (tune, bench, cache)"; exit 2 ;;
    esac
    tar -czf "$OUT/results.tar.gz" -C "$OUT" --exclude results.tar.gz . 2>/dev/null
  done
done
if [[ " $steps " == *" cache "* ]] && [ -d "$TORCHINDUCTOR_CACHE_DIR" ]; then
  tar -czf "$OUT/inductor-cache.tar.gz" -C "$TORCHINDUCTOR_CACHE_DIR" . && ls -la "$OUT/inductor-cache.tar.gz"
fi
