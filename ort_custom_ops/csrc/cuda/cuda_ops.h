// The FCM ops for ONNX Runtime's CUDA execution provider.
#pragma once

#include <cstddef>
#include <memory>

struct OrtCustomOp;

namespace fcm {

// The CUDA op of type `name` (FusedDwPw, FusedPwDw, FusedPwPw, FusedPwDwPw) with `stages` stages.
std::unique_ptr<OrtCustomOp> MakeCudaOp(const char* name, size_t stages);

}  // namespace fcm
