"""Fused models timed alone with one build of the library (GPU machine): for comparing two builds
on the same models, alternating, without the unfused side that ``fcm bench`` also times.

In: ``MODEL.onnx:BATCH`` items; the library from ``$FCM_ORT_LIBRARY`` (else ``ort_custom_ops/lib/``).
Out: per item the median time of one run (inputs and outputs bound to device buffers, the best of
CUDA graphs on and off), on stdout and as JSON.

    FCM_ORT_LIBRARY=A/libfcm_ort_ops.so python3 benchmarks/time_fused.py -o a.json mobilenet_v2.onnx:32
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnx

from fcm.measure import cuda_session, output_shapes, providers, random_feeds, time_session


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("items", nargs="+", metavar="MODEL.onnx:BATCH")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    times = {}
    for item in args.items:
        path, batch = item.rsplit(":", 1)
        model = onnx.load(path)
        inputs = random_feeds(model, int(batch), np.random.default_rng(0))
        best = min(time_session(cuda_session(model, True, providers(graph, False)), inputs, output_shapes(model, int(batch)),
                                args.runs, args.warmup)[0].median_ms for graph in (False, True))
        times[item] = best
        print(f"{item} {best:.4f} ms", flush=True)
    with open(args.output, "w") as fh:
        json.dump(times, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
