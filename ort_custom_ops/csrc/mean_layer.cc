#include "mean_layer.h"

#include <type_traits>

namespace fcm {

Ort::Status ParseMeanLayer(const Ort::ConstKernelInfo& info, const std::string& op_name, ONNXTensorElementDataType element,
                           MeanLayerSpec* spec) {
  const std::string node = NodeName(info, op_name);
  spec->node_name = node;
  spec->element = element;
  Attributes a(info, op_name);
  const int64_t keepdims = a.Int("keepdims", 1);  // (ONNX ReduceMean's default)
  const bool channels_last = a.Flag("channels_last");
  if (!a.problem().empty()) return Error(node, a.problem());
  if (keepdims != 0 && keepdims != 1) return Error(node, "keepdims must be 0 or 1, not " + std::to_string(keepdims));
  if (!channels_last) return Error(node, "channels_last must be 1: the op takes [N, H, W, C] tensors only");
  spec->keepdims = keepdims == 1;
  // the input's rank where the model states it (checked again on every call)
  const auto x = StaticShape(info, 0);
  if (!x.empty() && x.size() != 4) return Error(node, "input must be 4-D [N, H, W, C], not " + ShapeText(x));
  return Ort::Status(nullptr);
}

Ort::Status CheckMeanLayerCall(const MeanLayerSpec& spec, Ort::KernelContext& ctx, MeanLayerShapes* s) {
  const std::string& node = spec.node_name;
  const auto x_info = ctx.GetInput(0).GetTensorTypeAndShapeInfo();
  if (x_info.GetElementType() != spec.element) {
    return Error(node, "the input must be of the layer's element type, not type " +
                           std::to_string(static_cast<int>(x_info.GetElementType())));
  }
  const auto x = x_info.GetShape();
  if (x.size() != 4) return Error(node, "input must be 4-D [N, H, W, C], not " + ShapeText(x));
  s->n = x[0], s->h = x[1], s->w = x[2], s->c = x[3];
  s->keepdims = spec.keepdims;
  // (ReduceMean's mean of no values is 0 / 0: a model with such a map is a wrong model)
  if (s->Pixels() == 0) return Error(node, "the input " + ShapeText(x) + " has no pixels to average");
  return Ort::Status(nullptr);
}

namespace {

// The means of X (a call's checked shapes `s`) into Y, element type T.
template <typename T>
void ComputeMeans(Ort::KernelContext& ctx, const MeanLayerShapes& s) {
  const T* x = ctx.GetInput(0).GetTensorData<T>();
  auto y = ctx.GetOutput(0, s.OutputShape());
  T* out = y.GetTensorMutableData<T>();
  const int64_t pixels = s.Pixels();
  // one image per task, its channels' sums in fp32, pixel by pixel in order
  OrtParallelFor(ctx)(static_cast<size_t>(s.n), [&](size_t task) {
    const int64_t image = static_cast<int64_t>(task);
    std::vector<float> sums(static_cast<size_t>(s.c), 0.0f);
    const T* map = x + image * pixels * s.c;
    for (int64_t p = 0; p < pixels; ++p) {
      const T* pixel = map + p * s.c;
      for (int64_t c = 0; c < s.c; ++c) {
        if constexpr (std::is_same_v<T, float>) {
          sums[c] += pixel[c];
        } else {
          sums[c] += pixel[c].ToFloat();
        }
      }
    }
    for (int64_t c = 0; c < s.c; ++c) out[image * s.c + c] = T(sums[c] / static_cast<float>(pixels));
  });
}

}  // namespace

OrtStatusPtr CpuMeanLayerKernel::ComputeV2(OrtKernelContext* context) {
  return Guarded([&]() -> Ort::Status {
    Ort::KernelContext ctx(context);
    MeanLayerShapes s;
    Ort::Status status = CheckMeanLayerCall(spec, ctx, &s);
    if (!status.IsOK()) return status;
    if (spec.element == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
      ComputeMeans<Ort::Float16_t>(ctx, s);
    } else if (spec.element == ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16) {
      ComputeMeans<Ort::BFloat16_t>(ctx, s);
    } else {
      ComputeMeans<float>(ctx, s);
    }
    return Ort::Status(nullptr);
  });
}

}  // namespace fcm
