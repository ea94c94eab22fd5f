// The FCM ops on ONNX Runtime's CUDA execution provider, in FP32, FP16 and BF16: reads a call's
// tensors into a ChainProblemOf<E>, plans the launch once per input shape (the node's tuned plan for
// the batch size, else the kernels' own; the planner's tiling attributes are for the cost model's
// figures), and launches on the stream ONNX Runtime gives the kernel. Two kernel families:
// channels_last nodes run the block kernels (block/: NHWC, TMA and wgmma on Hopper, persistent, in
// every element type), NCHW nodes the chain kernels (chain_*: FP32, with workspace from ONNX
// Runtime's allocator for split shares). A half node the block kernels do not take (NCHW, channel
// counts that are not multiples of 8) runs the FP32 kernels on FP32 copies of its tensors.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../fused_op.h"
#include "block/block_launch.h"
#include "block/element.cuh"
#include "chain_launch.h"
#include "cuda_ops.h"
#include "device_element.cuh"
#include "pixel_chain.h"

namespace fcm {
namespace {

// Per image, a [rows x cols] matrix into [cols x rows] (NHWC <-> NCHW: rows = pixels, cols =
// channels, or the reverse), through a shared tile so that reads and writes are both coalesced.
__global__ void TransposeImages(const float* in, float* out, int rows, int cols) {
  __shared__ float tile[32][33];
  const size_t image = static_cast<size_t>(blockIdx.z) * rows * cols;
  const int r0 = blockIdx.y * 32, c0 = blockIdx.x * 32;
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = in[image + static_cast<size_t>(r) * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) out[image + static_cast<size_t>(c) * rows + r] = tile[threadIdx.x][i];
  }
}

cudaError_t Transpose(const float* in, float* out, int images, int rows, int cols, cudaStream_t stream) {
  const dim3 grid((cols + 31) / 32, (rows + 31) / 32, images), block(32, 8);
  TransposeImages<<<grid, block, 0, stream>>>(in, out, rows, cols);
  return cudaGetLastError();
}

// A failed launch or copy as ONNX Runtime's error.
OrtStatusPtr CudaFailure(cudaError_t err) {
  return Ort::Status((std::string("FCM CUDA: ") + cudaGetErrorString(err)).c_str(), ORT_EP_FAIL).release();
}

// Element-wise conversion between element types (the FP32 copies of a half node's tensors).
template <class From, class To>
__global__ void ConvertElements(const From* in, To* out, size_t count) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    out[i] = block::Element<To>::FromFloat(block::Element<From>::ToFloat(in[i]));
}

template <class From, class To>
cudaError_t Convert(const From* in, To* out, size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const size_t blocks = std::min<size_t>((count + 255) / 256, 4096);
  ConvertElements<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(in, out, count);
  return cudaGetLastError();
}

// FCM_CUDA_PLAN, a debugging override of every node's plan (see ChoosePlan), or nullptr when unset.
const char* PlanOverride() {
  const char* forced = std::getenv("FCM_CUDA_PLAN");
  return forced != nullptr && forced[0] != '\0' ? forced : nullptr;
}

bool Tf32Allowed(const ChainSpec& spec) {
  const char* force = std::getenv("FCM_CUDA_FP32");  // exact FP32 pointwise stages, for comparisons
  if (force != nullptr && force[0] == '1') return false;
  return spec.allow_tf32;
}

bool Verbose() {
  const char* verbose = std::getenv("FCM_CUDA_VERBOSE");  // the plan of each node, for profiling
  return verbose != nullptr && verbose[0] == '1';
}

using PlanKey = std::tuple<int, int, int, int, bool>;  // (device, n, h, w, tf32)

// T: the op's element type (float, Ort::Float16_t, Ort::BFloat16_t); E: the same on the device.
template <class T>
struct CudaChainKernelT {
  using E = typename DeviceElement<T>::type;
  static constexpr bool kHalf = !std::is_same_v<E, float>;
  static constexpr bool kChannelsLast = true;  // channels_last nodes run the block kernels
  ChainSpec spec;
  std::mutex mutex;  // one kernel object may run on several threads at once
  std::map<PlanKey, ChainPlan> plans;
  std::map<PlanKey, block::BlockPlan> block_plans;       // FP32 problems (an FP32 node, or a half node's FP32 copies)
  std::map<PlanKey, block::BlockPlan> half_block_plans;  // a half node's own problems

