#include "fused_op.h"

#include <algorithm>
#include <sstream>
#include <type_traits>
#include <vector>

#include "cpu/cpu_chain.h"

namespace fcm {
namespace {

// Fills a stage's channel counts from its weights' shape; checks rank and kernel size.
Ort::Status StageFromWeights(const std::string& node, size_t index, const std::vector<int64_t>& w,
                             const std::vector<int64_t>& b, Stage* st) {
  std::ostringstream where;
  where << "stage " << index + 1 << " ";
  if (st->type == StageType::kPointwise) {
    if (w.size() != 2) return Error(node, where.str() + "(pointwise) weights must be [F, C], rank 2");
    st->out_channels = w[0], st->in_channels = w[1];
  } else {
    if (w.size() != 3) return Error(node, where.str() + "(depthwise) weights must be [C, K, K], rank 3");
    if (w[1] >= 0 && (w[1] != st->kernel || w[2] != st->kernel)) {
      std::ostringstream m;
      m << where.str() << "(depthwise) weights are " << w[1] << "x" << w[2] << " but dw_kernel is " << st->kernel;
      return Error(node, m.str());
    }
    st->out_channels = st->in_channels = w[0];
  }
  if (b.size() != 1) return Error(node, where.str() + "bias must be rank 1");
  if (b[0] >= 0 && st->out_channels >= 0 && b[0] != st->out_channels) {
    std::ostringstream m;
    m << where.str() << "bias has " << b[0] << " values for " << st->out_channels << " channels";
    return Error(node, m.str());
  }
  return Ort::Status(nullptr);
}

}  // namespace

Ort::Status ReadActivation(Attributes& a, const std::string& node, const std::string& prefix, Activation* out) {
  std::string name = "none";
  a.TryRead(prefix + "_activation", &name);
  std::vector<float> clip;
  const bool has_clip = a.TryRead(prefix + "_clip", &clip);
  if (!a.problem().empty()) return Error(node, a.problem());
  if (has_clip && clip.size() != 2) return Error(node, prefix + "_clip must hold 2 values [lo, hi]");
  if (has_clip && !(clip[0] <= clip[1])) return Error(node, prefix + "_clip must have lo <= hi");
  if (name == "clip" && !has_clip) return Error(node, prefix + "_activation 'clip' needs " + prefix + "_clip");
  if (!ParseActivation(name, has_clip ? clip.data() : nullptr, out)) {
    return Error(node, "unknown " + prefix + "_activation '" + name + "' (" + vocabulary::kActivationList + ")");
  }
  return Ort::Status(nullptr);
}

Ort::Status ParseSpec(const Ort::ConstKernelInfo& info, const std::string& op_name, ChainSpec* spec) {
  const std::string node = NodeName(info, "");
  spec->op_name = op_name;
  spec->node_name = node.empty() ? op_name : node;
  const std::vector<StageType> types = StageTypesOf(op_name);
  if (types.empty()) return Error(node, "unknown op type " + op_name);
  const size_t inputs = info.GetInputCount();
  if (inputs < 1 + 2 * types.size() || inputs > 2 + 2 * types.size()) {
    std::ostringstream m;
    m << op_name << " takes " << 1 + 2 * types.size() << " or " << 2 + 2 * types.size() << " inputs, not " << inputs;
    return Error(node, m.str());
  }
  Attributes a(info, op_name);

  int64_t dw_kernel = 0, dw_stride = 1;
  std::vector<int64_t> dw_pads;
  const bool has_dw = std::find(types.begin(), types.end(), StageType::kDepthwise) != types.end();
  if (has_dw) {
    if (!a.TryRead("dw_kernel", &dw_kernel)) return Error(node, a.problem().empty() ? "missing attribute dw_kernel" : a.problem());
    a.TryRead("dw_stride", &dw_stride);
    dw_pads = a.Ints("dw_pads", std::vector<int64_t>(4, (dw_kernel - 1) / 2));  // [top, left, bottom, right]
    if (!a.problem().empty()) return Error(node, a.problem());
    if (!vocabulary::OneOf(dw_kernel, vocabulary::kDwKernels))
      return Error(node, std::string("dw_kernel must be ") + vocabulary::kDwKernelList + ", not " + std::to_string(dw_kernel));
    if (!vocabulary::OneOf(dw_stride, vocabulary::kDwStrides))
      return Error(node, std::string("dw_stride must be ") + vocabulary::kDwStrideList + ", not " + std::to_string(dw_stride));
  }

  spec->stages.clear();
  for (size_t i = 0; i < types.size(); ++i) {
    Stage st;
    st.type = types[i];
    if (st.type == StageType::kDepthwise) {
      st.kernel = dw_kernel, st.stride = dw_stride;
      for (int k = 0; k < 4; ++k) st.pads[k] = dw_pads[k];
    }
    Ort::Status status = ReadActivation(a, node, "stage" + std::to_string(i + 1), &st.activation);
    if (!status.IsOK()) return status;
    const std::vector<int64_t> w = StaticShape(info, spec->WeightInput(i));
    const std::vector<int64_t> b = StaticShape(info, spec->BiasInput(i));
    if (!w.empty()) {
      status = StageFromWeights(node, i, w, b, &st);
      if (!status.IsOK()) return status;
    }
    spec->stages.push_back(st);
  }
  if (spec->stages.front().type == StageType::kDepthwise && inputs == 2 + 2 * types.size()) {
    return Error(node, "a channel scale input needs a pointwise first stage");
  }

  spec->channels_last = a.Flag("channels_last");
  spec->residual = a.Flag("residual");
  if (!a.problem().empty()) return Error(node, a.problem());
  // (a single pointwise stage runs as the block kernels' last stage, which are channels-last only)
  if (types.size() == 1 && !spec->channels_last) return Error(node, op_name + " is channels-last only: channels_last must be 1");
  Ort::Status status = ReadActivation(a, node, "residual", &spec->residual_activation);
  if (!status.IsOK()) return status;

  a.TryRead("tile_h", &spec->tiling.tile_h);
  a.TryRead("tile_w", &spec->tiling.tile_w);
  a.TryRead("tile_f", &spec->tiling.tile_f);
  a.TryRead("chunk", &spec->tiling.chunk);
  a.TryRead("split", &spec->tiling.split);
  a.TryRead("plan_batch", &spec->plan_batch);
  if (!a.problem().empty()) return Error(node, a.problem());
  if (spec->plan_batch < 0) return Error(node, "plan_batch must not be negative");
  std::string cuda_plans;
  if (a.TryRead("cuda_plans", &cuda_plans)) {
    const std::string problem = ParseCudaPlans(cuda_plans, spec->channels_last, &spec->cuda_plans);
    if (!problem.empty()) return Error(node, problem);
  }
  spec->cuda_plans_strict = a.Flag("cuda_plans_strict");
  if (!a.problem().empty()) return Error(node, a.problem());
  if (a.Declares("allow_tf32")) {  // fp32 only
    const int64_t allow_tf32 = a.Int("allow_tf32", 1);
    if (!a.problem().empty()) return Error(node, a.problem());
    if (allow_tf32 != 0 && allow_tf32 != 1) return Error(node, "allow_tf32 must be 0 or 1");
    spec->allow_tf32 = allow_tf32 == 1;
  }

  // Weights of unknown static shape are checked at compute time instead.
  bool shapes_known = true;
  for (const Stage& st : spec->stages) shapes_known = shapes_known && st.in_channels > 0;
  if (shapes_known) {
    const std::string problem = Validate(*spec);
    if (!problem.empty()) return Error(node, problem);
  }
  return Ort::Status(nullptr);
}

Ort::Status CheckCall(const ChainSpec& spec_in, Ort::KernelContext& ctx, CallShapes* s) {
  // the spec may lack channel counts (weights without static shapes): take them from the tensors
  ChainSpec spec = spec_in;
  for (size_t i = 0; i < spec.stages.size(); ++i) {
    const auto w = ctx.GetInput(spec.WeightInput(i)).GetTensorTypeAndShapeInfo().GetShape();
    const auto b = ctx.GetInput(spec.BiasInput(i)).GetTensorTypeAndShapeInfo().GetShape();
    Stage probe = spec.stages[i];
    Ort::Status status = StageFromWeights(spec.node_name, i, w, b, &probe);
    if (!status.IsOK()) return status;
    if (spec_in.stages[i].in_channels > 0 &&
        (probe.in_channels != spec_in.stages[i].in_channels || probe.out_channels != spec_in.stages[i].out_channels)) {
      return Error(spec.node_name, "weights changed shape since the kernel was created");
    }
    spec.stages[i] = probe;
  }
  const std::string problem = Validate(spec);
  if (!problem.empty()) return Error(spec.node_name, problem);

  const auto x = ctx.GetInput(0).GetTensorTypeAndShapeInfo().GetShape();
  s->channels_last = spec.channels_last;
  if (x.size() != 4)
    return Error(spec.node_name, spec.channels_last ? "input must be 4-D [N, H, W, C] (channels_last)" : "input must be 4-D [N, C, H, W]");
  if (spec.channels_last) {
    s->n = x[0], s->h = x[1], s->w = x[2], s->c = x[3];
  } else {
    s->n = x[0], s->c = x[1], s->h = x[2], s->w = x[3];
  }
  if (s->c != spec.stages.front().in_channels) {
    std::ostringstream m;
    m << "input has " << s->c << " channels, the first stage takes " << spec.stages.front().in_channels;
    return Error(spec.node_name, m.str());
  }
  spec.OutputSize(s->h, s->w, &s->out_h, &s->out_w);
  if (s->h <= 0 || s->w <= 0 || s->out_h <= 0 || s->out_w <= 0) {
    return Error(spec.node_name, "input too small for the depthwise kernel");
  }
  s->out_c = spec.stages.back().out_channels;
  s->scale_batch = 0;
  const size_t scale_index = spec.ScaleInput();
  if (ctx.GetInputCount() > scale_index) {
    auto scale = ctx.GetInput(scale_index);
    if (scale != nullptr) {
      // N x C values in the order of [N, C]: [N, C, 1, 1], [N, C], and with channels last [N, 1, 1, C]
      const auto sh = scale.GetTensorTypeAndShapeInfo().GetShape();
      const bool nchw = sh.size() == 4 && sh[1] == s->c && sh[2] == 1 && sh[3] == 1;
      const bool nhwc = spec.channels_last && sh.size() == 4 && sh[1] == 1 && sh[2] == 1 && sh[3] == s->c;
      const bool flat = sh.size() == 2 && sh[1] == s->c;
      if (!(nchw || nhwc || flat) || (sh[0] != 1 && sh[0] != s->n)) {
        return Error(spec.node_name, spec.channels_last ? "the channel scale must be [N or 1, C, 1, 1] or [N or 1, 1, 1, C]"
                                                        : "the channel scale must be [N or 1, C, 1, 1]");
      }
      s->scale_batch = sh[0];
    }
  }
  return Ort::Status(nullptr);
}

namespace {

// Rounds a float to the nearest value of T (ties to even) and back: what storing it as T keeps.
template <typename T>
float RoundTo(float v) {
  return T(v).ToFloat();
}

}  // namespace

template <typename T>
OrtStatusPtr CpuChainKernelT<T>::ComputeV2(OrtKernelContext* context) {
  try {
    Ort::KernelContext ctx(context);
    CallShapes s;
    Ort::Status status = CheckCall(spec, ctx, &s);
    if (!status.IsOK()) return status.release();
    ChainSpec run = spec;
    ChainTensors t;
    std::vector<std::vector<float>> widened(2 + 2 * run.stages.size());  // half inputs as floats
    size_t next = 0;
    t.x = Widened<T>(ctx.GetInput(0), &widened[next++]);
    t.n = s.n, t.h = s.h, t.w = s.w;
    t.channels_last = s.channels_last;
    for (size_t i = 0; i < run.stages.size(); ++i) {
      auto w = ctx.GetInput(run.WeightInput(i));
      const auto ws = w.GetTensorTypeAndShapeInfo().GetShape();
      run.stages[i].out_channels = ws[0];
      run.stages[i].in_channels = run.stages[i].type == StageType::kPointwise ? ws[1] : ws[0];
      t.weights.push_back(Widened<T>(w, &widened[next++]));
      t.biases.push_back(Widened<T>(ctx.GetInput(run.BiasInput(i)), &widened[next++]));
    }
    if (s.scale_batch > 0) {
      t.scale = Widened<T>(ctx.GetInput(run.ScaleInput()), &widened[next++]);
      t.scale_batch = s.scale_batch;
    }
    auto y = ctx.GetOutput(0, s.OutputShape());
    if (s.n == 0) return nullptr;
    if constexpr (std::is_same_v<T, float>) {
      t.y = y.GetTensorMutableData<float>();
      RunChainCpu(run, t, OrtParallelFor(ctx));
    } else {
      std::vector<float> result(y.GetTensorTypeAndShapeInfo().GetElementCount());
      t.y = result.data();
      t.round = &RoundTo<T>;
      RunChainCpu(run, t, OrtParallelFor(ctx));
      T* out = y.GetTensorMutableData<T>();
      for (size_t i = 0; i < result.size(); ++i) out[i] = T(result[i]);  // rounds the residual sum; exact elsewhere
    }
    return nullptr;
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  } catch (const std::exception& e) {
    return Ort::Status(e.what(), ORT_RUNTIME_EXCEPTION).release();
  }
}

template struct CpuChainKernelT<float>;
template struct CpuChainKernelT<Ort::Float16_t>;
template struct CpuChainKernelT<Ort::BFloat16_t>;

}  // namespace fcm
