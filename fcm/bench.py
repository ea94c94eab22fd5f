"""``fcm bench``: a fused model against the same model unfused, on ONNX Runtime's CUDA provider.

In: the unfused ONNX model, the fused one (``fcm convert``'s pair, in fp32, fp16 or bf16), batch
sizes, optionally the plan (for the groups' predicted bytes) and the torchvision architecture of the
model. Out: a dict (written as JSON, a markdown table and a PNG chart) with, per batch, each side's
median time in every configuration of the CUDA provider, the best of each and their ratio, per
fused group a micro-benchmark, optionally per-node profiles (the measurements are
:mod:`fcm.measure`'s), and the anchors in the same run: ONNX Runtime on the unfused model in the
same precision (the unfused side) and ``torch.compile`` channels-last in the same precision on the
torchvision version (:mod:`fcm.anchors`), or why there is none.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from fcm_core.errors import FcmError
from fcm_core.vocabulary import DOMAIN

from .anchors import MODES, TORCHVISION, torch_compile_anchor
from .measure import (Progress, bench_groups, bench_pair, copy_bandwidth, device_info, numpy_io, profile_nodes,
                      providers, random_feeds)
from .pipeline.verify import model_precision

def default_torch_arch(fused_path: Path) -> str | None:
    """The torchvision architecture a fused model's file names: its name up to the first dot, so
    that fcm tune's ``mobilenet_v2.tuned.onnx`` is MobileNetV2 as ``mobilenet_v2.onnx`` is."""
    name = fused_path.name.split(".", 1)[0]
    return name if name in TORCHVISION else None


def run(unfused_path: Path, fused_path: Path, batches: list[int], runs: int, warmup: int, plan_path: Path | None,
        micro: bool, exact_fp32: bool, progress: Progress, profile: bool = False, precision: str | None = None,
        torch_arch: str | None = "auto", anchor=torch_compile_anchor, torch_modes: tuple[str, ...] = MODES) -> dict:
    """``precision``: what the fused model must be in (None: whatever it is); ``torch_arch``: the
    torchvision architecture of the ``torch.compile`` anchor ("auto": :func:`default_torch_arch`, None: no anchor),
    timed in ``torch_modes``."""
    import onnxruntime as ort

    from ort_custom_ops.ops.library import library_cuda_float_ops

    unfused, fused = onnx.load(unfused_path), onnx.load(fused_path)
    found = model_precision(fused)
    if precision is not None and found != precision:
        raise FcmError(f"the fused model is {found}, not {precision} (convert it with fcm convert --precision {precision})",
                       fused_path)
    if exact_fp32 and found != "fp32":
        raise FcmError(f"--exact-fp32 times fp32 models without TF32; this one is {found}", fused_path)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise FcmError("fcm bench needs onnxruntime-gpu with the CUDA execution provider")
    plan = json.loads(plan_path.read_text()) if plan_path and plan_path.is_file() else None
    report = {"unfused": str(unfused_path), "fused": str(fused_path), "device": device_info(), "runs": runs, "warmup": warmup,
              "precision": found, "copy_bandwidth_gb_s": None, "batches": [], "groups": {}, "notes": []}
    without_cuda = sorted({n.op_type for n in fused.graph.node if n.domain == DOMAIN} - library_cuda_float_ops())
    if found in ("fp16", "bf16") and without_cuda:
        report["notes"].append(f"this build of the FCM library has no CUDA kernels for {', '.join(without_cuda)}: as in "
                               "a user's session, ONNX Runtime runs those nodes' function bodies (the original operators in "
                               f"{found}) on the GPU, and the fused column times that, not fused kernels")
    (unfused, wrapped), (fused, _) = numpy_io(unfused), numpy_io(fused)
    if wrapped:
        report["notes"].append("bf16 inputs and outputs: both sides timed through a Cast at each (ONNX Runtime's "
                               "Python API binds no bf16 arrays)")
    if micro and found == "bf16":
        report["notes"].append("per-group micro-benchmarks in bf16: each side timed through a Cast at its input and "
                               "output (numpy holds no bf16)")
    bandwidth = copy_bandwidth()
    if bandwidth:
        report["copy_bandwidth_gb_s"] = round(bandwidth / 1e9, 1)
    for batch in batches:
        entry = bench_pair(unfused, fused, batch, runs, warmup, progress, exact_fp32)
        report["batches"].append(entry)
        if micro:
            report["groups"][str(batch)] = bench_groups(fused, plan, batch, runs, warmup, progress)
        if profile:  # where the time goes, each side in its best configuration without CUDA graphs
            inputs = random_feeds(unfused, batch, np.random.default_rng(batch))
            entry["profile"] = {}
            for side, model, with_library in (("unfused", unfused, False), ("fused", fused, True)):
                progress(f"batch {batch} profiling {side}")
                nhwc = "nhwc=on" in entry["best"]["tf32"][side]["config"]
                entry["profile"][side] = profile_nodes(model, with_library, providers(False, nhwc), inputs)
    size = int(unfused.graph.input[0].type.tensor_type.shape.dim[1].dim_value or 224)  # NHWC models: H
    report["anchors"] = {"onnxruntime": f"{Path(unfused_path).name}, {found}, best configuration (the unfused side)",
                         "torch_compile": torch_anchor(torch_arch, fused_path, found, batches, size, runs, warmup, progress,
                                                       anchor, torch_modes)}
    return report


