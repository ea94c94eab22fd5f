"""The ``fcm`` command: one entry point for the whole pipeline.

In: the command line. Out: what the subcommand writes, and its exit status. ``fcm extract`` (model
-> DAG + weights), ``fcm inspect`` (DAG -> table, totals, HTML), ``fcm plan`` (DAG + GPU -> fusion
plan), ``fcm convert`` (model -> verified fused ONNX), ``fcm verify``, ``fcm bench``, ``fcm tune``:
one module each under ``fcm.commands``; each subcommand's ``--help`` says what it takes and
writes. Bad input (and what the machine refuses: a folder that cannot be written, ...) is reported
as one line, ``fcm: error: <where>: <what>``, with exit status 2; nothing is written then. SIGINT
and SIGTERM end a command through its cleanups (exit status 130 and 143), leaving nothing
half-written; anything else is a bug: ``fcm: internal error: ...``, exit status 3.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings

from fcm_core.errors import FcmError, FcmWarning, one_line
from fcm_core.fileio import describe_os_error

from . import __version__
from .commands import bench, convert, extract, inspect, plan, tune, verify
from .commands.common import Reporter

EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
COMMANDS = (extract, inspect, plan, convert, verify, bench, tune)


class Terminated(BaseException):
    """SIGTERM, raised where the program is so that cleanups run (as KeyboardInterrupt for SIGINT)."""


def terminate(signum, frame):
    """The SIGTERM handler (:func:`handle_signals`)."""
    raise Terminated()


def global_options(parser: argparse.ArgumentParser, in_subcommand: bool) -> None:
    """-q and --debug, taken before the subcommand and after it (where they leave the value given
    before alone unless given)."""
    default = argparse.SUPPRESS if in_subcommand else False
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress messages")
    parser.add_argument("--debug", action="store_true", default=default, help="show the traceback of internal errors")


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``fcm: error: ...``, exit status 2)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"fcm: error: {message} (`{self.prog} --help` lists the arguments)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fcm",
        description="Fuse depthwise and pointwise convolutions of Keras/TFLite models into ONNX Runtime custom "
        "operators. The pipeline: extract (model -> layer DAG) -> plan (DAG -> fusion groups) -> convert (fused ONNX).",
    )
    parser.add_argument("--version", action="version", version=f"fcm {__version__}")
    global_options(parser, in_subcommand=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        name = command.__name__.rsplit(".", 1)[1]
        sub = commands.add_parser(name, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(sub)
        global_options(sub.add_argument_group("general options (also before COMMAND)"), in_subcommand=True)
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
        print(f"fcm: error: {one_line(str(exc), limit=1000)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the machine's refusal (permissions, a full disk, ...), not a bug
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"fcm: error: {where}{describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fcm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("fcm: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as exc:  # a bug: say so plainly, traceback on request
        if args.debug:
            raise
        print(f"fcm: internal error: {type(exc).__name__}: {one_line(str(exc))} (run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        warnings.showwarning = previous


def handle_signals() -> None:
    """SIGTERM ends the command as SIGINT does, through its cleanups (no partial outputs left);
    SIGPIPE ends it quietly (`fcm inspect ... | head`)."""
    signal.signal(signal.SIGTERM, terminate)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def run() -> None:  # console-script entry point
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    handle_signals()
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
