// The int8 operators of the ai.fcm domain (CPU execution provider), all NHWC int8 with TFLite's
// integer arithmetic (int8_kernels.h):
//   QConv                                   one convolution layer (standard or depthwise)
//   QFusedDwPw, QFusedPwDw, QFusedPwPw,     a chain of depthwise/pointwise stages, each requantized to
//   QFusedPwDwPw                            int8 as between TFLite layers, optionally + a residual ADD
//   QAdd                                    TFLite's int8 ADD of two tensors of one shape
//   QMean                                   XNNPACK's int8 MEAN over H and W
// Every attribute (ort_custom_ops/int8_ops.py lists them) is read and checked once, when ONNX Runtime
// creates the kernel; compute checks the input shapes against it, so a wrong model gets an error
// status, never an out-of-bounds access.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <memory>
#include <string>
#include <vector>

#include "int8_kernels.h"

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

// Runs `body` (returning an Ort::Status), turning exceptions into a status for ONNX Runtime.
template <typename F>
OrtStatusPtr Guarded(F&& body) {
  try {
    Ort::Status status = body();
    return status.IsOK() ? nullptr : status.release();
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  } catch (const std::exception& e) {
    return Ort::Status(e.what(), ORT_RUNTIME_EXCEPTION).release();
  }
}

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

// One op class for every int8 kernel: types and input counts from the kernel, one int8 output, on
// the execution provider `ep` (the CPU kernels above, or their CUDA forms in cuda/int8_cuda.cu).
template <typename Kernel>
struct Int8Op : Ort::CustomOpBase<Int8Op<Kernel>, Kernel, /*WithStatus=*/true> {
  Int8Op(const char* name, size_t stages, const char* ep = "CPUExecutionProvider") : name_(name), ep_(ep), stages_(stages) {}

  const char* GetName() const { return name_; }
  const char* GetExecutionProviderType() const { return ep_; }
  size_t GetInputTypeCount() const { return Kernel::InputCount(stages_); }
  ONNXTensorElementDataType GetInputType(size_t index) const { return Kernel::InputType(index); }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return Kernel::Optional(index, stages_) ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                                            : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8; }

  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** op_kernel) const {
    auto kernel = std::make_unique<Kernel>();
    Ort::Status status(nullptr);
    try {
      status = kernel->Init(Ort::ConstKernelInfo(info), name_, stages_);
    } catch (const Ort::Exception& e) {
      status = Ort::Status(e);
    } catch (const std::exception& e) {
      status = Ort::Status(e.what(), ORT_INVALID_ARGUMENT);
    }
    if (!status.IsOK()) return status.release();
    *op_kernel = kernel.release();
    return nullptr;
  }

 private:
  const char* name_;
  const char* ep_;
  size_t stages_;
};

// The stage types of a fused int8 op, from its name ("QFusedPwDwPw" -> pw, dw, pw); {} if unknown.
std::vector<bool> DepthwiseStages(const std::string& op_name);

// The fused int8 op types and their stage counts.
struct FusedKind {
  const char* name;
  size_t stages;
};
inline constexpr FusedKind kFusedKinds[] = {{"QFusedDwPw", 2}, {"QFusedPwDw", 2}, {"QFusedPwPw", 2}, {"QFusedPwDwPw", 3}};

// Appends every int8 op (CPU) to `ops`.
void AddInt8Ops(std::vector<std::unique_ptr<OrtCustomOp>>* ops);

}  // namespace int8
}  // namespace fcm
