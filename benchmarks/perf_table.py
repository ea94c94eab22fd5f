"""The README's performance table, from the `fcm bench` results of one benchmark folder.

    python benchmarks/perf_table.py benchmarks/2026-11-22-h200-widths [--also OLDER_FOLDER] [--readme README.md]

Reads every <folder>/bench/bench_<model>/bench.json or, as tune_gpu.sh lays them out,
<folder>/tune/bench_<model>/bench.json (and <folder>/tune/<model>.tune.json for the groups kept) of
the reference models, and <folder>/b1/bench_<model>/bench.json for batch sizes those lack (a run
that benched batch 1 apart, e.g. a model tuned for batch 1), from the files or, for a summarized run, from <folder>/summary.json (summarize.py),
and prints a markdown table: per model and batch size, ONNX Runtime's best configuration, the
fused model's, and the speedup; with <folder>/torch_compile.json (from
benchmarks/torch_compile.py in the same session), PyTorch's torch.compile(mode="max-autotune") on the
torchvision version of the architecture beside them. --torch names other torch_compile.json files
instead (repeatable: a later file fills the rows the earlier ones lack or could not measure, and
such a cell names its folder). With --readme, replaces the table between the
`<!-- perf-table -->` and `<!-- /perf-table -->` lines of that file instead. --also names older
folders for the models the first one did not bench again; their rows say which folder they are from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from summarize import SUMMARY, load_result, results_under

BENCHES = ("bench/bench_*/bench.json", "tune/bench_*/bench.json")  # run_gpu.sh's layout, tune_gpu.sh's
MORE_BATCHES = "b1/bench_*/bench.json"  # batch sizes benched apart
ORDER = ["mobilenet", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "xception"]
START, END = "<!-- perf-table -->", "<!-- /perf-table -->"


def _reference_benches(folder: Path) -> dict:
    """The reference models' bench reports of a run folder, by model; a model's batch sizes benched
    apart (MORE_BATCHES) joined to its report where it lacks them, smallest batch first."""
    found = {}
    for pattern in BENCHES:
        for path, data in results_under(folder, pattern).items():
            if _model(path) in ORDER:
                found.setdefault(_model(path), data)
    for path, data in results_under(folder, MORE_BATCHES).items():
        model = _model(path)
        if model not in found:
            continue
        report = found[model] = dict(found[model])
        have = {entry["batch"] for entry in report["batches"]}
        extra = [entry for entry in data["batches"] if entry["batch"] not in have]
        report["batches"] = sorted(report["batches"] + extra, key=lambda entry: entry["batch"])
    return found


def table(folder: Path, also: list[Path] | None = None, torch: list[Path] | None = None) -> str:
    benches = _reference_benches(folder)
    if not benches:
        raise SystemExit(f"no {' or '.join(BENCHES)} of a reference model under {folder} (nor in its {SUMMARY})")
    source = {model: folder for model in benches}
    for older in also or []:
        for model, data in _reference_benches(older).items():
            if model not in benches:
                benches[model], source[model] = data, older
    device = next(iter(benches.values()))["device"]
    torch_paths = torch or [folder / "torch_compile.json"]
    compiled: dict = {}
    compiled_from: dict = {}
    for torch_path in torch_paths:
        try:
            rows = load_result(torch_path)["rows"]
        except FileNotFoundError:
            continue
        for row in rows:
            key = (row["model"], row["batch"])
            if key not in compiled or ("error" in compiled[key] and "error" not in row):
                compiled[key], compiled_from[key] = row, torch_path
    lines = [f"{device['gpu']}, driver {device['driver']}, onnxruntime-gpu {device['onnxruntime']}, fp32 models with "
             f"TF32 allowed on both sides; medians, each side in its best configuration (CUDA graph, prefer_nhwc). "
             f"From `{folder.as_posix()}` (`python benchmarks/perf_table.py {folder.as_posix()}"
             + "".join(f" --also {older.as_posix()}" for older in also or [])
             + "".join(f" --torch {path.as_posix()}" for path in torch or []) + " --readme README.md`)."
             + (" torch.compile columns from " + " and ".join(f"`{path.as_posix()}`" for path in torch)
                + ", each measured in its folder's session" + ("; a cell from a later file names its folder." if len(torch) > 1 else ".")
                if torch else ""),
             "",
             "| model | groups fused | batch | ONNX Runtime CUDA (ms) | fused (ms) | speedup |"
             + (" torch.compile max-autotune (ms) | torch.compile / fused |" if compiled else ""),
             "|---|---|---|---|---|---|" + ("---|---|" if compiled else "")]
    for model in sorted(benches, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER)):
        kept = "(no tune report)"
        try:
            groups = load_result(source[model] / "tune" / f"{model}.tune.json")["groups"]
            kept = f"{sum(1 for g in groups.values() if g['keep_fused'])} of {len(groups)}"
        except FileNotFoundError:
            pass
        for entry in benches[model]["batches"]:
            best = entry["best"]["tf32"]
            name = model if source[model] == folder else f"{model} (from `{source[model].name}`)"
            line = (f"| {name} | {kept} | {entry['batch']} | {best['unfused']['median_ms']:.3f} | "
                    f"{best['fused']['median_ms']:.3f} | {best['speedup']:.2f}x |")
            if compiled:
                row = compiled.get((model, entry["batch"]))
                if row is None or "error" in row:
                    line += f" {row['error'] if row else 'not measured'} | |"
                else:
                    ms = row["max_autotune"]["median_ms"]
                    origin = compiled_from[(model, entry["batch"])]
                    named = f" (`{origin.parent.name}`)" if torch and len(torch) > 1 and origin != torch[0] else ""
                    line += f" {ms:.3f}{named} | {ms / best['fused']['median_ms']:.2f}x |"
            lines.append(line)
    return "\n".join(lines) + "\n"


def _model(relative: str) -> str:
    return relative.split("/")[-2].removeprefix("bench_")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="an older benchmark folder for the models the first did not bench (repeatable)")
    parser.add_argument("--torch", type=Path, action="append",
                        help="a torch_compile.json to show (default: <folder>/torch_compile.json), e.g. an earlier "
                             "session's; repeatable, later files fill the rows earlier ones lack")
    parser.add_argument("--readme", type=Path, help="replace the table between the perf-table markers of this file")
    args = parser.parse_args()
    text = table(args.folder, args.also, args.torch)
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
