"""How far ONNX Runtime's own int8 (QDQ) execution is from the TFLite interpreter (CPU only).

    python benchmarks/int8_qdq_agreement.py [MODEL.tflite]

Converts the int8 TFLite model to a QDQ ONNX model with tf2onnx, runs it with ONNX Runtime's CPU
provider (graph optimizations on: QLinear kernels; off: QDQ evaluated op by op) and the TFLite
interpreter (default XNNPACK delegate, and builtin kernels) on the fixture image and two random
images, and prints per image the share of the 1000 outputs that agree exactly, the largest
difference, and whether the top-5 and top-1 agree.
"""

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from fcm.pipeline.inputs import load_image

FIXTURES = Path(os.environ.get("FCM_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "fixtures" / "seed_repo"
MOB_V2_TFLITE = FIXTURES / "mob_v2_8.tflite"


def main() -> None:
    import onnx
    import onnxruntime as ort
    import tf2onnx
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else MOB_V2_TFLITE
    proto, _ = tf2onnx.convert.from_tflite(str(source), opset=17)
    rng = np.random.default_rng(0)
    images = [load_image(FIXTURES / "ILSVRC2012_val_00000932.JPEG")] + [rng.integers(0, 256, (1, 224, 224, 3)).astype(np.uint8) for _ in range(2)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(proto, path)
        for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
            options = ort.SessionOptions()
            options.graph_optimization_level = level
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for resolver in (OpResolverType.AUTO, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES):
                interpreter = Interpreter(str(source), experimental_op_resolver_type=resolver)
                interpreter.allocate_tensors()
                rows = []
                for x in images:
                    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
                    interpreter.invoke()
                    ref = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).astype(int)[0]
                    got = session.run(None, {session.get_inputs()[0].name: x})[0].astype(int)[0]
                    diff = np.abs(ref - got)
                    rows.append(f"equal {np.mean(diff == 0):.1%}, max diff {diff.max()}, "
                                f"top-5 {'same' if list(np.argsort(-ref)[:5]) == list(np.argsort(-got)[:5]) else 'differs'}, "
                                f"top-1 {'same' if ref.argmax() == got.argmax() else 'differs'}")
                print(f"ORT {level.name} vs interpreter {resolver.name}:")
                for row in rows:
                    print("   ", row)


if __name__ == "__main__":
    main()
