#!/usr/bin/env bash
# A quick sm_90-only build of the custom-op library on the GPU machine (sources compiled in
# parallel; needs the ONNX Runtime headers in build/ort-headers). The full build is
# `python -m ort_custom_ops.ops.build`.
set -e
H=$PWD/build/ort-headers/usr/include/onnxruntime
mkdir -p /tmp/fcmobj ort_custom_ops/lib
FLAGS="-std=c++17 -O3 -arch=sm_90 -Xcompiler -fPIC -Xcompiler -fvisibility=hidden -DFCM_WITH_CUDA=1 -Iort_custom_ops/csrc -I$H"
for f in ort_custom_ops/csrc/*.cc ort_custom_ops/csrc/cuda/*.cu; do
  nvcc $FLAGS -c $f -o /tmp/fcmobj/$(basename $f).o &
done
wait
nvcc -shared -arch=sm_90 -cudart static /tmp/fcmobj/*.o -o ort_custom_ops/lib/libfcm_ort_ops.so
ls -la ort_custom_ops/lib
