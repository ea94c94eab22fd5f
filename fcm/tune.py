"""``fcm tune``: keep fused only the groups that are faster on this GPU.

In: a fused ONNX model (``fcm convert``), batch sizes. Out: ``<stem>.tuned.onnx`` (the model with
every fused group that is not faster than its original subgraph at each of those batch sizes
turned back into that subgraph, ``ort_custom_ops.unfuse``) and ``<stem>.tune.json`` (per group
and batch: both times, the speedup, the decision).

How: the per-group micro-benchmark of ``fcm bench`` (the fused node and its subgraph as small
standalone models on ONNX Runtime's CUDA provider, each in its better CUDA-graph setting, IO bound
to device buffers, medians of ``runs`` runs). A group stays fused when its median is below
``margin`` times the subgraph's at every batch size. Then the whole tuned model is checked
against the whole unfused model (each in its best configuration, as ``fcm bench`` does): a group
can win alone and still lose in the model (with ``prefer_nhwc`` ONNX Runtime puts layout
transposes around every op it cannot run in NHWC, ours included). While the tuned model is
slower at some batch size, the kept group with the smallest lead is unfused too, and the model
measured again. ``--unfuse`` applies a decision without measuring (to reproduce one on another
machine, or without a GPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from fcm.bench import Progress, bench_groups, bench_pair, device_info
from fcm.errors import FcmError
from fcm.fileio import atomic_write_bytes, atomic_write_text
from ort_custom_ops.unfuse import DOMAIN, unfuse


def measure(model: onnx.ModelProto, batches: list[int], runs: int, warmup: int, margin: float,
            progress: Progress) -> dict:
    """Times of every fused group at each batch size and the groups to unfuse."""
    from ort_custom_ops.library import library_kernels

    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        raise FcmError("fcm tune needs onnxruntime-gpu") from None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise FcmError("fcm tune measures on the GPU: this onnxruntime has no CUDA execution provider "
                       "(install onnxruntime-gpu), or give the decision with --unfuse")
    if "cuda" not in library_kernels():
        raise FcmError("the FCM library has no CUDA kernels (built without nvcc): nothing to tune")
    groups: dict[str, dict] = {n.name: {"op": n.op_type, "batches": {}} for n in model.graph.node if n.domain == DOMAIN}
    for batch in batches:
        for row in bench_groups(model, None, batch, runs, warmup, progress):
            entry = groups[row["node"]]["batches"][str(batch)] = {
                k: row[k] for k in ("fused_ms", "unfused_ms", "speedup", "error") if k in row}
            entry["faster"] = "error" not in row and row["fused_ms"] < margin * row["unfused_ms"]
    for name, group in groups.items():
        group["keep_fused"] = bool(group["batches"]) and all(b["faster"] for b in group["batches"].values())
    return {"device": device_info(), "batches": batches, "runs": runs, "margin": margin, "groups": groups,
            "unfuse": sorted(name for name, group in groups.items() if not group["keep_fused"])}


def verify_whole_model(model: onnx.ModelProto, result: dict, batches: list[int], runs: int, warmup: int,
                       progress: Progress) -> None:
    """Unfuses kept groups, weakest first, until the whole tuned model is not slower than the whole
    unfused one at any batch size; records each measurement in result["whole_model"]."""
    groups = result["groups"]
    everything = sorted(groups)
    reference = unfuse(model, everything)
    kept = sorted((name for name, group in groups.items() if group["keep_fused"]),
                  key=lambda name: min(b.get("speedup", 0.0) for b in groups[name]["batches"].values()))
    steps = []
    while kept:
        tuned = unfuse(model, [name for name in everything if name not in kept])
        speedups = {}
        for batch in batches:
            progress(f"whole model, {len(kept)} groups fused, batch {batch}")
            speedups[str(batch)] = bench_pair(reference, tuned, batch, runs, warmup, progress)["best"]["tf32"]["speedup"]
        steps.append({"fused_groups": list(kept), "speedup": speedups})
        if all(value >= 1.0 for value in speedups.values()):
            break
        dropped = kept.pop(0)
        groups[dropped]["keep_fused"] = False
        groups[dropped]["unfused_by"] = "whole-model check"
    result["whole_model"] = steps
    result["unfuse"] = sorted(name for name, group in groups.items() if not group["keep_fused"])


def tune(model_path: Path, output: Path, batches: list[int], runs: int, warmup: int, margin: float,
         unfuse_names: list[str] | None, progress: Progress, verify: bool = True) -> dict:
    try:
        model = onnx.load(model_path)
    except Exception as exc:
        raise FcmError(f"not a readable ONNX model ({str(exc).splitlines()[0][:120]})", model_path) from None
    if not any(n.domain == DOMAIN for n in model.graph.node):
        raise FcmError("no fused nodes (not a model from fcm convert?)", model_path)
    if unfuse_names is None:
        result = measure(model, batches, runs, warmup, margin, progress)
        if verify:
            verify_whole_model(model, result, batches, runs, warmup, progress)
    else:
        result = {"unfuse": sorted(set(unfuse_names)), "groups": {}, "measured": False}
    tuned = unfuse(model, result["unfuse"])
    onnx.checker.check_model(tuned)
    report_path = output.with_name(output.name.removesuffix(".onnx") + ".tune.json")
    result["model"] = str(model_path)
    result["output"] = str(output)
    result["fused_groups"] = sum(1 for n in tuned.graph.node if n.domain == DOMAIN)
    atomic_write_bytes(output, tuned.SerializeToString())
    atomic_write_text(report_path, json.dumps(result, indent=1) + "\n")
    result["report"] = str(report_path)
    return result
