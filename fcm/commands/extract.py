"""``fcm extract``: a model -> its layer DAG (dag.json) and weights (weights.npz).

In: a model specification. Out: DIR/dag.json and DIR/weights.npz, and a line saying what they hold.
"""

from __future__ import annotations

import argparse

from .common import Reporter, add_model_arguments, source_options


HELP = "read a model into a layer DAG (dag.json) and its weights (weights.npz)"
DESCRIPTION = " ".join("""
Read a Keras or TFLite model and write DIR/dag.json (one entry per operator, in the seed's DAG
format plus extensions) and DIR/weights.npz (weights, biases and per-channel quantization, keyed by
layer id). Both files are written, or neither.
""".split())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (created if missing)")


def run(args: argparse.Namespace, report: Reporter) -> int:
    from extractor import summary
    from extractor.dag import DAG_FILE, WEIGHTS_FILE
    from extractor.sources import extract
    from fcm_core.fileio import check_writable

    check_writable(args.output, (DAG_FILE, WEIGHTS_FILE))  # before the model is read
    report.progress(f"reading {args.model}")
    dag = extract(args.model, source_options(args))
    report.progress(f"writing {args.output}")
    dag_path, weights_path = dag.save(args.output)
    t = summary.totals(dag)
    size = weights_path.stat().st_size
    print(f"{dag_path}: {t.layers} entries ({t.convs['dw']} depthwise, {t.convs['pw']} pointwise, {t.convs['s']} standard "
          f"convolutions, {t.fc} fully connected, {t.other_ops} other ops" + (f", {t.opaque} opaque" if t.opaque else "") + ")")
    print(f"{weights_path}: {len(dag.weights)} arrays, {size / 1e6:.1f} MB")
    return 0
