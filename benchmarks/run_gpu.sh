#!/usr/bin/env bash
# Everything the GPU machine proves, in one go (run from the repository root, on that machine).
#
# Expects: onnxruntime-gpu staged into /tmp/ortgpu-site (../shared/device/stage-ort-gpu, with
# onnx-graphsurgeon and onnxconverter-common, which the half-precision tests import), the shared
# fixtures the tests read in $FCM_SHARED (default: .device/shared, a copy of ../shared), the
# built library in ort_custom_ops/lib/ (or the ONNX Runtime headers in build/ort-headers to build
# it here), and weight-free copies of the converted reference models in .device/models
# (python -m fcm.skeleton pack converted_models -o .device/models; another folder: MODELS_DIR=...).
# Half-precision models: MODELS_DIR=<their skeletons> BENCH_ARGS="--precision fp16 --torch-modes reduce-overhead".
# Writes into $OUT (default /tmp/fcm-gpu): device.txt, and results.tar.gz holding the test logs,
# the compute-sanitizer logs and each model's bench.{json,md,png}.
#
#   benchmarks/run_gpu.sh [tests] [sanitizer] [blocks] [bench] [anchors] [efficiency]      (default: the first four)
#
# blocks: benchmarks/block_kernel_check.py (the block kernels without ONNX Runtime: checks, and
# MobileNetV2's blocks timed against cuDNN).
# anchors: torch.compile alone, in a process of its own with no ONNX Runtime beside it, for each
# model of MODELS that torchvision has and each batch of BATCHES (ANCHOR_PRECISION, default fp32;
# ANCHOR_MODES, default reduce-overhead; max-autotune compiles for minutes: ANCHOR_TIMEOUT).
# efficiency: each model tuned at batch 32 (fcm tune; TUNE_ARGS, e.g. --no-plans for Xception's
# long plan search), its kept groups' GPU times (group_gpu_times.py), and the table of every kept
# group against its roofline bound at the copy bandwidth measured here and the tensor cores' peak
# (group_efficiency.py; PEAK, default TF32's 495e12: 989e12 for FP16 models); with BENCH_TUNED
# (fcm bench's arguments, e.g. "--precision fp16 --torch-modes reduce-overhead"), each tuned model
# benched at batch 32 against its unfused model and the anchors.
set -uo pipefail
OUT=${OUT:-/tmp/fcm-gpu}
mkdir -p "$OUT/results"
export PYTHONPATH=/tmp/ortgpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export FCM_SHARED=${FCM_SHARED:-$PWD/.device/shared}
export PYTHONUNBUFFERED=1
steps=${*:-tests sanitizer blocks bench}
MODELS=${MODELS:-"mobilenet mobilenet_v2 mobilenet_v3_small mobilenet_v3_large efficientnet_b0 xception"}
BATCHES=${BATCHES:-1,32}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nvcc --version 2>/dev/null | tail -1
  python3 -c "import onnxruntime as o, numpy, onnx; print('onnxruntime', o.__version__, o.get_available_providers()); print('numpy', numpy.__version__, 'onnx', onnx.__version__)"
  python3 -c "from ort_custom_ops.ops.library import library_kernels; print('FCM library kernels:', sorted(library_kernels()))"
} 2>&1 | tee "$OUT/device.txt"

if [ ! -f ort_custom_ops/lib/libfcm_ort_ops.so ]; then
  ORT_INCLUDE_DIR=$PWD/build/ort-headers/usr/include/onnxruntime python3 -m ort_custom_ops.ops.build 2>&1 | tee -a "$OUT/device.txt"
fi
python3 -m fcm.skeleton unpack "${MODELS_DIR:-.device/models}" -o /tmp/fcm-zoo > "$OUT/results/unpack.log" 2>&1

