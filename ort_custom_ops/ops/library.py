"""Finding the FCM custom-op library and making ONNX Runtime sessions with it registered.

In: nothing (or ``$FCM_ORT_LIBRARY``). Out: the path of the built library, session options with
it registered, sessions. A fused model also runs without the library (ONNX Runtime then inlines
each fused node's function body): the library is an accelerator, never a requirement.

Which kernels run a float fused node follows the session config entry ``fcm.fp32_kernels``
(:data:`FP32_KERNELS`), read when the library is registered (so set it before):

- ``auto`` (the default, a user's session that registers the library alone): where this process
  can run the CUDA kernels (the library built with them, an onnxruntime with the CUDA provider),
  the CUDA kernels of every precision (fp32, fp16, bf16), with the CPU reference kernels for fused
  nodes no GPU takes; on a CPU-only host no float kernels: ONNX Runtime runs each fused node's
  function body on its own kernels, as fast as the unfused model;
- ``reference``: the CPU reference kernels of every precision (and the CUDA kernels): this
  project's sessions (``reference_kernels=True``, the default here), so that the tests and the
  verification check the fused nodes' own arithmetic (on a CUDA session the CUDA kernels take the
  nodes, as in ``auto``);
- ``none``: no float kernels (function bodies everywhere: a CPU session on a host with a GPU).

The int8 ops have no function bodies: they are registered for the CPU (and CUDA) in every case.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from fcm_core.errors import FcmError

LIBRARY_NAME = "libfcm_ort_ops.so"
#: The session config entry that chooses the fp32 kernels the library registers: auto, reference or none.
FP32_KERNELS = "fcm.fp32_kernels"
GPU_INSTALL = "install onnxruntime-gpu instead of onnxruntime (`make setup GPU=1`, or pip install -e '.[gpu]' then " \
              "pip uninstall -y onnxruntime and pip install --force-reinstall --no-deps onnxruntime-gpu)"
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
    """The float fused op types the built library runs on the CUDA provider: those of every precision
    with CUDA, none without."""
    import ctypes

    library = ctypes.CDLL(str(library_path()))
    library.FcmLibraryCudaFloatOps.restype = ctypes.c_char_p
    return {name for name in library.FcmLibraryCudaFloatOps().decode().split(",") if name}


def session_options(with_library: bool = True, threads: int | None = None, optimization: str | None = None,
                    profile: bool = False, reference_kernels: bool = True):
    """``onnxruntime.SessionOptions`` with the FCM library registered (unless told not to), with its
    CPU reference kernels (``fcm.fp32_kernels`` = ``reference``) unless ``reference_kernels``
    is false (then ``auto``, as in a user's session that registers the library alone)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if profile:
        options.enable_profiling = True
    options.log_severity_level = 3  # errors only: the runtime's notes on unused initializers are noise here
    if with_library:
        if reference_kernels:  # read by the library when it is registered: set before
            options.add_session_config_entry(FP32_KERNELS, "reference")
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


def cuda_unavailable_reason() -> str | None:
    """Why the fused kernels cannot run on the CUDA provider here (None when they can): the
    installed onnxruntime has no CUDA provider, or the library was built without CUDA kernels."""
    if "CUDAExecutionProvider" not in available_providers():
        return f"this onnxruntime has no CUDA execution provider: {GPU_INSTALL}"
    if "cuda" not in library_kernels():
        return ("the FCM library was built without CUDA kernels (no nvcc when it was built): rebuild it with nvcc "
                "(python -m ort_custom_ops.ops.build)")
    return None


def is_onnxruntime_error(exc: BaseException) -> bool:
    """Whether ``exc`` is ONNX Runtime's own (refusing a model, failing a kernel), not Python's."""
    return type(exc).__module__.startswith("onnxruntime")


def make_session(model, with_library: bool = True, providers: Sequence | None = None, disabled_optimizers: Sequence[str] = (),
                 **options):
    """An ``onnxruntime.InferenceSession`` for ``model`` (a path or a ModelProto); ``providers``
    as onnxruntime takes them (names, or (name, options) pairs); CPU by default; ``disabled_optimizers``:
    graph optimizers (by name) the session leaves out."""
    import onnxruntime as ort

    source = model if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    return ort.InferenceSession(source, session_options(with_library, **options),
                                providers=list(providers or ["CPUExecutionProvider"]), disabled_optimizers=list(disabled_optimizers))
