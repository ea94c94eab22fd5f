// The float convolution layer op (Conv, Fp16Conv, Bf16Conv: fcm_core/vocabulary.py's FLOAT_LAYER_ATTRIBUTES):
// one KxK convolution, standard (group 1) or depthwise (group = C = F), channels-last, with its bias and
// activation in the epilogue:
//   Y[n, oy, ox, f] = act(B[f] + sum over ky, kx and f's input channels c of X[n, iy, ix, c] W[f, c', ky, kx]),
//   iy = oy * sh - pad_top + ky, ix = ox * sw - pad_left + kx, X zero outside the image.
// X [N, H, W, C], W [F, C / group, KH, KW] (ONNX Conv's layout), B [F], Y [N, Ho, Wo, F], all of one element
// type, except that a half layer of group 1 may take an fp32 X, which it rounds to its type first (what a
// Cast before it computes: a half model's input Cast folded into its stem, ort_custom_ops/lowering/half.py). Optional inputs 3 and 4, an input scale XS and shift XB ([C] or [1] values: a model's input
// normalization), make the convolution's input X * XS + XB per channel (half types: rounded to the element
// type after the product and after the sum, as ONNX's Mul and Add in that type), zero outside the image; half types accumulate in fp32 and round the sum plus bias to the element type before the activation,
// and its result again: what ONNX's Conv and activation operators in that type compute, so that a half model
// with the layer stays as close to the unfused half model as rounding order allows (one rounding fewer
// before an activation moves values by an ulp there, which a deep network amplifies). The attributes are read and checked once, when ONNX Runtime
// creates the kernel (ParseConvLayer); each call checks the tensors' shapes against them (CheckConvLayerCall),
// so a wrong model gets an error status, never an out-of-bounds access.
#pragma once

#include <string>
#include <type_traits>
#include <vector>

#include "epilogue.h"
#include "fused_op.h"

namespace fcm {

struct ConvLayerSpec {
  std::string node_name;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1;
  int64_t pads[4] = {0, 0, 0, 0};  // top, left, bottom, right
  int64_t group = 1;
  Activation activation;
};

// One call's shapes, checked against the spec.
struct ConvLayerShapes {
  int64_t n = 0, h = 0, w = 0, c = 0, f = 0, out_h = 0, out_w = 0;
  bool depthwise = false;
  bool x_float = false;  // a half layer's X in fp32 (rounded to the layer's type as it is read)
  int64_t scale_count = 0, shift_count = 0;  // the input scale's and shift's values: 0 (none), 1 (every channel) or C
  std::vector<int64_t> OutputShape() const { return {n, out_h, out_w, f}; }
};

Ort::Status ParseConvLayer(const Ort::ConstKernelInfo& info, const std::string& op_name, ConvLayerSpec* spec);
// `element`: the layer's element type (W's, B's and Y's).
Ort::Status CheckConvLayerCall(const ConvLayerSpec& spec, ONNXTensorElementDataType element, Ort::KernelContext& ctx,
                               ConvLayerShapes* shapes);

// The input scale or shift (input 3 or 4) as given to one call: nullptr when the node has none.
inline Ort::ConstValue InputAffine(Ort::KernelContext& ctx, size_t index) {
  return ctx.GetInputCount() > index ? ctx.GetInput(index) : Ort::ConstValue{static_cast<const OrtValue*>(nullptr)};
}

// The CPU reference kernel, for element type T (float, Ort::Float16_t, Ort::BFloat16_t).
template <typename T>
struct CpuConvLayerKernelT {
  ConvLayerSpec spec;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};
extern template struct CpuConvLayerKernelT<float>;
extern template struct CpuConvLayerKernelT<Ort::Float16_t>;
extern template struct CpuConvLayerKernelT<Ort::BFloat16_t>;

// X, W, B (required), XS, XB (optional), all of element type T (a half type's X: T or fp32, checked on
// each call); Y.
template <typename T>
struct ConvLayerSignature {
  static constexpr ONNXTensorElementDataType kType = Ort::TypeToTensorType<T>::type;
  static constexpr ONNXTensorElementDataType kOutputType = kType;
  static size_t InputCount(size_t) { return 5; }
  static bool Optional(size_t index, size_t) { return index >= 3; }
  static ONNXTensorElementDataType InputType(size_t index) {
    return index == 0 && !std::is_same_v<T, float> ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED : kType;
  }
  template <typename Kernel>
  static Ort::Status Init(Kernel& kernel, const Ort::ConstKernelInfo& info, const char* op_name, size_t) {
    return ParseConvLayer(info, op_name, &kernel.spec);
  }
};

template <typename Kernel, typename T>
struct ConvLayerOp : Op<Kernel, ConvLayerSignature<T>> {
  ConvLayerOp(const char* name, const char* provider) : Op<Kernel, ConvLayerSignature<T>>(name, 1, provider) {}
};

}  // namespace fcm