  OrtStatusPtr ComputeV2(OrtKernelContext* context);
  ChainPlan ChoosePlan(const ChainProblem& p, bool verbose) const;
  template <class P>
  block::BlockPlan ChooseBlockPlan(const P& p, bool verbose) const;
  // FP32 problems: the pixel-chain, block or chain kernels
  OrtStatusPtr Run(Ort::KernelContext& ctx, const ChainProblem& p, int device, cudaStream_t stream);
  OrtStatusPtr RunChain(Ort::KernelContext& ctx, const ChainProblem& p, int device, cudaStream_t stream);
  OrtStatusPtr RunBlock(Ort::KernelContext& ctx, const ChainProblem& p, int device, cudaStream_t stream);
  OrtStatusPtr RunChainTransposed(Ort::KernelContext& ctx, const ChainProblem& p, int device, cudaStream_t stream);
  template <class P>
  OrtStatusPtr RunPixelChain(Ort::KernelContext& ctx, const P& p, int device, cudaStream_t stream);
  // A block plan's launch, with the workspace it needs (separate passes) from ONNX Runtime's allocator
  template <class P>
  OrtStatusPtr LaunchBlockPlan(Ort::KernelContext& ctx, const P& p, const block::BlockPlan& plan, int device, cudaStream_t stream);
  // half problems: the pixel-chain or block kernels in E, else Run on FP32 copies (RunWidened)
  OrtStatusPtr RunHalf(Ort::KernelContext& ctx, const ChainProblemOf<E>& p, int device, cudaStream_t stream);
  OrtStatusPtr RunWidened(Ort::KernelContext& ctx, const ChainProblemOf<E>& p, int device, cudaStream_t stream);
  bool PlanForced(int batch) const;  // a plan is forced for this batch size (an error if it cannot run)
  bool pixel_chain_said = false;     // FCM_CUDA_VERBOSE has named the pixel-chain kernels for this node
  bool widened_said = false;         // ... or said that a half node runs on FP32 copies

  // The plan for this device and shape from `cache`, chosen (and with FCM_CUDA_VERBOSE said) at the
  // first call.
  template <class Plan, class P, class Choose, class Describe>
  Plan Cached(std::map<PlanKey, Plan>& cache, const P& p, int device, Choose choose, Describe describe) {
    std::lock_guard<std::mutex> lock(mutex);
    const PlanKey key(device, p.n, p.h, p.w, p.tf32);
    auto found = cache.find(key);
    if (found == cache.end()) {
      const bool say = Verbose();
      found = cache.emplace(key, choose(p, say)).first;
      if (say)
        std::fprintf(stderr, "FCM CUDA %s [n=%d c=%d h=%d w=%d m=%d f=%d k=%d s=%d]: %s\n", spec.node_name.c_str(), p.n, p.c, p.h,
                     p.w, p.m, p.f, p.kernel, p.stride, describe(found->second).c_str());
    }
    return found->second;
  }
  // The block kernels' plan of problem `p` (FP32 or the node's own type), cached in `cache`.
  template <class P>
  block::BlockPlan BlockPlanOf(std::map<PlanKey, block::BlockPlan>& cache, const P& p, int device) {
    return Cached(
        cache, p, device, [this](const P& q, bool say) { return ChooseBlockPlan(q, say); }, block::DescribeBlockPlan);
  }
  // A plan that cannot run, as ONNX Runtime's error.
  OrtStatusPtr NoPlan(const std::string& why) const {
    return Ort::Status(("FCM CUDA (" + spec.node_name + "): " + why).c_str(), ORT_NOT_IMPLEMENTED).release();
  }
};

