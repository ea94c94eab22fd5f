// The int8 operators of the ai.fcm domain (CPU execution provider), all NHWC int8 with TFLite's
// integer arithmetic (cpu/int8_kernels.h):
//   QConv                                   one convolution layer (standard or depthwise)
//   QFusedDwPw, QFusedPwDw, QFusedPwPw,     a chain of depthwise/pointwise stages, each requantized to
//   QFusedPwDwPw                            int8 as between TFLite layers, optionally + a residual ADD
//   QAdd                                    TFLite's int8 ADD of two tensors of one shape
//   QMean                                   XNNPACK's int8 MEAN over H and W
// Every attribute (fcm_core/vocabulary.py declares them) is read and checked once, when ONNX Runtime
// creates the kernel; compute checks the input shapes against it, so a wrong model gets an error
// status, never an out-of-bounds access. The op class, attribute reader and error reporting are the
// ones every precision shares (op.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cpu/int8_kernels.h"
#include "op.h"

namespace fcm {
namespace int8 {

// One call's tensors and shapes, checked against the node's attributes by the kernel's Bind: what a
// CPU or a CUDA compute needs (the output is allocated by then).
struct ConvCall {
  ConvLayer layer;  // with in_c known
  const int8_t* x = nullptr;
  const int8_t* weights = nullptr;
  const int32_t* bias = nullptr;  // may be null
  int8_t* y = nullptr;
  int64_t n = 0, h = 0, w = 0, out_h = 0, out_w = 0;
};
struct ChainCall {
  Chain chain;  // with the first stage's in_c known
  const int8_t* x = nullptr;
  std::vector<const int8_t*> weights;
  std::vector<const int32_t*> biases;
  int8_t* y = nullptr;
  int64_t n = 0, h = 0, w = 0, out_h = 0, out_w = 0, out_c = 0;
};
struct AddCall {
  const int8_t* a = nullptr;
  const int8_t* b = nullptr;
  int8_t* y = nullptr;
  size_t count = 0;
};
struct MeanCall {
  const int8_t* x = nullptr;
  int8_t* y = nullptr;
  int64_t n = 0, h = 0, w = 0, c = 0;
};

struct QConvKernel {
  ConvLayer layer;  // in_c filled per call from the weights
  std::string node;
  static size_t InputCount(size_t) { return 3; }  // X, W, optional B
  static bool Optional(size_t index, size_t) { return index == 2; }
  static ONNXTensorElementDataType InputType(size_t index) {
    return index == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
  }
  Ort::Status Init(const Ort::ConstKernelInfo& info, const std::string& op_name, size_t stages);
  Ort::Status Bind(Ort::KernelContext& ctx, ConvCall* call) const;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

struct QChainKernel {
  Chain chain;  // the first stage's in_c filled per call from its weights
  std::string node;
  static size_t InputCount(size_t stages) { return 1 + 2 * stages; }  // X, (W, B) per stage
  static bool Optional(size_t, size_t) { return false; }
  static ONNXTensorElementDataType InputType(size_t index) {
    return index > 0 && index % 2 == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32 : ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
  }
  Ort::Status Init(const Ort::ConstKernelInfo& info, const std::string& op_name, size_t stages);
  Ort::Status Bind(Ort::KernelContext& ctx, ChainCall* call) const;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

struct QAddKernel {
  AddRequantizer add;
  std::string node;
  static size_t InputCount(size_t) { return 2; }
  static bool Optional(size_t, size_t) { return false; }
  static ONNXTensorElementDataType InputType(size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8; }
  Ort::Status Init(const Ort::ConstKernelInfo& info, const std::string& op_name, size_t stages);
  Ort::Status Bind(Ort::KernelContext& ctx, AddCall* call) const;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

struct QMeanKernel {
  MeanParams params;
  bool keepdims = false;
  std::string node;
  static size_t InputCount(size_t) { return 1; }
  static bool Optional(size_t, size_t) { return false; }
  static ONNXTensorElementDataType InputType(size_t) { return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8; }
  Ort::Status Init(const Ort::ConstKernelInfo& info, const std::string& op_name, size_t stages);
  Ort::Status Bind(Ort::KernelContext& ctx, MeanCall* call) const;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

// The int8 ops' inputs and output: types and input counts from the kernel, one int8 output; the kernel's
// Init reads its attributes.
template <typename Kernel>
struct Int8Signature {
  static constexpr ONNXTensorElementDataType kOutputType = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
  static size_t InputCount(size_t stages) { return Kernel::InputCount(stages); }
  static bool Optional(size_t index, size_t stages) { return Kernel::Optional(index, stages); }
  static ONNXTensorElementDataType InputType(size_t index) { return Kernel::InputType(index); }
  static Ort::Status Init(Kernel& kernel, const Ort::ConstKernelInfo& info, const char* op_name, size_t stages) {
    return kernel.Init(info, op_name, stages);
  }
};

// The shared op class for an int8 kernel, on the execution provider `ep` (the CPU kernels above, or their
// CUDA forms in cuda/int8_cuda.cu).
template <typename Kernel>
struct Int8Op : Op<Kernel, Int8Signature<Kernel>> {
  Int8Op(const char* name, size_t stages, const char* ep = "CPUExecutionProvider")
      : Op<Kernel, Int8Signature<Kernel>>(name, stages, ep) {}
};

// The stage types of a fused int8 op (vocabulary.h's kFusedKinds): "QFusedPwDwPw" -> pw, dw, pw; {} if unknown.
std::vector<bool> DepthwiseStages(const std::string& op_name);

// Appends every int8 op (CPU) to `ops`.
void AddInt8Ops(std::vector<std::unique_ptr<OrtCustomOp>>* ops);

}  // namespace int8
}  // namespace fcm
