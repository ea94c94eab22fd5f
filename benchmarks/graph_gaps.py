"""Whether one FCM kernel in a CUDA graph slows the launch of every other kernel of the graph.

    python3 benchmarks/graph_gaps.py --lib ort_custom_ops/lib/libfcm_ort_ops.so [--part ort,torch]
        [--lengths 40,160] [--runs 200] [--json OUT.json] [--dot DIR]

Why: in MobileNetV3-Small at batch 1 a model with one group fused is 5-22 us slower than the source,
and in a CUDA graph every gap between two kernels, ONNX Runtime's own included, grows from about 0.1
to about 0.26 us once the model holds one FCM node, a block kernel or a pixel-chain kernel alike
(``benchmarks/2026-12-03-h200-chunk64-pdl-modes``). Over MobileNetV3-Small's 185 kernels that is
about 30 us. This script finds which property of a graph brings it.

In: the FCM library. Out: a table; with ``--json``, everything; with ``--dot``, the torch part's
CUDA graphs as Graphviz text (node types, launch attributes, edge kinds). Each case is a chain of small
kernels with something else in its middle, at two chain lengths. The chain kernels are the same in
every case, so the slope between the two lengths is the cost of one chain kernel with its launch gap,
and a case whose slope is above the plain chain's pays more per launch for what is in its middle.
With torch installed, the median gap between kernels of one traced run (CUPTI) is given beside it.

- ``ort``: ONNX Runtime models, CUDA graphs and ``prefer_nhwc`` on, batch 1, the chain of ``Relu``:
  alone; around the reference subgraph (standard ONNX ops) of a fused block; around one FCM block
  node (NHWC, a block kernel); around one 1x1 PW->PW node (the squeeze-and-excitation kind: the
  pixel-chain or chain kernels, with a scratch buffer from ONNX Runtime's allocator) and its reference.
- ``torch``: PyTorch CUDA graphs of ``relu_`` calls: alone; around one FCM block kernel launched
  through ``FcmBlockRun`` (no ONNX Runtime); around one kernel of another run-time-compiled module
  (a jiterator kernel). If the FCM kernel raises the slope here too, the cause is in the kernel's
  launch (its attributes, its module); if only ONNX Runtime's graph shows it, it is in how ONNX
  Runtime runs the custom op.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

BLOCK_SHAPE = (1, 14, 14, 32)  # NHWC: the block cases' chain tensor
PIXEL_SHAPE = (1, 1, 1, 96)  # a squeeze-and-excitation branch's pooled tensor


def block_spec(rng):
    from ort_custom_ops.ops.schema import Activation, FcmSpec, StageSpec

    c, m = BLOCK_SHAPE[3], 96
    stages = [StageSpec("pw", rng.normal(0, c ** -0.5, (m, c)).astype(np.float32), np.zeros(m, np.float32), Activation("relu")),
              StageSpec("dw", rng.normal(0, 1 / 3, (m, 3, 3)).astype(np.float32), np.zeros(m, np.float32), Activation("relu"),
                        stride=1, pads=(1, 1, 1, 1)),
              StageSpec("pw", rng.normal(0, m ** -0.5, (c, m)).astype(np.float32), np.zeros(c, np.float32), Activation())]
    return FcmSpec("pwdwpw", stages, residual=True, channels_last=True)


def pixel_spec(rng):
    from ort_custom_ops.ops.schema import Activation, FcmSpec, StageSpec

    c, m = PIXEL_SHAPE[3], 24
    stages = [StageSpec("pw", rng.normal(0, c ** -0.5, (m, c)).astype(np.float32), np.zeros(m, np.float32), Activation("relu")),
              StageSpec("pw", rng.normal(0, m ** -0.5, (c, m)).astype(np.float32), np.zeros(c, np.float32), Activation("sigmoid"))]
    return FcmSpec("pwpw", stages, channels_last=True)


def chain_model(length: int, shape: tuple, middle=None):
    """X -> Relu x length/2 -> ``middle`` (a model from X to Y, or None) -> Relu x length/2 -> Y."""
    import onnx
    from onnx import TensorProto, helper

    from ort_custom_ops.ops.schema import renamed_nodes

    half = length // 2
    nodes = [helper.make_node("Relu", [f"r{i}" if i else "X"], [f"r{i + 1}"], name=f"relu{i}") for i in range(half)]
    initializers, functions, opsets = [], [], {"": 17}
    current = f"r{half}"
    if middle is not None:
        nodes += renamed_nodes(middle.graph.node, {"X": current, "Y": "middle_out"})
        initializers = list(middle.graph.initializer)
        functions = list(middle.functions)
        opsets.update({o.domain: o.version for o in middle.opset_import})
        current = "middle_out"
    nodes += [helper.make_node("Relu", [current if i == 0 else f"s{i}"], [f"s{i + 1}" if i < half - 1 else "Y"], name=f"relu_after{i}")
              for i in range(half)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, list(shape))], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()], functions=functions)
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def traced_median_gap_us(session, feeds: dict, shape: tuple) -> float | None:
    """The median gap between the kernels of one traced run (CUPTI), or None without torch."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:  # kernels_of_one_run imports torch only when called
        return None
    from kernel_timeline import kernels_of_one_run, median_gap_us

    rows, _ = kernels_of_one_run(session, feeds, [list(shape)], [np.float32], runs=3, warmup=10)
    return median_gap_us(rows) if len(rows) > 1 else None