def torch_anchor(torch_arch: str | None, fused_path: Path, precision: str, batches: list[int], size: int, runs: int,
                 warmup: int, progress: Progress, anchor=torch_compile_anchor, modes: tuple[str, ...] = MODES) -> dict:
    """The torch.compile anchor's record: not timed when not asked for (``torch_arch`` None), the
    fused file's architecture for "auto" (:func:`default_torch_arch`)."""
    if torch_arch is None:
        return {"absent": "not asked for (--torch none)"}
    if torch_arch == "auto":
        torch_arch = default_torch_arch(fused_path)
    progress(f"torch.compile anchor ({torch_arch or 'none'}, {precision}, {', '.join(modes)})")
    return anchor(torch_arch, precision, batches, size, runs, warmup, modes=modes)


def markdown(report: dict, command: str) -> str:
    d = report["device"]
    lines = [f"# Benchmark: {Path(report['fused']).name} vs {Path(report['unfused']).name}", "",
             f"{d.get('gpu')} (driver {d.get('driver')}), host {d.get('cpu', 'unknown')} ({d.get('cpus', '?')} CPUs), "
             f"onnxruntime {d.get('onnxruntime')}; median of "
             f"{report['runs']} runs after {report['warmup']} warm-ups, IO bound to device buffers.", "",
             f"Command: `{command}`", ""]
    if report.get("copy_bandwidth_gb_s"):
        lines += [f"Device-to-device copy: {report['copy_bandwidth_gb_s']} GB/s (read + write).", ""]
    precision = report.get("precision", "fp32")
    lines += [f"Precision: {precision}.", ""] + [f"Note: {n}." for n in report.get("notes", [])]
    lines += [""] if report.get("notes") else []
    lines += ["| batch | mode | best unfused (ms) | config | best fused (ms) | config | speedup |", "|---|---|---|---|---|---|---|"]
    for entry in report["batches"]:
        for mode, best in entry["best"].items():
            # ("tf32" is the provider's default arithmetic: for a half model, its own precision)
            shown = precision if mode == "tf32" and precision != "fp32" else mode
            lines.append(f"| {entry['batch']} | {shown} | {best['unfused']['median_ms']:.3f} | {best['unfused']['config']} | "
                         f"{best['fused']['median_ms']:.3f} | {best['fused']['config']} | {best['speedup']:.2f}x |")
    lines.append("")
    lines += anchors_table(report)
    for entry in report["batches"]:
        for side, rows in entry.get("profile", {}).items():
            by_op: dict[str, float] = {}
            for row in rows:
                key = f"{row['op']} ({row['provider'].replace('ExecutionProvider', '')})"
                by_op[key] = by_op.get(key, 0.0) + row["mean_us"]
            total = sum(by_op.values())
            lines += [f"## Host time per node: {side}, batch {entry['batch']} (ONNX Runtime's profiler, no CUDA graph)", "",
                      "CUDA kernels run asynchronously: for them this is the time the runtime spends in the node "
                      "(launch, allocations, algorithm search on a first use), not GPU time; use Nsight Compute for that.", "",
                      f"Total {total / 1e3:.3f} ms over {len(rows)} nodes. By operator: "
                      + ", ".join(f"{op} {t / 1e3:.3f} ms" for op, t in sorted(by_op.items(), key=lambda x: -x[1])), "",
                      "| node | op | provider | mean us |", "|---|---|---|---|"]
            lines += [f"| {r['node']} | {r['op']} | {r['provider']} | {r['mean_us']} |" for r in rows[:12]]
            lines.append("")
    for batch, rows in report.get("groups", {}).items():
        if not rows:
            continue
        lines += [f"## Fused groups at batch {batch}", "",
                  "| node | fused (ms) | its subgraph unfused (ms) | speedup | unavoidable MB | achieved GB/s | planner predicted MB |",
                  "|---|---|---|---|---|---|---|"]
        for row in rows:
            if "error" in row:
                lines.append(f"| {row['node']} | error: {row['error']} | | | | | |")
                continue
            planned = row.get("planner")
            predicted = f"{planned['dram_bytes'] / 1e6:.2f} (batch {planned['plan_batch']})" if planned else ""
            layout = " (NHWC)" if row.get("unfused_nhwc") else ""  # the subgraph's best was with prefer_nhwc
            lines.append(f"| {row['node']} | {row['fused_ms']:.4f} | {row['unfused_ms']:.4f}{layout} | {row['speedup']:.2f}x | "
                         f"{row['unavoidable_bytes'] / 1e6:.2f} | {row['achieved_gb_s']} | {predicted} |")
        lines.append("")
    return "\n".join(lines)


