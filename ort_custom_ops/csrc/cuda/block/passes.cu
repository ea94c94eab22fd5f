// The stages of a fused node as separate kernels through a workspace: CUTLASS's sm_90 GEMMs and a
// depthwise pass (passes.h).
#include "passes.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <type_traits>

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
#include "depthwise_shape.h"
#include "element.cuh"

namespace fcm {
namespace block {
namespace {

constexpr int kRows = 2, kColumns = 4;  // output pixels per thread of the depthwise pass
constexpr int kThreads = 256;
constexpr double kBytesPerUs = 2.3e6;  // every pass's bytes, in the estimate (PassesEstimateUs)

// Four consecutive channels, 16 bytes of FP32 or 8 of a half type, to and from FP32.
template <class E>
__device__ __forceinline__ void Load4(const E* at, float v[4]) {
  if constexpr (kIsHalf<E>) {
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(at));
    const E* e = reinterpret_cast<const E*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) v[k] = Element<E>::ToFloat(e[k]);
  } else {
    const float4 raw = __ldg(reinterpret_cast<const float4*>(at));
    v[0] = raw.x, v[1] = raw.y, v[2] = raw.z, v[3] = raw.w;
  }
}

template <class E>
__device__ __forceinline__ void Store4(E* at, const float v[4]) {
  if constexpr (kIsHalf<E>) {
    *reinterpret_cast<uint2*>(at) = make_uint2(PackHalves<E>(v[0], v[1]), PackHalves<E>(v[2], v[3]));
  } else {
    *reinterpret_cast<float4*>(at) = make_float4(v[0], v[1], v[2], v[3]);
  }
}

// Whether the depthwise pass packs a block's channel quads with the next blocks' into warps: where a
// warp per 32 quads of one block would leave more than an eighth of its lanes idle (DepthwisePass).
__host__ __device__ inline bool PackedQuads(int quads) { return 8 * quads < 7 * ((quads + 31) / 32 * 32); }

// The depthwise pass's threads: one per block of kRows x kColumns output pixels and channel quad,
// unpacked quads in warps of 32 (some idle).
template <class E>
__host__ __device__ long long DepthwisePassThreads(const ChainProblemOf<E>& p) {
  const int quads = p.m / 4;
  const long long blocks = static_cast<long long>(p.n) * ((p.out_h + kRows - 1) / kRows) * ((p.out_w + kColumns - 1) / kColumns);
  return blocks * (PackedQuads(quads) ? quads : (quads + 31) / 32 * 32);
}

// v[pixel, c..c+3] = actd(bd + sum over taps of x * wd) for a thread's kRows x kColumns output pixels
// and four channels, in FP32 whatever E is (v is rounded to E, as the fused kernels round the
// depthwise stage's output for their product): each input row's pixels are loaded once for every
// tap and output pixel that uses them. A warp takes 32 consecutive channel quads (contiguous loads
// and stores), and the warps of a CTA neighbouring blocks of the same rows, whose input columns
// overlap: those loads hit L1. Where that would leave more than an eighth of the lanes idle
// (PackedQuads: 32 channels left three lanes in four idle, 144 seven in sixteen) a warp takes the
// quads of one block and then of the next ones along the row instead, so that every lane works.
template <class E, int K, int S>
__global__ void __launch_bounds__(kThreads) DepthwisePass(const ChainProblemOf<E> p, E* v) {
  constexpr int kInputRows = (kRows - 1) * S + K, kInputs = (kColumns - 1) * S + K;
  const int quads = p.m / 4;
  const int blocks_w = (p.out_w + kColumns - 1) / kColumns, blocks_h = (p.out_h + kRows - 1) / kRows;
  const long long index = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  if (index >= DepthwisePassThreads(p)) return;
  int q, bx;
  long long rest;
  if (PackedQuads(quads)) {
    q = static_cast<int>(index % quads);
    rest = index / quads;
    bx = static_cast<int>(rest % blocks_w);
    rest /= blocks_w;
  } else {
    const int quad_groups = (quads + 31) / 32;
    rest = index >> 5;
    bx = static_cast<int>(rest % blocks_w);
    rest /= blocks_w;
    q = static_cast<int>(rest % quad_groups) * 32 + static_cast<int>(index & 31);
    rest /= quad_groups;
    if (q >= quads) return;
  }
  const int by = static_cast<int>(rest % blocks_h);
  const int image = static_cast<int>(rest / blocks_h);
  const int c = 4 * q, oy0 = by * kRows, ox0 = bx * kColumns;
  float acc[kRows][kColumns][4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float b = Element<E>::ToFloat(p.bd[c + k]);
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int j = 0; j < kColumns; ++j) acc[r][j][k] = b;
  }
#pragma unroll
  for (int i = 0; i < kInputRows; ++i) {
    const int iy = oy0 * S - p.pad_top + i;
    if (iy < 0 || iy >= p.h) continue;
    const E* row = p.x + (static_cast<size_t>(image) * p.h + iy) * p.w * p.m + c;
    float in[kInputs][4];
#pragma unroll
    for (int t = 0; t < kInputs; ++t) {
      const int ix = ox0 * S - p.pad_left + t;
      if (ix >= 0 && ix < p.w) {
        Load4(row + static_cast<size_t>(ix) * p.m, in[t]);
      } else {
        in[t][0] = in[t][1] = in[t][2] = in[t][3] = 0.f;
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int dy = i - r * S;
      if (dy < 0 || dy >= K) continue;  // resolved at compile time
#pragma unroll
      for (int dx = 0; dx < K; ++dx) {
        float w[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) w[k] = Element<E>::ToFloat(p.wd[static_cast<size_t>(c + k) * K * K + dy * K + dx]);
#pragma unroll
        for (int j = 0; j < kColumns; ++j)
#pragma unroll
          for (int k = 0; k < 4; ++k) acc[r][j][k] = fmaf(in[j * S + dx][k], w[k], acc[r][j][k]);
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
      Store4(v + ((static_cast<size_t>(image) * p.out_h + oy0 + r) * p.out_w + ox0 + j) * p.m + c, acc[r][j]);
    }
  }
}

// The depthwise pass at the problem's kernel size and stride (depthwise_shape.h).
template <class E>
cudaError_t LaunchDepthwisePass(const ChainProblemOf<E>& p, E* v, cudaStream_t stream) {
  const long long threads = DepthwisePassThreads(p);
  const dim3 grid(static_cast<unsigned>((threads + kThreads - 1) / kThreads));
  WithDepthwiseShape(p.kernel, p.stride, [&](auto k, auto s) {
    DepthwisePass<E, decltype(k)::value, decltype(s)::value><<<grid, kThreads, 0, stream>>>(p, v);
  });
  return cudaGetLastError();
}

// The CUTLASS element of each tensor type.
template <class E>
using CutlassElement = std::conditional_t<std::is_same_v<E, __half>, cutlass::half_t,
                                          std::conditional_t<std::is_same_v<E, __nv_bfloat16>, cutlass::bfloat16_t, float>>;

// A lone PW's weights with its channel scale folded in, per scale row (an image, or one row shared
// by all): out[n][f][k] = w[f][k] * scale[n][k], rounded to E, as the CPU kernels fold it.
template <class E>
__global__ void __launch_bounds__(kThreads) ScaledWeights(const E* w, const E* scale, int f, int k, int rows, E* out) {
  const int64_t per_row = static_cast<int64_t>(f) * k, total = per_row * rows;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; i < total; i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t row = i / per_row, within = i - row * per_row;
    const float v = Element<E>::ToFloat(w[within]) * Element<E>::ToFloat(scale[row * k + within % k]);
    out[i] = Element<E>::FromFloat(v);
  }
}

// The node's activation (epilogue.h's, any of the vocabulary's) as CUTLASS's epilogue activation:
// its argument is the Activation, so one kernel per type serves every activation; its formulas
// are the fused kernels' own (the same approximate exponential for swish and sigmoid).
template <class T>
struct NodeActivation {
  using Arguments = Activation;
  CUTLASS_HOST_DEVICE T operator()(T const& value, Arguments const& act = Arguments()) const { return act(value); }
};
template <class T, int N>
struct NodeActivation<cutlass::Array<T, N>> {
  using Arguments = Activation;
  CUTLASS_HOST_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& values, Arguments const& act = Arguments()) const {
    cutlass::Array<T, N> out;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) out[i] = act(values[i]);
    return out;
  }
};

