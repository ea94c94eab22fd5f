"""The int8 MobileNetV2 on the GPU: agreement with the TFLite interpreter, then timings.

    python benchmarks/int8_gpu.py [PREPARED] [-o OUT] [--fp32-fused MODEL.onnx] [--fp32-unfused MODEL.onnx]
                                  [--batches 1,32] [--runs 100] [--warmup 20] [--no-bench] [--cpu]

In: the folder ``benchmarks/int8_prepare.py`` wrote (default ``.device/int8``: fused.onnx,
unfused.onnx, qdq.onnx, model.tflite, image.npy) and the fp32 MobileNetV2 pair of the reference
models (default ``/tmp/fcm-zoo/mobilenet_v2/``, where ``python -m fcm.skeleton unpack`` puts it;
left out if missing). Needs numpy, onnx, onnxruntime-gpu, ai_edge_litert and the FCM library
built with CUDA kernels; no TensorFlow. Out, in OUT (default /tmp/fcm-int8): ``int8_gpu.json``
(everything below, with the device, driver and versions) and ``int8_gpu.md`` (the tables, also
printed last).

1. Agreement: the fused int8 model on ONNX Runtime's CUDA provider (FCM library registered) and
   the TFLite interpreter (default resolver: XNNPACK) on the fixture image, three seeded random
   images and a batch of 32 random images, image by image. The bound (the int8 issue's): at least
   99.9% of the 1000 outputs equal, all within 1, the same top-5. Also: the batch of 32 gives the
   same bits on the CPU provider (same library); ONNX Runtime's profiler shows every ``ai.fcm``
   node on the CUDA provider. The QDQ model's agreement with the interpreter is shown too.
2. Timings at each batch size: the fused int8 model, the unfused int8 model (every convolution a
   one-stage ``QConv``), tf2onnx's QDQ model on ONNX Runtime alone, and the fp32 MobileNetV2 fused
   (FCM) and unfused (ONNX Runtime alone). Each in every configuration of the CUDA provider (CUDA
   graph on/off, ``prefer_nhwc`` on/off, as ``fcm bench``), its best kept; inputs and outputs
   bound to device buffers, warm-up runs, then the median of ``--runs`` runs.

``--cpu``: a dry run of the whole script on the CPU provider (few runs, no CUDA configurations),
to check it where there is no GPU. Exit status 1 when a check of part 1 fails, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]

from fcm.measure import CONFIGS, device_info, providers, random_feeds, time_session
from fcm.pipeline.verify import interpreter_outputs
from fcm.pipeline.verify import AGREEMENT, compare
from ort_custom_ops.ops.library import make_session
from ort_custom_ops.ops.schema import DOMAIN

RANDOM_IMAGES, AGREEMENT_BATCH = 3, 32


def say(message: str) -> None:
    print(f"[int8-gpu] {message}", flush=True)


@dataclass
class Target:
    """Where the models run: ONNX Runtime's CUDA provider, or the CPU provider for a dry run."""

    cuda: bool

    @property
    def provider(self) -> str:
        return "CUDAExecutionProvider" if self.cuda else "CPUExecutionProvider"

    @property
    def device(self) -> str:
        return "cuda" if self.cuda else "cpu"

    def configs(self) -> list[tuple[str, list]]:
        if not self.cuda:
            return [("cpu", ["CPUExecutionProvider"])]
        return [(f"graph={'on' if g else 'off'},nhwc={'on' if n else 'off'}", providers(g, n)) for g, n in CONFIGS]

    def session(self, model, with_library: bool, providers: list | None = None, profile: bool = False):
        session = make_session(model, with_library=with_library, providers=providers or self.configs()[0][1],
                               profile=profile)
        if session.get_providers()[0] != self.provider:
            raise RuntimeError(f"{self.provider} did not start (the session has {session.get_providers()})")
        return session


# --- part 1: agreement -----------------------------------------------------------------------------

