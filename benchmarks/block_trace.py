"""Where each fused-block kernel of a model's run spends its time, phase by phase, from a
measurement build of the library.

    cmake -S ort_custom_ops -B build-trace -DFCM_BLOCK_TRACE=ON ... && make -C build-trace
    FCM_ORT_LIBRARY=build-trace/libfcm_ort_ops.so python benchmarks/block_trace.py MODEL.onnx --batch 1 \\
        [--graph] [--nhwc] [--runs 20] [--json OUT.json]

In: a fused model and a library built with ``FCM_BLOCK_TRACE`` (``block/trace.h``: at each phase
boundary of its first unit, one thread of each CTA writes the GPU's global timer into the CTA's
record). Out: per fused-block launch in run order (the separate-pass plans and the other kernels are
not traced), its shape and CTAs, and the medians over ``--runs`` runs of: the kernel's span (the
first CTA's entry to the last CTA's exit), the spread of the CTAs' entries, the gap after the
previous traced launch's last exit, and each phase's duration (the median over the CTAs of the time
from the phase before it that the CTA reached): barriers (initialization and the cluster's first
barrier), inputs (``griddepcontrol.wait``), issued (the first copies issued, loading warp), operands
(the region and first weights arrived), first_chunk (the first chunk's first stage), chunks (the unit's
other chunks), shares (a split: every peer's shares of the CTA's rows landed), stored, exit. A JSON file with every run's numbers.

Why: at batch 1 MobileNetV2's blocks take 9-22 us each against about 1 us of work; a kernel's total
time does not say which of its fixed costs (launch, barriers, first loads, the chain of chunks, the
split's reduction) to remove. The marks cost a global store each on one thread; compare the traced
model's time with the normal library's before trusting small differences.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_timeline import add_session_arguments  # noqa: E402  (a script beside this one)

PHASES = ["entry", "barriers", "inputs", "issued", "operands", "first_chunk", "chunks", "shares", "stored", "exit"]  # trace.h's TracePhase
# block/trace.h's TraceRecord (128 bytes)
RECORD = np.dtype({"names": ["output", "launch", "cta", "sm", "shape", "t"],
                   "formats": ["<u8", "<u4", "<i4", "<i4", ("<i4", 7), ("<u8", len(PHASES))],
                   "offsets": [0, 8, 12, 16, 20, 48], "itemsize": 128})


def launches_of(records: np.ndarray) -> list[dict]:
    """The traced launches of one run, in the order of their first entry: shape, CTAs, span, entry
    spread and per-phase durations (ns -> us), the records with no entry left out."""
    live = records[records["t"][:, 0] != 0]
    out = []
    for launch in np.unique(live["launch"]):
        mine = live[live["launch"] == launch]
        t = mine["t"].astype(np.int64)
        entry, exit_ = t[:, 0], t[:, -1]
        reached = t != 0
        phases = {}
        for i, name in enumerate(PHASES[1:], start=1):
            rows = reached[:, i]
            if not rows.any():
                continue
            # from the latest earlier phase each CTA reached
            before = np.array([t[r, :i][reached[r, :i]].max() for r in np.flatnonzero(rows)])
            phases[name] = float(np.median(t[rows, i] - before)) / 1e3
        n, c, m, f, out_h, out_w, split = (int(v) for v in mine["shape"][0])
        out.append({"launch": int(launch), "output": int(mine["output"][0]), "shape": f"{n}x{out_h}x{out_w} {c}-{m}-{f}",
                    "split": split, "ctas": len(mine), "sms": int(len(np.unique(mine["sm"]))),
                    "first_entry": int(entry.min()), "last_exit": int(exit_.max()) if reached[:, -1].all() else 0,
                    "span_us": (int(exit_.max()) - int(entry.min())) / 1e3 if reached[:, -1].all() else None,
                    "entry_spread_us": (int(entry.max()) - int(entry.min())) / 1e3, "phases_us": phases})
    out.sort(key=lambda x: x["first_entry"])
    for previous, this in zip(out, out[1:]):
        this["gap_us"] = (this["first_entry"] - previous["last_exit"]) / 1e3 if previous["last_exit"] else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a fused ONNX model")
    add_session_arguments(parser, 20, "traced runs", 10)
    parser.add_argument("--json", default="", help="write every run's launches here")
    args = parser.parse_args()

    import onnx
    from onnx import helper

    from fcm.measure import bind_buffers, cuda_session, output_shapes, providers, random_feeds
    from ort_custom_ops.ops.library import library_path

    library = ctypes.CDLL(str(library_path()))  # the same handle ONNX Runtime opens: the same records
    if not hasattr(library, "FcmBlockTraceReset"):
        sys.exit(f"{library_path()} has no FcmBlockTraceReset: a library older than the trace build")
    capacity = library.FcmBlockTraceReset()  # (the records the library holds: trace.h's kTraceCapacity)
    if capacity < 0:
        sys.exit(f"{library_path()}: " + ("built without FCM_BLOCK_TRACE (cmake -DFCM_BLOCK_TRACE=ON)" if capacity == -1
                                           else "CUDA refused the trace buffer"))
    model = onnx.load(args.model)
    session = cuda_session(model, True, providers(args.graph, args.nhwc))
    feeds = random_feeds(model, args.batch, np.random.default_rng(0))
    dtypes = [helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type) for o in model.graph.output]
    binding, _inputs, _outputs = bind_buffers(session, feeds, output_shapes(model, args.batch), dtypes)
    for _ in range(args.warmup):
        session.run_with_iobinding(binding)
    if library.FcmBlockTraceReset() < 0:  # (the warm-up's records; a CUDA graph captured by now keeps its slots)
        sys.exit("the trace buffer could not be cleared")
    buffer = np.zeros(capacity, dtype=RECORD)
    runs = []
    for _ in range(args.runs):
        # a CUDA graph replays its captured slots; without one each run's launches take new ones
        if not args.graph and library.FcmBlockTraceReset() < 0:
            sys.exit("the trace buffer could not be cleared")
        session.run_with_iobinding(binding)
        if library.FcmBlockTraceCopy(buffer.ctypes.data_as(ctypes.c_void_p), capacity) < 0:
            sys.exit("the trace records could not be copied")
        runs.append(launches_of(buffer.copy()))
    counts = {len(r) for r in runs}
    if len(counts) != 1 or not runs[0]:
        sys.exit(f"traced launches per run: {sorted(counts)} (no fused-block kernel traced, or runs that differ)")

    def median(values):
        values = [v for v in values if v is not None]
        return round(float(np.median(values)), 2) if values else None

    print(f"{args.model}, batch {args.batch}, graph {'on' if args.graph else 'off'}: medians of {args.runs} runs, us")
    header = ["#", "shape", "split", "CTAs", "span", "spread", "gap"] + PHASES[1:]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    summary = []
    for i in range(len(runs[0])):
        first = runs[0][i]
        row = {"shape": first["shape"], "split": first["split"], "ctas": first["ctas"],
               "span_us": median(r[i]["span_us"] for r in runs), "entry_spread_us": median(r[i]["entry_spread_us"] for r in runs),
               "gap_us": median(r[i].get("gap_us") for r in runs),
               "phases_us": {p: median(r[i]["phases_us"].get(p) for r in runs) for p in PHASES[1:]}}
        summary.append(row)
        cells = [str(i), row["shape"], str(row["split"]), str(row["ctas"])] + [
            "" if v is None else f"{v:.2f}" for v in [row["span_us"], row["entry_spread_us"], row["gap_us"]]
            + [row["phases_us"][p] for p in PHASES[1:]]]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "batch": args.batch, "graph": args.graph, "nhwc": args.nhwc,
                                               "summary": summary, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
