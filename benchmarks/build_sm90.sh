#!/usr/bin/env bash
# A quick sm_90-only build of the custom-op library on the GPU machine (sources compiled in
# parallel; needs the ONNX Runtime and CUTLASS headers in build/ort-headers and build/cutlass-headers,
# which the full build fetches). The full build is `python -m ort_custom_ops.ops.build`.
set -e
H=$PWD/build/ort-headers/usr/include/onnxruntime
CUTLASS=$PWD/build/cutlass-headers
mkdir -p /tmp/fcmobj ort_custom_ops/lib
FLAGS="-std=c++17 -O3 -arch=sm_90a -Xcompiler -fPIC -Xcompiler -fvisibility=hidden -DFCM_WITH_CUDA=1 -Iort_custom_ops/csrc -I$H -I$CUTLASS"
for f in ort_custom_ops/csrc/*.cc ort_custom_ops/csrc/cpu/*.cc ort_custom_ops/csrc/cuda/*.cu ort_custom_ops/csrc/cuda/block/*.cu; do
  nvcc $FLAGS -c $f -o /tmp/fcmobj/$(basename $f).o &
done
wait
nvcc -shared -arch=sm_90a -cudart static /tmp/fcmobj/*.o -o ort_custom_ops/lib/libfcm_ort_ops.so
ls -la ort_custom_ops/lib