def best_of(modes) -> str:
    return f"the better of {' and '.join(modes)}" if len(modes) > 1 else f"{modes[0]} only"


def anchors_table(report: dict) -> list[str]:
    """How a user would fare with each alternative, in one table: ONNX Runtime on the unfused model,
    the fused model, torch.compile (best mode), in the report's precision."""
    anchors = report.get("anchors")
    if not anchors:
        return []
    precision = report.get("precision", "fp32")
    torch = anchors["torch_compile"]
    lines = [f"## The alternatives ({precision}, same run)", "",
             f"ONNX Runtime: {anchors['onnxruntime']}. torch.compile: " +
             (f"torchvision {torch['arch']}, {precision}, channels-last, " + best_of(torch.get("modes", MODES)) + "."
              if "absent" not in torch else f"none ({torch['absent']})."), "",
             "| batch | ONNX Runtime (ms) | fused (ms) | torch.compile (ms) | mode | fused vs ONNX Runtime | fused vs torch.compile |",
             "|---|---|---|---|---|---|---|"]
    for entry in report["batches"]:
        best = entry["best"]["tf32"]
        ort_ms, fused_ms = best["unfused"]["median_ms"], best["fused"]["median_ms"]
        row = torch.get("batches", {}).get(str(entry["batch"]), {})
        if "best" in row:
            torch_cells = [f"{row['best']['median_ms']:.3f}", row["best"]["mode"]]
            ratio = f"{row['best']['median_ms'] / fused_ms:.2f}x"
        else:
            torch_cells, ratio = [row.get("error", torch.get("absent", "none")), ""], ""
        cells = [str(entry["batch"]), f"{ort_ms:.3f}", f"{fused_ms:.3f}", *torch_cells, f"{ort_ms / fused_ms:.2f}x", ratio]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def chart(report: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    entries = report["batches"]
    labels = [f"batch {e['batch']}" for e in entries]
    unfused = [e["best"]["tf32"]["unfused"]["median_ms"] for e in entries]
    fused = [e["best"]["tf32"]["fused"]["median_ms"] for e in entries]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(labels))
    ax.bar(x - 0.2, unfused, 0.4, label="ONNX Runtime CUDA (best config)")
    ax.bar(x + 0.2, fused, 0.4, label="fused (FCM)")
    for i, e in enumerate(entries):
        ax.text(x[i] + 0.2, fused[i], f"{e['best']['tf32']['speedup']:.2f}x", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, labels)
    ax.set_ylabel("median ms per run")
    ax.set_title(Path(report["fused"]).stem)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
