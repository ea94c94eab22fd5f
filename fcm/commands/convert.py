"""``fcm convert``: a model -> a verified fused ONNX model (``fcm.pipeline``).

In: a model specification and options. Out: the fused model and its companions, and what was fused.
"""

from __future__ import annotations

import argparse

from .common import Reporter, add_model_arguments, input_range, positive_int, source_options


HELP = "convert a model into a fused ONNX model, verified against the source"
DESCRIPTION = " ".join("""
Export the model to ONNX (tf2onnx, opset 17, dynamic batch, NHWC input kept), normalize it, extract
its DAG and plan the fusion for a GPU, replace each fusion group with one node of the ai.fcm domain
(with a function body holding the original subgraph, so the model also runs without the custom-op
library), verify the result against the source model on fresh random inputs, and write OUT.onnx
with, beside it, <stem>.unfused.onnx, <stem>.dag.json, <stem>.plan.json and <stem>.report.md.
Nothing is written if any step fails. With --precision fp16 or bf16 the whole model is computed in
that precision (the fused nodes by the FCM ops' half-precision kernels, the operators between them
converted by onnxconverter-common), and verified against the source model within a bound derived
from the precision, with top-1/top-5 agreement on random images. A full-integer .tflite model (int8 weights and activations,
uint8/int8 input and output) becomes an int8 model instead, built from its DAG: every layer an int8
op of the ai.fcm domain with TFLite's integer arithmetic (--scheme), each fusion group one fused
int8 node; it needs the custom-op library, and is verified against the TFLite interpreter.
""".split())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="the fused model to write")
    parser.add_argument("--gpu", default="auto",
                        help="GPU to plan for (as for fcm plan; default: this machine's, or an assumed H100 where there is "
                        "none: then run fcm tune on the GPU you deploy on)")
    parser.add_argument("--batch", type=positive_int, default=1,
                        help="batch size to plan for: the groups fused, and from 2 on spatial means as batched products "
                             "(default: 1)")
    parser.add_argument("--dtype", choices=("fp32", "int8"),
                         help="element type: int8 for full-integer .tflite models (their only one), else fp32")
    parser.add_argument("--scheme", choices=("fp32", "fixed_point"), default="fp32",
                         help="int8 only: the requantization arithmetic to reproduce: fp32 (XNNPACK, the TFLite "
                         "interpreter's default; default) or fixed_point (TFLite's builtin kernels)")
    parser.add_argument("--layout", choices=("nhwc", "nchw"), default="nhwc",
                        help="fp32 only: the fused nodes' layout: nhwc (channels last, the default; Transposes only "
                        "where an operator left unfused needs NCHW) or nchw (the first CUDA kernels' layout)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                        help="float models: compute the whole model in fp32 (default), fp16 or bf16 (fused nodes "
                        "and the operators between them; reductions and softmax stay fp32), with fp32 accumulation")
    parser.add_argument("--io", choices=("fp32", "half"), default="fp32",
                        help="with --precision fp16/bf16: the model's inputs and outputs fp32 with one Cast at each "
                        "(default), or in the half precision")
    parser.add_argument("--samples", type=int, default=256,
                        help="with --precision fp16/bf16: random images the verification compares top-1/top-5 "
                        "agreement on (default: 256)")
    parser.add_argument("--input-range", metavar="LO,HI",
                        help="the values of the verification's random inputs, as the model expects them (default: "
                        "0,255 for a Keras model that rescales its input itself, such as keras.applications' "
                        "MobileNetV3 and EfficientNet; else -1,1); recorded in the model for fcm verify and fcm tune")
    parser.add_argument("--no-verify", action="store_true", help="skip the comparison with the source model")
    quantize = parser.add_argument_group(
        "int8 quantization of Keras models",
        "With --int8, a Keras model (keras:<Name>, .keras, .h5) is first quantized by TFLite's post-training "
        "full-integer quantization (int8 weights per channel, int8 activations, calibrated on --calibration), "
        "written beside the output as <stem>.tflite, and converted on the int8 path; the fused int8 model is "
        "verified against the TFLite interpreter running that .tflite. A .tflite that is full-integer already "
        "takes the int8 path with or without --int8.")
    quantize.add_argument("--int8", action="store_true", help="quantize the Keras model to int8 and convert that")
    quantize.add_argument("--calibration", metavar="FILE.npy",
                          help="representative input samples for the quantization ranges: one float array "
                          "[N, H, W, C] saved with numpy.save, preprocessed as the model expects (a few hundred "
                          "real samples are typical); default: 16 random samples uniform in the model's input range "
                          "(see --input-range), with a "
                          "warning (fine for testing the conversion, meaningless for accuracy)")
    quantize.add_argument("--io-dtype", choices=("int8", "uint8"), default="int8",
                          help="the quantized model's input and output type (default: int8, TFLite's usual choice)")


def run(args: argparse.Namespace, report: Reporter) -> int:
    from fcm.pipeline.convert import ConvertOptions, convert

    options = ConvertOptions(gpu=args.gpu, batch=args.batch, dtype=args.dtype, scheme=args.scheme,
                             verify=not args.no_verify, source=source_options(args), int8=args.int8,
                             calibration=args.calibration, io_dtype=args.io_dtype, layout=args.layout,
                             precision=args.precision, io_half=args.io == "half", samples=args.samples,
                             input_range=input_range(args.input_range))
    result = convert(args.model, args.output, options, progress=report.progress)
    for note in result.notes:
        report.warning(note) if "left unfused" in note else report.progress(note)
    totals = result.plan.totals()
    fused = result.rewrite.fused
    kinds: dict[str, int] = {}
    for entry in fused:
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
    print(f"{result.output}: {len(fused)} fused nodes (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")"
          if fused else f"{result.output}: no fused nodes")
    for line in result.summary:
        print(line)
    if result.checks and result.precision == "fp32":
        worst = max((c for c in result.checks if c.name != "unfused ONNX"), key=lambda c: c.relative)
        print(f"verified against the source model: largest relative error {worst.relative:.2g} "
              f"(bound {options.tolerance:g}), with and without the FCM library")
    print(f"predicted on {result.plan.gpu.name} at batch {args.batch}: {totals['unfused']['time_us'] / 1e3:.3f} ms -> "
          f"{totals['fused']['time_us'] / 1e3:.3f} ms")
    if result.advice:
        print(f"next: {result.advice}")
    print("files: " + ", ".join(str(p) for p in result.files.values()))
    return 0
