"""Running models on the CUDA execution provider in tests: skips without a GPU, poisoned outputs."""

from __future__ import annotations

import functools
import threading

import numpy as np
import pytest


@functools.lru_cache(maxsize=1)
def cuda_unavailable_reason() -> str | None:
    """None when onnxruntime has the CUDA provider, a GPU answers and the library has CUDA kernels."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDA execution provider"
    from ort_custom_ops.ops.library import library_kernels

    if "cuda" not in library_kernels():
        return "the FCM library was built without CUDA kernels"
    try:
        ort.OrtValue.ortvalue_from_numpy(np.zeros(1, np.float32), "cuda", 0)
    except Exception as exc:  # no device
        return f"no usable GPU ({type(exc).__name__})"
    return None


@functools.lru_cache(maxsize=1)
def compute_capability() -> tuple[int, int] | None:
    """GPU 0's compute capability from nvidia-smi (None when it does not say)."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        major, minor = out.split(".")
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def has_clusters() -> bool:
    """Whether GPU 0 runs thread-block clusters (sm_90 and later)."""
    return (compute_capability() or (0, 0)) >= (9, 0)


def require_cuda() -> None:
    reason = cuda_unavailable_reason()
    if reason:
        pytest.skip(reason)


def cuda_providers(**options) -> list:
    settings = {"device_id": "0", **{k: str(v) for k, v in options.items()}}
    return [("CUDAExecutionProvider", settings), "CPUExecutionProvider"]


def run_poisoned(session, feeds: dict[str, np.ndarray], output_shape) -> np.ndarray:
    """Run with inputs and the (single) output bound to device buffers; the output buffer is filled
    with NaN first, so an element the kernel never writes shows."""
    import onnxruntime as ort

    binding = session.io_binding()
    kept = []
    for name, array in feeds.items():
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", 0)
        kept.append(value)
        binding.bind_ortvalue_input(name, value)
    out = ort.OrtValue.ortvalue_from_numpy(np.full(output_shape, np.nan, np.float32), "cuda", 0)
    binding.bind_ortvalue_output(session.get_outputs()[0].name, out)
    session.run_with_iobinding(binding)
    result = out.numpy()
    assert not np.isnan(result).any(), f"{int(np.isnan(result).sum())} output elements were never written"
    return result


def run_in_threads(session, feed: str, inputs: list[np.ndarray], matches, threads: int = 4,
                   repeats: int = 5) -> list[str]:
    """Runs ``session`` on ``inputs`` from ``threads`` threads at once (each thread a share of the
    inputs, ``repeats`` times) and returns what went wrong: inputs whose output ``matches(i, got)``
    rejects, and any exception a thread raised."""
    errors: list[str] = []

    def worker(indices):
        try:
            for _ in range(repeats):
                for i in indices:
                    (got,) = session.run(None, {feed: inputs[i]})
                    if not matches(i, got):
                        errors.append(f"input {i}: wrong output")
        except Exception as exc:  # reported by the caller
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=worker, args=(list(range(t, len(inputs), threads)),)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return errors


def forced_plan(model, plan: str | None, batch: int):
    """``model`` whose fused nodes must run ``plan`` at ``batch`` (an error where they cannot: the
    nodes' cuda_plans with cuda_plans_strict=1); ``model`` itself when ``plan`` is None."""
    from ort_custom_ops.ops.launch_plan import with_forced_plan

    return model if plan is None else with_forced_plan(model, plan, batch)


@pytest.fixture(params=["tf32", "fp32"])
def precision(request, monkeypatch):
    """The CUDA kernels' pointwise arithmetic: TF32 tensor cores (the default), or exact FP32."""
    if request.param == "fp32":
        monkeypatch.setenv("FCM_CUDA_FP32", "1")
    else:
        monkeypatch.delenv("FCM_CUDA_FP32", raising=False)
    return request.param


def check_fused_on_gpu(spec, rng, batch: int, height: int, width: int, bound: float, plan: str | None = None,
                       scale_nhwc: bool = False) -> None:
    """One fused node (either layout) on the CUDA provider, outputs poisoned, against the CPU kernel
    (within `bound` of the largest output) and the CPU kernel against the numpy chain (1e-4)."""
    from ort_custom_ops.ops.library import make_session
    from ort_custom_ops.ops.standalone import fused_model
    from tests.support.fcm_numpy import run_spec
    from tests.support.specs import random_feeds

    feeds, x, scale = random_feeds(spec, rng, batch, height, width, scale_nhwc=scale_nhwc)
    model = fused_model(spec)
    (cpu,) = make_session(model).run(None, feeds)
    gpu = run_poisoned(make_session(forced_plan(model, plan, batch), providers=cuda_providers()), feeds, cpu.shape)
    reference = run_spec(spec, x, scale)
    scale_of = max(1.0, float(np.abs(reference).max()))
    cpu_nchw = cpu.transpose(0, 3, 1, 2) if spec.channels_last else cpu
    assert np.abs(cpu_nchw - reference).max() <= 1e-4 * scale_of
    error = float(np.abs(gpu - cpu).max())
    assert error <= bound * scale_of, f"GPU vs CPU: {error:.3g} (largest output {scale_of:.3g}), plan {plan}"


def check_graph_replays(model, rng, input_shape, output: str, plan: str, runs: int, bound: float) -> None:
    """A model with input X on the CUDA provider with CUDA graphs on, IO bound to device buffers,
    its fused nodes forced to run ``plan``: the first run plans, the next captures, the rest replay
    the graph on new input values; every run's output against the CPU's."""
    import onnxruntime as ort

    from ort_custom_ops.ops.library import make_session

    cpu = make_session(model)
    session = make_session(forced_plan(model, plan, input_shape[0]), providers=cuda_providers(enable_cuda_graph=1))
    x = rng.normal(size=input_shape).astype(np.float32)
    (first,) = cpu.run(None, {"X": x})
    x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    y_dev = ort.OrtValue.ortvalue_from_numpy(np.full(first.shape, np.nan, np.float32), "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input("X", x_dev)
    binding.bind_ortvalue_output(output, y_dev)
    for attempt in range(runs):
        x = rng.normal(size=input_shape).astype(np.float32)
        x_dev.update_inplace(x)
        session.run_with_iobinding(binding)
        (expected,) = cpu.run(None, {"X": x})
        got = y_dev.numpy()
        assert np.abs(got - expected).max() <= bound * max(1, np.abs(expected).max()), f"run {attempt}"
