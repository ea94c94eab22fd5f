#include "int8_ops.h"

#include <cmath>
#include <sstream>

namespace fcm {
namespace int8 {
namespace {

// The shared attribute reader (op.h) with the int8 attributes' checks.
class Int8Attributes : public Attributes {
 public:
  using Attributes::Attributes;

  // A positive, finite float32 scale.
  float Scale(const std::string& name) {
    float value = 0.f;
    if (!Read(name, &value)) return 1.f;
    if (!(std::isfinite(value) && value > 0.f)) Fail(name + " must be a positive finite scale");
    return value;
  }
  // An int8 zero point.
  int32_t ZeroPoint(const std::string& name) {
    int64_t value = 0;
    if (!Read(name, &value)) return 0;
    if (value < -128 || value > 127) Fail(name + " must be in -128..127");
    return static_cast<int32_t>(value);
  }
  // [lo, hi] within int8.
  void Clamp(const std::string& name, int32_t* lo, int32_t* hi) {
    std::vector<int64_t> v;
    *lo = -128, *hi = 127;
    if (!Read(name, &v)) return;
    if (v.size() != 2 || v[0] < -128 || v[1] > 127 || v[0] > v[1]) {
      Fail(name + " must be [lo, hi] with -128 <= lo <= hi <= 127");
      return;
    }
    *lo = static_cast<int32_t>(v[0]), *hi = static_cast<int32_t>(v[1]);
  }
  // Per-channel positive finite scales (at least one).
  std::vector<float> Scales(const std::string& name) {
    std::vector<float> v;
    if (!Read(name, &v)) return {1.f};
    if (v.empty()) Fail(name + " must hold one scale per output channel");
    for (float s : v) {
      if (!(std::isfinite(s) && s > 0.f)) Fail(name + " must hold positive finite scales");
    }
    return v.empty() ? std::vector<float>{1.f} : v;
  }
  // Optional integers: empty when the attribute is missing.
  std::vector<int64_t> OptionalInts(const std::string& name) {
    std::vector<int64_t> v;
    TryRead(name, &v);
    return v;
  }
  Scheme ReadScheme() {
    std::string name = "fp32";
    TryRead("scheme", &name);
    Scheme scheme = Scheme::kFp32;
    if (!ParseScheme(name, &scheme)) Fail("scheme must be 'fp32' or 'fixed_point', not '" + name + "'");
    return scheme;
  }
};

// The requantization of a convolution with input (x_scale, x_zero_point) whose output attributes
// carry `prefix` ("" for QConv: w_scales, y_scale, ...; "stage2_" for a chain's second stage).
void ReadRequantizer(Int8Attributes& a, const std::string& prefix, Scheme scheme, float x_scale, Requantizer* out,
                     float* y_scale, int32_t* y_zero_point) {
  const std::vector<float> w_scales = a.Scales(prefix + "w_scales");
  *y_scale = a.Scale(prefix + "y_scale");
  *y_zero_point = a.ZeroPoint(prefix + "y_zero_point");
  int32_t lo, hi;
  a.Clamp(prefix + "clamp", &lo, &hi);
  out->Prepare(scheme, x_scale, w_scales, *y_scale, *y_zero_point, lo, hi);
  // An optional activation table (256 int8 values, indexed by the requantized value + 128) and the
  // quantization of its output, which is then the layer's.
  const std::vector<int64_t> table = a.OptionalInts(prefix + "table");
  out->table.clear();
  if (table.empty()) return;
  if (table.size() != 256) a.Fail(prefix + "table must hold 256 values");
  for (int64_t v : table) {
    if (v < -128 || v > 127) a.Fail(prefix + "table values must be int8");
  }
  if (table.size() == 256) {
    for (int64_t v : table) out->table.push_back(static_cast<int8_t>(v));
  }
  *y_scale = a.Scale(prefix + "table_y_scale");
  *y_zero_point = a.ZeroPoint(prefix + "table_y_zero_point");
}

std::vector<int64_t> Shape(const Ort::ConstValue& value) { return value.GetTensorTypeAndShapeInfo().GetShape(); }

bool Known(const std::vector<int64_t>& shape) {
  if (shape.empty()) return false;
  for (int64_t d : shape) {
    if (d < 0) return false;
  }
  return true;
}

// Checks a convolution's weights (and bias, when given) against its geometry; fills in_c of a
// standard convolution from the weights. Empty when they fit.
std::string CheckWeights(ConvGeometry* g, const std::vector<int64_t>& w, const std::vector<int64_t>* b) {
  std::ostringstream m;
  if (g->depthwise) {
    if (w.size() != 3 || w[0] != g->kh || w[1] != g->kw || w[2] != g->out_c) {
      m << "depthwise weights must be [" << g->kh << ", " << g->kw << ", " << g->out_c << "] ([KH, KW, C * M]), not "
        << ShapeText(w);
    }
  } else if (g->kh == 1 && g->kw == 1 && w.size() == 2) {  // pointwise [F, C]
    if (w[0] != g->out_c || w[1] <= 0) m << "pointwise weights must be [" << g->out_c << ", C], not " << ShapeText(w);
    else g->in_c = w[1];
  } else if (w.size() != 4 || w[0] != g->out_c || w[1] != g->kh || w[2] != g->kw || w[3] <= 0) {
    m << "weights must be [" << g->out_c << ", " << g->kh << ", " << g->kw << ", C] ([F, KH, KW, C]), not " << ShapeText(w);
  } else {
    g->in_c = w[3];
  }
  if (m.str().empty() && b != nullptr && (b->size() != 1 || (*b)[0] != g->out_c)) {
    m << "bias must be [" << g->out_c << "], not " << ShapeText(*b);
  }
  return m.str();
}

// An input of [N, H, W, C] with the channel count the layer takes.
std::string CheckImage(const std::vector<int64_t>& x, int64_t channels) {
  std::ostringstream m;
  if (x.size() != 4) {
    m << "input must be 4-D [N, H, W, C], not " << ShapeText(x);
  } else if (x[3] != channels) {
    m << "input has " << x[3] << " channels, the layer takes " << channels;
  }
  return m.str();
}

}  // namespace

// ---- QConv ------------------------------------------------------------------------------------------

Ort::Status QConvKernel::Init(const Ort::ConstKernelInfo& info, const std::string& op_name, size_t) {
  node = NodeName(info, op_name);
  Int8Attributes a(info, op_name);
  const Scheme scheme = a.ReadScheme();
  ConvGeometry& g = layer.geometry;
  g.depthwise = a.Flag("depthwise");
  const auto kernel = a.Ints("kernel_shape", {1, 1}), strides = a.Ints("strides", {1, 1});
  const auto dilations = a.Ints("dilations", {1, 1}), pads = a.Ints("pads", {0, 0, 0, 0});
  g.kh = kernel[0], g.kw = kernel[1], g.sh = strides[0], g.sw = strides[1], g.dh = dilations[0], g.dw = dilations[1];
  for (int k = 0; k < 4; ++k) g.pads[k] = pads[k];
  const float x_scale = a.Scale("x_scale");
  layer.x_zero_point = a.ZeroPoint("x_zero_point");
  float y_scale;
  int32_t y_zp;
  ReadRequantizer(a, "", scheme, x_scale, &layer.requantize, &y_scale, &y_zp);
  if (!a.problem().empty()) return Error(node, a.problem());
  g.out_c = static_cast<int64_t>(layer.requantize.channels());
  g.in_c = g.depthwise ? 1 : 0;  // known from the weights (depthwise: checked per call against X)
  const auto w = StaticShape(info, 1);
  if (Known(w)) {
    const auto b = info.GetInputCount() > 2 ? StaticShape(info, 2) : std::vector<int64_t>{};
    const std::string problem = CheckWeights(&g, w, Known(b) ? &b : nullptr);
    if (!problem.empty()) return Error(node, problem);
  }
  ConvGeometry probe = g;
  if (probe.in_c <= 0) probe.in_c = 1;
  const std::string problem = probe.Validate();
  if (!problem.empty()) return Error(node, problem);
  return Ort::Status(nullptr);
}

Ort::Status QConvKernel::Bind(Ort::KernelContext& ctx, ConvCall* call) const {
  const auto x = ctx.GetInput(0), w = ctx.GetInput(1);
  const Ort::ConstValue b = ctx.GetInputCount() > 2 ? ctx.GetInput(2) : Ort::ConstValue(nullptr);
  call->layer = layer;
  ConvGeometry& g = call->layer.geometry;
  const auto b_shape = b != nullptr ? Shape(b) : std::vector<int64_t>{};
  std::string problem = CheckWeights(&g, Shape(w), b != nullptr ? &b_shape : nullptr);
  const auto xs = Shape(x);
  if (problem.empty() && g.depthwise && xs.size() == 4) {
    g.in_c = xs[3];
    if (g.in_c <= 0 || g.out_c % g.in_c != 0) problem = "a depthwise layer's output channels must be a multiple of the input's";
  }
  if (problem.empty()) problem = CheckImage(xs, g.in_c);
  if (problem.empty()) problem = g.Validate();
  if (!problem.empty()) return Error(node, problem);
  const int64_t out_h = g.OutHeight(xs[1]), out_w = g.OutWidth(xs[2]);
  if (out_h <= 0 || out_w <= 0) return Error(node, "input " + ShapeText(xs) + " is smaller than the kernel");
  auto y = ctx.GetOutput(0, std::vector<int64_t>{xs[0], out_h, out_w, g.out_c});
  call->x = x.GetTensorData<int8_t>(), call->weights = w.GetTensorData<int8_t>();
  call->bias = b != nullptr ? b.GetTensorData<int32_t>() : nullptr;
  call->y = y.GetTensorMutableData<int8_t>();
  call->n = xs[0], call->h = xs[1], call->w = xs[2], call->out_h = out_h, call->out_w = out_w;
  return Ort::Status(nullptr);
}

OrtStatusPtr QConvKernel::ComputeV2(OrtKernelContext* context) {
  return Guarded([&]() -> Ort::Status {
    Ort::KernelContext ctx(context);
    ConvCall call;
    Ort::Status status = Bind(ctx, &call);
    if (!status.IsOK() || call.n == 0) return status;
    RunConv(call.layer, call.x, call.weights, call.bias, call.n, call.h, call.w, call.y, OrtParallelFor(ctx));
    return Ort::Status(nullptr);
  });
}

// ---- QFused* ----------------------------------------------------------------------------------------

std::vector<bool> DepthwiseStages(const std::string& op_name) {
  for (const FusedKind& kind : kFusedKinds) {
    if (op_name == kind.name) return std::vector<bool>(kind.depthwise, kind.depthwise + kind.stages);
  }
  return {};
}

namespace {

// Checks the chain against the shapes of one call (or the static shapes at creation); fills the first
// stage's input channels. Empty when consistent.
std::string CheckChain(Chain* chain, const std::vector<int64_t>& x, const std::vector<std::vector<int64_t>>& w,
                       const std::vector<std::vector<int64_t>>& b) {
  for (size_t s = 0; s < chain->stages.size(); ++s) {
    ConvGeometry& g = chain->stages[s].geometry;
    std::string problem = CheckWeights(&g, w[s], &b[s]);
    if (problem.empty() && s > 0 && g.in_c != chain->stages[s - 1].geometry.out_c) {
      std::ostringstream m;
      m << "takes " << g.in_c << " channels from a stage of " << chain->stages[s - 1].geometry.out_c;
      problem = m.str();
    }
    if (problem.empty()) problem = g.Validate();
    if (!problem.empty()) return "stage " + std::to_string(s + 1) + ": " + problem;
  }
  if (x.empty()) return "";
  std::string problem = CheckImage(x, chain->stages[0].geometry.in_c);
  if (!problem.empty()) return problem;
  int64_t h = x[1], wd = x[2];
  for (const ConvLayer& st : chain->stages) h = st.geometry.OutHeight(h), wd = st.geometry.OutWidth(wd);
  if (h <= 0 || wd <= 0) return "input " + ShapeText(x) + " is smaller than the depthwise kernel";
  if (chain->residual && (h != x[1] || wd != x[2] || chain->stages.back().geometry.out_c != x[3])) {
    return "a residual needs the output shape to equal the input's " + ShapeText(x);
  }
  return "";
}

}  // namespace

Ort::Status QChainKernel::Init(const Ort::ConstKernelInfo& info, const std::string& op_name, size_t stages) {
  node = NodeName(info, op_name);
  const std::vector<bool> depthwise = DepthwiseStages(op_name);
  if (depthwise.size() != stages) return Error(node, "unknown int8 fused op " + op_name);
  Int8Attributes a(info, op_name);
  const Scheme scheme = a.ReadScheme();
  const int64_t kernel = a.Int("dw_kernel", 3), stride = a.Int("dw_stride", 1);
  const auto pads = a.Ints("dw_pads", {(kernel - 1) / 2, (kernel - 1) / 2, (kernel - 1) / 2, (kernel - 1) / 2});
  if (!vocabulary::OneOf(kernel, vocabulary::kDwKernels)) a.Fail(std::string("dw_kernel must be ") + vocabulary::kDwKernelList);
  if (!vocabulary::OneOf(stride, vocabulary::kDwStrides)) a.Fail(std::string("dw_stride must be ") + vocabulary::kDwStrideList);
  for (int64_t p : pads) {
    if (p < 0 || p >= kernel) a.Fail("dw_pads must be in 0..dw_kernel - 1");
  }
  const float x_scale = a.Scale("x_scale");
  const int32_t x_zp = a.ZeroPoint("x_zero_point");
  float in_scale = x_scale;
  int32_t in_zp = x_zp;
  chain.stages.clear();
  for (size_t s = 0; s < stages; ++s) {
    ConvLayer st;
    st.x_zero_point = in_zp;
    ReadRequantizer(a, "stage" + std::to_string(s + 1) + "_", scheme, in_scale, &st.requantize, &in_scale, &in_zp);
    ConvGeometry& g = st.geometry;
    g.out_c = static_cast<int64_t>(st.requantize.channels());
    if (depthwise[s]) {
      g.depthwise = true, g.in_c = g.out_c, g.kh = g.kw = kernel, g.sh = g.sw = stride;
      for (int k = 0; k < 4; ++k) g.pads[k] = pads[k];
    }
    chain.stages.push_back(st);
  }
  chain.residual = a.Flag("residual");
  if (chain.residual) {
    const float y_scale = a.Scale("residual_y_scale");
    const int32_t y_zp = a.ZeroPoint("residual_y_zero_point");
    int32_t lo, hi;
    a.Clamp("residual_clamp", &lo, &hi);
    if (a.problem().empty()) {
      const std::string problem = chain.add.Prepare(x_scale, x_zp, in_scale, in_zp, y_scale, y_zp, lo, hi);
      if (!problem.empty()) a.Fail(problem);
    }
  }
  if (!a.problem().empty()) return Error(node, a.problem());
  if (info.GetInputCount() != InputCount(stages)) return Error(node, op_name + " takes X and (W, B) per stage");
  std::vector<std::vector<int64_t>> w, b;
  for (size_t s = 0; s < stages; ++s) {
    w.push_back(StaticShape(info, 1 + 2 * s));
    b.push_back(StaticShape(info, 2 + 2 * s));
    if (!Known(w.back()) || !Known(b.back())) return Ort::Status(nullptr);  // checked per call instead
  }
  Chain probe = chain;
  const std::string problem = CheckChain(&probe, {}, w, b);
  if (!problem.empty()) return Error(node, problem);
  return Ort::Status(nullptr);
}

Ort::Status QChainKernel::Bind(Ort::KernelContext& ctx, ChainCall* call) const {
  const size_t stages = chain.stages.size();
  const auto x = ctx.GetInput(0);
  std::vector<std::vector<int64_t>> w_shapes, b_shapes;
  call->weights.clear(), call->biases.clear();
  for (size_t s = 0; s < stages; ++s) {
    const auto w = ctx.GetInput(1 + 2 * s), b = ctx.GetInput(2 + 2 * s);
    w_shapes.push_back(Shape(w)), b_shapes.push_back(Shape(b));
    call->weights.push_back(w.GetTensorData<int8_t>()), call->biases.push_back(b.GetTensorData<int32_t>());
  }
  call->chain = chain;
  const auto xs = Shape(x);
  const std::string problem = CheckChain(&call->chain, xs, w_shapes, b_shapes);
  if (!problem.empty()) return Error(node, problem);
  int64_t h = xs[1], wd = xs[2];
  for (const ConvLayer& st : call->chain.stages) h = st.geometry.OutHeight(h), wd = st.geometry.OutWidth(wd);
  call->out_c = call->chain.stages.back().geometry.out_c;
  auto y = ctx.GetOutput(0, std::vector<int64_t>{xs[0], h, wd, call->out_c});
  call->x = x.GetTensorData<int8_t>(), call->y = y.GetTensorMutableData<int8_t>();
  call->n = xs[0], call->h = xs[1], call->w = xs[2], call->out_h = h, call->out_w = wd;
  return Ort::Status(nullptr);
}

OrtStatusPtr QChainKernel::ComputeV2(OrtKernelContext* context) {
  return Guarded([&]() -> Ort::Status {
    Ort::KernelContext ctx(context);
    ChainCall call;
    Ort::Status status = Bind(ctx, &call);
    if (!status.IsOK() || call.n == 0) return status;
    RunChain(call.chain, call.x, call.weights, call.biases, call.n, call.h, call.w, call.y, OrtParallelFor(ctx));
    return Ort::Status(nullptr);
  });
}

// ---- QAdd -------------------------------------------------------------------------------------------

Ort::Status QAddKernel::Init(const Ort::ConstKernelInfo& info, const std::string& op_name, size_t) {
  node = NodeName(info, op_name);
  Int8Attributes a(info, op_name);
  const float a_scale = a.Scale("a_scale"), b_scale = a.Scale("b_scale"), y_scale = a.Scale("y_scale");
  const int32_t a_zp = a.ZeroPoint("a_zero_point"), b_zp = a.ZeroPoint("b_zero_point"), y_zp = a.ZeroPoint("y_zero_point");
  int32_t lo, hi;
  a.Clamp("clamp", &lo, &hi);
  if (a.problem().empty()) {
    const std::string problem = add.Prepare(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp, lo, hi);
    if (!problem.empty()) a.Fail(problem);
  }
  if (!a.problem().empty()) return Error(node, a.problem());
  return Ort::Status(nullptr);
}

Ort::Status QAddKernel::Bind(Ort::KernelContext& ctx, AddCall* call) const {
  const auto a = ctx.GetInput(0), b = ctx.GetInput(1);
  const auto shape = Shape(a);
  if (Shape(b) != shape) {
    return Error(node, "QAdd takes two tensors of one shape, not " + ShapeText(shape) + " and " + ShapeText(Shape(b)));
  }
  auto y = ctx.GetOutput(0, shape);
  call->count = a.GetTensorTypeAndShapeInfo().GetElementCount();
  call->a = a.GetTensorData<int8_t>(), call->b = b.GetTensorData<int8_t>(), call->y = y.GetTensorMutableData<int8_t>();
  return Ort::Status(nullptr);
}

OrtStatusPtr QAddKernel::ComputeV2(OrtKernelContext* context) {
  return Guarded([&]() -> Ort::Status {
    Ort::KernelContext ctx(context);
    AddCall call;
    Ort::Status status = Bind(ctx, &call);
    if (!status.IsOK()) return status;
    for (size_t i = 0; i < call.count; ++i) call.y[i] = add(call.a[i], call.b[i]);
    return Ort::Status(nullptr);
  });
}

// ---- QMean ------------------------------------------------------------------------------------------

Ort::Status QMeanKernel::Init(const Ort::ConstKernelInfo& info, const std::string& op_name, size_t) {
  node = NodeName(info, op_name);
  Int8Attributes a(info, op_name);
  params.x_scale = a.Scale("x_scale"), params.y_scale = a.Scale("y_scale");
  params.x_zero_point = a.ZeroPoint("x_zero_point"), params.y_zero_point = a.ZeroPoint("y_zero_point");
  keepdims = a.Flag("keepdims");
  if (!a.problem().empty()) return Error(node, a.problem());
  return Ort::Status(nullptr);
}

Ort::Status QMeanKernel::Bind(Ort::KernelContext& ctx, MeanCall* call) const {
  const auto x = ctx.GetInput(0);
  const auto xs = Shape(x);
  if (xs.size() != 4 || xs[1] <= 0 || xs[2] <= 0) return Error(node, "input must be [N, H, W, C] with H, W > 0, not " + ShapeText(xs));
  const std::vector<int64_t> out = keepdims ? std::vector<int64_t>{xs[0], 1, 1, xs[3]} : std::vector<int64_t>{xs[0], xs[3]};
  auto y = ctx.GetOutput(0, out);
  call->x = x.GetTensorData<int8_t>(), call->y = y.GetTensorMutableData<int8_t>();
  call->n = xs[0], call->h = xs[1], call->w = xs[2], call->c = xs[3];
  return Ort::Status(nullptr);
}

OrtStatusPtr QMeanKernel::ComputeV2(OrtKernelContext* context) {
  return Guarded([&]() -> Ort::Status {
    Ort::KernelContext ctx(context);
    MeanCall call;
    Ort::Status status = Bind(ctx, &call);
    if (!status.IsOK()) return status;
    RunMeanHW(params, call.x, call.n, call.h, call.w, call.c, call.y);
    return Ort::Status(nullptr);
  });
}

// ---- registration -----------------------------------------------------------------------------------

void AddInt8Ops(std::vector<std::unique_ptr<OrtCustomOp>>* ops) {
  ops->push_back(std::make_unique<Int8Op<QConvKernel>>("QConv", 1));
  for (const auto& kind : kFusedKinds) ops->push_back(std::make_unique<Int8Op<QChainKernel>>(kind.name, kind.stages));
  ops->push_back(std::make_unique<Int8Op<QAddKernel>>("QAdd", 1));
  ops->push_back(std::make_unique<Int8Op<QMeanKernel>>("QMean", 1));
}

}  // namespace int8
}  // namespace fcm
