"""The ``fcm`` command: one entry point for the whole pipeline.

In: the command line. Out: what the subcommand writes, and its exit status. ``fcm extract`` (model
-> DAG + weights), ``fcm inspect`` (DAG -> table, totals, HTML), ``fcm plan`` (DAG + GPU -> fusion
plan), ``fcm convert`` (model -> verified fused ONNX), ``fcm verify``, ``fcm bench``, ``fcm tune``:
one module each under ``fcm.commands``; each subcommand's ``--help`` says what it takes and
writes. Bad input is reported as one line,
``fcm: error: <where>: <what>``, with exit status 2; nothing is written then.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings

from fcm_core.errors import FcmError, FcmWarning

from . import __version__
from .commands import bench, convert, extract, inspect, plan, tune, verify
from .commands.common import Reporter

EXIT_USAGE = 2
EXIT_INTERNAL = 3
COMMANDS = (extract, inspect, plan, convert, verify, bench, tune)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcm",
        description="Fuse depthwise and pointwise convolutions of Keras/TFLite models into ONNX Runtime custom "
        "operators. The pipeline: extract (model -> layer DAG) -> plan (DAG -> fusion groups) -> convert (fused ONNX).",
    )
    parser.add_argument("--version", action="version", version=f"fcm {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    parser.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        name = command.__name__.rsplit(".", 1)[1]
        sub = commands.add_parser(name, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(sub)
        sub.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    report = Reporter(args.quiet)

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FcmWarning):
            report.warning(str(message))

    previous = warnings.showwarning
    warnings.showwarning = show
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # libraries' deprecation chatter
            warnings.simplefilter("always", FcmWarning)
            warnings.showwarning = show
            return args.func(args, report)
    except FcmError as exc:
        print(f"fcm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fcm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so plainly, traceback on request
        if args.debug:
            raise
        print(f"fcm: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        warnings.showwarning = previous


def run() -> None:  # console-script entry point
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if hasattr(signal, "SIGPIPE"):  # `fcm inspect ... | head` ends quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