def placement(target: Target, model_path: Path, feeds: dict[str, np.ndarray]) -> dict:
    """Which provider ran each node (ONNX Runtime's profiler, one run): the ai.fcm nodes on the
    target's provider, the model's other nodes by provider ("fused away": not in the profile, the
    graph optimizations replaced them), and the nodes the runtime added (copies between devices,
    fused replacements)."""
    model = onnx.load(model_path)
    session = target.session(str(model_path), True, profile=True)
    session.run(None, feeds)
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink(missing_ok=True)
    ran = {}
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            ran[event["name"][: -len("_kernel_time")]] = event.get("args", {}).get("provider")
    fcm_nodes = [n.name for n in model.graph.node if n.domain == DOMAIN]
    elsewhere = {name: ran.get(name, "not run") for name in fcm_nodes if ran.get(name) != target.provider}
    others: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.domain != DOMAIN:
            others.setdefault(ran.get(node.name, "fused away"), []).append(f"{node.op_type} {node.name}")
    names = {n.name for n in model.graph.node}
    added = {name: provider for name, provider in ran.items() if name not in names}
    return {"fcm_nodes": len(fcm_nodes), "fcm_nodes_on_target": len(fcm_nodes) - len(elsewhere),
            "target": target.provider, "fcm_nodes_elsewhere": elsewhere, "other_nodes_by_provider": others,
            "nodes_added_by_the_runtime": added}


def agreement(target: Target, prepared: Path) -> dict:
    tflite = prepared / "model.tflite"
    rng = np.random.default_rng(0)
    names = ["fixture image"] + [f"random image {i}" for i in range(1, RANDOM_IMAGES + 1)]
    images = np.concatenate([np.load(prepared / "image.npy"),
                             rng.integers(0, 256, (RANDOM_IMAGES, 224, 224, 3)).astype(np.uint8)])
    batch = rng.integers(0, 256, (AGREEMENT_BATCH, 224, 224, 3)).astype(np.uint8)
    bound = AGREEMENT["fp32"]

    def interpreter(x: np.ndarray) -> np.ndarray:  # image by image, at batch 1
        return np.concatenate([interpreter_outputs(tflite, [x[i:i + 1]], builtin=False)[0] for i in range(len(x))])

    say(f"agreement: the fused int8 model on {target.provider} vs the TFLite interpreter (XNNPACK)")
    fused = target.session(str(prepared / "fused.onnx"), True)
    qdq = target.session(str(prepared / "qdq.onnx"), False)
    qdq_input = qdq.get_inputs()[0].name
    want = interpreter(images)
    got = np.concatenate([fused.run(None, {"input": images[i:i + 1]})[0] for i in range(len(images))])
    qdq_got = np.concatenate([qdq.run(None, {qdq_input: images[i:i + 1]})[0] for i in range(len(images))])
    rows, qdq_rows = _rows(names, got, want, bound), _rows(names, qdq_got, want, bound)
    for r in rows:
        say(f"  {_summary_line(r)}")

    say(f"agreement: a batch of {AGREEMENT_BATCH} random images, image by image")
    batch_names = [f"batch image {i}" for i in range(AGREEMENT_BATCH)]
    want = interpreter(batch)
    got = fused.run(None, {"input": batch})[0]
    batch_rows = _rows(batch_names, got, want, bound)
    qdq_batch = _rows(batch_names, qdq.run(None, {qdq_input: batch})[0], want, bound)
    qdq_rows.append(_summary(f"batch of {AGREEMENT_BATCH}", qdq_batch))
    result = {"bound": {"least_equal": bound[0], "largest_difference": bound[1], "top5_same": True},
              "images": rows, "batch": _summary(f"batch of {AGREEMENT_BATCH}", batch_rows), "batch_rows": batch_rows,
              "qdq_vs_interpreter": qdq_rows}
    say(f"  {_summary_line(result['batch'])}")

    if target.cuda:
        say("agreement: the same batch on the CPU provider (same library), bit for bit")
        cpu = Target(False).session(str(prepared / "fused.onnx"), True).run(None, {"input": batch})[0]
        result["cuda_equals_cpu"] = {"batch": AGREEMENT_BATCH, "equal": bool(np.array_equal(got, cpu)),
                                     "values_differing": int(np.count_nonzero(got != cpu))}

    say("agreement: where each node ran (ONNX Runtime's profiler)")
    result["placement"] = p = placement(target, prepared / "fused.onnx", {"input": images[:1]})
    say(f"  {p['fcm_nodes_on_target']} of {p['fcm_nodes']} ai.fcm nodes on {p['target']}; {_other_nodes(p)}")

    failures = []
    outside = [r for r in rows + batch_rows if not r["within_bound"]]
    if outside:
        worst = min(outside, key=lambda r: (r["equal"], -r["max_diff"]))
        failures.append(f"{len(outside)} of {len(rows) + len(batch_rows)} images outside the bound (worst: "
                        f"{_summary_line(worst)})")
    if "cuda_equals_cpu" in result and not result["cuda_equals_cpu"]["equal"]:
        failures.append(f"CUDA vs CPU provider: {result['cuda_equals_cpu']['values_differing']} values differ")
    if p["fcm_nodes_elsewhere"] or not p["fcm_nodes"]:
        failures.append(f"ai.fcm nodes not on {p['target']}: {p['fcm_nodes_elsewhere'] or 'none found'}")
    result["failures"] = failures
    return result


