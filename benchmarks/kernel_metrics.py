"""One row per kernel launch from an Nsight Compute CSV of `profile_kernels.sh` (DETAIL=1 for the
full set), with the fused nodes named from the .plans file beside it.

    python benchmarks/kernel_metrics.py KERNELS/mobilenet_v2_fused_b32.csv[.gz] [--json out.json]

In: ncu's --csv output (one line per launch and metric; gzipped or not) and <same name>.plans (the FCM_CUDA_VERBOSE
lines: one per fused node, in the order the nodes first ran). Out: a markdown table on stdout: per
launch its time, DRAM bytes read + written and the bandwidth they make, achieved occupancy, the
limit registers and shared memory put on resident blocks, the issue rate, and the warp-cycles per
issued instruction with the two largest stall reasons (each in warp-cycles per issued instruction).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import re
import sys
from pathlib import Path

STALL_PREFIX, STALL_SUFFIX = "smsp__average_warps_issue_stalled_", "_per_issue_active.ratio"


def number(text: str) -> float:
    return float(text.replace(",", "")) if text not in ("", "n/a") else float("nan")


def launches(csv_path: Path) -> list[dict]:
    rows: dict[str, dict] = {}
    opener = gzip.open if csv_path.suffix == ".gz" else open
    with opener(csv_path, "rt", newline="") as handle:
        lines = [line for line in handle if line.startswith('"')]
    for record in csv.DictReader(lines):
        launch = rows.setdefault(record["ID"], {"id": int(record["ID"]), "kernel": record["Kernel Name"], "metrics": {}})
        launch["metrics"][record["Metric Name"]] = number(record["Metric Value"])
    return sorted(rows.values(), key=lambda r: r["id"])


def fused_nodes(plans_path: Path) -> list[str]:
    if not plans_path.is_file():
        return []
    return [m.group(1) for m in re.finditer(r"^FCM CUDA (\S+) \[", plans_path.read_text(), re.M)]


def summarize(csv_path: Path) -> list[dict]:
    stem = csv_path.name.removesuffix(".gz").removesuffix(".csv")
    nodes = iter(fused_nodes(csv_path.with_name(stem + ".plans")))
    node = None
    out = []
    for launch in launches(csv_path):
        m = launch["metrics"]
        name = launch["kernel"]
        if "ChainKernel" in name:
            node = next(nodes, "?")
            label = f"{node} (fused)"
        elif "ReduceSplits" in name:
            label = f"{node} (split reduction)"
        else:
            label = re.sub(r"\(.*", "", name).replace("void ", "")[:60]
        us = m.get("gpu__time_duration.sum", float("nan")) / 1e3
        dram = m.get("dram__bytes_read.sum", float("nan")) + m.get("dram__bytes_write.sum", float("nan"))
        stalls = {k[len(STALL_PREFIX):-len(STALL_SUFFIX)]: v for k, v in m.items()
                  if k.startswith(STALL_PREFIX) and k.endswith(STALL_SUFFIX)}
        top = sorted(stalls.items(), key=lambda kv: -kv[1])[:2]
        out.append({"launch": launch["id"], "what": label, "us": round(us, 2), "dram_mb": round(dram / 1e6, 2),
                    "dram_gb_s": round(dram / (us * 1e-6) / 1e9, 1) if us > 0 else None,
                    "occupancy_pct": m.get("sm__warps_active.avg.pct_of_peak_sustained_active"),
                    "limit_registers": m.get("launch__occupancy_limit_registers"),
                    "limit_shared": m.get("launch__occupancy_limit_shared_mem"),
                    "registers": m.get("launch__registers_per_thread"),
                    "issue_per_cycle": m.get("smsp__issue_active.avg.per_cycle_active"),
                    "cycles_per_issue": m.get("smsp__average_warps_active_per_issue_active.ratio"),
                    "top_stalls": top})
    return out


def fmt(value, digits=1) -> str:
    if value is None or value != value:  # None or NaN
        return ""
    return f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--fused-only", action="store_true", help="only the fused nodes' kernels")
    args = parser.parse_args()
    rows = summarize(args.csv)
    if args.fused_only:
        rows = [r for r in rows if "(fused)" in r["what"] or "(split" in r["what"]]
    print("| launch | kernel | us | DRAM MB | DRAM GB/s | occupancy % | blocks/SM by registers, shared | regs | "
          "issue/cycle (SMSP) | warp-cycles per issue | largest stalls |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    total = 0.0
    for r in rows:
        total += r["us"]
        stalls = ", ".join(f"{k} {v:.1f}" for k, v in r["top_stalls"])
        print(f"| {r['launch']} | {r['what']} | {r['us']:.1f} | {fmt(r['dram_mb'], 2)} | {fmt(r['dram_gb_s'])} | "
              f"{fmt(r['occupancy_pct'])} | {fmt(r['limit_registers'], 0)}, {fmt(r['limit_shared'], 0)} | "
              f"{fmt(r['registers'], 0)} | {fmt(r['issue_per_cycle'], 2)} | {fmt(r['cycles_per_issue'])} | {stalls} |")
    print(f"\n{len(rows)} launches, {total:.1f} us in all")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
