// The int8 ops on ONNX Runtime's CUDA execution provider.
#pragma once

#include <memory>
#include <vector>

struct OrtCustomOp;

namespace fcm {
namespace int8 {

// Appends the CUDA forms of every int8 op (QConv, QFused*, QAdd, QMean) to `ops`.
void AddInt8CudaOps(std::vector<std::unique_ptr<OrtCustomOp>>* ops);

}  // namespace int8
}  // namespace fcm
