// The CUDA form of the float spatial-mean layer op (mean_layer.h): Mean, Fp16Mean, Bf16Mean.
#pragma once

#include <memory>

#include "../op.h"  // (before cuda_ops.h: ONNX Runtime's C++ API as the library includes it)
#include "cuda_ops.h"

namespace fcm {

// The CUDA op of type `name` taking and returning tensors of `precision`.
std::unique_ptr<OrtCustomOp> MakeCudaMeanLayerOp(const char* name, Precision precision);

}  // namespace fcm
