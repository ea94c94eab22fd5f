#include "conv_layer.h"

#include <sstream>
#include <type_traits>

namespace fcm {
namespace {

// Whether the node carries attribute `name` (of any type): ONNX Runtime lists no attributes, so each
// type is asked for.
bool Carries(const Ort::ConstKernelInfo& info, const char* name) {
  try {
    info.GetAttributes<int64_t>(name);
    return true;
  } catch (const Ort::Exception&) {
  }
  try {
    info.GetAttribute<std::string>(name);
    return true;
  } catch (const Ort::Exception&) {
  }
  try {
    info.GetAttribute<int64_t>(name);
    return true;
  } catch (const Ort::Exception&) {
  }
  return false;
}

}  // namespace

Ort::Status ParseConvLayer(const Ort::ConstKernelInfo& info, const std::string& op_name, ConvLayerSpec* spec) {
  const std::string node = NodeName(info, op_name);
  spec->node_name = node;
  // ONNX Conv attributes this op does not take: a node with them would mean what the op does not compute
  for (const char* other : {"dilations", "auto_pad"}) {
    if (Carries(info, other)) return Error(node, std::string("attribute ") + other + " is not in the op vocabulary of " + op_name);
  }
  Attributes a(info, op_name);
  const auto kernel = a.Ints("kernel_shape", {1, 1}, 1, /*required=*/true);
  const auto strides = a.Ints("strides", {1, 1}, 1);
  const auto pads = a.Ints("pads", {0, 0, 0, 0}, 0);
  spec->group = a.Int("group", 1);
  const bool channels_last = a.Flag("channels_last");
  if (!a.problem().empty()) return Error(node, a.problem());
  if (!channels_last) return Error(node, "channels_last must be 1: the op takes [N, H, W, C] tensors only");
  if (spec->group < 1) return Error(node, "group must be at least 1");
  spec->kh = kernel[0], spec->kw = kernel[1], spec->sh = strides[0], spec->sw = strides[1];
  for (int i = 0; i < 4; ++i) spec->pads[i] = pads[i];
  Ort::Status status = ReadActivation(a, node, "stage1", &spec->activation);
  if (!status.IsOK()) return status;
  // the weights' and bias' shapes where the model states them (checked again on every call)
  const auto w = StaticShape(info, 1), b = StaticShape(info, 2);
  if (!w.empty() && w.size() != 4) return Error(node, "weights must be [F, C / group, KH, KW], not " + ShapeText(w));
  if (w.size() == 4 && ((w[2] >= 0 && w[2] != spec->kh) || (w[3] >= 0 && w[3] != spec->kw))) {
    return Error(node, "weights " + ShapeText(w) + " do not match kernel_shape " + ShapeText(kernel));
  }
  if (!b.empty() && b.size() != 1) return Error(node, "bias must be [F], not " + ShapeText(b));
  return Ort::Status(nullptr);
}

Ort::Status CheckConvLayerCall(const ConvLayerSpec& spec, ONNXTensorElementDataType element, Ort::KernelContext& ctx,
                               ConvLayerShapes* s) {
  const std::string& node = spec.node_name;
  const auto x_info = ctx.GetInput(0).GetTensorTypeAndShapeInfo();
  const auto x = x_info.GetShape();
  const ONNXTensorElementDataType x_type = x_info.GetElementType();
  s->x_float = x_type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && element != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  if (x_type != element && !(s->x_float && spec.group == 1)) {
    return Error(node, "the input must be of the layer's element type (a half layer of group 1: or float), not type " +
                           std::to_string(static_cast<int>(x_type)));
  }
  const auto w = ctx.GetInput(1).GetTensorTypeAndShapeInfo().GetShape();
  const auto b = ctx.GetInput(2).GetTensorTypeAndShapeInfo().GetShape();
  if (x.size() != 4) return Error(node, "input must be 4-D [N, H, W, C], not " + ShapeText(x));
  if (w.size() != 4 || w[2] != spec.kh || w[3] != spec.kw) {
    std::ostringstream m;
    m << "weights must be [F, C / group, " << spec.kh << ", " << spec.kw << "], not " << ShapeText(w);
    return Error(node, m.str());
  }
  s->n = x[0], s->h = x[1], s->w = x[2], s->c = x[3], s->f = w[0];
  s->depthwise = spec.group > 1;  // (group = C > 1, checked below)
  if (spec.group == 1) {
    if (w[1] != s->c) {
      std::ostringstream m;
      m << "weights take " << w[1] << " input channels, the input has " << s->c;
      return Error(node, m.str());
    }
  } else if (spec.group != s->c || s->f != s->c || w[1] != 1) {
    std::ostringstream m;
    m << "group " << spec.group << " with input " << ShapeText(x) << " and weights " << ShapeText(w)
      << ": the op takes group 1, or a depthwise convolution (group = input channels = output channels, weights [C, 1, K, K])";
    return Error(node, m.str());
  }
  if (b.size() != 1 || b[0] != s->f) {
    std::ostringstream m;
    m << "bias must be [" << s->f << "], not " << ShapeText(b);
    return Error(node, m.str());
  }
  const int64_t padded_h = s->h + spec.pads[0] + spec.pads[2], padded_w = s->w + spec.pads[1] + spec.pads[3];
  if (padded_h < spec.kh || padded_w < spec.kw) {
    return Error(node, "the padded input " + ShapeText({padded_h, padded_w}) + " is smaller than the kernel");
  }
  s->out_h = (padded_h - spec.kh) / spec.sh + 1;
  s->out_w = (padded_w - spec.kw) / spec.sw + 1;
  int64_t* counts[2] = {&s->scale_count, &s->shift_count};
  for (size_t i = 0; i < 2; ++i) {
    const Ort::ConstValue v = InputAffine(ctx, 3 + i);
    *counts[i] = 0;
    if (v == nullptr) continue;
    const auto shape = v.GetTensorTypeAndShapeInfo().GetShape();
    const int64_t count = static_cast<int64_t>(v.GetTensorTypeAndShapeInfo().GetElementCount());
    if (shape.size() > 1 || (count != 1 && count != s->c)) {
      std::ostringstream m;
      m << "the input " << (i == 0 ? "scale" : "shift") << " must be [" << s->c << "] or [1], not " << ShapeText(shape);
      return Error(node, m.str());
    }
    *counts[i] = count;
  }
  return Ort::Status(nullptr);
}

namespace {

// v rounded to T (for half types; float: v).
template <typename T>
float Rounded(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return T(v).ToFloat();
  }
}

}  // namespace