// FCM_CUDA_PLAN (a debugging override: a fixed division of the work for every node, an error when it
// cannot run), else the node's plan for this batch size (cuda_plans, from `fcm tune`; measured on some
// GPU, so one that does not fit this one gives way to the kernels' own, unless cuda_plans_strict makes
// that an error, as when fcm tune times candidates and the tests force plans), else PlanChain.
template <class T>
ChainPlan CudaChainKernelT<T>::ChoosePlan(const ChainProblem& p, bool verbose) const {
  if (const char* forced = PlanOverride()) return ForcedPlan(p, forced);
  for (const auto& [batch, text] : spec.cuda_plans) {
    if (batch != p.n) continue;
    ChainPlan tuned = ForcedPlan(p, text);
    if (tuned.error.empty() || spec.cuda_plans_strict) return tuned;
    if (verbose) std::fprintf(stderr, "FCM CUDA %s: tuned plan not used (%s)\n", spec.node_name.c_str(), tuned.error.c_str());
  }
  return PlanChain(p);
}

// The same for the block kernels (channels_last nodes), whose plans read "HxW,f_tile,split,stages".
template <class T>
template <class P>
block::BlockPlan CudaChainKernelT<T>::ChooseBlockPlan(const P& p, bool verbose) const {
  if (const char* forced = PlanOverride()) return block::ParseBlockPlan(p, forced);
  for (const auto& [batch, text] : spec.cuda_plans) {
    if (batch != p.n) continue;
    block::BlockPlan tuned = block::ParseBlockPlan(p, text);
    if (tuned.error.empty() || spec.cuda_plans_strict) return tuned;
    if (verbose) std::fprintf(stderr, "FCM CUDA %s: tuned plan not used (%s)\n", spec.node_name.c_str(), tuned.error.c_str());
  }
  return block::PlanBlock(p);
}

template <class T>
OrtStatusPtr CudaChainKernelT<T>::ComputeV2(OrtKernelContext* context) {
  try {
    Ort::KernelContext ctx(context);
    CallShapes s;
    Ort::Status status = CheckCall(spec, ctx, &s);
    if (!status.IsOK()) return status.release();
    auto y = ctx.GetOutput(0, s.OutputShape());
    if (s.n == 0 || s.out_h == 0 || s.out_w == 0) return nullptr;
    if (s.n > 65535 || s.c * s.h * s.w > (int64_t{1} << 31) || s.out_c * s.out_h * s.out_w > (int64_t{1} << 31))
      return Ort::Status("FCM CUDA: tensor too large for the kernels' 32-bit indexing", ORT_NOT_IMPLEMENTED).release();
    auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());

    const auto& st = spec.stages;
    // the op's element type and the device's have the same bits
    auto in = [&](size_t i) { return reinterpret_cast<const E*>(ctx.GetInput(i).template GetTensorData<T>()); };
    ChainProblemOf<E> p;
    // A single pointwise stage (PW) is a last stage with no stage before it: its input streams through
    // in chunks of channels, as a depthwise stage's output does (a first stage holds all its input
    // channels on chip, which a wide projection's would not fit).
    p.pw1 = st.size() > 1 && st.front().type == StageType::kPointwise;
    p.dw = std::any_of(st.begin(), st.end(), [](const Stage& x) { return x.type == StageType::kDepthwise; });
    p.pwl = st.back().type == StageType::kPointwise;
    p.x = in(0);
    p.y = reinterpret_cast<E*>(y.template GetTensorMutableData<T>());
    p.n = static_cast<int>(s.n), p.c = static_cast<int>(s.c), p.h = static_cast<int>(s.h), p.w = static_cast<int>(s.w);
    p.out_h = static_cast<int>(s.out_h), p.out_w = static_cast<int>(s.out_w);
    size_t index = 0;
    if (p.pw1) {
      p.w1 = in(spec.WeightInput(index));
      p.b1 = in(spec.BiasInput(index));
      p.act1 = st[index].activation;
      p.m = static_cast<int>(st[index].out_channels);
      ++index;
    } else {
      p.m = p.c;
    }
    if (p.dw) {
      const Stage& d = st[index];
      p.kernel = static_cast<int>(d.kernel), p.stride = static_cast<int>(d.stride);
      p.pad_top = static_cast<int>(d.pads[0]), p.pad_left = static_cast<int>(d.pads[1]);
      p.wd = in(spec.WeightInput(index));
      p.bd = in(spec.BiasInput(index));
      p.actd = d.activation;
      ++index;
    }
    if (p.pwl) {
      p.w2 = in(spec.WeightInput(index));
      p.b2 = in(spec.BiasInput(index));
      p.act2 = st[index].activation;
      p.f = static_cast<int>(s.out_c);
    }
    if (s.scale_batch > 0) {
      p.scale = in(spec.ScaleInput());
      p.scale_batch = static_cast<int>(s.scale_batch);
    }
    p.residual = spec.residual;
    p.res_act = spec.residual_activation;
    p.tf32 = kHalf || Tf32Allowed(spec);  // (half nodes' FP32 copies: their values are exact in TF32)

    int device = 0;
    cudaGetDevice(&device);
    if constexpr (kHalf) {
      return RunHalf(ctx, p, device, stream);
    } else {
      return Run(ctx, p, device, stream);
    }
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  } catch (const std::exception& e) {
    return Ort::Status(e.what(), ORT_RUNTIME_EXCEPTION).release();
  }
}

