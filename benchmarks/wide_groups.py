"""Time the fused-block kernels on the wide depthwise -> pointwise groups of Xception and MobileNet
(batch 32, 224x224 inputs) against cuDNN in channels-last, without ONNX Runtime.

In: the FCM library exporting ``FcmBlockRun`` / ``FcmBlockCandidates``; PyTorch with CUDA. Out: per
group, the kernels' own plan and its time, the best of the ``--sweep`` best-estimated candidates,
the same group's pointwise stage alone on the same kernels (``pw``: how much of the time the GEMM
takes), cuDNN's depthwise + pointwise convolutions (channels-last, TF32) and cuBLAS's product alone,
with TFLOP/s and the roofline bound (bytes at ``--bandwidth``, MACs at ``--peak``); JSON with
everything (``--out``).

    python benchmarks/wide_groups.py --lib ort_custom_ops/lib/libfcm_ort_ops.so --sweep 12 --out wide.json
    python benchmarks/wide_groups.py --lib ... --profile "xc 14x14 728-728"   # one launch after warm-up, for ncu
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from block_kernel_check import Case, Library, Problem, check, time_ms

# (name, h, c, f, stride): the depthwise -> pointwise groups of Xception (ReLU after the product where a
# ReLU follows the separable convolution) and MobileNet at 224x224
GROUPS = [
    ("xc 109x109 64-128", 109, 64, 128, 1),
    ("xc 55x55 256-256", 55, 256, 256, 1),
    ("xc 28x28 728-728", 28, 728, 728, 1),
    ("xc 14x14 728-728", 14, 728, 728, 1),
    ("xc 14x14 728-1024", 14, 728, 1024, 1),
    ("xc 7x7 1536-2048", 7, 1536, 2048, 1),
    ("mn 28x28 256-256", 28, 256, 256, 1),
    ("mn 14x14 512-512", 14, 512, 512, 1),
    ("mn 7x7 1024-1024", 7, 1024, 1024, 1),
]


def case_of(name: str, h: int, c: int, f: int, stride: int, n: int, kind: str = "dwpw", plan: str = "") -> Case:
    return Case(name, n, h, h, c, c, f, kind, stride=stride, acts=("none", "none", "relu"), plan=plan)


def cudnn_ms(problem: Problem, stride: int) -> tuple[float, float]:
    """(depthwise + pointwise, the product alone) in cuDNN / cuBLAS, channels-last, TF32."""
    x = problem.x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    wd = problem.wd[:, None].contiguous(memory_format=torch.channels_last)
    w2 = problem.w2[:, :, None, None].contiguous(memory_format=torch.channels_last)
    t, l, b, r = problem.pads
    symmetric = t == b and l == r  # cuDNN pads inside the convolution; uneven padding is a separate pad
    padding = (t, l) if symmetric else 0

    def unfused():
        u = F.conv2d(x if symmetric else F.pad(x, (l, r, t, b)), wd, problem.bd, stride=stride, padding=padding,
                     groups=problem.m)
        return torch.relu(F.conv2d(u, w2, problem.b2))

    v = torch.randn(problem.case.n * problem.out_h * problem.out_w, problem.m, device="cuda")
    w2t = problem.w2.t().contiguous()
    return time_ms(unfused), time_ms(lambda: torch.relu(torch.addmm(problem.b2, v, w2t)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sweep", type=int, default=0, metavar="N")
    parser.add_argument("--filter", default="")
    parser.add_argument("--plan", default="", help="force this plan on the groups run")
    parser.add_argument("--plans", default="", help="also time these plans on each group ('tile,f_tile,split,stages[,groups]' "
                        "separated by ';'; those a group refuses are skipped)")
    parser.add_argument("--profile", default="", help="run the group whose name holds this text a few times, nothing else")
    parser.add_argument("--bandwidth", type=float, default=3.0e12, help="bytes/s for the bound (measured copy bandwidth)")
    parser.add_argument("--peak", type=float, default=494e12, help="dense TF32 FLOP/s for the bound")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    lib = Library(args.lib)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    rows = []
    for name, h, c, f, s in GROUPS:
        if args.profile:
            if args.profile in name:
                problem = Problem(case_of(name, h, c, f, s, args.batch, plan=args.plan), gen)
                for _ in range(3):
                    print(lib.run(problem, args.plan))
                torch.cuda.synchronize()
            continue
        if args.filter and args.filter not in name:
            continue
        case = case_of(name, h, c, f, s, args.batch, plan=args.plan)
        checked = check(lib, case, gen)  # (runs the plan once on poisoned outputs: its text, or why it failed)
        if not checked["ok"]:
            print(f"FAIL {name}: {checked}", flush=True)
            rows.append({"group": name, "error": checked})
            continue
        problem, own_plan = Problem(case, gen), checked["plan"]
        own = time_ms(lambda: lib.run(problem, args.plan))
        pw_problem = Problem(case_of(name, problem.out_h, c, f, 1, args.batch, kind="pw"), gen)
        pw_rc, pw_plan = lib.run(pw_problem)
        pw = time_ms(lambda: lib.run(pw_problem)) if pw_rc == 0 else float("nan")
        unfused, gemm = cudnn_ms(problem, s)
        pixels = args.batch * problem.out_h * problem.out_w
        macs = pixels * (c * 9 + c * f)
        moved = 4 * (args.batch * h * h * c + pixels * f)
        bound = max(moved / args.bandwidth, 2 * macs / args.peak) * 1e3
        best, best_plan, timed = own, own_plan, []
        plans = [x for x in args.plans.split(";") if x]
        if args.sweep:
            from ort_custom_ops.ops.launch_plan import parse_block_candidates

            plans += parse_block_candidates("\n".join(lib.candidates(problem)), args.sweep)
        for plan in plans:
            checked_plan = check(lib, case_of(name, h, c, f, s, args.batch, plan=plan), gen)
            if "rel_err" not in checked_plan:  # refused (does not fit this group): skipped
                continue
            text = checked_plan["plan"]
            if not checked_plan["ok"]:
                print(f"FAIL {name} {plan}: {checked_plan}", flush=True)
                timed.append({"plan": text, "error": checked_plan})
                continue
            t = time_ms(lambda: lib.run(problem, plan), runs=15)
            timed.append({"plan": text, "ms": t})
            print(f"    {t * 1e3:7.1f} us  {text[:80]}", flush=True)
            if t < best:
                best, best_plan = t, text
        row = {"group": name, "own_plan": own_plan, "own_ms": own, "best_ms": best, "best_plan": best_plan,
               "pw_plan": pw_plan, "pw_ms": pw, "cudnn_ms": unfused, "cublas_gemm_ms": gemm, "bound_ms": bound,
               "tflops": 2 * macs / own / 1e9, "rel_err": checked["rel_err"], "timed": timed}
        rows.append(row)
        print(f"{name:<20} own {own * 1e3:7.1f} us ({own_plan[:28]})  best {best * 1e3:7.1f} ({best_plan[:28]})  "
              f"pw {pw * 1e3:6.1f}  cudnn {unfused * 1e3:6.1f} (gemm {gemm * 1e3:6.1f})  bound {bound * 1e3:5.1f}  "
              f"eff {bound / best:5.1%}  err {checked['rel_err']:.1e}", flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch,
                       "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