template <typename T>
OrtStatusPtr CpuConvLayerKernelT<T>::ComputeV2(OrtKernelContext* context) {
  return Guarded([&]() -> Ort::Status {
    Ort::KernelContext ctx(context);
    ConvLayerShapes s;
    Ort::Status status = CheckConvLayerCall(spec, Ort::TypeToTensorType<T>::type, ctx, &s);
    if (!status.IsOK()) return status;
    std::vector<float> xs, ws, bs, scales, shifts;  // half inputs as floats
    const float* x = nullptr;
    if (s.x_float) {  // an fp32 X, rounded to T (as a Cast to T before the layer)
      const Ort::ConstValue x_value = ctx.GetInput(0);
      const float* data = x_value.GetTensorData<float>();
      xs.resize(x_value.GetTensorTypeAndShapeInfo().GetElementCount());
      for (size_t i = 0; i < xs.size(); ++i) xs[i] = Rounded<T>(data[i]);
      x = xs.data();
    } else {
      x = Widened<T>(ctx.GetInput(0), &xs);
    }
    const float* w = Widened<T>(ctx.GetInput(1), &ws);
    const float* b = Widened<T>(ctx.GetInput(2), &bs);
    const float* scale = s.scale_count ? Widened<T>(InputAffine(ctx, 3), &scales) : nullptr;
    const float* shift = s.shift_count ? Widened<T>(InputAffine(ctx, 4), &shifts) : nullptr;
    // X * XS + XB of input channel c, rounded to T after each step (conv_layer.h)
    auto input = [&](float v, int64_t c) {
      if (scale != nullptr) v = Rounded<T>(v * scale[s.scale_count == 1 ? 0 : c]);
      if (shift != nullptr) v = Rounded<T>(v + shift[s.shift_count == 1 ? 0 : c]);
      return v;
    };
    auto y = ctx.GetOutput(0, s.OutputShape());
    T* out = y.GetTensorMutableData<T>();
    const int64_t per_filter = s.depthwise ? 1 : s.c;  // input channels each output channel reads
    // one output row (image, oy) per task
    OrtParallelFor(ctx)(static_cast<size_t>(s.n * s.out_h), [&](size_t task) {
      const int64_t image = static_cast<int64_t>(task) / s.out_h, oy = static_cast<int64_t>(task) % s.out_h;
      for (int64_t ox = 0; ox < s.out_w; ++ox) {
        T* pixel = out + ((image * s.out_h + oy) * s.out_w + ox) * s.f;
        for (int64_t f = 0; f < s.f; ++f) {
          float acc = b[f];
          const int64_t c0 = s.depthwise ? f : 0;
          for (int64_t ky = 0; ky < spec.kh; ++ky) {
            const int64_t iy = oy * spec.sh - spec.pads[0] + ky;
            if (iy < 0 || iy >= s.h) continue;
            for (int64_t kx = 0; kx < spec.kw; ++kx) {
              const int64_t ix = ox * spec.sw - spec.pads[1] + kx;
              if (ix < 0 || ix >= s.w) continue;
              const float* in = x + ((image * s.h + iy) * s.w + ix) * s.c + c0;
              const float* filter = w + f * per_filter * spec.kh * spec.kw + ky * spec.kw + kx;
              for (int64_t c = 0; c < per_filter; ++c) acc += input(in[c], c0 + c) * filter[c * spec.kh * spec.kw];
            }
          }
          acc = Rounded<T>(acc);  // (the sum in T first: see conv_layer.h)
          pixel[f] = T(spec.activation(acc));
        }
      }
    });
    return Ort::Status(nullptr);
  });
}

template struct CpuConvLayerKernelT<float>;
template struct CpuConvLayerKernelT<Ort::Float16_t>;
template struct CpuConvLayerKernelT<Ort::BFloat16_t>;

}  // namespace fcm
