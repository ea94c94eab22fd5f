"""Check and time the fused-block (NHWC) CUDA kernels directly, without ONNX Runtime.

In: the FCM library (or a build holding the block kernels) exporting ``FcmBlockRun``; PyTorch with
CUDA (the reference, in float64, and the baseline timings, cuDNN in channels-last). Out: a table of
cases (kind, shapes, plan) with the relative error against the reference and whether every output
was written (outputs are poisoned with NaN first); then timings of MobileNetV2's blocks at batch 32
against the same layers unfused in cuDNN; JSON with everything (``--out``).

    python benchmarks/block_kernel_check.py --lib ort_custom_ops/lib/libfcm_ort_ops.so --out results.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

ACT = {"none": 0, "relu": 1, "clip": 2, "hard_swish": 3, "swish": 4, "sigmoid": 5}


@dataclass
class Case:
    name: str
    n: int
    h: int
    w: int
    c: int
    m: int  # intermediate channels (c without a first stage)
    f: int  # output channels (0 without a last stage)
    kind: str  # pwdwpw, dwpw, pwdw, pwpw, pw
    kernel: int = 3
    stride: int = 1
    pads: tuple = None  # top, left, bottom, right; default: TF "SAME"
    acts: tuple = ("clip", "clip", "none")
    residual: bool = False
    res_act: str = "none"
    scale: bool = False
    plan: str = ""
    tf32: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def stages(self):
        return {"pwdwpw": (1, 1, 1), "dwpw": (0, 1, 1), "pwdw": (1, 1, 0), "pwpw": (1, 0, 1), "pw": (0, 0, 1)}[self.kind]


# (h, c, m, f, stride, residual): MobileNetV2's inverted-residual blocks at 224x224
MNV2_BLOCKS = [(112, 16, 96, 24, 2, False), (56, 24, 144, 24, 1, True), (56, 24, 144, 32, 2, False), (28, 32, 192, 32, 1, True),
               (28, 32, 192, 64, 2, False), (14, 64, 384, 64, 1, True), (14, 64, 384, 96, 1, False), (14, 96, 576, 96, 1, True),
               (14, 96, 576, 160, 2, False), (7, 160, 960, 160, 1, True), (7, 160, 960, 320, 1, False)]


def same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def activation(x, name):
    if name == "none":
        return x
    if name == "relu":
        return torch.relu(x)
    if name == "clip":
        return torch.clamp(x, 0.0, 6.0)
    if name == "hard_swish":
        return x * torch.clamp(x + 3, 0, 6) / 6
    if name == "swish":
        return x * torch.sigmoid(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    raise ValueError(name)


class Problem:
    """Tensors of one case on the GPU (NHWC), with a float64 reference."""

    def __init__(self, case: Case, gen: torch.Generator):
        self.case = case
        pw1, dw, pwl = case.stages
        dev = "cuda"
        rnd = lambda *shape, scale=1.0: (torch.randn(*shape, generator=gen, device=dev) * scale).float()
        c, m = case.c, case.m if pw1 else case.c
        self.m = m
        self.x = rnd(case.n, case.h, case.w, c)
        self.w1 = rnd(m, c, scale=1.0 / math.sqrt(c)) if pw1 else None
        self.b1 = rnd(m, scale=0.1) if pw1 else None
        self.wd = rnd(m, case.kernel, case.kernel, scale=1.0 / case.kernel) if dw else None
        self.bd = rnd(m, scale=0.1) if dw else None
        self.w2 = rnd(case.f, m, scale=1.0 / math.sqrt(m)) if pwl else None
        self.b2 = rnd(case.f, scale=0.1) if pwl else None
        self.s = (torch.rand(case.n, c, generator=gen, device=dev) + 0.5).float() if case.scale else None
        k, s = (case.kernel, case.stride) if dw else (1, 1)
        if dw:
            if case.pads is None:
                top, bottom = same_pads(case.h, k, s)
                left, right = same_pads(case.w, k, s)
                self.pads = (top, left, bottom, right)
            else:
                self.pads = case.pads
        else:
            self.pads = (0, 0, 0, 0)
        t, l, b, r = self.pads
        self.out_h = (case.h + t + b - k) // s + 1
        self.out_w = (case.w + l + r - k) // s + 1
        self.out_c = case.f if pwl else m
        self.y = torch.empty(case.n, self.out_h, self.out_w, self.out_c, device=dev)

    def reference(self) -> torch.Tensor:
        case, (pw1, dw, pwl) = self.case, self.case.stages
        d = lambda t: t.double()
        x = d(self.x).permute(0, 3, 1, 2)
        u = x
        if self.s is not None:
            u = u * d(self.s)[:, :, None, None]
        if pw1:
            u = activation(F.conv2d(u, d(self.w1)[:, :, None, None], d(self.b1)), case.acts[0])
        if dw:
            t, l, b, r = self.pads
            u = F.pad(u, (l, r, t, b))
            u = activation(F.conv2d(u, d(self.wd)[:, None], d(self.bd), stride=case.stride, groups=self.m), case.acts[1])
        if pwl:
            u = activation(F.conv2d(u, d(self.w2)[:, :, None, None], d(self.b2)), case.acts[2])
        if case.residual:
            u = activation(u + x, case.res_act)
        return u.permute(0, 2, 3, 1).contiguous()

    def call_args(self):
        case, (pw1, dw, pwl) = self.case, self.case.stages
        ptr = lambda t: ctypes.c_void_p(t.data_ptr() if t is not None else 0)
        pointers = (ctypes.c_void_p * 9)(*[ptr(t) for t in (self.x, self.y, self.s, self.w1, self.b1, self.wd, self.bd, self.w2, self.b2)])
        k, s = (case.kernel, case.stride) if dw else (1, 1)
        dims = (ctypes.c_int * 18)(case.n, case.h, case.w, case.c, self.m, case.f if pwl else 0, k, s, self.pads[0], self.pads[1],
                                   self.out_h, self.out_w, case.n if self.s is not None else 0, pw1, dw, pwl, int(case.residual),
                                   int(case.tf32))
        values = []
        for name in (*case.acts, case.res_act):
            values += [float(ACT[name]), 0.0, 6.0]
        acts = (ctypes.c_float * 12)(*values)
        return pointers, dims, acts


class Library:
    def __init__(self, path: str):
        self.lib = ctypes.CDLL(path)
        self.lib.FcmBlockRun.restype = ctypes.c_int
        self.lib.FcmBlockCandidates.restype = ctypes.c_int

    def run(self, problem: Problem, plan: str = "") -> tuple[int, str]:
        pointers, dims, acts = problem.call_args()
        message = ctypes.create_string_buffer(512)
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        rc = self.lib.FcmBlockRun(pointers, dims, acts, plan.encode(), stream, message, 512)
        return rc, message.value.decode()

    def candidates(self, problem: Problem) -> list[str]:
        _, dims, _ = problem.call_args()
        out = ctypes.create_string_buffer(1 << 20)
        self.lib.FcmBlockCandidates(dims, out, 1 << 20)
        return [line for line in out.value.decode().splitlines() if line]


def check(lib: Library, case: Case, gen) -> dict:
    problem = Problem(case, gen)
    problem.y.fill_(float("nan"))
    rc, text = lib.run(problem, case.plan)
    torch.cuda.synchronize()
    result = {"case": case.name, "kind": case.kind, "plan": text, "tf32": case.tf32}
    if rc != 0:
        result.update(ok=False, error=text)
        return result
    ref = problem.reference()
    y = problem.y.double()
    unwritten = int(torch.isnan(y).sum().item())
    scale = float(ref.abs().max().item()) or 1.0
    err = float((y - ref).abs().nan_to_num(float("inf")).max().item()) / scale
    bound = 5e-3 if case.tf32 else 1e-4
    result.update(ok=unwritten == 0 and err <= bound, rel_err=err, bound=bound, unwritten=unwritten)
    return result


def cases() -> list[Case]:
    out = []
    for n in (1, 3):
        for h, c, m, f, s, res in MNV2_BLOCKS:
            out.append(Case(f"mnv2 {h}x{h} {c}-{m}-{f} s{s} n{n}", n, h, h, c, m, f, "pwdwpw", stride=s, residual=res))
    for exact in (False, True):
        tag = "fp32" if exact else "tf32"
        out += [
            Case(f"odd {tag}", 2, 13, 9, 20, 44, 28, "pwdwpw", kernel=5, stride=2, tf32=not exact),
            Case(f"odd channels {tag}", 3, 11, 7, 13, 37, 19, "pwdwpw", tf32=not exact),
            Case(f"k7 {tag}", 1, 15, 17, 24, 72, 40, "pwdwpw", kernel=7, tf32=not exact),
            Case(f"k7 s2 {tag}", 2, 16, 16, 24, 72, 40, "pwdwpw", kernel=7, stride=2, tf32=not exact),
            Case(f"dwpw {tag}", 2, 19, 19, 64, 64, 96, "dwpw", acts=("none", "relu", "none"), tf32=not exact),
            Case(f"dwpw odd {tag}", 1, 9, 10, 30, 30, 17, "dwpw", kernel=5, stride=2, acts=("none", "none", "relu"), tf32=not exact),
            Case(f"pwdw {tag}", 2, 20, 20, 16, 96, 0, "pwdw", stride=2, tf32=not exact),
            Case(f"pwdw odd {tag}", 1, 9, 7, 10, 21, 0, "pwdw", kernel=3, tf32=not exact),
            Case(f"pwpw {tag}", 3, 7, 7, 160, 320, 96, "pwpw", acts=("relu", "none", "none"), tf32=not exact),
            Case(f"pwpw scale {tag}", 2, 14, 14, 96, 40, 96, "pwpw", acts=("swish", "none", "none"), scale=True, residual=True, tf32=not exact),
            Case(f"pw scale {tag}", 2, 14, 14, 200, 200, 40, "pw", acts=("none", "none", "none"), scale=True, tf32=not exact),
            Case(f"pw odd {tag}", 3, 9, 11, 37, 37, 37, "pw", acts=("none", "none", "relu"), scale=True, residual=True,
                 tf32=not exact),
            Case(f"hswish res {tag}", 2, 14, 14, 40, 120, 40, "pwdwpw", kernel=5, acts=("hard_swish", "hard_swish", "none"),
                 residual=True, res_act="relu", tf32=not exact),
            Case(f"sigmoid pad {tag}", 1, 12, 12, 16, 48, 24, "pwdwpw", pads=(0, 0, 2, 2), acts=("sigmoid", "swish", "relu"), tf32=not exact),
        ]
    # forced plans: splits over a cluster, output-channel slices, tile shapes, stages
    for plan in ("8x8,64,1,3", "8x8,64,2,4", "4x16,32,4,3", "7x7,96,8,3", "2x14,64,1,4", "8x8,24,2,3", "1x7,16,1,3"):
        out.append(Case(f"plan {plan}", 3, 14, 14, 64, 384, 64, "pwdwpw", residual=True, plan=plan))
    out.append(Case("split exact", 2, 7, 7, 160, 960, 160, "pwdwpw", residual=True, plan="7x7,64,4,3", tf32=False))
    out.append(Case("dwpw split", 2, 10, 10, 256, 256, 256, "dwpw", acts=("none", "relu", "none"), plan="5x10,128,4,3"))
    out.append(Case("pw split", 2, 7, 7, 1152, 1152, 320, "pw", acts=("none", "none", "none"), scale=True, plan="7x7,64,8,3"))
    # two computing warpgroups without a first stage: many chunks, an odd count, a ragged last one,
    # one chunk (warpgroup 1 idle)
    out.append(Case("dwpw halves", 2, 19, 19, 200, 200, 128, "dwpw", acts=("none", "relu", "none"), plan="8x8,128,1,4,2"))
    out.append(Case("dwpw halves odd", 3, 14, 14, 72, 72, 96, "dwpw", kernel=5, acts=("none", "none", "relu"), plan="2x14,96,1,3,2"))
    out.append(Case("dwpw halves one chunk", 1, 9, 9, 24, 24, 64, "dwpw", stride=2, acts=("none", "none", "relu"), plan="5x5,64,1,3,2"))
    out.append(Case("dwpw halves xception", 2, 14, 14, 728, 728, 728, "dwpw", acts=("none", "none", "relu"), plan="4x14,192,1,3,2"))
    out.append(Case("pw halves", 2, 7, 7, 300, 300, 300, "pw", acts=("none", "none", "none"), scale=True, residual=True,
                    plan="7x7,96,1,3,2"))
    # DW->PW in two passes (a depthwise pass into a workspace, then CUTLASS's GEMM)
    out.append(Case("dwpw two passes xception", 2, 14, 14, 728, 728, 728, "dwpw", acts=("none", "none", "relu"), plan="dw+gemm"))
    out.append(Case("dwpw two passes residual", 3, 9, 12, 48, 48, 48, "dwpw", kernel=5, acts=("none", "relu", "none"), residual=True,
                    res_act="relu", plan="dw+gemm"))
    out.append(Case("dwpw two passes s2", 2, 13, 11, 40, 40, 24, "dwpw", kernel=7, stride=2, acts=("none", "clip", "clip"), plan="dw+gemm"))
    # a lone PW in one pass (CUTLASS's GEMM): MobileNetV2's last 1x1 convolution, a residual
    out.append(Case("pw one pass mobilenet_v2 head", 32, 7, 7, 320, 320, 1280, "pw", acts=("none", "none", "clip"), plan="gemm"))
    out.append(Case("pw one pass residual", 3, 9, 12, 48, 48, 48, "pw", acts=("none", "none", "none"), residual=True,
                    res_act="relu", plan="gemm"))
    out.append(Case("pw one pass scaled efficientnet_b0", 32, 7, 7, 1152, 1152, 320, "pw", acts=("none", "none", "none"), scale=True,
                    plan="gemm"))
    # PW->DW in two passes (CUTLASS's GEMM into a workspace, then the depthwise pass into the output)
    out.append(Case("pwdw two passes efficientnet_b0 28x28", 32, 28, 28, 40, 240, 0, "pwdw", acts=("swish", "swish", "none"),
                    plan="gemm+dw"))
    out.append(Case("pwdw two passes s2", 2, 15, 13, 16, 96, 0, "pwdw", stride=2, acts=("hard_swish", "relu", "none"), plan="gemm+dw"))
    # PW->DW->PW in three passes (CUTLASS's GEMM, a depthwise pass, CUTLASS's GEMM)
    out.append(Case("pwdwpw three passes mobilenet_v2 7x7", 4, 7, 7, 160, 960, 160, "pwdwpw", acts=("clip", "clip", "none"),
                    residual=True, plan="gemm+dw+gemm"))
    out.append(Case("pwdwpw three passes s2", 2, 13, 11, 24, 72, 40, "pwdwpw", kernel=5, stride=2, acts=("relu", "swish", "clip"),
                    plan="gemm+dw+gemm"))
    # wide regions (more than 128 input pixels: the first stage in two halves), PW->DW->PW forced:
    # stride-2 tiles of MobileNetV2's early blocks, the widest region (255 pixels, four row blocks),
    # 5x5 and 7x7 kernels at stride 1, a cluster split, a ragged last chunk, exact FP32
    out.append(Case("wide region s2", 2, 30, 34, 16, 96, 24, "pwdwpw", stride=2, plan="4x8,24,1,3"))
    out.append(Case("wide region s2 widest", 3, 29, 31, 24, 144, 32, "pwdwpw", stride=2, plan="7x8,32,1,3"))
    out.append(Case("wide region k5 residual", 2, 19, 21, 24, 72, 24, "pwdwpw", kernel=5, acts=("relu", "clip", "none"), residual=True,
                    res_act="relu", plan="8x8,24,1,3"))
    out.append(Case("wide region k7 split", 2, 16, 16, 32, 192, 32, "pwdwpw", kernel=7, plan="8x8,32,2,3"))
    out.append(Case("wide region ragged", 2, 23, 25, 20, 100, 28, "pwdwpw", stride=2, acts=("swish", "relu", "clip"), plan="6x8,32,1,4"))
    out.append(Case("wide region exact", 2, 17, 19, 16, 64, 64, "pwdwpw", stride=2, plan="4x8,64,1,3", tf32=False))
    out.append(Case("batch 32", 32, 28, 28, 32, 192, 32, "pwdwpw", residual=True))
    return out


def time_ms(fn, runs: int = 30, per_graph: int = 20) -> float:
    """Median time of one call, from replays of a CUDA graph holding `per_graph` calls: no host
    overhead in the figure (the launcher plans on the host; the graph holds only the launches)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(per_graph):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / per_graph)
    times.sort()
    return times[len(times) // 2]


def bench(lib: Library, gen, n: int, plans: list[str]) -> list[dict]:
    """MobileNetV2's blocks at batch `n`: the kernels' own plan, each of `plans` that takes the block
    (checked against the float64 reference first), and cuDNN unfused."""
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for h, c, m, f, s, res in MNV2_BLOCKS:
        case = Case(f"{h}x{h} {c}-{m}-{f} s{s}", n, h, h, c, m, f, "pwdwpw", stride=s, residual=res)
        problem = Problem(case, gen)
        rc, text = lib.run(problem)
        if rc != 0:
            rows.append({"block": case.name, "error": text})
            continue
        fused = time_ms(lambda: lib.run(problem))
        # cuDNN, channels-last, the same three convolutions and activations unfused
        x = problem.x.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        w1 = problem.w1[:, :, None, None].contiguous(memory_format=torch.channels_last)
        wd = problem.wd[:, None].contiguous(memory_format=torch.channels_last)
        w2 = problem.w2[:, :, None, None].contiguous(memory_format=torch.channels_last)
        t, l, b, r = problem.pads

        def unfused():
            u = torch.clamp(F.conv2d(x, w1, problem.b1), 0, 6)
            u = torch.clamp(F.conv2d(F.pad(u, (l, r, t, b)), wd, problem.bd, stride=s, groups=m), 0, 6)
            v = F.conv2d(u, w2, problem.b2)
            return v + x if res else v

        cudnn = time_ms(unfused)
        macs = n * (h * h * c * m + problem.out_h * problem.out_w * (m * 9 + m * f))
        timed = []
        for plan in plans:
            checked = check(lib, Case(case.name, n, h, h, c, m, f, "pwdwpw", stride=s, residual=res, plan=plan), gen)
            if "rel_err" not in checked:  # refused: this plan does not take the block
                timed.append({"plan": plan, "refused": checked.get("error", checked.get("plan", ""))})
            elif not checked["ok"]:
                timed.append({"plan": checked["plan"], "error": checked})
            else:
                timed.append({"plan": checked["plan"], "ms": time_ms(lambda: lib.run(problem, plan))})
        rows.append({"block": case.name, "plan": text, "fused_ms": fused, "cudnn_unfused_ms": cudnn, "speedup": cudnn / fused,
                     "tflops": 2 * macs / fused / 1e9, "timed": timed})
    return rows


def sweep(lib: Library, gen, n: int, top: int) -> list[dict]:
    """Each MobileNetV2 block's `top` candidate plans (best estimates first) timed: the kernels' own
    pick against the fastest."""
    from ort_custom_ops.ops.launch_plan import parse_block_candidates

    rows = []
    print(f"batch {n} sweep: block, own plan ms, best ms, gain, best plan")
    for h, c, m, f, s, res in MNV2_BLOCKS:
        case = Case(f"{h}x{h} {c}-{m}-{f} s{s}", n, h, h, c, m, f, "pwdwpw", stride=s, residual=res)
        problem = Problem(case, gen)
        own_rc, own_text = lib.run(problem)
        own = time_ms(lambda: lib.run(problem)) if own_rc == 0 else float("inf")
        timed = []
        for plan in parse_block_candidates("\n".join(lib.candidates(problem)), top):
            rc, text = lib.run(problem, plan)
            if rc == 0:
                timed.append((time_ms(lambda: lib.run(problem, plan), runs=15), text))
        timed.sort()
        best, best_text = timed[0] if timed else (float("inf"), "")
        rows.append({"block": case.name, "own_ms": own, "own_plan": own_text, "best_ms": best, "best_plan": best_text,
                     "timed": [{"ms": t, "plan": x} for t, x in timed]})
        print(f"  {case.name:<26} {own:.4f} {best:.4f} {own / best:.2f}x  {best_text[:70]}", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", required=True)
    parser.add_argument("--out", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bench", action="store_true")
    parser.add_argument("--filter", default="", help="only the cases whose name holds this text")
    parser.add_argument("--sweep", type=int, default=0, metavar="N",
                        help="also time the N best-estimated candidate plans of each MobileNetV2 block at batch 32 "
                        "(the kernels' own pick against the fastest: what fcm tune can gain)")
    parser.add_argument("--plans", default="", help="also time these plans on each MobileNetV2 block ('HxW,f_tile,split,"
                        "stages[,groups]', 'gemm+dw+gemm', ... separated by ';'), each checked first; those a block refuses are skipped")
    parser.add_argument("--profile", default="", help="run the MobileNetV2 blocks whose names hold this text three times "
                        "each at --profile-batch, for a profiler (ncu -s 2 -c 1 takes one warm launch), and nothing else")
    parser.add_argument("--profile-batch", type=int, default=32, help="the batch size of --profile (default 32)")
    args = parser.parse_args()
    lib = Library(args.lib)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(args.seed)
    if args.profile:
        for h, c, m, f, s, res in MNV2_BLOCKS:
            case = Case(f"{h}x{h} {c}-{m}-{f} s{s}", args.profile_batch, h, h, c, m, f, "pwdwpw", stride=s, residual=res)
            if args.profile in case.name:
                problem = Problem(case, gen)
                for _ in range(3):
                    print(lib.run(problem))
                torch.cuda.synchronize()
        return 0
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "checks": [], "bench": {}}
    failures = 0
    for case in cases():
        if args.filter and args.filter not in case.name:
            continue
        try:
            r = check(lib, case, gen)
        except Exception as exc:  # a crash in one case must not hide the others
            r = {"case": case.name, "ok": False, "error": repr(exc)[:300]}
        results["checks"].append(r)
        failures += not r["ok"]
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['case']:<34} err {r.get('rel_err', float('nan')):.2e} "
              f"unwritten {r.get('unwritten', '-')}  {r.get('plan', r.get('error', ''))[:90]}", flush=True)
        if "error" in r and "launch failed" in r.get("error", "") or "illegal" in r.get("error", ""):
            break
    print(f"{len(results['checks']) - failures}/{len(results['checks'])} checks passed", flush=True)
    if not args.no_bench and failures == 0:
        for n in (32, 1):
            rows = bench(lib, gen, n, [x for x in args.plans.split(";") if x])
            results["bench"][str(n)] = rows
            print(f"batch {n}: block, fused ms, cuDNN unfused ms, speedup, TFLOP/s")
            for row in rows:
                if "error" in row:
                    print(f"  {row['block']:<26} {row['error']}")
                else:
                    print(f"  {row['block']:<26} {row['fused_ms']:.4f} {row['cudnn_unfused_ms']:.4f} {row['speedup']:.2f}x "
                          f"{row['tflops']:.1f}  {row['plan'][:60]}")
                    for t in row["timed"]:
                        print(f"    {t['ms']:.4f} {t['plan'][:70]}" if "ms" in t else f"    not timed: {str(t)[:100]}")
    if args.sweep and failures == 0:
        results["sweep"] = sweep(lib, gen, 32, args.sweep)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
