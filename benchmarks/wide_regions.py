"""MobileNetV2's stride-2 blocks with wide-region plans (an input region of 129-256 pixels, the
first stage in two halves) against the kernels' own plan, without ONNX Runtime (GPU machine).

In: the FCM library exporting ``FcmBlockRun``; PyTorch with CUDA. For each stride-2 block at batch
32 and 1: every tile of at most 64 output pixels, at most 8 rows and at least 4 columns whose
region is wide (the balanced tile for each height and the unbalanced one), output-channel slice f
(and 32 where f is wider), ring depth 3 and 4, splits 1/2/4 at batch 1 and on the 14x14 block;
each plan checked against the float64 reference (outputs poisoned) before it is timed. Out: the
four best per block on stdout, and every timing as JSON.

    python3 benchmarks/wide_regions.py --lib ort_custom_ops/lib/libfcm_ort_ops.so -o sweep.json
"""

from __future__ import annotations

import argparse
import json

import torch

from block_kernel_check import MNV2_BLOCKS, Case, Library, Problem, check, time_ms


def wide_tiles(out_h: int, out_w: int, stride: int, kernel: int = 3) -> list[tuple[int, int]]:
    def region(th, tw):
        return ((th - 1) * stride + kernel) * ((tw - 1) * stride + kernel)

    tiles = []
    for th in range(1, min(out_h, 8) + 1):
        tw = min(out_w, 64 // th)
        while tw > 0 and region(th, tw) > 256:
            tw -= 1
        if tw == 0:
            break
        balanced = (-(-out_h // -(-out_h // th)), -(-out_w // -(-out_w // tw)))
        for tile in (balanced, (th, tw)):
            if region(*tile) > 128 and tile[0] * tile[1] <= 64 and tile[1] >= 4 and tile not in tiles:
                tiles.append(tile)
    return tiles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", required=True)
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    lib = Library(args.lib)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    rows = []
    for n in (32, 1):
        print(f"batch {n}: block, own plan (us), then the best wide plans")
        for h, c, m, f, s, res in MNV2_BLOCKS:
            if s != 2:
                continue
            case = Case(f"{h}x{h} {c}-{m}-{f} s{s}", n, h, h, c, m, f, "pwdwpw", stride=s, residual=res)
            problem = Problem(case, gen)
            _, own = lib.run(problem)
            own_ms = time_ms(lambda: lib.run(problem))
            row = {"n": n, "block": case.name, "own_ms": own_ms, "own": own, "timed": []}
            out_h = -(-h // s)
            for th, tw in wide_tiles(out_h, out_h, s):
                for f_tile in [f] + ([32] if f > 32 else []):
                    for split in (1, 2, 4) if n == 1 or h <= 14 else (1,):
                        for stages in (3, 4):
                            plan = f"{th}x{tw},{f_tile},{split},{stages}"
                            checked = check(lib, Case(case.name, n, h, h, c, m, f, "pwdwpw", stride=s, residual=res, plan=plan), gen)
                            if "rel_err" not in checked:  # refused: not a compiled width, too much shared memory, ...
                                continue
                            if not checked["ok"]:
                                row["timed"].append({"plan": plan, "fail": checked})
                                continue
                            row["timed"].append({"plan": checked["plan"], "ms": time_ms(lambda: lib.run(problem, plan))})
            row["timed"].sort(key=lambda t: t.get("ms", float("inf")))
            print(f"  {case.name:<24} {own_ms * 1e3:.1f}  {own[:40]}", flush=True)
            for t in row["timed"][:4]:
                print(f"    {t.get('ms', float('nan')) * 1e3:.1f}  {t['plan'][:70]}", flush=True)
            rows.append(row)
    with open(args.output, "w") as fh:
        json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
