"""The reference models, converted and verified in one go: ``python -m fcm.zoo`` (``make zoo``).

In: the six keras.applications architectures the project is measured on (random weights from a
fixed seed, BatchNormalization calibrated, logits out, 224x224). Out: for each,
``converted_models/<name>/<name>.onnx`` and its companions (``fcm convert``'s outputs), and
``converted_models/zoo.md``: a table of what was fused and how well it verified. The ONNX and
weight files are build outputs; the DAGs, plans and reports are kept in the repository.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from extractor.sources import SourceOptions
from fcm.pipeline.convert import ConvertOptions, convert
from fcm_core.errors import FcmError
from fcm_core.fileio import atomic_write_text

ZOO = {
    "mobilenet": "MobileNet",
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3_small": "MobileNetV3Small",
    "mobilenet_v3_large": "MobileNetV3Large",
    "efficientnet_b0": "EfficientNetB0",
    "xception": "Xception",
}
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcm.zoo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "converted_models"), help="where to write (default: converted_models/)")
    parser.add_argument("--gpu", default="H100", help="GPU to plan for (default: H100)")
    parser.add_argument("--batch", type=int, default=32, help="batch size to plan for (default: 32)")
    parser.add_argument("--only", nargs="*", choices=sorted(ZOO), help="convert only these")
    args = parser.parse_args(argv)
    out = Path(args.out)
    rows = []
    for name, architecture in ZOO.items():
        if args.only and name not in args.only:
            continue
        started = time.monotonic()
        print(f"[{name}] converting keras:{architecture}", flush=True)
        try:
            result = convert(f"keras:{architecture}", out / name / f"{name}.onnx",
                             ConvertOptions(gpu=args.gpu, batch=args.batch, source=SourceOptions(input_size=224, logits=True)),
                             progress=lambda m: print(f"[{name}] {m}", flush=True))
        except FcmError as exc:
            print(f"[{name}] failed: {exc}", file=sys.stderr)
            return 2
        totals = result.plan.totals()
        dag = result.dag
        fused_ids = {f["group"] for f in result.rewrite.fused}
        convs = [c for g in result.plan.groups if g.id in fused_ids for c in g.candidate.convs]
        worst = max((c for c in result.checks if c.name != "unfused ONNX"), key=lambda c: c.relative)
        rows.append((name, architecture, str(len(result.rewrite.fused)), f"{len(convs)} / {totals['convs']}",
                     f"{sum(1 for c in convs if dag[c].type == 'dw')} / {totals['dw_convs']}",
                     "{} -> {}".format(*result.rewrite.transposes), f"{worst.relative:.1e}",
                     f"{totals['unfused']['time_us'] / 1e3:.2f} -> {totals['fused']['time_us'] / 1e3:.2f}",
                     f"{time.monotonic() - started:.0f} s"))
    header = ("model", "keras.applications", "fused nodes", "convs fused", "DW convs fused",
              "Transposes (unfused -> fused)", "worst relative error vs Keras", f"predicted ms ({args.gpu}, batch {args.batch})", "conversion")
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
    text = ("# Converted reference models\n\n"
            f"`make zoo` (`python -m fcm.zoo --gpu {args.gpu} --batch {args.batch}`): keras.applications models with "
            "random weights (seed 0, BatchNormalization calibrated), logits out, 224x224, converted with `fcm convert` "
            "and verified against Keras on fresh random inputs at batch 1 and 3, with and without the FCM library "
            "(the error column is the worse of the two). The fused nodes are channels last (NHWC): Transposes "
            "remain where an operator left unfused needs NCHW. Each model's directory holds its DAG, plan and report.\n\n"
            + "\n".join(table) + "\n")
    if not args.only:
        atomic_write_text(out / "zoo.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
