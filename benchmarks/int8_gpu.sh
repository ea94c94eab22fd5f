#!/usr/bin/env bash
# The int8 path on the GPU machine, in one go (run from the repository root, on that machine): the
# int8 ops' CUDA tests, then benchmarks/int8_gpu.py (the int8 MobileNetV2 against the TFLite
# interpreter, then timed against ONNX Runtime's QDQ model and the fp32 MobileNetV2).
#
# Expects what run_gpu.sh expects (onnxruntime-gpu staged into /tmp/ortgpu-site, the library built
# with CUDA kernels in ort_custom_ops/lib/, the reference models' skeletons in .device/models for
# the fp32 MobileNetV2), and $INT8 (default .device/int8), written here by
# `python benchmarks/int8_prepare.py`: the int8 models, the image, the .tflite and the
# interpreter's wheels, installed into /tmp/litert-site.
# Writes into $OUT/int8 (OUT default /tmp/fcm-gpu): device.txt, int8_tests.log, int8_gpu.log,
# int8_gpu.json, int8_gpu.md.
#
#   benchmarks/int8_gpu.sh [tests] [check]      (default: both)
#   INT8_ARGS="--runs 200" benchmarks/int8_gpu.sh check      (more options: python3 benchmarks/int8_gpu.py -h)
set -uo pipefail
OUT=${OUT:-/tmp/fcm-gpu}
INT8=${INT8:-.device/int8}
mkdir -p "$OUT/int8"
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/litert-site "$INT8"/wheels/*.whl \
  > "$OUT/int8/install.log" 2>&1 || { cat "$OUT/int8/install.log"; exit 1; }
export PYTHONPATH=/tmp/ortgpu-site:/tmp/litert-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
steps=${*:-tests check}

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c "import onnxruntime as o, numpy, onnx; print('onnxruntime', o.__version__, o.get_available_providers()); print('numpy', numpy.__version__, 'onnx', onnx.__version__)"
  python3 -c "import ai_edge_litert as l; print('ai_edge_litert', l.__version__)"
  python3 -c "from ort_custom_ops.ops.library import library_kernels; print('FCM library kernels:', sorted(library_kernels()))"
} 2>&1 | tee "$OUT/int8/device.txt"

if [ ! -f /tmp/fcm-zoo/mobilenet_v2/mobilenet_v2.onnx ] && [ -d .device/models ]; then
  python3 -m fcm.skeleton unpack .device/models -o /tmp/fcm-zoo > /dev/null 2>&1
fi

status=0
for step in $steps; do
  case $step in
    tests)
      timeout 900 python3 -m pytest -m gpu -q -p no:cacheprovider -rs tests/ops/test_int8_cuda.py 2>&1 \
        | tee "$OUT/int8/int8_tests.log" | tail -15
      [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
      ;;
    check)
      timeout 900 python3 benchmarks/int8_gpu.py "$INT8" -o "$OUT/int8" \
        --fp32-fused /tmp/fcm-zoo/mobilenet_v2/mobilenet_v2.onnx ${INT8_ARGS:-} 2>&1 | tee "$OUT/int8/int8_gpu.log"
      [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
      ;;
  esac
done
echo "results: $OUT/int8/ (exit $status)"
exit $status