template <class T>
OrtStatusPtr CudaChainKernelT<T>::Run(Ort::KernelContext& ctx, const ChainProblem& p, int device, cudaStream_t stream) {
  // One pixel per image, PW->PW (either layout: the same memory): the pixel-chain kernels, unless a
  // plan of the other kernels is forced (FCM_CUDA_PLAN, cuda_plans_strict: tests, fcm tune's grid).
  if (PixelChainFits(p) && !PlanForced(p.n)) return RunPixelChain(ctx, p, device, stream);
  return spec.channels_last ? RunBlock(ctx, p, device, stream) : RunChain(ctx, p, device, stream);
}

// A half node: the pixel-chain kernels, or the block kernels in its element type where they take the
// problem (channels_last, channel counts that are multiples of 8), else the FP32 kernels on copies.
template <class T>
OrtStatusPtr CudaChainKernelT<T>::RunHalf(Ort::KernelContext& ctx, const ChainProblemOf<E>& p, int device, cudaStream_t stream) {
  if (PixelChainFits(p) && !PlanForced(p.n)) return RunPixelChain(ctx, p, device, stream);
  if (spec.channels_last) {
    const block::BlockPlan plan = BlockPlanOf(half_block_plans, p, device);
    if (plan.error.empty()) return LaunchBlockPlan(ctx, p, plan, device, stream);
    if (PlanForced(p.n)) return NoPlan(plan.error);
  }
  return RunWidened(ctx, p, device, stream);
}

