"""Time each fused node of a model under a grid of forced CUDA launch plans (GPU machine).

    python3 benchmarks/plan_sweep.py MODEL.onnx --batch 1 [--nodes fcm3_pwdwpw,...] [--runs 100] -o OUT.json

For every fused node: its subgraph (ONNX Runtime, CUDA graph), the kernels' own plan (PlanChain)
and each plan of the grid (forced through the node's cuda_plans, strict: launch_plan.with_forced_plan),
each as the node alone in a small model with a CUDA graph, IO bound, median of ``runs``. Prints one
line per node (subgraph, own plan, best forced plan) and writes every time to OUT.json. Plans a
node cannot take come back as errors.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np
import onnx

from fcm.measure import cuda_session, group_models, plain_feeds, plain_output_shape, providers, time_session, value_shapes
from ort_custom_ops.ops.launch_plan import with_forced_plan
from ort_custom_ops.ops.schema import is_fused_group


def grid(node: onnx.NodeProto, shapes: dict) -> list[str]:
    """Candidate plans "pixels,HxW,f_tile,split,buffers,w1_direct" for the node's output shape
    (ForcedPlan clamps tile, f_tile and split to the problem)."""
    f = shapes[node.output[0]][1]
    plans = []
    for pixels, tiles in ((64, ("8x8",)), (128, ("8x16", "16x8"))):
        for tile in tiles:
            for f_tile in sorted({min(f, 256 if pixels == 64 else 128), 64, 32, 16}):
                if f_tile > max(16, f):
                    continue
                for split in (1, 2, 4, 8, 16, 64):
                    plans.append(f"{pixels},{tile},{f_tile},{split},2,0")
    return plans


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--nodes", default="", help="comma-separated fused node names (default: all)")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    model = onnx.load(args.model)
    shapes = value_shapes(model, args.batch)
    wanted = set(filter(None, args.nodes.split(",")))
    rng = np.random.default_rng(0)
    results = []
    for node in model.graph.node:
        if not is_fused_group(node) or (wanted and node.name not in wanted):
            continue
        alone, plain, data_inputs = group_models(model, node, shapes, source_layout=True)
        feeds = {name: rng.uniform(-1, 1, shapes[name]).astype(np.float32) for name in data_inputs}
        out_shape = [shapes[node.output[0]]]
        # the subgraph runs as the source does: NCHW, no layout changes
        plain_inputs, plain_shape = plain_feeds(plain, data_inputs, feeds), [plain_output_shape(plain)]

        def timed(m, library, nhwc=False):
            inputs, shape = (plain_inputs, plain_shape) if m is plain else (feeds, out_shape)
            t, _ = time_session(cuda_session(m, library, providers(True, nhwc)), inputs, shape, args.runs, 10)
            return round(t.median_ms * 1e3, 2)

        row = {"node": node.name, "op": node.op_type, "shapes": {n: shapes[n] for n in data_inputs},
               "subgraph_us": min(timed(plain, False), timed(plain, False, True))}
        row["own_plan_us"] = timed(alone, True)
        row["forced"] = {}
        for plan in grid(node, shapes):
            try:
                row["forced"][plan] = timed(with_forced_plan(alone, plan, args.batch), True)
            except Exception as exc:  # a plan the node cannot take
                row["forced"][plan] = str(exc).strip().splitlines()[0][:160]
        times = {k: v for k, v in row["forced"].items() if isinstance(v, float)}
        best = min(times, key=times.get) if times else None
        row["best_forced"] = best
        print(f"{node.name:16s} subgraph {row['subgraph_us']:8.1f} us  own plan {row['own_plan_us']:8.1f} us  "
              f"best forced {times.get(best, math.nan):8.1f} us ({best})", flush=True)
        results.append(row)
    with open(args.output, "w") as f:
        json.dump({"model": args.model, "batch": args.batch, "runs": args.runs, "nodes": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
