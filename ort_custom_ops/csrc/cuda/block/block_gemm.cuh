// The pointwise stages' main-loop step: this warpgroup's 64 rows of D (rows: pixels; columns:
// channels) += A (64 rows x 32 bytes of channels) * B (N rows x 32 bytes)^T, both operands in
// swizzled slabs (tile_layout.cuh), FP32 accumulators: 8 channels a step in TF32 (E = float), 16 in
// FP16 or BF16.
//
// Three interchangeable forms with one fragment layout, so that the epilogues do not care which ran:
// warp w, lane (g, t) = (lane / 4, lane % 4) holds, for each 8-column block j,
//   acc[4j + 0..3] = D[16w + g][8j + 2t], D[16w + g][8j + 2t + 1], D[16w + g + 8][8j + 2t], D[16w + g + 8][8j + 2t + 1].
// - Hopper (sm_90a): wgmma, operands read from shared memory by descriptor, asynchronous: Begin
//   before the first step of a group, Commit after the last, Wait before the accumulators are read.
// - Other GPUs: mma.sync m16n8k8 with fragments loaded from the same slabs (the swizzle makes those
//   loads conflict-free); synchronous, so Begin/Commit/Wait only order.
// - Exact FP32 (allow_tf32 = 0, or FCM_CUDA_FP32): FFMA in the same layout, for comparisons.
// TF32 operands are the FP32 bits as stored: the tensor cores ignore the 13 low mantissa bits.
#pragma once

#include <cstdint>
#include <utility>

#include <cute/arch/mma_sm80.hpp>
// the widths that are not multiples of 16 (24, 40, 48, ...) are CuTe's extended shapes
#define CUTE_SM90_EXTENDED_MMA_SHAPES_ENABLED
#include <cute/arch/mma_sm90_gmma.hpp>

#include "element.cuh"
#include "tile_layout.cuh"

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FCM_BLOCK_WGMMA 1
#endif

