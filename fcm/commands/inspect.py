"""``fcm inspect``: a DAG as a table with totals, or as a web page.

In: a dag.json (ours or the seed's), optionally a plan. Out: the table and totals on stdout, or an
HTML file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fcm_core.errors import FcmError

from .common import Reporter, positive_int


HELP = "print a DAG as a table with totals"
DESCRIPTION = " ".join("""
Print a DAG (ours or the seed's) as a table: id, operator, type, input and output shapes,
kernel/stride, activation and edges; then totals: layer counts, parameters, MACs and feature-map
bytes.
""".split())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dag", help="a dag.json file, or a directory holding one")
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size for MACs and bytes (default: 1)")
    parser.add_argument("--dtype", choices=("fp32", "tf32", "fp16", "bf16", "int8"), default="fp32",
                         help="element type for feature-map bytes (default: fp32)")
    parser.add_argument("--totals-only", action="store_true", help="print the totals without the table")
    parser.add_argument("--html", metavar="FILE", help="write the DAG as a self-contained HTML page instead")
    parser.add_argument("--plan", metavar="PLAN", help="with --html: highlight the fusion groups of this plan (from fcm plan)")


def run(args: argparse.Namespace, report: Reporter) -> int:
    from extractor import summary
    from extractor.dag import Dag

    dag = Dag.load(args.dag)
    if args.html:
        from fcm_core.fileio import atomic_write_text
        from planner.view import render_html

        plan = read_plan(args.plan, dag) if args.plan else None
        atomic_write_text(args.html, render_html(dag, plan, title=str(args.dag)))
        print(f"{args.html}: {len(dag)} entries" + (f", {len(plan['groups'])} fusion groups" if plan else ""))
        return 0
    if not args.totals_only:
        print(summary.format_table(dag))
        print()
    print(summary.format_totals(summary.totals(dag, args.batch, args.dtype)))
    return 0


def read_plan(path: str, dag) -> dict:
    import json

    from planner.plan import PLAN_FORMAT, dag_digest

    try:
        plan = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FcmError("no such file", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FcmError(f"not a JSON file ({exc})", path) from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise FcmError("not a fusion plan (made by fcm plan)", path)
    if plan["dag"]["sha256"] != dag_digest(dag):
        raise FcmError("this plan was made for another DAG", path)
    return plan