def _rows(names: list[str], got: np.ndarray, want: np.ndarray, bound: tuple[float, int]) -> list[dict]:
    """One row per image: row ``i`` of ``got`` against row ``i`` of ``want``."""
    least_equal, largest = bound
    rows = []
    for i, name in enumerate(names):
        check = compare(name, got[i:i + 1], want[i:i + 1])
        within = check.equal >= least_equal and check.max_diff <= largest and check.top5_same
        rows.append({"image": name, "equal": round(check.equal, 5), "max_diff": check.max_diff,
                     "top5_same": check.top5_same, "within_bound": bool(within)})
    return rows


def _summary(name: str, rows: list[dict]) -> dict:
    return {"image": name, "equal": min(r["equal"] for r in rows), "max_diff": max(r["max_diff"] for r in rows),
            "top5_same": all(r["top5_same"] for r in rows), "within_bound": all(r["within_bound"] for r in rows),
            "images": len(rows), "note": "least share equal and largest difference over the images"}


def _summary_line(row: dict) -> str:
    return f"{row['image']}: {row['equal']:.2%} equal, max diff {row['max_diff']}, top-5 same {row['top5_same']}"


def _other_nodes(p: dict) -> str:
    text = "other nodes: " + ", ".join(f"{len(v)} {'fused away' if k == 'fused away' else 'on ' + k}"
                                       for k, v in p["other_nodes_by_provider"].items())
    if p["nodes_added_by_the_runtime"]:
        text += "; added by the runtime: " + ", ".join(f"{name} on {provider}"
                                                       for name, provider in p["nodes_added_by_the_runtime"].items())
    return text


# --- part 2: timings -------------------------------------------------------------------------------

def models(prepared: Path, fp32_fused: Path, fp32_unfused: Path) -> list[dict]:
    return [
        {"key": "int8_fused", "label": "int8 fused (FCM ops)", "path": prepared / "fused.onnx", "library": True},
        {"key": "int8_unfused", "label": "int8 unfused (FCM QConv per layer)", "path": prepared / "unfused.onnx",
         "library": True},
        {"key": "int8_qdq", "label": "int8 QDQ (tf2onnx, ONNX Runtime alone)", "path": prepared / "qdq.onnx",
         "library": False},
        {"key": "fp32_fused", "label": "fp32 fused (FCM ops)", "path": fp32_fused, "library": True},
        {"key": "fp32_unfused", "label": "fp32 unfused (ONNX Runtime alone)", "path": fp32_unfused, "library": False},
    ]


def bench_model(target: Target, entry: dict, feeds: dict[str, np.ndarray], runs: int, warmup: int) -> dict:
    """One model at one batch size in every configuration; the first configuration's plain run is
    the reference the others' outputs are compared with."""
    path, with_library = str(entry["path"]), entry["library"]
    reference = target.session(path, with_library).run(None, feeds)
    result: dict = {"configs": {}}
    for label, execution_providers in target.configs():
        try:
            session = target.session(path, with_library, execution_providers)
            timing, outputs = time_session(session, feeds, [list(a.shape) for a in reference], runs, warmup,
                                           [a.dtype for a in reference], target.device)
            del session
        except Exception as exc:  # a configuration the runtime refuses is reported, not fatal
            result["configs"][label] = {"error": str(exc).strip().splitlines()[0][:200]}
            say(f"    {label}: {result['configs'][label]['error']}")
            continue
        difference = max(float(np.abs(o.astype(np.float64) - r).max()) for o, r in zip(outputs, reference))
        result["configs"][label] = {**timing.to_json(), "max_abs_difference": difference}
        say(f"    {label}: median {timing.median_ms:.3f} ms")
    timed = {k: v for k, v in result["configs"].items() if "median_ms" in v}
    if timed:
        best = min(timed, key=lambda k: timed[k]["median_ms"])
        result["best"] = {"config": best, "median_ms": timed[best]["median_ms"]}
    result["output"] = reference[0]
    return result