namespace fcm {
namespace block {

__device__ __forceinline__ float4 LoadShared4(uint32_t address) {
  float4 v;
  asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(address));
  return v;
}
__device__ __forceinline__ float2 LoadShared2(uint32_t address) {
  float2 v;
  asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(v.x), "=f"(v.y) : "r"(address));
  return v;
}
__device__ __forceinline__ uint32_t LoadShared1(uint32_t address) {
  uint32_t v;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(address));
  return v;
}
__device__ __forceinline__ void StoreShared1(uint32_t address, float a) {
  asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(address), "f"(a) : "memory");
}
__device__ __forceinline__ void StoreShared2(uint32_t address, float a, float b) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(address), "f"(a), "f"(b) : "memory");
}
__device__ __forceinline__ void StoreShared4(uint32_t address, float4 v) {
  asm volatile("st.shared.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(address), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w) : "memory");
}

#if defined(FCM_BLOCK_WGMMA)
// The CuTe atom for m64nNk8 TF32 (m64nNk16 FP16, BF16) with both operands K-major in shared memory.
template <int N, class E>
struct GmmaAtom;
#define FCM_GMMA_ATOM(N)                                                                                              \
  template <>                                                                                                         \
  struct GmmaAtom<N, float> {                                                                                         \
    using Op = cute::SM90::GMMA::MMA_64x##N##x8_F32TF32TF32_SS_TN<>;                                                  \
  };                                                                                                                  \
  template <>                                                                                                         \
  struct GmmaAtom<N, __half> {                                                                                        \
    using Op = cute::SM90::GMMA::MMA_64x##N##x16_F32F16F16_SS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>; \
  };                                                                                                                  \
  template <>                                                                                                         \
  struct GmmaAtom<N, __nv_bfloat16> {                                                                                 \
    using Op =                                                                                                        \
        cute::SM90::GMMA::MMA_64x##N##x16_F32BF16BF16_SS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>;     \
  };
FCM_GMMA_ATOM(8) FCM_GMMA_ATOM(16) FCM_GMMA_ATOM(24) FCM_GMMA_ATOM(32) FCM_GMMA_ATOM(40) FCM_GMMA_ATOM(48)
FCM_GMMA_ATOM(64) FCM_GMMA_ATOM(80) FCM_GMMA_ATOM(96) FCM_GMMA_ATOM(112) FCM_GMMA_ATOM(128) FCM_GMMA_ATOM(160)
FCM_GMMA_ATOM(192) FCM_GMMA_ATOM(256)
#undef FCM_GMMA_ATOM

template <int N, class E, size_t... I>
__device__ __forceinline__ void GmmaStep(float (&acc)[N / 2], uint64_t a, uint64_t b, bool zero, std::index_sequence<I...>) {
  GmmaAtom<N, E>::Op::fma(a, b, acc[I]..., zero ? cute::SM90::GMMA::ScaleOut::Zero : cute::SM90::GMMA::ScaleOut::One);
}
#endif

// The synchronous forms' tensor-core instruction for one 16 x 8 block: m16n8k8 TF32, m16n8k16 FP16
// and BF16. Their fragments sit at the same bytes of a slab row (a register holds one TF32 or two
// half channels), so one set of loads serves all three.
template <class E>
struct SyncMma;
template <>
struct SyncMma<float> {
  using Op = cute::SM80_16x8x8_F32TF32TF32F32_TN;
};
template <>
struct SyncMma<__half> {
  using Op = cute::SM80_16x8x16_F32F16F16F32_TN;
};
template <>
struct SyncMma<__nv_bfloat16> {
  using Op = cute::SM80_16x8x16_F32BF16BF16F32_TN;
};

template <int N, bool kExact, class E = float>
struct BlockGemm {
  static_assert(N % 8 == 0 && N > 0, "N is a multiple of 8");
  static_assert(!kExact || !kIsHalf<E>, "exact FP32 is an FP32 mode");
  static constexpr int kRegs = N / 2;
  static constexpr bool kAsync =
#if defined(FCM_BLOCK_WGMMA)
      !kExact;
#else
      false;
#endif

  // Keeps the compiler from moving reads or writes of the accumulators across the asynchronous
  // window between issue and wait.
  __device__ __forceinline__ static void Fence(float (&acc)[kRegs]) {
#pragma unroll
    for (int i = 0; i < kRegs; ++i) asm volatile("" : "+f"(acc[i])::"memory");
  }

  // Before a group's first step: the accumulators pinned after their last writes, then the arrive
  // that shows those writes to the tensor cores. kFence false where the accumulators belong to a
  // group still in flight (a group chained onto it): any use of them, even this empty one, would
  // make the compiler wait for that group (ptxas C7517), and the caller pinned them earlier.
  template <bool kFence = true>
  __device__ __forceinline__ static void Begin(float (&acc)[kRegs]) {
    if constexpr (kAsync) {
      if constexpr (kFence) Fence(acc);
#if defined(FCM_BLOCK_WGMMA)
      cute::warpgroup_arrive();
#endif
    }
  }

  // One k step: `a` and `b` are the shared-window addresses of the first rows of the A and B tiles
  // (8-row aligned, inside one slab); `kk` (0..3) picks the 32 bytes of the slab row (8 TF32 or 16
  // half channels); `zero` starts from 0 instead of the accumulators.
  __device__ __forceinline__ static void Step(float (&acc)[kRegs], uint32_t a, uint32_t b, int kk, bool zero) {
    if constexpr (kAsync) {
#if defined(FCM_BLOCK_WGMMA)
      GmmaStep<N, E>(acc, GmmaDescriptor(a, kk), GmmaDescriptor(b, kk), zero, std::make_index_sequence<kRegs>{});
#endif
    } else {
      const int lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3;
      const int g = lane >> 2, t = lane & 3;
      const int r0 = warp * 16 + g, r1 = r0 + 8;
      if (zero) {
#pragma unroll
        for (int i = 0; i < kRegs; ++i) acc[i] = 0.f;
      }
      if constexpr (!kExact) {
        const uint32_t a0 = LoadShared1(a + SwizzledOffset(r0, 2 * kk) + 4 * t);
        const uint32_t a1 = LoadShared1(a + SwizzledOffset(r1, 2 * kk) + 4 * t);
        const uint32_t a2 = LoadShared1(a + SwizzledOffset(r0, 2 * kk + 1) + 4 * t);
        const uint32_t a3 = LoadShared1(a + SwizzledOffset(r1, 2 * kk + 1) + 4 * t);
#pragma unroll
        for (int j = 0; j < N / 8; ++j) {
          const int n = 8 * j + g;
          const uint32_t b0 = LoadShared1(b + SwizzledOffset(n, 2 * kk) + 4 * t);
          const uint32_t b1 = LoadShared1(b + SwizzledOffset(n, 2 * kk + 1) + 4 * t);
          SyncMma<E>::Op::fma(acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3], a0, a1, a2, a3, b0, b1, acc[4 * j],
                              acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]);
        }
      } else {
        const float4 x0 = LoadShared4(a + SwizzledOffset(r0, 2 * kk)), x1 = LoadShared4(a + SwizzledOffset(r0, 2 * kk + 1));
        const float4 y0 = LoadShared4(a + SwizzledOffset(r1, 2 * kk)), y1 = LoadShared4(a + SwizzledOffset(r1, 2 * kk + 1));
        const float ra[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        const float rb[8] = {y0.x, y0.y, y0.z, y0.w, y1.x, y1.y, y1.z, y1.w};
#pragma unroll
        for (int j = 0; j < N / 8; ++j) {
#pragma unroll
          for (int c = 0; c < 2; ++c) {
            const int n = 8 * j + 2 * t + c;
            const float4 w0 = LoadShared4(b + SwizzledOffset(n, 2 * kk)), w1 = LoadShared4(b + SwizzledOffset(n, 2 * kk + 1));
            const float wv[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
            float s0 = acc[4 * j + c], s1 = acc[4 * j + 2 + c];
#pragma unroll
            for (int k = 0; k < 8; ++k) {
              s0 = fmaf(ra[k], wv[k], s0);
              s1 = fmaf(rb[k], wv[k], s1);
            }
            acc[4 * j + c] = s0, acc[4 * j + 2 + c] = s1;
          }
        }
      }
    }
  }

  // Closes the group of the steps issued since the last commit (one group, whatever the number of
  // accumulators: the waits count groups). The accumulators are not touched here: they are in flight.
  __device__ __forceinline__ static void Commit() {
    if constexpr (kAsync) {
#if defined(FCM_BLOCK_WGMMA)
      cute::warpgroup_commit_batch();
#endif
    }
  }
};

// Waits until every committed tensor-core group of this warpgroup has finished reading its operands
// and writing its accumulators (a no-op for the synchronous forms).
template <bool kAsync>
__device__ __forceinline__ void WaitGemms() {
#if defined(FCM_BLOCK_WGMMA)
  if constexpr (kAsync) cute::warpgroup_wait<0>();
#endif
}

}  // namespace block
}  // namespace fcm
