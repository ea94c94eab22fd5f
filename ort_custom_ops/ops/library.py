"""Finding the FCM custom-op library and making ONNX Runtime sessions with it registered.

In: nothing (or ``$FCM_ORT_LIBRARY``). Out: the path of the built library, session options with
it registered, sessions. A fused model also runs without the library (ONNX Runtime then inlines
each fused node's function body): the library is an accelerator, never a requirement.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from fcm_core.errors import FcmError

LIBRARY_NAME = "libfcm_ort_ops.so"
_PACKAGE = Path(__file__).resolve().parents[1]  # ort_custom_ops/, holding lib/


def library_path() -> Path:
    """The built library: ``$FCM_ORT_LIBRARY`` if set, else ``ort_custom_ops/lib/``."""
    override = os.environ.get("FCM_ORT_LIBRARY")
    path = Path(override) if override else _PACKAGE / "lib" / LIBRARY_NAME
    if not path.is_file():
        raise FcmError(f"the FCM custom-op library is not built ({path} is missing): run `make setup` or "
                       "`python -m ort_custom_ops.ops.build`")
    return path


def library_kernels() -> set[str]:
    """Which kernels the built library holds: {"cpu"} or {"cpu", "cuda"}."""
    import ctypes

    library = ctypes.CDLL(str(library_path()))
    library.FcmLibraryKernels.restype = ctypes.c_char_p
    return set(library.FcmLibraryKernels().decode().split(","))


def library_cuda_float_ops() -> set[str]:
    """The float fused op types the built library runs on the CUDA provider (none without CUDA; the
    fp16 and bf16 ones have CPU kernels only so far, so ONNX Runtime places such nodes on the CPU)."""
    import ctypes

    library = ctypes.CDLL(str(library_path()))
    library.FcmLibraryCudaFloatOps.restype = ctypes.c_char_p
    return {name for name in library.FcmLibraryCudaFloatOps().decode().split(",") if name}


def session_options(with_library: bool = True, threads: int | None = None, optimization: str | None = None,
                    profile: bool = False):
    """``onnxruntime.SessionOptions`` with the FCM library registered (unless told not to)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if profile:
        options.enable_profiling = True
    options.log_severity_level = 3  # errors only: the runtime's notes on unused initializers are noise here
    if with_library:
        options.register_custom_ops_library(str(library_path()))
    if threads:
        options.intra_op_num_threads = threads
    if optimization is not None:
        options.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
    return options


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def default_providers() -> list[str]:
    """CUDA when this onnxruntime has it, with CPU as the fallback."""
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available_providers()]


def make_session(model, with_library: bool = True, providers: Sequence | None = None, **options):
    """An ``onnxruntime.InferenceSession`` for ``model`` (a path or a ModelProto); ``providers``
    as onnxruntime takes them (names, or (name, options) pairs); CPU by default."""
    import onnxruntime as ort

    source = model if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    return ort.InferenceSession(source, session_options(with_library, **options),
                                providers=list(providers or ["CPUExecutionProvider"]))
