// The float FCM operators as ONNX Runtime custom ops: the fp32 ops (FusedDwPw, FusedPwDw, FusedPwPw,
// FusedPwDwPw) and their fp16 and bf16 forms (Fp16FusedDwPw, ..., Bf16FusedPwDwPw): the shared op class
// (op.h) with one signature over the element type, instantiated per op type and execution provider. The
// kernel object holds the ChainSpec, parsed and validated once at kernel creation; compute checks the
// input shapes and runs. A half op takes every input in its element type and returns its output in it;
// it computes in fp32 and rounds each stage's output to the element type (round to nearest even).
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "op.h"
#include "spec.h"

namespace fcm {

constexpr const char* kDomain = vocabulary::kDomain;

// Reads `<prefix>_activation` and `<prefix>_clip` into an Activation (every float op spells its activations so).
Ort::Status ReadActivation(Attributes& a, const std::string& node, const std::string& prefix, Activation* out);

// An input tensor's values as floats: the tensor's own memory for float, else a widened copy in `store`.
template <typename T>
const float* Widened(const Ort::ConstValue& value, std::vector<float>* store) {
  if constexpr (std::is_same_v<T, float>) {
    return value.GetTensorData<float>();
  } else {
    const size_t count = value.GetTensorTypeAndShapeInfo().GetElementCount();
    const T* data = value.GetTensorData<T>();
    store->resize(count);
    for (size_t i = 0; i < count; ++i) (*store)[i] = data[i].ToFloat();
    return store->data();
  }
}

// Reads the attributes and the weights' shapes of a node into a spec, and checks it.
Ort::Status ParseSpec(const Ort::ConstKernelInfo& info, const std::string& op_name, ChainSpec* spec);

// Shapes of one call, checked against the spec: channel counts, output size, the optional scale.
// n, c, h, w (the input) and out_c, out_h, out_w (the output) mean the same in either layout;
// OutputShape() is Y's shape in the node's layout.
struct CallShapes {
  int64_t n = 0, c = 0, h = 0, w = 0, out_c = 0, out_h = 0, out_w = 0;
  int64_t scale_batch = 0;  // 0: no scale input; else 1 (broadcast over the batch) or n
  bool channels_last = false;  // X and Y are [N, H, W, C] and [N, Ho, Wo, F]

  std::vector<int64_t> OutputShape() const {
    return channels_last ? std::vector<int64_t>{n, out_h, out_w, out_c} : std::vector<int64_t>{n, out_c, out_h, out_w};
  }
};
Ort::Status CheckCall(const ChainSpec& spec, Ort::KernelContext& ctx, CallShapes* shapes);

// The CPU reference kernel of the float ops, for element type T (float, Ort::Float16_t, Ort::BFloat16_t):
// half inputs are widened to float, the chain runs in fp32 with each stage's output rounded to T, and the
// output is rounded to T.
template <typename T>
struct CpuChainKernelT {
  static constexpr bool kChannelsLast = true;  // computes channels_last nodes (see TakesChannelsLast)
  ChainSpec spec;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};
using CpuChainKernel = CpuChainKernelT<float>;
extern template struct CpuChainKernelT<float>;
extern template struct CpuChainKernelT<Ort::Float16_t>;
extern template struct CpuChainKernelT<Ort::BFloat16_t>;

// Whether a kernel type computes channels_last nodes: it says so with `static constexpr bool
// kChannelsLast = true`. A kernel that does not is refused such a node when it is created (an ONNX
// Runtime error), rather than reading NHWC tensors as NCHW.
template <typename Kernel, typename = void>
struct TakesChannelsLast : std::false_type {};
template <typename Kernel>
struct TakesChannelsLast<Kernel, std::void_t<decltype(Kernel::kChannelsLast)>> : std::bool_constant<Kernel::kChannelsLast> {};

// The float ops' inputs and output, all of element type T: X, (W, B) per stage, an optional channel scale;
// Y. A kernel type holds a `ChainSpec spec`, filled by ParseSpec.
template <typename T>
struct FloatSignature {
  static constexpr ONNXTensorElementDataType kType = Ort::TypeToTensorType<T>::type;
  static constexpr ONNXTensorElementDataType kOutputType = kType;
  static size_t InputCount(size_t stages) { return 2 + 2 * stages; }
  static bool Optional(size_t index, size_t stages) { return index == 1 + 2 * stages; }
  static ONNXTensorElementDataType InputType(size_t) { return kType; }
  template <typename Kernel>
  static Ort::Status Init(Kernel& kernel, const Ort::ConstKernelInfo& info, const char* op_name, size_t) {
    Ort::Status status = ParseSpec(info, op_name, &kernel.spec);
    if (status.IsOK() && kernel.spec.channels_last && !TakesChannelsLast<Kernel>::value)
      return Error(kernel.spec.node_name, "channels_last=1: this execution provider's kernels take NCHW only "
                                          "(convert with --layout nchw)");
    return status;
  }
};
using Fp32Signature = FloatSignature<float>;

template <typename Kernel, typename T = float>
struct FusedOp : Op<Kernel, FloatSignature<T>> {
  FusedOp(const char* name, const char* provider, size_t stages) : Op<Kernel, FloatSignature<T>>(name, stages, provider) {}
};

}  // namespace fcm
