#!/usr/bin/env bash
# On the GPU machine: `fcm tune` each reference model (launch-plan search per group, then keep fused
# only the groups faster than their subgraphs at batch 1 and 32, then the whole-model check), then
# `fcm bench` the tuned model against the unfused one.
# Expects what run_gpu.sh expects (onnxruntime-gpu in /tmp/ortgpu-site, the built library, the
# models in .device/models). Writes $OUT/tune/<model>.tune.json, bench_<model>/ and logs.
# TUNE_ARGS adds options to fcm tune (e.g. --no-plans); APPLY_DIR=<a run's tune folder> applies
# those earlier tunes (from the files, or from the run's summary.json) instead of measuring
# (fcm tune --apply), to bench them again. TORCH_ANCHOR=auto adds fcm bench's torch.compile anchor
# (minutes of compiling per torchvision model; benchmarks/torch_compile.py measures it on its own).
# Everything is also packed into $OUT/tune.tar.gz.
set -uo pipefail
OUT=${OUT:-/tmp/fcm-gpu}
mkdir -p "$OUT/tune"
export PYTHONPATH=/tmp/ortgpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
MODELS=${MODELS:-"mobilenet_v2 mobilenet mobilenet_v3_small mobilenet_v3_large efficientnet_b0 xception"}
[ -d /tmp/fcm-zoo ] || python3 -m fcm.skeleton unpack .device/models -o /tmp/fcm-zoo > /dev/null
for m in $MODELS; do
  z=/tmp/fcm-zoo/$m
  apply=""
  if [ -n "${APPLY_DIR:-}" ]; then  # a run folder's tune/ (its reports, or its run's summary.json)
    python3 benchmarks/summarize.py "$(dirname "$APPLY_DIR")" --extract "$(basename "$APPLY_DIR")/$m.tune.json" \
      -o "$OUT/tune/$m.applied.json" && apply="--apply $OUT/tune/$m.applied.json"
  fi
  python3 -m fcm tune $z/$m.onnx --batch 1,32 --runs ${TUNE_RUNS:-30} --warmup 5 ${TUNE_ARGS:-} $apply -o $z/$m.tuned.onnx \
    > "$OUT/tune/$m.tune.log" 2>&1 && cp $z/$m.tuned.tune.json "$OUT/tune/$m.tune.json"
  tail -1 "$OUT/tune/$m.tune.log"
  python3 -m fcm bench $z/$m.unfused.onnx --fused $z/$m.tuned.onnx --batch 1,32 --no-micro --runs ${BENCH_RUNS:-100} \
    --torch ${TORCH_ANCHOR:-none} -o "$OUT/tune/bench_$m" > "$OUT/tune/bench_$m.log" 2>&1
  grep -E "^\| [0-9]+ \| tf32" "$OUT/tune/bench_$m/bench.md" | sed "s/^/$m tuned /"
  tar -czf "$OUT/tune.tar.gz" -C "$OUT" tune  # after each model: a call cut short keeps the models done
done
