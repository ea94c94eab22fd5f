"""A fused model on a CPU-only host, with and without the FCM library: is it ever slower?

    PYTHONPATH=. python benchmarks/cpu_deploy.py out/zoo -o benchmarks/<date>-cpu-deploy [--batch 1,8] [--runs 40]

In: a folder of converted models (``python -m fcm.zoo --out DIR``: ``<name>/<name>.onnx`` and
``<name>.unfused.onnx``). Out: ``cpu_deploy.json`` (every time and the device) and
``cpu_deploy.md`` (the table) in the output folder, the table on stdout.

Per model and batch size, four sessions on ONNX Runtime's CPU provider (default session options,
as a user's): the unfused model; the fused model without the library (ONNX Runtime inlines the
function bodies); the fused model with the library registered as the README's deployment snippet
does (no config entry: ``fcm.fp32_kernels`` = ``auto``); and the fused model on the library's C++
reference kernels (``fcm.fp32_kernels`` = ``reference``: what a registered library ran on a CPU
before ``auto`` existed). Each session timed alone, back to back after warm-up runs, in four passes
of alternating order (:func:`measure`); medians. Beside the times, whether ONNX Runtime's optimized
graph of the fused model is the same with the library registered (``auto``) as without it. The reference kernels stop after
``--reference-seconds`` per model and batch (at least 3 runs a pass).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

SIDES = ("unfused", "fused, no library", "fused, library (auto)", "fused, reference kernels")


def sessions(folder: Path, name: str, scratch: Path) -> tuple[dict, bool]:
    """The four sessions, and whether ONNX Runtime made the same optimized graph of the fused
    model with the library registered (``auto``) as without it."""
    import onnx
    import onnxruntime as ort

    from ort_custom_ops.ops.library import FP32_KERNELS, library_path

    fused = folder / name / f"{name}.onnx"
    unfused = fused.with_name(f"{name}.unfused.onnx")

    def make(path: Path, entry: str | None, library: bool, optimized: Path | None = None):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if optimized is not None:
            options.optimized_model_filepath = str(optimized)
        if entry is not None:
            options.add_session_config_entry(FP32_KERNELS, entry)
        if library:
            options.register_custom_ops_library(str(library_path()))
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def nodes(path: Path) -> list:  # as a set: independent nodes may come in either order
        return sorted((n.domain, n.op_type, tuple(n.input), tuple(n.output), tuple(str(a) for a in n.attribute))
                      for n in onnx.load(path).graph.node)

    runs = {SIDES[0]: make(unfused, None, False), SIDES[1]: make(fused, None, False, scratch / "plain.onnx"),
            SIDES[2]: make(fused, None, True, scratch / "auto.onnx"), SIDES[3]: make(fused, "reference", True)}
    return runs, nodes(scratch / "plain.onnx") == nodes(scratch / "auto.onnx")


def measure(runs: dict, feeds: dict, count: int, warmup: int, reference_seconds: float, passes: int = 4) -> dict:
    """Each session alone: warm-up runs, then timed runs back to back (a session's spinning worker
    threads would slow the next one down if the sessions took turns run by run); ``passes`` passes
    in alternating order, so that a drift of the shared machine hits every side alike."""
    times: dict[str, list[float]] = {side: [] for side in runs}
    outputs = {}
    order = list(runs)
    for index in range(passes):
        for side in order if index % 2 == 0 else order[::-1]:
            session = runs[side]
            for _ in range(warmup):
                outputs[side] = session.run(None, feeds)[0]
            spent = 0.0
            for _ in range(max(1, count // passes)):
                if side == SIDES[3] and spent > reference_seconds / passes and len(times[side]) >= 3:
                    break
                started = time.perf_counter()
                session.run(None, feeds)
                elapsed = time.perf_counter() - started
                times[side].append(elapsed)
                spent += elapsed
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
    parser.add_argument("--runs", type=int, default=40, help="timed runs per session, over all passes (default: 40)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs of each session (default: 3)")
    parser.add_argument("--reference-seconds", type=float, default=20.0,
                        help="time budget of the reference kernels per model and batch (default: 20)")
    parser.add_argument("--only", nargs="*", help="these models only")
    args = parser.parse_args(argv)
    names = sorted(p.name for p in args.models.iterdir() if (p / f"{p.name}.onnx").is_file())
    names = [n for n in names if not args.only or n in args.only]
    rng = np.random.default_rng(0)
    result = {"command": "PYTHONPATH=. python benchmarks/cpu_deploy.py " + " ".join(argv or __import__("sys").argv[1:]),
              "device": device(), "rows": []}
    for name in names:
        with tempfile.TemporaryDirectory() as scratch:
            runs, same_graph = sessions(args.models, name, Path(scratch))
        shape = runs[SIDES[0]].get_inputs()[0].shape
        for batch in (int(b) for b in args.batch.split(",")):
            x = rng.uniform(-1, 1, [batch] + [int(d) for d in shape[1:]]).astype(np.float32)
            feeds = {runs[SIDES[0]].get_inputs()[0].name: x}
            row = {"model": name, "batch": batch, "same_optimized_graph": same_graph, "load_average": os.getloadavg(),
                   "sides": measure(runs, feeds, args.runs, args.warmup, args.reference_seconds)}
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