// A pass's product, D = act(A B^T + bias (+ C)) in E, accumulated in FP32: TF32 or FP16 / BF16 on
// the tensor cores, operands by TMA, each row K-major (TF32 takes no other), a stage 128 bytes of
// each row deep (32 FP32 or 64 half channels), kTileM x kTileN output tiles. 128-row tiles run two
// consumer warpgroups of 64 rows each; 64-row tiles one. GemmTileFor chooses them (kLarge: 128 x 128
// always): 64 x 64 for the products whose 128 x 128 tiles would leave SMs idle (MobileNetV2's 7x7
// projections at batch 32: 1568 rows, 26 such tiles on 132 SMs, each a serial sum of 15 steps), 128 x 32 and 128 x 64 for narrow outputs (a 112x112 map's 16
// output channels filled an eighth of each 128 x 128 tile). kStreamK (128 x 128 only): CUTLASS's
// stream-K scheduler, which divides the sum over the SMs as well as the tiles, its partial sums
// reduced through a workspace.
using namespace cute;
template <class E, bool kStreamK = false, int kTileM = 128, int kTileN = 128>
struct PassGemm {
  static_assert(!kStreamK || (kTileM == 128 && kTileN == 128), "stream-K runs the 128 x 128 tiles only");
  static_assert(kTileM == 64 || kTileM == 128, "a consumer warpgroup takes 64 rows");
  using T = CutlassElement<E>;
  static constexpr int kAlignment = 16 / static_cast<int>(sizeof(E));  // elements in 16 bytes (TMA's rows)
  using TileShape = Shape<Int<kTileM>, Int<kTileN>, Int<128 / static_cast<int>(sizeof(E))>>;
  using ClusterShape = Shape<_1, _1, _1>;
  using EpilogueSchedule = std::conditional_t<kTileM == 64, cutlass::epilogue::TmaWarpSpecialized,
                                              cutlass::epilogue::TmaWarpSpecializedCooperative>;
  using MainloopSchedule = std::conditional_t<kTileM == 64, cutlass::gemm::KernelTmaWarpSpecialized,
                                              cutlass::gemm::KernelTmaWarpSpecializedCooperative>;
  using Fusion = cutlass::epilogue::fusion::LinCombPerColBiasEltAct<NodeActivation, T, float, T, T>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape, cutlass::epilogue::collective::EpilogueTileAuto,
      float, float, T, cutlass::layout::RowMajor, kAlignment, T, cutlass::layout::RowMajor, kAlignment, EpilogueSchedule,
      Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, T, cutlass::layout::RowMajor, kAlignment, T, cutlass::layout::ColumnMajor,
      kAlignment, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      MainloopSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue,
                                                      std::conditional_t<kStreamK, cutlass::gemm::StreamKScheduler, void>>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

// The last product's epilogue activation: act2, or with a residual (y = res_act(acc + b2 + x)) the
// residual's, where act2 is none; false where the node has both.
template <class E>
bool EpilogueActivation(const ChainProblemOf<E>& p, Activation* act) {
  *act = p.residual ? p.res_act : p.act2;
  return !p.residual || p.act2.kind == Act::kNone;
}

bool Aligned16(const void* pointer) { return (reinterpret_cast<uintptr_t>(pointer) & 15u) == 0; }

// A pass's GEMM, d [rows, n] = act(a [rows, k] b [n, k]^T + bias (+ c)) in E, each row K-major
// (c, the residual, d's shape, may be null): its arguments. With `batches` > 1, that many such
// products one after another in memory, each with its own b (the bias shared).
template <class E, bool kStreamK, int kTileM, int kTileN>
typename PassGemm<E, kStreamK, kTileM, kTileN>::Gemm::Arguments GemmArguments(const E* a, const E* b, const E* bias, const E* c, E* d, int rows,
                                                                      int n, int k, const Activation& act, int batches = 1) {
  using Kernel = typename PassGemm<E, kStreamK, kTileM, kTileN>::Kernel;
  using T = typename PassGemm<E, kStreamK, kTileM, kTileN>::T;
  const typename Kernel::StrideA sa = cute::make_stride(int64_t{k}, cute::Int<1>{}, int64_t{rows} * k);
  const typename Kernel::StrideB sb = cute::make_stride(int64_t{k}, cute::Int<1>{}, int64_t{n} * k);
  const typename Kernel::StrideC sc = cute::make_stride(int64_t{n}, cute::Int<1>{}, int64_t{rows} * n);
  const typename Kernel::StrideD sd = cute::make_stride(int64_t{n}, cute::Int<1>{}, int64_t{rows} * n);
  // without a residual beta is 0 and C is never read, but its descriptor is still made: d's memory,
  // which has C's shape
  typename PassGemm<E, kStreamK, kTileM, kTileN>::Gemm::Arguments args{
      batches > 1 ? cutlass::gemm::GemmUniversalMode::kBatched : cutlass::gemm::GemmUniversalMode::kGemm,
      {rows, n, k, batches},
      {reinterpret_cast<const T*>(a), sa, reinterpret_cast<const T*>(b), sb},
      {{}, reinterpret_cast<const T*>(c != nullptr ? c : d), sc, reinterpret_cast<T*>(d), sd}};
  args.epilogue.thread.alpha = 1.f;
  args.epilogue.thread.beta = c != nullptr ? 1.f : 0.f;
  args.epilogue.thread.bias_ptr = reinterpret_cast<const T*>(bias);
  args.epilogue.thread.activation = act;
  int device = 0;
  cudaGetDevice(&device);
  args.hw_info.device_id = device;
  args.hw_info.sm_count = CurrentDevice().sms;
  return args;
}

// The workspace a stream-K GEMM of these sizes needs (its partial sums and their flags).
template <class E>
size_t StreamKWorkspaceBytes(int rows, int n, int k) {
  const auto args = GemmArguments<E, true, 128, 128>(nullptr, nullptr, nullptr, nullptr, nullptr, rows, n, k, Activation());
  return PassGemm<E, true>::Gemm::get_workspace_size(args);
}

// The GEMM on `stream`; `gemm_workspace` holds StreamKWorkspaceBytes for a stream-K one.
template <class E, bool kStreamK, int kTileM = 128, int kTileN = 128>
cudaError_t LaunchGemm(const E* a, const E* b, const E* bias, const E* c, E* d, int rows, int n, int k, const Activation& act,
                       void* gemm_workspace, cudaStream_t stream, int batches = 1) {
  using Gemm = typename PassGemm<E, kStreamK, kTileM, kTileN>::Gemm;
  const auto args = GemmArguments<E, kStreamK, kTileM, kTileN>(a, b, bias, c, d, rows, n, k, act, batches);
  Gemm gemm;
  const size_t workspace_bytes = Gemm::get_workspace_size(args);
  if (gemm.can_implement(args) != cutlass::Status::kSuccess || (workspace_bytes > 0 && gemm_workspace == nullptr))
    return cudaErrorInvalidConfiguration;
  // The kernel's shared-memory attribute is set once per device and kernel (initialize), not on every
  // launch: the later launches may be captured into a CUDA graph, as the block kernels' are. A
  // stream-K workspace is zeroed on the stream before every launch (a memset a graph can hold).
  cutlass::Status status;
  {
    static std::mutex mutex;
    static std::set<int> prepared;
    std::lock_guard<std::mutex> lock(mutex);
    if (prepared.count(args.hw_info.device_id)) {
      status = Gemm::GemmKernel::initialize_workspace(args, gemm_workspace, stream);
      if (status == cutlass::Status::kSuccess) status = gemm.update(args, gemm_workspace);
    } else {
      status = gemm.initialize(args, gemm_workspace, stream);
      if (status == cutlass::Status::kSuccess) prepared.insert(args.hw_info.device_id);
    }
  }
  if (status != cutlass::Status::kSuccess) return cudaErrorInvalidValue;
  if (gemm.run(stream) != cutlass::Status::kSuccess) return cudaErrorLaunchFailure;
  return cudaGetLastError();
}

// A product's output tiles and the steps of its sum, in PassGemm's tiles of `tile_m` x `tile_n`
// (every shape steps through the sum as deep).
template <class E>
struct GemmWork {
  GemmWork(double rows, double n, double k, int tile_m = 128, int tile_n = 128) {
    using Tile = typename PassGemm<E>::TileShape;
    tiles = std::ceil(rows / tile_m) * std::ceil(n / tile_n);
    steps = std::ceil(k / cute::size<2>(Tile{}));
  }
  double tiles, steps;
};


// The tiles a product of these sizes (`batches` of them) runs on: 128 x 128 unless `tiling` allows
// others; then 64 x 64 where its 128 x 128 tiles would not fill the SMs once and its 64 x 64 tiles
// still run in one wave (MobileNetV2's 7x7 projections at batch 32 in FP16: 7.97 against 13.63 us
// on an H100; its expansions, 104 large tiles or 375 small ones, 11.10 against 15.71:
// benchmarks/2026-12-06-h100-tiles-stem), else 128 x 32 or 128 x 64 where its output has at most
// that many channels.
enum class GemmTile { k128x128, k64x64, k128x64, k128x32 };
template <class E>
GemmTile GemmTileFor(double rows, double n, double k, GemmTiling tiling, int batches = 1) {
  if (tiling != GemmTiling::kByShape) return GemmTile::k128x128;
  const double sms = CurrentDevice().sms;
  if (GemmWork<E>(rows, n, k).tiles * batches < sms && GemmWork<E>(rows, n, k, 64, 64).tiles * batches <= sms) return GemmTile::k64x64;
  return n <= 32 ? GemmTile::k128x32 : n <= 64 ? GemmTile::k128x64 : GemmTile::k128x128;
}

// A GEMM's time in microseconds: its bytes, or its tiles in waves over the SMs, whichever is longer
// (the fit of passes.h's estimate): a 128 x 128 tile ~0.58 us per step of its sum, a 64 x 64 one
// (one consumer warpgroup, a quarter of the products) ~0.6 of that (the 7x7 projections above);
// stream-K: its tiles' steps spread over the SMs, and ~14 us for the workspace's zeroing and the
// reduction of the partial sums (fitted: MobileNetV2's six stream-K blocks at batch 32 on an H100
// ran 9.5-17.7 us over the estimate without it, benchmarks/2026-12-06-h100-three-pass).
template <class E>
double GemmUs(double rows, double n, double k, double bytes, bool stream_k, GemmTiling tiling) {
  constexpr double kStepUs = 0.58, kSmallStepUs = 0.6 * kStepUs, kReductionUs = 14.0;
  const double sms = std::max(1, CurrentDevice().sms);
  const bool small = !stream_k && GemmTileFor<E>(rows, n, k, tiling) == GemmTile::k64x64;
  const GemmWork<E> work(rows, n, k, small ? 64 : 128, small ? 64 : 128);
  const double compute = stream_k ? std::ceil(work.tiles * work.steps / sms) * kStepUs + kReductionUs
                                  : std::ceil(work.tiles / sms) * work.steps * (small ? kSmallStepUs : kStepUs);
  return std::max(bytes / kBytesPerUs, compute);
}

// Whether a product of these sizes runs stream-K (kLarge tiling only): on 128 x 128 tiles that fill
// under half of the SMs, with a sum deep enough to divide (8 steps and more), where GemmUs has it
// faster than the tiles alone (in FP32 it about breaks even on MobileNetV2's 7x7 projections at
// batch 32; in the half types, whose steps are twice as deep, the tiles alone take half as long and
// stream-K only adds its reduction).
template <class E>
bool StreamK(double rows, double n, double k, GemmTiling tiling) {
  const GemmWork<E> work(rows, n, k);
  return tiling == GemmTiling::kLarge && work.tiles * 2 < CurrentDevice().sms && work.steps >= 8 &&
         GemmUs<E>(rows, n, k, 0.0, true, tiling) < GemmUs<E>(rows, n, k, 0.0, false, tiling);
}

// The GEMM on `stream` on the tiles GemmTileFor chooses (not stream-K).
template <class E>
cudaError_t RunGemm(const E* a, const E* b, const E* bias, const E* c, E* d, int rows, int n, int k, const Activation& act,
                    GemmTiling tiling, cudaStream_t stream, int batches = 1) {
  switch (GemmTileFor<E>(rows, n, k, tiling, batches)) {
    case GemmTile::k64x64: return LaunchGemm<E, false, 64, 64>(a, b, bias, c, d, rows, n, k, act, nullptr, stream, batches);
    case GemmTile::k128x32: return LaunchGemm<E, false, 128, 32>(a, b, bias, c, d, rows, n, k, act, nullptr, stream, batches);
    case GemmTile::k128x64: return LaunchGemm<E, false, 128, 64>(a, b, bias, c, d, rows, n, k, act, nullptr, stream, batches);
    default: return LaunchGemm<E, false, 128, 128>(a, b, bias, c, d, rows, n, k, act, nullptr, stream, batches);
  }
}

// The intermediates' bytes in the workspace (the first GEMM's output, then the depthwise pass's where
// a product follows it; one pass: the scaled weights), rounded up to 256 so that a stream-K
// workspace can follow.
template <class E>
size_t IntermediateBytes(const ChainProblemOf<E>& p, int passes) {
  if (passes == 1) return p.scale_batch > 0 ? (static_cast<size_t>(p.scale_batch) * p.f * p.c * sizeof(E) + 255) / 256 * 256 : 0;
  const size_t depthwise_out = p.pwl ? static_cast<size_t>(p.n) * p.out_h * p.out_w * p.m : 0;
  const size_t first_out = p.pw1 ? static_cast<size_t>(p.n) * p.h * p.w * p.m : 0;
  return ((first_out + depthwise_out) * sizeof(E) + 255) / 256 * 256;
}

// Whether the passes' last product runs stream-K (three passes only, for now: two passes run the
// data-parallel GEMM their estimate was fitted to).
template <class E>
bool LastProductStreamK(const ChainProblemOf<E>& p, int passes, GemmTiling tiling) {
  return passes == 3 && StreamK<E>(static_cast<double>(p.n) * p.out_h * p.out_w, p.f, p.m, tiling);
}

}  // namespace