def benchmark(target: Target, entries: list[dict], batches: list[int], runs: int, warmup: int) -> dict:
    report: dict = {"runs": runs, "warmup": warmup, "models": {}, "batches": []}
    for entry in entries:
        report["models"][entry["key"]] = {"label": entry["label"], "path": str(entry["path"])}
        if not Path(entry["path"]).is_file():
            report["models"][entry["key"]]["missing"] = True
            say(f"{entry['label']}: {entry['path']} is missing: left out")
    present = [e for e in entries if Path(e["path"]).is_file()]
    for batch in batches:
        row: dict = {"batch": batch, "models": {}}
        for entry in present:  # one seed per batch: the int8 models get the same images
            feeds = random_feeds(onnx.load(entry["path"]), batch, np.random.default_rng(batch))
            say(f"batch {batch}: {entry['label']}")
            row["models"][entry["key"]] = bench_model(target, entry, feeds, runs, warmup)
        outputs = {k: v.pop("output") for k, v in row["models"].items()}
        if "int8_fused" in outputs and "int8_unfused" in outputs:
            row["int8_fused_equals_unfused"] = bool(np.array_equal(outputs["int8_fused"], outputs["int8_unfused"]))
        if "int8_fused" in outputs and "int8_qdq" in outputs:
            diff = np.abs(outputs["int8_fused"].astype(np.int64) - outputs["int8_qdq"].astype(np.int64))
            row["int8_fused_vs_qdq"] = {"equal": round(float(np.mean(diff == 0)), 5), "max_diff": int(diff.max())}
        for key, result in row["models"].items():
            if "best" not in result:
                continue
            for baseline in ("int8_qdq", "fp32_fused"):
                base = row["models"].get(baseline, {}).get("best")
                if base:
                    result["best"][f"speedup_vs_{baseline}"] = round(base["median_ms"] / result["best"]["median_ms"], 3)
        report["batches"].append(row)
    return report


