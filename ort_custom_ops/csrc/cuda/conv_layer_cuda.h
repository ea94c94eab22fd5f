// The CUDA form of the float convolution layer op (conv_layer.h): Conv, Fp16Conv, Bf16Conv.
#pragma once

#include <memory>

#include "../op.h"  // (before cuda_ops.h: ONNX Runtime's C++ API as the library includes it)
#include "cuda_ops.h"

namespace fcm {

// The CUDA op of type `name` taking and returning tensors of `precision`.
std::unique_ptr<OrtCustomOp> MakeCudaConvLayerOp(const char* name, Precision precision);

}  // namespace fcm
