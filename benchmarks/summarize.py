"""One measurement run's results as one JSON file, and reading them back.

    python benchmarks/summarize.py FOLDER                  # FOLDER/summary.json from the run's raw files
    python benchmarks/summarize.py FOLDER --extract PATH -o FILE   # one result back as its own file

In (summarizing): a run folder as the GPU machine leaves it (``device.txt``, the ``bench.json`` of
``fcm bench``, the ``.tune.json`` of ``fcm tune``, the JSON of the other scripts here, logs,
profiles, charts). Out: ``FOLDER/summary.json``: ``{"run", "device", "results": {relative path:
JSON}}`` with every JSON result of the folder under its path, pruned of what only the raw files
need: a tune report's grid of timed launch plans per group (the winner and its time stay), a
bench report's per-node profiler rows, a phase trace's launches run by run (``block_trace.py``:
the medians stay). Logs, CSV, charts and profiles are not summarized: each
run's ``summary.md`` says which command makes them, and git history holds them.

Out (reading): :func:`load_result` gives a result by the path it had in its run folder, from the
file when it is there, else from the folder's ``summary.json`` -- so the scripts that read a run
(``perf_table.py``, ``tune_gpu.sh``'s ``APPLY_DIR``) take a summarized run or a fresh one alike.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

SUMMARY = "summary.json"


def pruned(relative: str, data):
    """What a summary keeps of one JSON result (see the module docstring)."""
    if relative.endswith(".tune.json") and isinstance(data, dict):
        for group in data.get("groups", {}).values():
            for entry in group.get("batches", {}).values():
                plans = entry.pop("plans", None)
                if plans is not None:
                    entry["plans_timed"] = sum(1 for value in plans.values() if isinstance(value, float))
    if relative.endswith("bench.json") and isinstance(data, dict):
        for entry in data.get("batches", []):
            entry.pop("profile", None)
    if isinstance(data, dict) and isinstance(data.get("summary"), list) and isinstance(data.get("runs"), list):
        data["runs_traced"] = len(data.pop("runs"))  # block_trace.py's: its medians stay
    return data


def summarize(folder: Path) -> dict:
    results = {}
    for path in sorted(folder.rglob("*.json")):
        relative = path.relative_to(folder).as_posix()
        if relative == SUMMARY:
            continue
        results[relative] = pruned(relative, json.loads(path.read_text()))
    device = folder / "device.txt"
    return {"run": folder.name, "device": device.read_text().strip() if device.is_file() else None, "results": results}


def load_result(path: str | Path):
    """The JSON result at ``path``, or, where the run was summarized, the same result from the
    ``summary.json`` of the nearest folder above it that has one."""
    path = Path(path)
    if path.is_file():
        return json.loads(path.read_text())
    for folder in path.parents:
        summary = folder / SUMMARY
        if summary.is_file():
            results = json.loads(summary.read_text())["results"]
            relative = path.relative_to(folder).as_posix()
            if relative in results:
                return results[relative]
            break
    raise FileNotFoundError(f"{path}: no such result (nor in a {SUMMARY} above it)")


def results_under(folder: Path, pattern: str) -> dict[str, object]:
    """Every result of ``folder`` whose relative path matches the glob ``pattern``: from the files,
    or from ``summary.json`` where the run was summarized."""
    found = {p.relative_to(folder).as_posix(): json.loads(p.read_text()) for p in sorted(folder.glob(pattern))}
    summary = folder / SUMMARY
    if not found and summary.is_file():
        results = json.loads(summary.read_text())["results"]
        found = {relative: data for relative, data in sorted(results.items()) if _matches(relative, pattern)}
    return found


def _matches(relative: str, pattern: str) -> bool:
    """Whether a relative path matches a glob part by part (as ``Path.glob`` does)."""
    parts, wanted = relative.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, wanted))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a run folder under benchmarks/")
    parser.add_argument("--extract", metavar="PATH", help="write this result (its path in the run folder) to -o")
    parser.add_argument("-o", "--output", type=Path, help="with --extract: the file to write")
    args = parser.parse_args(argv)
    if args.extract:
        if args.output is None:
            parser.error("--extract needs -o FILE")
        args.output.write_text(json.dumps(load_result(args.folder / args.extract), indent=1) + "\n")
        return 0
    summary = summarize(args.folder)
    existing = args.folder / SUMMARY
    if existing.is_file():  # a summarized run whose raw files are gone would lose its results
        lost = sorted(set(json.loads(existing.read_text())["results"]) - set(summary["results"]))
        if lost:
            print(f"{existing} holds {len(lost)} results the folder's files do not ({', '.join(lost[:3])}"
                  f"{', ...' if len(lost) > 3 else ''}): not rewritten (summarize the run with its raw files, "
                  f"or remove {SUMMARY} first)", file=sys.stderr)
            return 1
    existing.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{args.folder / SUMMARY}: {len(summary['results'])} results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