GemmTiling GemmTilingFromEnvironment() {
  const char* tiles = std::getenv("FCM_CUDA_GEMM_TILES");
  return tiles != nullptr && (std::string(tiles) == "large" || std::string(tiles) == "128") ? GemmTiling::kLarge : GemmTiling::kByShape;
}

template <class E>
std::string PassesRefusal(const ChainProblemOf<E>& p, int passes, int device_major) {
  if (passes == 1 && (p.pw1 || p.dw || !p.pwl)) return "one pass takes a lone pointwise stage only (PW)";
  if (passes == 2 && !(p.dw && (p.pw1 != p.pwl))) return "two passes take DW->PW or PW->DW nodes only";
  if (passes == 3 && (!p.pw1 || !p.dw || !p.pwl)) return "three passes take PW->DW->PW nodes only";
  if (passes < 1 || passes > 3) return "separate passes are one (PW), two (DW->PW, PW->DW) or three (PW->DW->PW)";
  if (p.scale_batch > 0 && passes != 1) return "two and three passes take no channel scale";
  if (p.scale_batch > 1 && p.scale_batch != p.n) return "a channel scale has one row, or one per image";
  if (!kIsHalf<E> && !p.tf32) return "separate passes run the products in TF32 (exact FP32 is the fused kernels')";
  if (device_major != 9) return "separate passes need an sm_90 GPU (CUTLASS's Hopper GEMM)";
  const int alignment = PassGemm<E>::kAlignment;
  if (p.c % alignment != 0 || p.m % alignment != 0 || p.f % alignment != 0)
    return "separate passes need channel counts that are multiples of " + std::to_string(alignment) + " (16-byte rows)";
  if (p.dw && p.kernel != 3 && p.kernel != 5 && p.kernel != 7) return "separate passes take depthwise kernels of 3, 5 and 7";
  Activation last;
  if (p.pwl && !EpilogueActivation(p, &last))
    return "separate passes take a residual only after a product without an activation of its own (y = res_act(acc + b + x))";
  return "";
}

