// The FCM operators as ONNX Runtime custom ops: one op class, instantiated per op type (FusedDwPw,
// FusedPwDw, FusedPwPw, FusedPwDwPw) and execution provider. The kernel object holds the ChainSpec,
// parsed and validated once at kernel creation; compute checks the input shapes and runs.
#pragma once

#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT

#include <string>

#include "spec.h"

namespace fcm {

constexpr const char* kDomain = "ai.fcm";

// Reads the attributes and the weights' shapes of a node into a spec, and checks it.
Ort::Status ParseSpec(const Ort::ConstKernelInfo& info, const std::string& op_name, ChainSpec* spec);

// Shapes of one call, checked against the spec: channel counts, output size, the optional scale.
struct CallShapes {
  int64_t n = 0, c = 0, h = 0, w = 0, out_c = 0, out_h = 0, out_w = 0;
  int64_t scale_batch = 0;  // 0: no scale input
};
Ort::Status CheckCall(const ChainSpec& spec, Ort::KernelContext& ctx, CallShapes* shapes);

struct CpuChainKernel {
  ChainSpec spec;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

template <typename Kernel>
struct FusedOp : Ort::CustomOpBase<FusedOp<Kernel>, Kernel, /*WithStatus=*/true> {
  FusedOp(const char* name, const char* provider, size_t stages) : name_(name), provider_(provider), stages_(stages) {}

  const char* GetName() const { return name_; }
  const char* GetExecutionProviderType() const { return provider_; }
  size_t GetInputTypeCount() const { return 2 + 2 * stages_; }  // X, (W, B) per stage, optional scale
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 1 + 2 * stages_ ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                                    : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** op_kernel) const {
    auto* kernel = new Kernel();
    Ort::Status status(nullptr);
    try {
      status = ParseSpec(Ort::ConstKernelInfo(info), name_, &kernel->spec);
    } catch (const Ort::Exception& e) {
      status = Ort::Status(e);
    }
    if (!status.IsOK()) {
      delete kernel;
      return status.release();
    }
    *op_kernel = kernel;
    return nullptr;
  }

 private:
  const char* name_;
  const char* provider_;
  size_t stages_;
};

}  // namespace fcm
