"""The half-precision verification of the reference architectures, as ``fcm convert --precision`` runs it.

    PYTHONPATH=. python benchmarks/half_verify.py -o benchmarks/<date>-cpu-half-verify [--samples 256] [--readme README.md]

In: nothing (the keras.applications architectures with random weights, at small inputs: 96x96,
71x71 for Xception, logits); ``--models`` takes any keras.applications names (architectures
outside the zoo too) and ``--size`` another input side. Out: ``summary.json`` (every figure) and ``summary.md`` (the table) in
the output folder, the table on stdout, and with ``--readme`` the table between the README's
``<!-- half-table -->`` markers.

Per architecture and precision (fp16, bf16): ``fcm convert`` (H100 plan, batch 32) and its
verification on ``--samples`` random images: the relative errors against the fp32 source and the
top-1 agreement of the fused model and of the precision's own computation, the bound and the rule
that set it, the worst fused node against its definition (relative to its bound), and the fused
model against ONNX Runtime's unfused half model with its bound. Runs on the CPU (ONNX Runtime's CPU
provider, the library's reference kernels).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ARCHITECTURES = ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0", "Xception")
PRECISIONS = ("fp16", "bf16")


def measure(name: str, precision: str, samples: int, folder: Path, size: int | None = None) -> dict:
    from extractor.sources import SourceOptions
    from fcm.pipeline.convert import ConvertOptions, convert
    from fcm.pipeline.verify import FUSED_WITH_LIBRARY, PRECISION_REFERENCE

    started = time.monotonic()
    size = size or (71 if name == "Xception" else 96)
    result = convert(f"keras:{name}", folder / f"{name}_{precision}.onnx",
                     ConvertOptions(gpu="H100", batch=32, precision=precision, samples=samples,
                                    source=SourceOptions(input_size=size, logits=True)))
    check = result.checks[0]
    worst = check.worst_node()
    by_name = {c.name: c for c in check.checks}
    fused, own = by_name[FUSED_WITH_LIBRARY], by_name[PRECISION_REFERENCE]
    return {"model": name, "precision": precision, "input": size, "samples": samples, "fused_nodes": len(check.nodes),
            "depth": check.depth, "bound": check.bound, "rule": check.rule,
            "checks": {c.name: {"relative": c.relative, "top1": c.top1, "top5": c.top5} for c in check.checks},
            "fused_relative": fused.relative, "fused_top1": fused.top1, "own_relative": own.relative, "own_top1": own.top1,
            "worst_node": {"name": worst.name, "op_type": worst.op_type, "difference": worst.difference,
                           "bound": worst.bound(precision)},
            "pair": check.model_pairs[0][1], "pair_bound": check.pair_bound, "pair_rule": check.pair_rule,
            "seconds": round(time.monotonic() - started, 1)}


def table(rows: list[dict]) -> str:
    lines = ["| model | precision | R | fused vs source | its own computation vs source | bound (rule) | top-1 fused / own "
             "| worst node / its bound | fused vs unfused half / bound |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rule = "derived" if r["rule"].startswith("derived") else "2x own"
        node = r["worst_node"]
        lines.append(f"| {r['model']} | {r['precision']} | {r['depth']} | {r['fused_relative']:.3g} | "
                     f"{r['own_relative']:.3g} | {r['bound']:.3g} ({rule}) | {r['fused_top1']:.1%} / {r['own_top1']:.1%} | "
                     f"{node['difference']:.2g} / {node['bound']:.2g} | {r['pair']:.2g} / {r['pair_bound']:.2g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", required=True, help="the folder to write summary.json and summary.md into")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--models", default=",".join(ARCHITECTURES))
    parser.add_argument("--size", type=int, help="input side (default: 96, 71 for Xception)")
    parser.add_argument("--readme", help="a README whose <!-- half-table --> section gets the table")
    args = parser.parse_args(argv)
    import onnxruntime

    rows = []
    with tempfile.TemporaryDirectory(prefix="fcm-half-") as scratch:
        for precision in PRECISIONS:
            for name in args.models.split(","):
                rows.append(measure(name, precision, args.samples, Path(scratch), args.size))
                print(f"{name} {precision}: {rows[-1]['fused_relative']:.3g} (bound {rows[-1]['bound']:.3g})", flush=True)
    command = "PYTHONPATH=. python benchmarks/half_verify.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    device = {"cpu": platform.processor() or platform.machine(), "onnxruntime": onnxruntime.__version__}
    (out / "summary.json").write_text(json.dumps({"command": command, "device": device, "rows": rows}, indent=1) + "\n")
    text = table(rows)
    (out / "summary.md").write_text(
        f"# Half-precision verification of keras.applications architectures\n\nCommand: `{command}`\n\n"
        f"ONNX Runtime {device['onnxruntime']} (CPU provider), the library's CPU reference kernels. Random weights "
        "(keras.applications architectures, batch-norm statistics calibrated on a random batch), logits; relative "
        "errors are max |error| / max |reference|; R is the most roundings on one path.\n\n" + text + "\n")
    print(text)
    if args.readme:
        readme = Path(args.readme)
        page = readme.read_text()
        head, rest = page.split("<!-- half-table -->", 1)
        _, tail = rest.split("<!-- /half-table -->", 1)
        source = f"From `{out}` (`{command}`).\n\n"
        readme.write_text(f"{head}<!-- half-table -->\n{source}{text}\n<!-- /half-table -->{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
