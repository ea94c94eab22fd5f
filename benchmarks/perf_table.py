"""The README's performance table, from the `fcm bench` results of one benchmark folder.

    python benchmarks/perf_table.py benchmarks/2026-11-22-h200-plans [--readme README.md]

Reads every <folder>/bench/bench_<model>/bench.json (and <folder>/tune/<model>.tune.json for the
groups kept) and prints a markdown table: per model and batch size, ONNX Runtime's best
configuration, the fused model's, and the speedup. With --readme, replaces the table between the
`<!-- perf-table -->` and `<!-- /perf-table -->` lines of that file instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ORDER = ["mobilenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "xception"]
START, END = "<!-- perf-table -->", "<!-- /perf-table -->"


def table(folder: Path) -> str:
    benches = {p.parent.name.removeprefix("bench_"): json.loads(p.read_text()) for p in folder.glob("bench/bench_*/bench.json")}
    if not benches:
        raise SystemExit(f"no bench/bench_*/bench.json under {folder}")
    device = next(iter(benches.values()))["device"]
    lines = [f"{device['gpu']}, driver {device['driver']}, onnxruntime-gpu {device['onnxruntime']}, fp32 models with "
             f"TF32 allowed on both sides; medians, each side in its best configuration (CUDA graph, prefer_nhwc). "
             f"From `{folder.as_posix()}` (`python benchmarks/perf_table.py {folder.as_posix()} --readme README.md`).",
             "",
             "| model | groups fused | batch | ONNX Runtime CUDA (ms) | fused (ms) | speedup |",
             "|---|---|---|---|---|---|"]
    for model in sorted(benches, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER)):
        tune_path = folder / "tune" / f"{model}.tune.json"
        kept = "?"
        if tune_path.is_file():
            groups = json.loads(tune_path.read_text())["groups"]
            kept = f"{sum(1 for g in groups.values() if g['keep_fused'])} of {len(groups)}"
        for entry in benches[model]["batches"]:
            best = entry["best"]["tf32"]
            lines.append(f"| {model} | {kept} | {entry['batch']} | {best['unfused']['median_ms']:.3f} | "
                         f"{best['fused']['median_ms']:.3f} | {best['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--readme", type=Path, help="replace the table between the perf-table markers of this file")
    args = parser.parse_args()
    text = table(args.folder)
    if args.readme is None:
        print(text, end="")
        return 0
    readme = args.readme.read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"{args.readme} has no {START} ... {END} lines")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{text}{END}{tail}")
    print(f"updated the table in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
