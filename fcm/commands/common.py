"""What the subcommands share: progress output, the model arguments, batch-size lists.

In: parsed arguments. Out: ``Reporter`` (progress and warnings on stderr), ``add_model_arguments``
and ``source_options`` (the model argument of ``extract`` and ``convert``), ``add_timing_arguments``
and ``batch_sizes`` (those of ``bench`` and ``tune``), ``positive_int`` (an argument type),
``onnxruntime_errors`` (ONNX Runtime refusing a user's model, as the user's error).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time

from fcm_core.errors import FcmError, one_line


class Reporter:
    """Progress and warnings on stderr; results on stdout."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.started = time.monotonic()

    def progress(self, message: str) -> None:
        if not self.quiet:
            print(f"fcm: {message}", file=sys.stderr, flush=True)

    def warning(self, message: str) -> None:
        print(f"fcm: warning: {message}", file=sys.stderr, flush=True)


def source_options(args: argparse.Namespace):
    from extractor.sources import SourceOptions

    return SourceOptions(input_size=args.input_size, weights=args.weights, seed=args.seed, logits=args.logits)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="the model: a .tflite file, a .keras or .h5 file, a SavedModel directory, or keras:<Name> for a "
        "keras.applications architecture (e.g. keras:MobileNetV2)",
    )
    group = parser.add_argument_group("keras:<Name> models")
    group.add_argument("--input-size", type=int, metavar="N", help="square input size (default: the architecture's, 224 for most)")
    group.add_argument(
        "--weights",
        metavar="W",
        help="'imagenet' (needs network access), or a path to a weights file; default: random weights from --seed",
    )
    group.add_argument("--seed", type=int, default=0, help="seed for random weights (default: 0)")
    group.add_argument("--logits", action="store_true", help="build the classifier without its softmax (classifier_activation=None)")


def add_timing_arguments(parser: argparse.ArgumentParser, batch_help: str, runs_help: str) -> None:
    """--batch, --runs and --warmup, as fcm bench and fcm tune take them."""
    parser.add_argument("--batch", default="1,32", help=f"{batch_help} (default: 1,32)")
    parser.add_argument("--runs", type=positive_int, default=100, help=f"{runs_help} (default: 100)")
    parser.add_argument("--warmup", type=non_negative_int, default=20, help="warm-up runs (default: 20)")


def batch_sizes(text: str) -> list[int]:
    try:
        batches = [int(b) for b in text.split(",")]
    except ValueError:
        raise FcmError(f"--batch takes sizes separated by commas, not {text!r}") from None
    if any(b < 1 for b in batches):
        raise FcmError("batch sizes must be at least 1")
    return batches


def input_range(text: str | None) -> tuple[float, float] | None:
    """``LO,HI`` (the values a model's random image inputs take), or an FcmError; None where the
    option was not given (the model's own range applies)."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise FcmError(f"--input-range must be LO,HI (two numbers), not {text!r}") from None
    if not low < high:
        raise FcmError(f"--input-range must be LO,HI with LO < HI, not {text!r}")
    return low, high


def positive_int(text: str) -> int:
    """An argument type: a whole number at least 1."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """An argument type: a whole number at least 0."""
    return _whole_number(text, 0)


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


@contextlib.contextmanager
def onnxruntime_errors(where: str | os.PathLike):
    """ONNX Runtime refusing to load or run the user's model ``where`` (a bad or hand-edited
    model): an FcmError, one line, instead of ONNX Runtime's exception."""
    from ort_custom_ops.ops.library import is_onnxruntime_error

    try:
        yield
    except Exception as exc:
        if not is_onnxruntime_error(exc):
            raise
        text = re.sub(r"^\s*\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc))
        raise FcmError(f"ONNX Runtime refuses it: {one_line(text)}", where) from None
