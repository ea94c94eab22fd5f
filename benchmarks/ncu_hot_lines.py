"""Where one profiled kernel spends its time, from an Nsight Compute report.

    ncu --set full --import-source yes -k regex:ChainTiles --launch-skip 2 --launch-count 1 -f -o /tmp/r \\
        python3 benchmarks/run_model_once.py MODEL.onnx 32
    python3 benchmarks/ncu_hot_lines.py /tmp/r.ncu-rep [TOP]

Prints the report's throughput, occupancy and warp-state figures (`--page details`), then the TOP
(default 25) SASS instructions with the most warp-stall samples and their share of all samples
(`--page source`), each with the source line it came from when the report has it.
"""

import csv
import io
import subprocess
import sys

SECTIONS = ("GPU Speed Of Light Throughput", "Occupancy", "Warp State Statistics", "Launch Statistics",
            "Compute Workload Analysis", "Memory Workload Analysis")


def ncu_csv(report: str, *args: str) -> list[list[str]]:
    out = subprocess.run(["ncu", "-i", report, "--csv", *args], check=True, capture_output=True, text=True).stdout
    return list(csv.reader(io.StringIO(out)))


def main() -> None:
    report, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25
    rows = ncu_csv(report, "--page", "details")
    header = rows[0]
    section, name, unit, value = (header.index(c) for c in ("Section Name", "Metric Name", "Metric Unit", "Metric Value"))
    for row in rows[1:]:
        if len(row) == len(header) and row[section] in SECTIONS:
            print(f"{row[section][:24]:24s} {row[name][:48]:48s} {row[value]:>14s} {row[unit]}")
    rows = ncu_csv(report, "--page", "source", "--print-source", "sass")
    header = next(r for r in rows if any("Warp Stall Sampling (All" in c for c in r))
    start = rows.index(header) + 1
    samples = next(i for i, c in enumerate(header) if c.startswith("Warp Stall Sampling (All"))
    source = header.index("Source")
    lines = [r for r in rows[start:] if len(r) == len(header) and r[samples].replace(",", "").isdigit()]
    total = sum(int(r[samples].replace(",", "")) for r in lines) or 1
    print(f"\nwarp-stall samples: {total}")
    for r in sorted(lines, key=lambda r: -int(r[samples].replace(",", "")))[:top]:
        count = int(r[samples].replace(",", ""))
        print(f"{100 * count / total:5.1f}%  {r[source].strip()[:110]}")


if __name__ == "__main__":
    main()
