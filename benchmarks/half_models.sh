#!/usr/bin/env bash
# The half-precision models that benchmarks/half_acceptance.sh measures, made here (TensorFlow lives
# on this side) and packed as weight-free skeletons for the GPU machine (run from the repository root):
#
#   benchmarks/half_models.sh [OUT_DIR]        (default: .device/half; PRECISION=fp16, BATCH=32)
#
# Each keras.applications architecture is converted with `fcm convert --precision` for an H100 at
# BATCH and named by its torchvision architecture, as `fcm bench` takes it for its torch.compile
# anchor. The conversions skip their verification (VERIFY=1 keeps it: minutes a model): the
# skeletons' weights are refilled at random on the GPU machine, and the half verification of these
# architectures is benchmarks/half_verify.py's. Stage ONNX Runtime (../shared/device/stage-ort-gpu)
# before running this: staging clears .device/.
set -euo pipefail
OUT_DIR=${1:-.device/half}
PRECISION=${PRECISION:-fp16}
BATCH=${BATCH:-32}
FCM=${FCM:-.venv/bin/fcm}
declare -A TORCHVISION=([MobileNetV2]=mobilenet_v2 [MobileNetV3Large]=mobilenet_v3_large [EfficientNetB0]=efficientnet_b0
                        [MobileNetV3Small]=mobilenet_v3_small)
MODELS=${MODELS:-"MobileNetV2 MobileNetV3Large EfficientNetB0"}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for m in $MODELS; do
  name=${TORCHVISION[$m]:?"$m has no torchvision architecture here (${!TORCHVISION[*]})"}
  echo "converting $m -> $name ($PRECISION, batch $BATCH)"
  "$FCM" convert "keras:$m" --logits --gpu H100 --batch "$BATCH" --precision "$PRECISION" \
    $([ "${VERIFY:-0}" = 1 ] || echo --no-verify) -q -o "$work/models/$name.onnx"
done
mkdir -p "$work/pack"
for f in "$work"/models/*.onnx; do cp "$f" "$work/pack/"; done
rm -rf "$OUT_DIR"
"${PYTHON:-.venv/bin/python}" -m fcm.skeleton pack "$work/pack" -o "$OUT_DIR"
du -sh "$OUT_DIR"