// The FP32 kernels on FP32 copies of a half node's tensors, the output rounded back: every node runs,
// if slower than in its own type.
template <class T>
OrtStatusPtr CudaChainKernelT<T>::RunWidened(Ort::KernelContext& ctx, const ChainProblemOf<E>& p, int device, cudaStream_t stream) {
  if (Verbose()) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!widened_said)
      std::fprintf(stderr, "FCM CUDA %s [n=%d c=%d h=%d w=%d m=%d f=%d]: FP32 kernels on FP32 copies\n", spec.node_name.c_str(), p.n, p.c,
                   p.h, p.w, p.m, p.f);
    widened_said = true;
  }
  const int taps = p.kernel * p.kernel, out_c = p.pwl ? p.f : p.m;
  // (pointer into the half problem, its element count, the FP32 copy's pointer to set)
  ChainProblem q;
  struct Copy {
    const E* from;
    size_t count;
    const float** to;
  };
  const Copy copies[] = {
      {p.x, static_cast<size_t>(p.n) * p.h * p.w * p.c, &q.x},
      {p.scale, static_cast<size_t>(p.scale_batch) * p.c, &q.scale},
      {p.w1, p.pw1 ? static_cast<size_t>(p.m) * p.c : 0, &q.w1},
      {p.b1, p.pw1 ? static_cast<size_t>(p.m) : 0, &q.b1},
      {p.wd, p.dw ? static_cast<size_t>(p.m) * taps : 0, &q.wd},
      {p.bd, p.dw ? static_cast<size_t>(p.m) : 0, &q.bd},
      {p.w2, p.pwl ? static_cast<size_t>(p.f) * p.m : 0, &q.w2},
      {p.b2, p.pwl ? static_cast<size_t>(p.f) : 0, &q.b2},
  };
  const size_t out_count = static_cast<size_t>(p.n) * p.out_h * p.out_w * out_c;
  size_t floats = out_count;
  for (const Copy& c : copies) floats += c.from != nullptr ? (c.count + 3) / 4 * 4 : 0;  // (16-byte aligned copies)
  DeviceScratch scratch;
  Ort::Status status = scratch.Take(ctx, device, stream, floats * sizeof(float), "FCM CUDA (" + spec.node_name + "), FP32 copies");
  if (!status.IsOK()) return status.release();
  q.pw1 = p.pw1, q.dw = p.dw, q.pwl = p.pwl, q.act1 = p.act1, q.actd = p.actd, q.act2 = p.act2;
  q.n = p.n, q.c = p.c, q.h = p.h, q.w = p.w, q.m = p.m, q.f = p.f, q.out_h = p.out_h, q.out_w = p.out_w;
  q.kernel = p.kernel, q.stride = p.stride, q.pad_top = p.pad_top, q.pad_left = p.pad_left;
  q.scale_batch = p.scale_batch, q.residual = p.residual, q.res_act = p.res_act, q.tf32 = true;
  float* at = static_cast<float*>(scratch.data());
  q.y = at;
  at += (out_count + 3) / 4 * 4;
  cudaError_t err = cudaSuccess;
  for (const Copy& c : copies) {
    if (c.from == nullptr) continue;
    *c.to = at;
    if (err == cudaSuccess) err = Convert(c.from, at, c.count, stream);
    at += (c.count + 3) / 4 * 4;
  }
  OrtStatusPtr failed = nullptr;
  if (err == cudaSuccess) failed = Run(ctx, q, device, stream);
  if (err == cudaSuccess && failed == nullptr) err = Convert(static_cast<const float*>(q.y), p.y, out_count, stream);
  if (failed != nullptr) return failed;
  if (err != cudaSuccess) return CudaFailure(err);
  return nullptr;
}

template <class T>
OrtStatusPtr CudaChainKernelT<T>::RunChain(Ort::KernelContext& ctx, const ChainProblem& p, int device, cudaStream_t stream) {
  if (!p.pw1 && !p.dw) return NoPlan("a single pointwise stage runs on the block kernels only, and none of their plans fits");
  const ChainPlan plan = Cached(
      plans, p, device, [this](const ChainProblem& q, bool say) { return ChoosePlan(q, say); }, DescribePlan);
  if (!plan.error.empty()) return NoPlan(plan.error);

  // split shares go through a workspace from ONNX Runtime's allocator
  DeviceScratch workspace;
  if (plan.workspace_bytes > 0) {
    Ort::Status status = workspace.Take(ctx, device, stream, plan.workspace_bytes, "FCM CUDA (" + spec.node_name + "), split workspace");
    if (!status.IsOK()) return status.release();
  }
  const cudaError_t err = LaunchChain(p, plan, workspace.data(), stream);
  if (err != cudaSuccess) return CudaFailure(err);
  return nullptr;
}

template <class T>
bool CudaChainKernelT<T>::PlanForced(int batch) const {
  if (PlanOverride() != nullptr) return true;
  if (!spec.cuda_plans_strict) return false;
  return std::any_of(spec.cuda_plans.begin(), spec.cuda_plans.end(), [&](const auto& entry) { return entry.first == batch; });
}

