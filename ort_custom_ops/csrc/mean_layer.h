// The float spatial-mean layer op (Mean, Fp16Mean, Bf16Mean: fcm_core/vocabulary.py's FLOAT_LAYER_ATTRIBUTES):
// the mean over H and W of a channels-last map, a network's global average pool or a squeeze-and-excitation
// mean, in one pass over the map:
//   Y[n, c] = (sum over h, w of X[n, h, w, c]) / (H * W),
// X [N, H, W, C], Y [N, 1, 1, C] (keepdims = 1, the default) or [N, C] (keepdims = 0), both of the layer's
// element type. The sum is fp32 (half types: X widened as it is read) and the mean is rounded once to the
// element type: what ONNX's ReduceMean over axes [1, 2] computes on the widened map, then a Cast. The
// attributes are read and checked once, when ONNX Runtime creates the kernel (ParseMeanLayer); each call
// checks the input (CheckMeanLayerCall): a wrong rank or element type, or a map of no pixels, is an error
// status, never an out-of-bounds access.
#pragma once

#include <string>
#include <vector>

#include "op.h"

namespace fcm {

struct MeanLayerSpec {
  std::string node_name;
  ONNXTensorElementDataType element = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;  // X's and Y's
  bool keepdims = true;
};

// One call's shapes, checked against the spec.
struct MeanLayerShapes {
  int64_t n = 0, h = 0, w = 0, c = 0;
  bool keepdims = true;
  int64_t Pixels() const { return h * w; }
  std::vector<int64_t> OutputShape() const {
    return keepdims ? std::vector<int64_t>{n, 1, 1, c} : std::vector<int64_t>{n, c};
  }
};

// `element`: the op's element type (float, float16, bfloat16).
Ort::Status ParseMeanLayer(const Ort::ConstKernelInfo& info, const std::string& op_name, ONNXTensorElementDataType element,
                           MeanLayerSpec* spec);
Ort::Status CheckMeanLayerCall(const MeanLayerSpec& spec, Ort::KernelContext& ctx, MeanLayerShapes* shapes);

// The CPU reference kernel, for every element type (the spec's): each image's pixels summed in order,
// per channel.
struct CpuMeanLayerKernel {
  MeanLayerSpec spec;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

// X (element type T); Y.
template <typename T>
struct MeanLayerSignature {
  static constexpr ONNXTensorElementDataType kType = Ort::TypeToTensorType<T>::type;
  static constexpr ONNXTensorElementDataType kOutputType = kType;
  static size_t InputCount(size_t) { return 1; }
  static bool Optional(size_t, size_t) { return false; }
  static ONNXTensorElementDataType InputType(size_t) { return kType; }
  template <typename Kernel>
  static Ort::Status Init(Kernel& kernel, const Ort::ConstKernelInfo& info, const char* op_name, size_t) {
    return ParseMeanLayer(info, op_name, kType, &kernel.spec);
  }
};

template <typename Kernel, typename T>
struct MeanLayerOp : Op<Kernel, MeanLayerSignature<T>> {
  MeanLayerOp(const char* name, const char* provider) : Op<Kernel, MeanLayerSignature<T>>(name, 1, provider) {}
};

}  // namespace fcm