def ort_part(lengths: list[int], runs: int, warmup: int, trace: bool) -> list[dict]:
    from fcm.measure import cuda_session, providers, time_session
    from ort_custom_ops.ops.standalone import fused_model, reference_model

    rng = np.random.default_rng(0)
    block, pixel = block_spec(rng), pixel_spec(rng)
    cases = [("relu chain (14x14x32)", BLOCK_SHAPE, None, False),
             ("+ block reference subgraph", BLOCK_SHAPE, reference_model(block, 14, 14), False),
             ("+ FCM block node", BLOCK_SHAPE, fused_model(block, 14, 14), True),
             ("relu chain (1x1x96)", PIXEL_SHAPE, None, False),
             ("+ 1x1 PW->PW reference subgraph", PIXEL_SHAPE, reference_model(pixel, 1, 1), False),
             ("+ FCM 1x1 PW->PW node", PIXEL_SHAPE, fused_model(pixel, 1, 1), True)]
    rows = []
    for name, shape, middle, library in cases:
        row = {"part": "ort", "case": name, "library": library, "ms": {}, "median_gap_us": {}}
        feeds = {"X": rng.normal(size=shape).astype(np.float32)}
        for length in lengths:
            session = cuda_session(chain_model(length, shape, middle), library, providers(True, True))
            timing, _ = time_session(session, feeds, [list(shape)], runs, warmup)
            row["ms"][length] = round(timing.median_ms, 4)
            if trace:
                row["median_gap_us"][length] = traced_median_gap_us(session, feeds, shape)
            del session
        rows.append(slope(row, lengths))
        print(line(row), flush=True)
    return rows


def dump_graph(body, path: Path) -> None:
    """The CUDA graph of ``body`` as Graphviz text (cudaGraphDebugDotPrint: each node's type, a
    kernel's launch attributes, the edges and their kind)."""
    import torch

    graph = torch.cuda.CUDAGraph()
    graph.enable_debug_mode()
    with torch.cuda.graph(graph):
        body()
    graph.debug_dump(str(path))


def torch_part(lib_path: str, lengths: list[int], runs: int, dot: Path | None = None) -> list[dict]:
    import torch
    from block_kernel_check import Case, Library, Problem, time_ms

    lib = Library(lib_path)
    gen = torch.Generator(device="cuda").manual_seed(0)
    problem = Problem(Case("14x14 32-96-32", 1, 14, 14, 32, 96, 32, "pwdwpw", residual=True), gen)
    rc, text = lib.run(problem)
    if rc != 0:
        raise SystemExit(f"FcmBlockRun failed: {text}")
    x = torch.randn(*BLOCK_SHAPE, device="cuda")
    negate = torch.cuda.jiterator._create_jit_fn("template <typename T> T negate_twice(T a) { return -(-a); }")
    middles = {"relu_ chain": None, "+ FCM block kernel (FcmBlockRun)": lambda: lib.run(problem),
               "+ jiterator kernel (another module)": lambda: negate(x)}
    rows = []
    for name, middle in middles.items():
        row = {"part": "torch", "case": name, "plan": text if middle is not None and "FCM" in name else "", "ms": {}}
        for length in lengths:
            def body(length=length, middle=middle):
                for _ in range(length // 2):
                    x.relu_()
                if middle is not None:
                    middle()
                for _ in range(length // 2):
                    x.relu_()
            row["ms"][length] = round(time_ms(body, runs, per_graph=1), 4)  # one replay of the graph of body
        if dot is not None:
            dot.mkdir(parents=True, exist_ok=True)
            dump_graph(body, dot / f"torch_{len(rows)}.dot")  # the longer chain's graph
        rows.append(slope(row, lengths))
        print(line(row), flush=True)
    return rows


def slope(row: dict, lengths: list[int]) -> dict:
    short, long = min(lengths), max(lengths)
    row["us_per_chain_kernel"] = round((row["ms"][long] - row["ms"][short]) / (long - short) * 1e3, 3)
    return row


def line(row: dict) -> str:
    times = " ".join(f"{n}: {ms:.4f}" for n, ms in row["ms"].items())
    gaps = " ".join(f"{n}: {g}" for n, g in row.get("median_gap_us", {}).items() if g is not None)
    return f"  {row['part']:5} {row['case']:36} ms {times}  slope {row['us_per_chain_kernel']:.3f} us/kernel" + \
        (f"  median gap us {gaps}" if gaps else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", required=True, help="the FCM library (libfcm_ort_ops.so)")
    parser.add_argument("--part", default="ort,torch", help="ort, torch or both (default: ort,torch)")
    parser.add_argument("--lengths", default="40,160", help="two chain lengths, even (default: 40,160)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model (default: 200)")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up runs per model (default: 20)")
    parser.add_argument("--no-trace", action="store_true", help="skip the CUPTI gap medians (ort part)")
    parser.add_argument("--json", default="", help="write the rows here")
    parser.add_argument("--dot", default="", help="write the torch part's CUDA graphs here as Graphviz files (torch_<case>.dot)")
    args = parser.parse_args()
    lengths = sorted({int(n) for n in args.lengths.split(",")})
    if len(lengths) != 2 or any(n < 2 or n % 2 for n in lengths):
        parser.error("--lengths takes two different even lengths of at least 2, e.g. 40,160")
    parts = {p for p in args.part.split(",") if p}
    if not parts or parts - {"ort", "torch"}:
        parser.error("--part takes ort, torch or both")
    import os

    os.environ["FCM_ORT_LIBRARY"] = args.lib  # the sessions register this build
    rows = []
    print("case: median ms per chain length, slope per chain kernel (launch gap included)")
    if "ort" in parts:
        rows += ort_part(lengths, args.runs, args.warmup, not args.no_trace)
    if "torch" in parts:
        rows += torch_part(args.lib, lengths, args.runs, Path(args.dot) if args.dot else None)
    if args.json:
        Path(args.json).write_text(json.dumps({"lengths": lengths, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