// A channels_last node that no block-kernel plan fits (first-stage weights and input region too
// wide for shared memory, e.g. 1024 input channels): the chain kernels on NCHW copies of the input
// and output, so that every node a conversion writes runs, if slower than it could.
template <class T>
OrtStatusPtr CudaChainKernelT<T>::RunChainTransposed(Ort::KernelContext& ctx, const ChainProblem& p, int device, cudaStream_t stream) {
  const int out_c = p.pwl ? p.f : p.m;
  const size_t in_floats = static_cast<size_t>(p.n) * p.c * p.h * p.w;
  const size_t out_floats = static_cast<size_t>(p.n) * out_c * p.out_h * p.out_w;
  DeviceScratch scratch;
  Ort::Status status =
      scratch.Take(ctx, device, stream, (in_floats + out_floats) * sizeof(float), "FCM CUDA (" + spec.node_name + "), NCHW copies");
  if (!status.IsOK()) return status.release();
  ChainProblem q = p;
  q.x = static_cast<const float*>(scratch.data());
  q.y = static_cast<float*>(scratch.data()) + in_floats;
  cudaError_t err = Transpose(p.x, const_cast<float*>(q.x), p.n, p.h * p.w, p.c, stream);
  OrtStatusPtr failed = nullptr;
  if (err == cudaSuccess) failed = RunChain(ctx, q, device, stream);
  if (err == cudaSuccess && failed == nullptr) err = Transpose(q.y, p.y, p.n, out_c, p.out_h * p.out_w, stream);
  if (failed != nullptr) return failed;
  if (err != cudaSuccess) return CudaFailure(err);
  return nullptr;
}

template <class T>
template <class P>
OrtStatusPtr CudaChainKernelT<T>::RunPixelChain(Ort::KernelContext& ctx, const P& p, int device, cudaStream_t stream) {
  if (Verbose()) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!pixel_chain_said)
      std::fprintf(stderr, "FCM CUDA %s [n=%d c=%d m=%d f=%d, one pixel]: pixel-chain kernels\n", spec.node_name.c_str(), p.n, p.c,
                   p.m, p.f);
    pixel_chain_said = true;
  }
  DeviceScratch hidden;
  Ort::Status status =
      hidden.Take(ctx, device, stream, static_cast<size_t>(p.n) * p.m * sizeof(float), "FCM CUDA (" + spec.node_name + "), hidden layer");
  if (!status.IsOK()) return status.release();
  const cudaError_t err = LaunchPixelChain(p, static_cast<float*>(hidden.data()), stream);
  if (err != cudaSuccess) return CudaFailure(err);
  return nullptr;
}

template <class T>
OrtStatusPtr CudaChainKernelT<T>::RunBlock(Ort::KernelContext& ctx, const ChainProblem& p, int device, cudaStream_t stream) {
  const block::BlockPlan plan = BlockPlanOf(block_plans, p, device);
  if (!plan.error.empty()) {
    // One pixel per image (a squeeze-and-excitation branch): NHWC and NCHW are the same memory, and
    // the chain kernels take what the block kernels cannot (first-stage weights too wide for their
    // shared memory).
    if (p.h == 1 && p.w == 1 && p.out_h == 1 && p.out_w == 1) return RunChain(ctx, p, device, stream);
    // a plan that was forced (FCM_CUDA_PLAN, or cuda_plans_strict) and cannot run is the caller's error
    if (!PlanForced(p.n)) return RunChainTransposed(ctx, p, device, stream);
    return NoPlan(plan.error);
  }
  return LaunchBlockPlan(ctx, p, plan, device, stream);
}