for step in $steps; do
  case $step in
    tests)
      FCM_ZOO_DIR=/tmp/fcm-zoo timeout ${TESTS_TIMEOUT:-900} python3 -m pytest -m gpu -q -p no:cacheprovider -rs $(grep -l "mark.gpu" tests/ops/*.py) \
        2>&1 | tee "$OUT/results/gpu_tests.log" | tail -15
      ;;
    sanitizer)
      # one process per tool and file, side by side: memcheck is host-bound (about 3 min for the block
      # files' selection alone), and the GPU is far from full with one of them
      summary="ERROR SUMMARY|RACECHECK SUMMARY"  # (racecheck reports hazards in its own line)
      for tool in memcheck racecheck; do
        for file in test_cuda_block_kernels test_cuda_kernels test_int8_cuda test_cuda_half_kernels; do
          ( timeout 600 compute-sanitizer --tool $tool --error-exitcode 99 python3 -m pytest -q -p no:cacheprovider \
              tests/ops/$file.py -k "small or explicit_pads or passes or one_pass or wide_regions or one_pixel or split_shares or weights_copied" \
              > "$OUT/results/sanitizer_${tool}_$file.log" 2>&1
            echo "compute-sanitizer $tool, $file: exit $? ($(grep -E "$summary" "$OUT/results/sanitizer_${tool}_$file.log" | sort | uniq -c | tr '\n' ' ')| $(tail -1 "$OUT/results/sanitizer_${tool}_$file.log"))" ) &
        done
        # the convolution layers: RGB stems (FMA and tensor-core tiles) and depthwise layers (the half 3x3
        # kernels at strides 1 and 2), every precision
        ( timeout 300 compute-sanitizer --tool $tool --error-exitcode 99 python3 -m pytest -q -p no:cacheprovider \
            tests/ops/test_conv_layer.py -m gpu -k "geometry0 or geometry4 or (depthwise_kernels and geometry1)" \
            > "$OUT/results/sanitizer_layers_$tool.log" 2>&1
          echo "compute-sanitizer $tool, layers: exit $? ($(grep -E "$summary" "$OUT/results/sanitizer_layers_$tool.log" | sort | uniq -c | tr '\n' ' '))" ) &
      done
      wait
      ;;
    blocks)
      timeout 600 python3 benchmarks/block_kernel_check.py --lib ort_custom_ops/lib/libfcm_ort_ops.so \
        --out "$OUT/results/block_check.json" 2>&1 | tee "$OUT/results/block_check.log" | grep -v "^ok " | tail -30
      ;;
    bench)
      for m in $MODELS; do
        timeout 900 python3 -m fcm bench /tmp/fcm-zoo/$m/$m.unfused.onnx --batch "$BATCHES" --profile ${BENCH_ARGS:-} \
          -o "$OUT/results/bench_$m" > "$OUT/results/bench_$m.log" 2>&1
        grep -E "^\| [0-9]+ \| (tf32|fp16|bf16) " "$OUT/results/bench_$m/bench.md" | sed "s/^/$m /"
      done
      ;;
    anchors)
      for m in $MODELS; do
        case $m in mobilenet_v2|mobilenet_v3_small|mobilenet_v3_large|efficientnet_b0) ;; *) continue ;; esac
        for b in ${BATCHES//,/ }; do
          timeout ${ANCHOR_TIMEOUT:-600} python3 -m fcm.anchors --one $m ${ANCHOR_PRECISION:-fp32} $b 224 \
            --modes ${ANCHOR_MODES:-reduce-overhead} --runs 100 --warmup 20 > "$OUT/results/anchor_${m}_$b.json" 2> "$OUT/results/anchor_${m}_$b.err"
          echo "$m batch $b: exit $?, $(head -c 400 "$OUT/results/anchor_${m}_$b.json")"
        done
      done
      ;;
    efficiency)
      bandwidth=$(python3 -c "from fcm.measure import copy_bandwidth; print(copy_bandwidth())")
      echo "copy bandwidth: $bandwidth B/s" | tee "$OUT/results/bandwidth.txt"
      pairs=() tuned=()
      for m in $MODELS; do
        model=/tmp/fcm-zoo/$m/$m.onnx
        timeout ${TUNE_TIMEOUT:-600} python3 -m fcm tune "$model" --batch 32 --runs 10 --warmup 3 ${TUNE_ARGS:-} \
          -o /tmp/fcm-zoo/$m/$m.tuned.onnx > "$OUT/results/tune_$m.log" 2>&1
        status=$?
        echo "$m tune: exit $status, $(tail -1 "$OUT/results/tune_$m.log" | cut -c1-160)"
        [ $status -eq 0 ] || continue
        cp /tmp/fcm-zoo/$m/$m.tuned.tune.json "$OUT/results/$m.tune.json"
        pairs+=(/tmp/fcm-zoo/$m/$m.tuned.onnx "$OUT/results/$m.tune.json") tuned+=(/tmp/fcm-zoo/$m/$m.tuned.onnx)
        if [ -n "${BENCH_TUNED:-}" ]; then
          timeout 900 python3 -m fcm bench /tmp/fcm-zoo/$m/$m.unfused.onnx --fused /tmp/fcm-zoo/$m/$m.tuned.onnx --batch 32 \
            --no-micro --runs 50 $BENCH_TUNED -o "$OUT/results/tuned_$m" > "$OUT/results/tuned_$m.log" 2>&1
          grep -E "^\| 32 \| [0-9.]+ \|" "$OUT/results/tuned_$m/bench.md" | tail -1 | sed "s/^/$m tuned /"
        fi
      done
      if [ ${#tuned[@]} -gt 0 ]; then
        python3 benchmarks/group_gpu_times.py "${tuned[@]}" --batch 32 -o "$OUT/results/gpu_times" > "$OUT/results/gpu_times.log" 2>&1
        echo "group GPU times: exit $?"
        python3 benchmarks/group_efficiency.py "${pairs[@]}" --batch 32 --bandwidth "$bandwidth" --peak ${PEAK:-495e12} \
          --gpu-times "$OUT"/results/gpu_times/*.gpu_times.json -o "$OUT/results/efficiency.md" | tail -1
      fi
      ;;
  esac
done
tar -czf "$OUT/results.tar.gz" -C "$OUT" results && rm -rf "$OUT/results"
echo "results: $OUT/results.tar.gz"
