"""Where one profiled kernel spends its time, from an Nsight Compute report.

    ncu --set full --import-source yes -k regex:ChainTiles --launch-skip 2 --launch-count 1 -f -o /tmp/r \\
        python3 benchmarks/run_model_once.py MODEL.onnx 32
    python3 benchmarks/ncu_hot_lines.py /tmp/r.ncu-rep [TOP]

Prints the TOP (default 25) SASS instructions with the most warp-stall samples and their share of
all samples (`--page source`), then the instruction mix: per opcode, its share of the executed
warp instructions and of the stall samples (what the kernel spends its issue slots on). For the
throughput, occupancy and warp-state figures: `ncu -i REPORT --page details`.
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
    executed = next((i for i, c in enumerate(header) if c.startswith("Warp Instructions Executed")
                     or c == "Instructions Executed"), None)
    if executed is None:
        return
    mix: dict[str, list[int]] = {}
    for r in lines:
        words = r[source].split()
        if words and words[0].startswith("@"):  # a predicate guard, not the opcode
            words = words[1:]
        opcode = words[0].split(".")[0] if words else "?"
        entry = mix.setdefault(opcode, [0, 0])
        entry[0] += int(r[executed].replace(",", "") or 0)
        entry[1] += int(r[samples].replace(",", ""))
    all_executed = sum(e[0] for e in mix.values()) or 1
    print(f"warp instructions executed: {all_executed}")
    print("opcode        executed  stall samples")
    for opcode, (count, stalls) in sorted(mix.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"{opcode:12s} {100 * count / all_executed:8.1f}% {100 * stalls / total:8.1f}%")


if __name__ == "__main__":
    main()
