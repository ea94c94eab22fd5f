// DW->PW in two kernels: a depthwise pass into a workspace, then CUTLASS's sm_90 GEMM (two_pass.h).
#include "two_pass.h"

#include <cstdint>
#include <limits>
#include <mutex>
#include <set>

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/operations.hpp>
#include <cutlass/epilogue/thread/activation.h>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>

#include "../../epilogue.h"
#include "../device.h"

namespace fcm {
namespace block {
namespace {

constexpr int kRows = 2, kColumns = 4;  // output pixels per thread of the depthwise pass
constexpr int kThreads = 256;

// v[pixel, c..c+3] = actd(bd + sum over taps of x * wd) for a thread's kRows x kColumns output pixels
// and four channels: each input row's pixels are loaded once (16 bytes, four channels) for every tap
// and output pixel that uses them. A warp takes 32 consecutive channel quads (its loads and stores
// 512 contiguous bytes), and the warps of a CTA neighbouring blocks of the same rows, whose input
// columns overlap: those loads hit L1.
template <int K, int S>
__global__ void __launch_bounds__(kThreads) DepthwisePass(const ChainProblem p, float* v) {
  constexpr int kInputRows = (kRows - 1) * S + K, kInputs = (kColumns - 1) * S + K;
  const int quads = p.m / 4, quad_groups = (quads + 31) / 32;
  const int blocks_w = (p.out_w + kColumns - 1) / kColumns, blocks_h = (p.out_h + kRows - 1) / kRows;
  const long long index = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  const long long total = static_cast<long long>(p.n) * blocks_h * quad_groups * blocks_w * 32;
  if (index >= total) return;
  const int lane = static_cast<int>(index & 31);
  long long rest = index >> 5;
  const int bx = static_cast<int>(rest % blocks_w);
  rest /= blocks_w;
  const int q = static_cast<int>(rest % quad_groups) * 32 + lane;
  rest /= quad_groups;
  const int by = static_cast<int>(rest % blocks_h);
  const int image = static_cast<int>(rest / blocks_h);
  if (q >= quads) return;
  const int c = 4 * q, oy0 = by * kRows, ox0 = bx * kColumns;
  float acc[kRows][kColumns][4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float b = __ldg(p.bd + c + k);
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int j = 0; j < kColumns; ++j) acc[r][j][k] = b;
  }
#pragma unroll
  for (int i = 0; i < kInputRows; ++i) {
    const int iy = oy0 * S - p.pad_top + i;
    if (iy < 0 || iy >= p.h) continue;
    const float* row = p.x + (static_cast<size_t>(image) * p.h + iy) * p.w * p.m + c;
    float4 in[kInputs];
#pragma unroll
    for (int t = 0; t < kInputs; ++t) {
      const int ix = ox0 * S - p.pad_left + t;
      in[t] = ix >= 0 && ix < p.w ? __ldg(reinterpret_cast<const float4*>(row + static_cast<size_t>(ix) * p.m))
                                  : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int dy = i - r * S;
      if (dy < 0 || dy >= K) continue;  // resolved at compile time
#pragma unroll
      for (int dx = 0; dx < K; ++dx) {
        float w[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) w[k] = __ldg(p.wd + static_cast<size_t>(c + k) * K * K + dy * K + dx);
#pragma unroll
        for (int j = 0; j < kColumns; ++j) {
          const float4 t = in[j * S + dx];
          acc[r][j][0] = fmaf(t.x, w[0], acc[r][j][0]);
          acc[r][j][1] = fmaf(t.y, w[1], acc[r][j][1]);
          acc[r][j][2] = fmaf(t.z, w[2], acc[r][j][2]);
          acc[r][j][3] = fmaf(t.w, w[3], acc[r][j][3]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if (oy0 + r >= p.out_h) break;
#pragma unroll
    for (int j = 0; j < kColumns; ++j) {
      if (ox0 + j >= p.out_w) break;
      p.actd.Apply(acc[r][j]);
      float* out = v + ((static_cast<size_t>(image) * p.out_h + oy0 + r) * p.out_w + ox0 + j) * p.m + c;
      *reinterpret_cast<float4*>(out) = make_float4(acc[r][j][0], acc[r][j][1], acc[r][j][2], acc[r][j][3]);
    }
  }
}

// The kernel sizes and strides the ops take (an if-chain, as depthwise.cuh's).
cudaError_t LaunchDepthwisePass(const ChainProblem& p, float* v, cudaStream_t stream) {
  const long long threads = static_cast<long long>(p.n) * ((p.out_h + kRows - 1) / kRows) * ((p.m / 4 + 31) / 32) *
                            ((p.out_w + kColumns - 1) / kColumns) * 32;
  const dim3 grid(static_cast<unsigned>((threads + kThreads - 1) / kThreads));
  if (p.kernel == 3 && p.stride == 1) {
    DepthwisePass<3, 1><<<grid, kThreads, 0, stream>>>(p, v);
  } else if (p.kernel == 3) {
    DepthwisePass<3, 2><<<grid, kThreads, 0, stream>>>(p, v);
  } else if (p.kernel == 5 && p.stride == 1) {
    DepthwisePass<5, 1><<<grid, kThreads, 0, stream>>>(p, v);
  } else if (p.kernel == 5) {
    DepthwisePass<5, 2><<<grid, kThreads, 0, stream>>>(p, v);
  } else if (p.stride == 1) {
    DepthwisePass<7, 1><<<grid, kThreads, 0, stream>>>(p, v);
  } else {
    DepthwisePass<7, 2><<<grid, kThreads, 0, stream>>>(p, v);
  }
  return cudaGetLastError();
}

// D [pixels, f] = clamp(V W2^T + b2 (+ x)): TF32 on the tensor cores, 128 x 128 tiles of two
// consumer warpgroups, operands by TMA, each row K-major (TF32 takes no other). Every activation the
// two passes take is a clamp (none, ReLU, ReLU6 and clips), so one kernel serves them all.
using namespace cute;
using TileShape = Shape<_128, _128, _32>;
using ClusterShape = Shape<_1, _1, _1>;
using Fusion = cutlass::epilogue::fusion::LinCombPerColBiasEltAct<cutlass::epilogue::thread::Clamp, float, float, float, float>;
using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape, cutlass::epilogue::collective::EpilogueTileAuto,
    float, float, float, cutlass::layout::RowMajor, 4, float, cutlass::layout::RowMajor, 4,
    cutlass::epilogue::TmaWarpSpecializedCooperative, Fusion>::CollectiveOp;
using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, float, cutlass::layout::RowMajor, 4, float, cutlass::layout::ColumnMajor, 4,
    float, TileShape, ClusterShape,
    cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
    cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;
using GemmKernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
using Gemm = cutlass::gemm::device::GemmUniversalAdapter<GemmKernel>;

// The clamp of an activation the epilogue takes; false for the others.
bool ClampOf(const Activation& act, float* lo, float* hi) {
  *lo = std::numeric_limits<float>::lowest(), *hi = std::numeric_limits<float>::max();
  switch (act.kind) {
    case Act::kNone:
      return true;
    case Act::kRelu:
      *lo = 0.f;
      return true;
    case Act::kClip:
      *lo = act.lo, *hi = act.hi;
      return true;
    default:
      return false;
  }
}

// The epilogue's one clamp: act2 without a residual, the residual's activation with one (then act2
// must be none: y = res_act(acc + b2 + x)).
bool EpilogueClamp(const ChainProblem& p, float* lo, float* hi) {
  if (!p.residual) return ClampOf(p.act2, lo, hi);
  return p.act2.kind == Act::kNone && ClampOf(p.res_act, lo, hi);
}

bool Aligned16(const void* pointer) { return (reinterpret_cast<uintptr_t>(pointer) & 15u) == 0; }

}  // namespace

std::string TwoPassRefusal(const ChainProblem& p, int device_major) {
  if (!p.dw || !p.pwl || p.pw1) return "two passes take a depthwise stage and a last pointwise stage only (DW->PW)";
  if (p.scale != nullptr) return "two passes take no channel scale";
  if (!p.tf32) return "two passes run the product in TF32 (exact FP32 is the fused kernels')";
  if (device_major != 9) return "two passes need an sm_90 GPU (CUTLASS's Hopper GEMM)";
  if (p.m % 4 != 0 || p.f % 4 != 0) return "two passes need channel counts that are multiples of 4 (16-byte rows)";
  if (p.kernel != 3 && p.kernel != 5 && p.kernel != 7) return "two passes take depthwise kernels of 3, 5 and 7";
  float lo, hi;
  if (!EpilogueClamp(p, &lo, &hi))
    return "two passes take none, relu and clip activations after the product (and none before a residual)";
  return "";
}

size_t TwoPassWorkspaceBytes(const ChainProblem& p) {
  return static_cast<size_t>(p.n) * p.out_h * p.out_w * p.m * sizeof(float);
}

double TwoPassEstimateUs(const ChainProblem& p) {
  const double pixels = static_cast<double>(p.n) * p.out_h * p.out_w;
  const double bytes = 4.0 * (static_cast<double>(p.n) * p.h * p.w * p.m + 2.0 * pixels * p.m + pixels * p.f);
  const double flops = 2.0 * pixels * p.m * p.f;
  return bytes / 3.0e6 + flops / 1.2e8 + 8.0;  // ~3 TB/s, ~120 TFLOP/s (cuBLAS on Xception's products, H100)
}

cudaError_t LaunchTwoPass(const ChainProblem& p, void* workspace, cudaStream_t stream) {
  float lo, hi;
  if (workspace == nullptr || !EpilogueClamp(p, &lo, &hi)) return cudaErrorInvalidValue;
  if (!Aligned16(p.x) || !Aligned16(p.y) || !Aligned16(p.w2) || !Aligned16(p.b2) || !Aligned16(workspace))
    return cudaErrorMisalignedAddress;
  float* v = static_cast<float*>(workspace);
  cudaError_t err = LaunchDepthwisePass(p, v, stream);
  if (err != cudaSuccess) return err;
  const int m = p.n * p.out_h * p.out_w, n = p.f, k = p.m;
  // row-major V [m, k] and W2 [n, k] (K-major both), x and y [m, n]; one batch
  const GemmKernel::StrideA sa = cute::make_stride(int64_t{k}, cute::Int<1>{}, int64_t{m} * k);
  const GemmKernel::StrideB sb = cute::make_stride(int64_t{k}, cute::Int<1>{}, int64_t{n} * k);
  const GemmKernel::StrideC sc = cute::make_stride(int64_t{n}, cute::Int<1>{}, int64_t{m} * n);
  const GemmKernel::StrideD sd = cute::make_stride(int64_t{n}, cute::Int<1>{}, int64_t{m} * n);
  // C is the residual (the input, shaped as the output: checked); without one beta is 0 and C is
  // never read, but its descriptor is still made: y's memory, which has C's shape
  const float* c = p.residual ? p.x : p.y;
  Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm, {m, n, k, 1}, {v, sa, p.w2, sb}, {{}, c, sc, p.y, sd}};
  args.epilogue.thread.alpha = 1.f;
  args.epilogue.thread.beta = p.residual ? 1.f : 0.f;
  args.epilogue.thread.bias_ptr = p.b2;
  args.epilogue.thread.activation.lower_bound = lo;
  args.epilogue.thread.activation.upper_bound = hi;
  int device = 0;
  cudaGetDevice(&device);
  args.hw_info.device_id = device;
  args.hw_info.sm_count = CurrentDevice().sms;
  Gemm gemm;
  if (gemm.can_implement(args) != cutlass::Status::kSuccess || Gemm::get_workspace_size(args) != 0)
    return cudaErrorInvalidConfiguration;
  // The kernel's shared-memory attribute is set once per device (initialize), not on every launch:
  // the later launches may be captured into a CUDA graph, as the block kernels' are.
  cutlass::Status status;
  {
    static std::mutex mutex;
    static std::set<int> prepared;
    std::lock_guard<std::mutex> lock(mutex);
    status = prepared.count(device) ? gemm.update(args) : gemm.initialize(args, nullptr, stream);
    if (status == cutlass::Status::kSuccess) prepared.insert(device);
  }
  if (status != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
  if (gemm.run(stream) != cutlass::Status::kSuccess) return cudaErrorLaunchFailure;
  return cudaGetLastError();
}

}  // namespace block
}  // namespace fcm