template <class E>
size_t PassesWorkspaceBytes(const ChainProblemOf<E>& p, int passes, GemmTiling tiling) {
  const size_t stream_k = LastProductStreamK(p, passes, tiling) ? StreamKWorkspaceBytes<E>(p.n * p.out_h * p.out_w, p.f, p.m) : 0;
  return IntermediateBytes(p, passes) + stream_k;
}

template <class E>
double PassesEstimateUs(const ChainProblemOf<E>& p, int passes, GemmTiling tiling) {
  // Fitted to the H100's times of Xception's and MobileNet's DW->PW groups at batch 32 in FP32 (two
  // passes), within 10% (benchmarks/2026-12-06-h100-two-pass): every pass moves its bytes at
  // ~2.3 TB/s; a GEMM's 128 x 128 tiles run in waves over the SMs, ~0.58 us per 128-byte step of
  // the sum (taken to hold for the half types: twice the channels a step at twice the tensor-core
  // rate); ~1.5 us a launch. A small batch is one wave, so a product's depth sets its time. Three
  // passes (the first GEMM the same model), once the stream-K reduction was fitted (GemmUs): within
  // 20% of ten of MobileNetV2's eleven blocks at batch 32 (56x56 24-144-24: 23% more); at batch 1
  // they take 1.7-2.7x the estimate, but twice the fused kernels' time too, and are not chosen.
  constexpr double kLaunchUs = 1.5;
  const double bytes = sizeof(E);
  const double in_pixels = static_cast<double>(p.n) * p.h * p.w, pixels = static_cast<double>(p.n) * p.out_h * p.out_w;
  if (passes == 1) {  // the product alone (the same GEMM model; not yet fitted to a lone PW's times)
    const double weights = static_cast<double>(p.c) * p.f * std::max(1, p.scale_batch);
    const double product_bytes = bytes * (pixels * p.c + pixels * p.f * (p.residual ? 2.0 : 1.0) + weights);
    // a scale per image: a product per image, its rows in whole tiles, after the weights' scaling
    const double rows = p.scale_batch > 1 ? p.n * std::ceil(static_cast<double>(p.out_h) * p.out_w / 128.0) * 128.0 : pixels;
    return GemmUs<E>(rows, p.f, p.c, product_bytes, false, tiling) + kLaunchUs + (p.scale_batch > 0 ? 2 * bytes * weights / kBytesPerUs + kLaunchUs : 0.0);
  }
  // (PW->DW in two passes: the first GEMM and the depthwise pass, the same models, not yet fitted)
  const double depthwise_bytes = bytes * (in_pixels * p.m + pixels * p.m);
  double us = depthwise_bytes / kBytesPerUs + kLaunchUs;
  if (p.pwl) {
    const double product_bytes = bytes * (pixels * p.m + pixels * p.f * (p.residual ? 2.0 : 1.0) + static_cast<double>(p.m) * p.f);
    us += GemmUs<E>(pixels, p.f, p.m, product_bytes, LastProductStreamK(p, passes, tiling), tiling) + kLaunchUs;
  }
  if (p.pw1) {
    const double first_bytes = bytes * (in_pixels * p.c + in_pixels * p.m + static_cast<double>(p.c) * p.m);
    us += GemmUs<E>(in_pixels, p.m, p.c, first_bytes, false, tiling) + kLaunchUs;
  }
  return us;
}