template <class T>
template <class P>
OrtStatusPtr CudaChainKernelT<T>::LaunchBlockPlan(Ort::KernelContext& ctx, const P& p, const block::BlockPlan& plan, int device,
                                                  cudaStream_t stream) {
  // separate passes (block/passes.h): the intermediates go through a workspace
  DeviceScratch workspace;
  if (plan.workspace_bytes > 0) {
    Ort::Status status =
        workspace.Take(ctx, device, stream, plan.workspace_bytes, "FCM CUDA (" + spec.node_name + "), separate passes' workspace");
    if (!status.IsOK()) {
      // without the device memory, the fused kernel's best plan (no workspace) unless the passes
      // were forced: then it is the caller's error
      if (PlanForced(p.n)) return status.release();
      const block::BlockPlan fused = block::PlanBlock(p, false);
      if (!fused.error.empty()) return status.release();
      if (Verbose())
        std::fprintf(stderr, "FCM CUDA %s: %s; the fused kernel instead: %s\n", spec.node_name.c_str(), status.GetErrorMessage().c_str(),
                     block::DescribeBlockPlan(fused).c_str());
      return LaunchBlockPlan(ctx, p, fused, device, stream);
    }
  }
  const cudaError_t err = block::LaunchBlock(p, plan, stream, workspace.data());
  if (err != cudaSuccess) return CudaFailure(err);
  return nullptr;
}

// Whether the arena behind `allocator` can hand out `bytes` now (see DeviceScratch::Take): a plain allocation
// of that size, returned at once, whose failure (past gpu_mem_limit, or the device out of memory)
// throws inside the arena and is caught here, where KernelContext_GetScratchBuffer would let it end
// the process. The freed chunk stays in the arena for the scratch request that follows. Not probed
// while `stream` is being captured into a CUDA graph: the runs before the capture took the memory.
bool ArenaCanHold(OrtAllocator* allocator, cudaStream_t stream, size_t bytes) {
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess) {
    cudaGetLastError();
    return true;
  }
  if (capture != cudaStreamCaptureStatusNone) return true;
  void* probe = nullptr;
  try {
    probe = allocator->Alloc(allocator, bytes);
  } catch (...) {
    cudaGetLastError();  // a failed cudaMalloc inside the arena leaves its error behind
    return false;
  }
  if (probe == nullptr) return false;
  allocator->Free(allocator, probe);
  return true;
}

}  // namespace

DeviceScratch::~DeviceScratch() {
  if (allocator_ == nullptr) return;
  if (data_ != nullptr) allocator_->Free(allocator_, data_);
  Ort::GetApi().ReleaseAllocator(allocator_);
}

Ort::Status DeviceScratch::Take(Ort::KernelContext& ctx, int device, cudaStream_t stream, size_t bytes, const std::string& what) {
  Ort::MemoryInfo device_memory("Cuda", OrtArenaAllocator, device, OrtMemTypeDefault);
  if (allocator_ == nullptr) {
    Ort::Status status(Ort::GetApi().KernelContext_GetAllocator(ctx.GetOrtKernelContext(), device_memory, &allocator_));
    if (!status.IsOK() || allocator_ == nullptr) return Ort::Status((what + ": no device allocator").c_str(), ORT_EP_FAIL);
  }
  if (!ArenaCanHold(allocator_, stream, bytes))
    return Ort::Status((what + ": the device arena cannot hold its " + std::to_string(bytes) + " bytes").c_str(), ORT_EP_FAIL);
  Ort::Status status(Ort::GetApi().KernelContext_GetScratchBuffer(ctx.GetOrtKernelContext(), device_memory, bytes, &data_));
  if (!status.IsOK()) return Ort::Status((what + ": " + status.GetErrorMessage()).c_str(), ORT_EP_FAIL);
  if (data_ == nullptr) return Ort::Status((what + ": out of device memory").c_str(), ORT_EP_FAIL);
  return Ort::Status{nullptr};
}

std::unique_ptr<OrtCustomOp> MakeCudaOp(const char* name, size_t stages, Precision precision) {
  switch (precision) {
    case Precision::kFp16:
      return std::make_unique<FusedOp<CudaChainKernelT<Ort::Float16_t>, Ort::Float16_t>>(name, "CUDAExecutionProvider", stages);
    case Precision::kBf16:
      return std::make_unique<FusedOp<CudaChainKernelT<Ort::BFloat16_t>, Ort::BFloat16_t>>(name, "CUDAExecutionProvider", stages);
    default:
      return std::make_unique<FusedOp<CudaChainKernelT<float>>>(name, "CUDAExecutionProvider", stages);
  }
}

}  // namespace fcm