# --- the report ------------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    d = report["device"]
    lines = ["# int8 MobileNetV2 on the GPU", "",
             f"{d.get('gpu')} (driver {d.get('driver')}), onnxruntime {d.get('onnxruntime')}, ai_edge_litert "
             f"{report.get('ai_edge_litert')}; models run on {report['provider']}.", ""]
    a = report.get("agreement")
    if a:
        bound = a["bound"]
        lines += ["## Agreement with the TFLite interpreter (XNNPACK)", "",
                  f"Bound: at least {bound['least_equal']:.1%} of the 1000 outputs equal, all within "
                  f"{bound['largest_difference']}, the same top-5.", "",
                  "| input | fused int8: equal | max diff | top-5 same | within bound "
                  "| QDQ model: equal | max diff | top-5 same |",
                  "|---|---|---|---|---|---|---|---|"]
        for row, qdq in zip(a["images"] + [a["batch"]], a["qdq_vs_interpreter"]):
            lines.append(f"| {row['image']} | {row['equal']:.2%} | {row['max_diff']} | {row['top5_same']} | "
                         f"{row['within_bound']} | {qdq['equal']:.2%} | {qdq['max_diff']} | {qdq['top5_same']} |")
        p = a["placement"]
        lines += ["", "For the batch: the least share equal and the largest difference over its images.", "",
                  f"- ai.fcm nodes on {p['target']}: {p['fcm_nodes_on_target']} of {p['fcm_nodes']} "
                  "(ONNX Runtime's profiler)",
                  f"- {_other_nodes(p)}"]
        if "cuda_equals_cpu" in a:
            c = a["cuda_equals_cpu"]
            lines.append(f"- batch of {c['batch']} on the CUDA provider vs the CPU provider: "
                         + ("identical" if c["equal"] else f"{c['values_differing']} values differ"))
        lines += [f"- result: {'all checks pass' if not a['failures'] else 'FAILED: ' + '; '.join(a['failures'])}", ""]
    b = report.get("bench")
    if b:
        lines += ["## Timings", "",
                  f"Median of {b['runs']} runs after {b['warmup']} warm-ups, inputs and outputs bound to device "
                  "buffers; each model in its best configuration. Speedup: the baseline's time over this one's "
                  "(> 1: faster than the baseline). On the CUDA provider, fp32 models in its default TF32 mode.", "",
                  "| batch | model | median (ms) | config | vs int8 QDQ | vs fp32 fused |", "|---|---|---|---|---|---|"]
        for row in b["batches"]:
            for key, result in row["models"].items():
                label = b["models"][key]["label"]
                best = result.get("best")
                if not best:
                    lines.append(f"| {row['batch']} | {label} | no configuration ran | | | |")
                    continue
                vs_qdq, vs_fp32 = (f"{best[k]:.2f}x" if k in best else ""
                                   for k in ("speedup_vs_int8_qdq", "speedup_vs_fp32_fused"))
                lines.append(f"| {row['batch']} | {label} | {best['median_ms']:.3f} | {best['config']} | "
                             f"{vs_qdq} | {vs_fp32} |")
        lines.append("")
        for row in b["batches"]:
            notes = []
            if "int8_fused_equals_unfused" in row:
                notes.append(f"fused int8 == unfused int8: {row['int8_fused_equals_unfused']}")
            if "int8_fused_vs_qdq" in row:
                q = row["int8_fused_vs_qdq"]
                notes.append(f"fused int8 vs QDQ: {q['equal']:.2%} equal, max diff {q['max_diff']}")
            if notes:
                lines.append(f"- batch {row['batch']}: " + "; ".join(notes))
        missing = [m["label"] for m in b["models"].values() if m.get("missing")]
        if missing:
            lines.append(f"- left out (file missing): {', '.join(missing)}")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared", nargs="?", type=Path, default=ROOT / ".device" / "int8")
    parser.add_argument("-o", "--out", type=Path, default=Path("/tmp/fcm-int8"))
    parser.add_argument("--fp32-fused", type=Path, default=Path("/tmp/fcm-zoo/mobilenet_v2/mobilenet_v2.onnx"))
    parser.add_argument("--fp32-unfused", type=Path, help="default: <fp32 fused stem>.unfused.onnx beside it")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--runs", type=int, help="timed runs per configuration (default 100; 3 with --cpu)")
    parser.add_argument("--warmup", type=int, help="warm-up runs (default 20; 1 with --cpu)")
    parser.add_argument("--no-bench", action="store_true", help="the agreement only")
    parser.add_argument("--cpu", action="store_true", help="dry run on the CPU provider")
    args = parser.parse_args(argv)
    import onnxruntime as ort

    target = Target(cuda=not args.cpu)
    needed = ("fused.onnx", "unfused.onnx", "qdq.onnx", "model.tflite", "image.npy")
    missing = [name for name in needed if not (args.prepared / name).is_file()]
    if missing:
        print(f"{args.prepared}: missing {', '.join(missing)} (run benchmarks/int8_prepare.py)", file=sys.stderr)
        return 2
    if target.cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
        print("this onnxruntime has no CUDA execution provider (use --cpu for a dry run)", file=sys.stderr)
        return 2
    runs = args.runs or (3 if args.cpu else 100)
    warmup = args.warmup if args.warmup is not None else (1 if args.cpu else 20)
    fp32_unfused = args.fp32_unfused or args.fp32_fused.with_name(f"{args.fp32_fused.stem}.unfused.onnx")
    args.out.mkdir(parents=True, exist_ok=True)
    from ai_edge_litert import __version__ as litert_version

    device = device_info()
    report: dict = {"device": device, "ai_edge_litert": litert_version, "provider": target.provider,
                    "prepared": str(args.prepared), "command": " ".join(["int8_gpu.py"] + (argv or sys.argv[1:]))}
    say(f"{device.get('gpu')}, onnxruntime {device['onnxruntime']}, ai_edge_litert {litert_version}, {target.provider}")
    report["agreement"] = agreement(target, args.prepared)
    write(report, args.out)
    if not args.no_bench:
        batches = [int(b) for b in args.batches.split(",")]
        report["bench"] = benchmark(target, models(args.prepared, args.fp32_fused, fp32_unfused), batches, runs, warmup)
        write(report, args.out)
    print(markdown(report))
    print(f"results: {args.out / 'int8_gpu.json'}, {args.out / 'int8_gpu.md'}")
    if report["agreement"]["failures"]:
        print("FAILED: " + "; ".join(report["agreement"]["failures"]), file=sys.stderr)
        return 1
    return 0


def write(report: dict, out: Path) -> None:
    (out / "int8_gpu.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "int8_gpu.md").write_text(markdown(report) + "\n")


if __name__ == "__main__":
    sys.exit(main())