template <class E>
cudaError_t LaunchPasses(const ChainProblemOf<E>& p, int passes, GemmTiling tiling, void* workspace, cudaStream_t stream) {
  Activation last;
  if (p.pwl && !EpilogueActivation(p, &last)) return cudaErrorInvalidValue;
  // the residual is the node's input, shaped as the output (checked)
  const E* residual = p.residual ? p.x : nullptr;
  const int rows = p.n * p.out_h * p.out_w;
  if (passes == 1) {
    if (!Aligned16(p.x) || !Aligned16(p.y) || !Aligned16(p.w2) || !Aligned16(p.b2)) return cudaErrorMisalignedAddress;
    if (p.scale_batch == 0) return RunGemm<E>(p.x, p.w2, p.b2, residual, p.y, rows, p.f, p.c, last, tiling, stream);
    // the scale folded into the weights in the workspace: one product with a shared scale row,
    // else one per image with its own weights
    if (workspace == nullptr || p.scale == nullptr || !Aligned16(workspace)) return cudaErrorInvalidValue;
    E* scaled = static_cast<E*>(workspace);
    const int64_t total = static_cast<int64_t>(p.scale_batch) * p.f * p.c;
    const int blocks = static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, 8 * std::max(1, CurrentDevice().sms)));
    ScaledWeights<E><<<blocks, kThreads, 0, stream>>>(p.w2, p.scale, p.f, p.c, p.scale_batch, scaled);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    if (p.scale_batch == 1) return RunGemm<E>(p.x, scaled, p.b2, residual, p.y, rows, p.f, p.c, last, tiling, stream);
    return RunGemm<E>(p.x, scaled, p.b2, residual, p.y, p.out_h * p.out_w, p.f, p.c, last, tiling, stream, p.n);
  }
  if (workspace == nullptr || !Aligned16(p.x) || !Aligned16(p.y) || !Aligned16(workspace)) return cudaErrorMisalignedAddress;
  if ((p.pw1 && (!Aligned16(p.w1) || !Aligned16(p.b1))) || (p.pwl && (!Aligned16(p.w2) || !Aligned16(p.b2))))
    return cudaErrorMisalignedAddress;
  // the workspace: the first GEMM's output [n * h * w, m], which the depthwise pass then reads, and
  // the depthwise pass's [n * out_h * out_w, m] where a product follows (16-byte rows: each part stays
  // aligned); without a last product (PW->DW) the depthwise pass writes the output
  ChainProblemOf<E> depthwise = p;
  E* next = static_cast<E*>(workspace);
  if (p.pw1) {
    E* first = next;
    next += static_cast<size_t>(p.n) * p.h * p.w * p.m;
    const cudaError_t err = RunGemm<E>(p.x, p.w1, p.b1, nullptr, first, p.n * p.h * p.w, p.m, p.c, p.act1, tiling, stream);
    if (err != cudaSuccess) return err;
    depthwise.x = first;
    depthwise.c = p.m;
  }
  E* v = p.pwl ? next : p.y;
  const cudaError_t err = LaunchDepthwisePass(depthwise, v, stream);
  if (err != cudaSuccess || !p.pwl) return err;
  if (LastProductStreamK(p, passes, tiling)) {
    void* partials = static_cast<char*>(workspace) + IntermediateBytes(p, passes);
    return LaunchGemm<E, true>(v, p.w2, p.b2, residual, p.y, rows, p.f, p.m, last, partials, stream);
  }
  return RunGemm<E>(v, p.w2, p.b2, residual, p.y, rows, p.f, p.m, last, tiling, stream);
}

#define FCM_PASSES(E)                                                                                 \
  template std::string PassesRefusal<E>(const ChainProblemOf<E>& p, int passes, int device_major);    \
  template size_t PassesWorkspaceBytes<E>(const ChainProblemOf<E>& p, int passes, GemmTiling tiling);  \
  template double PassesEstimateUs<E>(const ChainProblemOf<E>& p, int passes, GemmTiling tiling);      \
  template cudaError_t LaunchPasses<E>(const ChainProblemOf<E>& p, int passes, GemmTiling tiling, void* workspace, cudaStream_t stream);
FCM_PASSES(float)
FCM_PASSES(__half)
FCM_PASSES(__nv_bfloat16)

}  // namespace block
}  // namespace fcm
