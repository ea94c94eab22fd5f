"""A fused model on a CPU-only host, with and without the FCM library: is it ever slower?

    PYTHONPATH=. python benchmarks/cpu_deploy.py out/zoo -o benchmarks/<date>-cpu-deploy [--batch 1,8] [--runs 20] [--repeats 4]

In: a folder of converted models (``python -m fcm.zoo --out DIR``: ``<name>/<name>.onnx`` and
``<name>.unfused.onnx``). Out: ``cpu_deploy.json`` (every time and the device) and
``cpu_deploy.md`` (the table) in the output folder, the table on stdout.

Per model and batch size, four sessions on ONNX Runtime's CPU provider (default session options,
as a user's): the unfused model; the fused model without the library (ONNX Runtime inlines the
function bodies); the fused model with the library registered as the README's deployment snippet
does (no config entry: ``fcm.fp32_kernels`` = ``auto``); and the fused model on the library's C++
reference kernels (``fcm.fp32_kernels`` = ``reference``: what a registered library ran on a CPU
before ``auto`` existed). Each session runs alone in a fresh process (sessions sharing a process
slow each other down: their worker threads spin after each run), warm-up runs then ``--runs``
timed runs; the four take turns ``--repeats`` times in alternating order, so that a drift of the
shared machine hits every side alike; a side's time is the median over all its runs. The
reference kernels stop after ``--reference-seconds`` per model, batch and repeat (at least 3
runs). Beside the times, whether ONNX Runtime's optimized graph of the fused model is the same
with the library registered (``auto``) as without it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIDES = ("unfused", "fused, no library", "fused, library (auto)", "fused, reference kernels")
#: Per side: which file, the fcm.fp32_kernels entry (None: none set), whether the library is registered.
SETUPS = {SIDES[0]: ("unfused", None, False), SIDES[1]: ("fused", None, False), SIDES[2]: ("fused", None, True),
          SIDES[3]: ("fused", "reference", True)}


def session(path: Path, entry: str | None, library: bool, optimized: Path | None = None):
    import onnxruntime as ort

    from ort_custom_ops.ops.library import FP32_KERNELS, library_path

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    if entry is not None:
        options.add_session_config_entry(FP32_KERNELS, entry)
    if library:
        options.register_custom_ops_library(str(library_path()))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def files(folder: Path, name: str) -> dict[str, Path]:
    fused = folder / name / f"{name}.onnx"
    return {"fused": fused, "unfused": fused.with_name(f"{name}.unfused.onnx")}


def same_graph(folder: Path, name: str) -> bool:
    """Whether ONNX Runtime optimizes the fused model into the same graph with the library
    (``auto``) as without it (as sets of nodes: independent nodes may come in either order)."""
    import onnx

    def nodes(path: Path) -> list:
        return sorted((n.domain, n.op_type, tuple(n.input), tuple(n.output), tuple(str(a) for a in n.attribute))
                      for n in onnx.load(path).graph.node)

    with tempfile.TemporaryDirectory() as scratch:
        plain, auto = Path(scratch) / "plain.onnx", Path(scratch) / "auto.onnx"
        session(files(folder, name)["fused"], None, False, plain)
        session(files(folder, name)["fused"], None, True, auto)
        return nodes(plain) == nodes(auto)


def time_alone(path: str, entry: str | None, library: bool, batch: int, runs: int, warmup: int, budget: float):
    """In a fresh process: the session's times (s) on a seeded input, and its output."""
    sys.path.insert(0, os.getcwd())
    run = session(Path(path), entry, library)
    shape = [batch] + [int(d) for d in run.get_inputs()[0].shape[1:]]
    feeds = {run.get_inputs()[0].name: np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)}
    for _ in range(warmup):
        output = run.run(None, feeds)[0]
    times: list[float] = []
    while len(times) < runs and (sum(times) < budget or len(times) < 3):
        started = time.perf_counter()
        run.run(None, feeds)
        times.append(time.perf_counter() - started)
    return times, output


def measure(pool, folder: Path, name: str, batch: int, runs: int, warmup: int, repeats: int, reference_seconds: float) -> dict:
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    outputs = {}
    for repeat in range(repeats):
        for side in SIDES if repeat % 2 == 0 else SIDES[::-1]:
            which, entry, library = SETUPS[side]
            budget = reference_seconds if side == SIDES[3] else float("inf")
            got, outputs[side] = pool.apply(time_alone, (str(files(folder, name)[which]), entry, library, batch, runs,
                                                         warmup, budget))
            times[side] += got
    reference = outputs[SIDES[0]]
    scale = float(np.abs(reference).max()) or 1.0
    return {side: {"median_ms": round(float(np.median(t)) * 1e3, 3), "runs": len(t),
                   "max_rel_diff_vs_unfused": float(np.abs(outputs[side] - reference).max()) / scale}
            for side, t in times.items()}


def device() -> dict:
    import onnxruntime as ort

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "onnxruntime": ort.__version__,
            "providers": ort.get_available_providers(), "python": platform.python_version()}


def table(result: dict) -> str:
    lines = ["| model | batch | unfused (ms) | fused, no library (ms) | fused, library (auto) (ms) | "
             "library / no library | same optimized graph | fused, reference kernels (ms) | reference / unfused |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        t = {side: row["sides"][side]["median_ms"] for side in SIDES}
        lines.append(f"| {row['model']} | {row['batch']} | {t[SIDES[0]]:.2f} | {t[SIDES[1]]:.2f} | {t[SIDES[2]]:.2f} | "
                     f"{t[SIDES[2]] / t[SIDES[1]]:.2f}x | {'yes' if row['same_optimized_graph'] else 'NO'} | "
                     f"{t[SIDES[3]]:.1f} | {t[SIDES[3]] / t[SIDES[0]]:.1f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, help="a folder of converted models (python -m fcm.zoo --out DIR)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the run folder to write into")
    parser.add_argument("--batch", default="1,8", help="batch sizes (default: 1,8)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs of a session in each of its processes (default: 20)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs in each process (default: 3)")
    parser.add_argument("--repeats", type=int, default=4,
                        help="turns of the four sessions, in alternating order, each in fresh processes (default: 4)")
    parser.add_argument("--reference-seconds", type=float, default=5.0,
                        help="time budget of the reference kernels per model, batch and repeat (default: 5)")
    parser.add_argument("--only", nargs="*", help="these models only")
    args = parser.parse_args(argv)
    names = sorted(p.name for p in args.models.iterdir() if (p / f"{p.name}.onnx").is_file())
    names = [n for n in names if not args.only or n in args.only]
    result = {"command": "PYTHONPATH=. python benchmarks/cpu_deploy.py " + " ".join(argv or sys.argv[1:]),
              "device": device(), "rows": []}
    # one process per measurement (maxtasksperchild=1), started fresh ("spawn")
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for name in names:
            same = same_graph(args.models, name)
            for batch in (int(b) for b in args.batch.split(",")):
                row = {"model": name, "batch": batch, "same_optimized_graph": same, "load_average": os.getloadavg(),
                       "sides": measure(pool, args.models, name, batch, args.runs, args.warmup, args.repeats,
                                        args.reference_seconds)}
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "cpu_deploy.json").write_text(json.dumps(result, indent=1) + "\n")
    text = table(result)
    (args.output / "cpu_deploy.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
