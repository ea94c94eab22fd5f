"""Where one profiled kernel spends its time, from an Nsight Compute report.

    ncu --set full --import-source yes -k regex:ChainTiles --launch-skip 2 --launch-count 1 -f -o /tmp/r \\
        python3 benchmarks/run_model_once.py MODEL.onnx 32
    python3 benchmarks/ncu_hot_lines.py /tmp/r.ncu-rep [TOP]

Prints the TOP (default 25) SASS instructions with the most warp-stall samples and their share of
all samples (`--page source`). For the throughput, occupancy and warp-state figures:
`ncu -i REPORT --page details`.
"""

import csv
import io
import subprocess
import sys


def ncu_csv(report: str, *args: str) -> list[list[str]]:
    out = subprocess.run(["ncu", "-i", report, "--csv", *args], check=True, capture_output=True, text=True).stdout
    return list(csv.reader(io.StringIO(out)))


def main() -> None:
    report, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25
    rows = ncu_csv(report, "--page", "source", "--print-source", "sass")
    header = next(r for r in rows if any("Warp Stall Sampling (All" in c for c in r))
    start = rows.index(header) + 1
    samples = next(i for i, c in enumerate(header) if c.startswith("Warp Stall Sampling (All"))
    source = header.index("Source")
    lines = [r for r in rows[start:] if len(r) == len(header) and r[samples].replace(",", "").isdigit()]
    total = sum(int(r[samples].replace(",", "")) for r in lines) or 1
    print(f"warp-stall samples: {total}")
    for r in sorted(lines, key=lambda r: -int(r[samples].replace(",", "")))[:top]:
        count = int(r[samples].replace(",", ""))
        print(f"{100 * count / total:5.1f}%  {r[source].strip()[:110]}")


if __name__ == "__main__":
    main()
