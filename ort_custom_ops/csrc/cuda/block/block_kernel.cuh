// The fused-block kernel (FCM kernels v5): a chain of pointwise / depthwise stages on NHWC tensors,
// one kernel for the four kinds (PW->DW->PW, DW->PW, PW->DW, PW->PW), persistent and
// warp-specialized.
//
// Tensors are FP32, FP16 or BF16 (the template parameter E, element.cuh); accumulation is FP32.
//
// A CTA is one loading warp and one computing warpgroup, or (`groups` 2) a loading warpgroup and two
// computing warpgroups that share each unit's chunks (ConsumeHalves). A work unit is (image, tile of
// at most 64 output pixels, slice of the output channels). The CTAs of a cluster take the same units
// and share each unit's intermediate channels (`split`); the grid is about as many CTAs as the GPU
// holds, and each loops over units.
//
// Loading warp (producer): for each unit, the input region (tile plus halo, all input channels) and
// then, per 32-channel chunk of the intermediate, the chunk's first-stage weights [32 x C], its
// last-stage weights [f_tile x 32] (and, without a first stage, the chunk's input region) into a ring
// of `stages` shared-memory stages: TMA boxes on sm_90, cp.async elsewhere; mbarriers say full and
// empty.
//
// Computing warpgroup (consumer), per chunk:
//   first pointwise   U = act1(X_region W1^T + b1), zero outside the image   tensor cores (BlockGemm)
//   depthwise         V = actd(dw(U) + bd)                                    CUDA cores (Depthwise)
//   last pointwise    ACC += V W2^T                                           tensor cores, left in flight
// and after the last chunk the epilogue y = res_act(act2(ACC + b2) + x) (epilogue.h's activations),
// stored directly, or, when the cluster shares the unit, after adding the CTAs' shares through
// distributed shared memory. The last stage's gemm of one chunk runs while the next chunk's first
// stage is issued; the producer fills the next stages meanwhile, and loads the next unit's region as
// soon as the last chunk's first stage has read the current one.
#pragma once

#include <cuda.h>

#include <cute/arch/copy_sm90_tma.hpp>
#include <cutlass/arch/reg_reconfig.h>

#include "block_args.h"
#include "block_gemm.cuh"
#include "depthwise.cuh"
#include "element.cuh"
#include "pipeline.cuh"

namespace fcm {
namespace block {

constexpr int kMaxStages = 16;  // ring stages (resident weights: one per chunk of the CTA)
constexpr uint32_t kConsumerBarrier = 1;  // named barrier of computing warpgroup 0 (1: +1; 0 is __syncthreads)
constexpr uint32_t kGroupsBarrier = 3;    // named barrier of both computing warpgroups

struct Barriers {
  uint64_t full[kMaxStages], empty[kMaxStages];
  uint64_t x_full[2], x_empty[2];  // the input region buffers
  uint64_t shares;                 // a split's shares of the rows this CTA adds have landed (Consume)
};

__device__ __forceinline__ void SyncConsumers(int group = 0) { NamedSync(kConsumerBarrier + group, kConsumers); }
__device__ __forceinline__ void SyncGroups() { NamedSync(kGroupsBarrier, 2 * kConsumers); }

// A position in the ring of operand stages: the stage and the parity of its current fill. Stepped
// with a compare, not a division by the ring's depth (a run-time value).
struct RingCursor {
  int stage = 0;
  uint32_t parity = 0;
  __device__ __forceinline__ RingCursor Next(int stages) const {
    RingCursor n = *this;
    if (++n.stage == stages) n.stage = 0, n.parity ^= 1;
    return n;
  }
};

struct Unit {
  int image, oy0, ox0, f0;  // the tile's first output row and column, its first output channel
  int y0, x0;               // the region's first input row and column (may be negative: padding)
};

template <class E>
__device__ __forceinline__ Unit DecodeUnit(const BlockArgsOf<E>& a, int index, int f_tile) {
  Unit u;
  int tile, slice, ty, tx;
  a.f_slices_div.fast_divmod(tile, slice, index);
  a.tiles_per_image_div.fast_divmod(u.image, tile, tile);
  a.tiles_w_div.fast_divmod(ty, tx, tile);
  u.oy0 = ty * a.tile_h;
  u.ox0 = tx * a.tile_w;
  u.f0 = slice * f_tile;
  u.y0 = u.oy0 * a.p.stride - a.p.pad_top;
  u.x0 = u.ox0 * a.p.stride - a.p.pad_left;
  return u;
}

// The input-region buffer of a CTA's `units_done`-th unit and the parity of that buffer's fill
// (`regions` is 1 or 2: a select, not a division by a run-time value).
struct RegionSlot {
  int buffer;
  uint32_t parity;
};
template <class E>
__device__ __forceinline__ RegionSlot RegionOf(const BlockArgsOf<E>& a, int units_done) {
  return a.regions == 2 ? RegionSlot{units_done & 1, static_cast<uint32_t>(units_done >> 1) & 1u}
                        : RegionSlot{0, static_cast<uint32_t>(units_done) & 1u};
}

// ---- loading ------------------------------------------------------------------------------------

// rows x kPieces 16-byte pieces into a slab with cp.async (zero-filled outside), swizzled (128-byte
// rows) or not (rows of kPieces pieces): row r's channels come from row_at(r) + col0 (nullptr: a
// row outside the tensor), `cols` channels per row exist. Pieces of 4-byte copies where rows are not
// 16-byte aligned (FP32 only: the host takes half types only with aligned rows).
template <int kPieces = 8, class E, class RowAt>
__device__ __forceinline__ void CopySlab(uint32_t dst, int rows, const RowAt& row_at, int col0, int cols, bool vec, const E* any,
                                         bool swizzled = true) {
  const int lane = threadIdx.x & 31;
  for (int i = lane; i < rows * kPieces; i += 32) {
    const int r = i / kPieces, piece = i % kPieces;
    const E* row = row_at(r);
    const int c = col0 + kPieceElems<E> * piece;
    const uint32_t to = dst + (swizzled ? SwizzledOffset(r, piece) : r * 16 * kPieces + 16 * piece);
    if (vec || kIsHalf<E>) {
      const bool valid = row != nullptr && c < cols;
      CopyAsync16(to, valid ? row + c : any, valid);
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const bool valid = row != nullptr && c + k < cols;
        CopyAsync4(to + 4 * k, valid ? row + c + k : any, valid);
      }
    }
  }
}

// The input pixels of a region, as rows (nullptr outside the image).
template <class E>
struct RegionRows {
  const E* x;
  int image, y0, x0, h, w, c;
  cutlass::FastDivmod region_w;
  __device__ __forceinline__ const E* operator()(int r) const {
    int ry, rx;
    region_w.fast_divmod(ry, rx, r);
    const int iy = y0 + ry, ix = x0 + rx;
    if (iy < 0 || iy >= h || ix < 0 || ix >= w) return nullptr;
    return x + ((static_cast<size_t>(image) * h + iy) * w + ix) * c;
  }
};

// Rows first..first+rows-1 of a row-major matrix with `count` rows of `ld` elements.
template <class E>
struct MatrixRows {
  const E* m;
  int first, count, ld;
  __device__ __forceinline__ const E* operator()(int r) const {
    return first + r < count ? m + static_cast<size_t>(first + r) * ld : nullptr;
  }
};

// A chunk's small operands (depthwise weights, biases) as 1-D copies: bulk copies with TMA (sizes
// and offsets multiples of 16 bytes: the host checks), else cp.async per float (half types: per 16
// bytes, which the host checks too).
template <class E>
__device__ __forceinline__ void CopyVector(bool tma, bool leader, uint64_t* bar, uint8_t* to, const E* from, int count) {
  if (tma) {
    if (leader) cute::SM90_BULK_COPY_G2S::copy(from, bar, to, count * static_cast<int>(sizeof(E)));
  } else if constexpr (kIsHalf<E>) {
    const uint32_t dst = SharedAddress(to);
    for (int i = threadIdx.x & 31; i < count / kPieceElems<E>; i += 32) CopyAsync16(dst + 16 * i, from + kPieceElems<E> * i, true);
  } else {
    const uint32_t dst = SharedAddress(to);
    for (int i = threadIdx.x & 31; i < count; i += 32) CopyAsync4(dst + 4 * i, from + i, true);
  }
}

// One chunk's operands into a ring stage: the first stage's weights [32 x c] (TMA box per 32-channel
// slab), the last stage's [f_tile x 32], without a first stage the chunk's input region, and the
// depthwise weights and biases. TMA: the leader issues, the stage's barrier counts the bytes;
// cp.async: every lane copies, then arrives once its copies have landed.
template <int NF, class E>
__device__ __forceinline__ void LoadStage(const BlockArgsOf<E>& a, uint8_t* to, uint64_t* full, const CUtensorMap* tx,
                                          const CUtensorMap* tw1, const CUtensorMap* tw2, const Unit& u, const RegionRows<E>& region,
                                          int j) {
  const ChainProblemOf<E>& p = a.p;
  const bool leader = (threadIdx.x & 31) == 0;
  const bool tma = a.tma != 0, vec = a.vec != 0;
  const uint64_t hint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);
  const int taps = p.kernel * p.kernel;
  const int m0 = j * kChunk, m_valid = min(kChunk, p.m - m0);
  if (tma && leader) {
    const uint32_t vectors = (p.dw ? m_valid * (taps + 1) : 0) + (p.pw1 ? m_valid : 0);
    BarrierArriveExpect(full, a.stage_tx + static_cast<uint32_t>(sizeof(E)) * vectors);
    if (p.pw1)
      for (int q = 0; q < a.c_slabs; ++q)
        cute::SM90_TMA_LOAD_2D::copy(tw1, full, hint, to + q * kChunk * kSlabRowBytes, q * kSlabElems<E>, m0);
    if (p.pwl) cute::SM90_TMA_LOAD_2D::copy(tw2, full, hint, to + a.w2_in_stage, m0, u.f0);
    if (!p.pw1) cute::SM90_TMA_LOAD_4D::copy(tx, full, hint, to + a.xs_in_stage, m0, u.x0, u.y0, u.image);
  } else if (!tma) {
    if (p.pw1)
      for (int q = 0; q < a.c_slabs; ++q)
        CopySlab(SharedAddress(to + q * kChunk * kSlabRowBytes), kChunk, MatrixRows<E>{p.w1, m0, p.m, p.c}, q * kSlabElems<E>, p.c, vec,
                 p.x);
    if (p.pwl) CopySlab(SharedAddress(to + a.w2_in_stage), NF, MatrixRows<E>{p.w2, u.f0, p.f, p.m}, m0, p.m, vec, p.x);
    if (!p.pw1)
      CopySlab<kChunkRowBytes<E> / 16>(SharedAddress(to + a.xs_in_stage), a.region_rows, region, m0, p.c, vec, p.x, false);
  }
  if (p.dw) {
    CopyVector(tma, leader, full, to + a.wd_in_stage, p.wd + static_cast<size_t>(m0) * taps, m_valid * taps);
    CopyVector(tma, leader, full, to + a.bd_in_stage, p.bd + m0, m_valid);
  }
  if (p.pw1) CopyVector(tma, leader, full, to + a.b1_in_stage, p.b1 + m0, m_valid);
  if (!tma) BarrierArriveAfterCopies(full);
}

// kGroups: the computing warpgroups. With two, the host takes neither resident weights nor a
// clustered split, and this warp runs on kLoaderRegisters: those paths are not compiled in.
template <int NF, int kGroups, class E>
__device__ __forceinline__ void Produce(const BlockArgsOf<E>& a, uint8_t* smem, Barriers& bars, const CUtensorMap* tx,
                                        const CUtensorMap* tw1, const CUtensorMap* tw2, int cluster, int clusters, int rank) {
  const ChainProblemOf<E>& p = a.p;
  const bool resident = kGroups == 1 && a.resident;
  const bool leader = (threadIdx.x & 31) == 0;
  const bool tma = a.tma != 0, vec = a.vec != 0;
  const uint64_t hint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);
  // Resident weights: every chunk's operands once, for all units (one output-channel slice); the
  // first chunk's before the first unit's region, the others after it (the first stage of chunk 0
  // needs both, and nothing else to begin).
  auto load_resident = [&](int first, int last) {
    const Unit u = DecodeUnit(a, cluster, NF);
    const RegionRows<E> none{p.x, 0, 0, 0, p.h, p.w, p.c, a.region_w_div};
    for (int i = first, j = rank + first * a.split; i < last && j < a.chunks; ++i, j += a.split)
      LoadStage<NF>(a, smem + a.ring_off + i * a.stage_bytes, &bars.full[i], tx, tw1, tw2, u, none, j);
  };
  RingCursor ring;  // the stage the next chunk goes to
  // The first unit's weight copies (with a first stage they are nothing else) before the wait for the
  // previous kernel where weights_first says so: every resident chunk's, or as many of the ring's
  // stages as the unit's chunks fill. The region's copies (and without a first stage, every copy)
  // come after the wait.
  int early = 0;  // the first unit's chunks whose stages are loaded before the wait
  if (a.weights_first && p.pw1 && cluster < a.units) {
    if (resident) {
      load_resident(0, kMaxStages);
      early = a.stages;
    } else {
      const Unit u = DecodeUnit(a, cluster, NF);
      const RegionRows<E> none{p.x, 0, 0, 0, p.h, p.w, p.c, a.region_w_div};
      for (int j = rank; j < a.chunks && early < a.stages; j += a.split, ++early, ring = ring.Next(a.stages))
        LoadStage<NF>(a, smem + a.ring_off + ring.stage * a.stage_bytes, &bars.full[ring.stage], tx, tw1, tw2, u, none, j);
    }
  }
  if (a.weights_first) WaitPreviousGrid();  // (else waited for at entry) the input may come from the previous kernel
  if (resident && !early && cluster < a.units) load_resident(0, 1);
  int units_done = 0;
  // Where the cluster adds split shares, every thread of it passes one cluster barrier per unit
  // (FusedBlockKernel arrived at the first): this warp waits for the previous unit's and arrives at
  // this unit's once it has loaded the previous unit's operands, which the consumers needed to arrive.
  const bool shares = kGroups == 1 && ClusteredSplit(p, a.split);
  for (int index = cluster; index < a.units; index += clusters, ++units_done) {
    if (shares && units_done > 0) {
      ClusterWait();
      ClusterArriveRelaxed();
    }
    const Unit u = DecodeUnit(a, index, NF);
    const RegionRows<E> region{p.x, u.image, u.y0, u.x0, p.h, p.w, p.c, a.region_w_div};
    if (p.pw1) {
      const RegionSlot slot = RegionOf(a, units_done);
      const int buffer = slot.buffer;
      uint8_t* to = smem + a.x_off + buffer * a.region_bytes;
      BarrierWait(&bars.x_empty[buffer], slot.parity ^ 1);
      if (tma) {
        if (leader) {
          BarrierArriveExpect(&bars.x_full[buffer], a.region_tx);
          for (int q = 0; q < a.c_slabs; ++q)
            cute::SM90_TMA_LOAD_4D::copy(tx, &bars.x_full[buffer], hint, to + q * a.x_slab_bytes, q * kSlabElems<E>, u.x0, u.y0, u.image);
        }
      } else {
        for (int q = 0; q < a.c_slabs; ++q)
          CopySlab(SharedAddress(to + q * a.x_slab_bytes), a.region_rows, region, q * kSlabElems<E>, p.c, vec, p.x);
        BarrierArriveAfterCopies(&bars.x_full[buffer]);
      }
    }
    if (leader && units_done == 0) TraceMark(a, kTraceIssued);
    if (resident) {
      if (units_done == 0 && !early) load_resident(1, kMaxStages);
      continue;
    }
    for (int j = rank + (units_done == 0 ? early : 0) * a.split; j < a.chunks; j += a.split, ring = ring.Next(a.stages)) {
      BarrierWait(&bars.empty[ring.stage], ring.parity ^ 1);
      LoadStage<NF>(a, smem + a.ring_off + ring.stage * a.stage_bytes, &bars.full[ring.stage], tx, tw1, tw2, u, region, j);
    }
  }
  if (shares) ClusterWait();  // (the last arrival's: the loading warp leaves with none outstanding)
}

// ---- computing ----------------------------------------------------------------------------------

// The element at `at` as a float (read-only path).
template <class E>
__device__ __forceinline__ float LoadValue(const E* at) {
  return Element<E>::ToFloat(__ldg(at));
}

// y[pixel, f..f+1] = res_act(act2(sum + b2) + x[pixel, f..f+1]) for the channels below f_end.
template <class E>
__device__ __forceinline__ void StoreOutputPair(const ChainProblemOf<E>& p, size_t pixel, int f, float v0, float v1) {
  float v[2] = {v0 + LoadValue(p.b2 + f), f + 1 < p.f ? v1 + LoadValue(p.b2 + f + 1) : 0.f};
  p.act2.Apply(v);
  const size_t at = pixel * p.f + f;
  if (p.residual) {  // same shape as the output (checked)
    v[0] = p.res_act(v[0] + LoadValue(p.x + at));
    if (f + 1 < p.f) v[1] = p.res_act(v[1] + LoadValue(p.x + at + 1));
  }
  if (f + 1 < p.f && (p.f % 2) == 0) {
    StorePair(p.y + at, v[0], v[1]);
  } else {
    p.y[at] = Element<E>::FromFloat(v[0]);
    if (f + 1 < p.f) p.y[at + 1] = Element<E>::FromFloat(v[1]);
  }
}

// The output pixel of tile row `row` (a pixel index in the tile), or -1 outside the image.
template <class E>
__device__ __forceinline__ long long OutputPixel(const BlockArgsOf<E>& a, const Unit& u, int row);

// The last stage's epilogue over this thread's fragment of the tile (rows 16w + g and 16w + g + 8,
// column pairs 8n + 2t), straight from the accumulators: y = res_act(act2(acc + b2) + x). One
// activation dispatch per step for the whole fragment, and every residual load issued before the
// first is used.
template <int NF, class E>
__device__ __forceinline__ void StoreTile(const BlockArgsOf<E>& a, const Unit& u, float (&acc)[NF / 2]) {
  const ChainProblemOf<E>& p = a.p;
  const int lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3, g = lane >> 2, t = lane & 3;
  long long pixel[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) pixel[half] = OutputPixel(a, u, warp * 16 + g + 8 * half);
#pragma unroll
  for (int n = 0; n < NF / 8; ++n)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int f = u.f0 + 8 * n + 2 * t + c;
      const float b = f < p.f ? LoadValue(p.b2 + f) : 0.f;
      acc[4 * n + c] += b;
      acc[4 * n + 2 + c] += b;
    }
  p.act2.Apply(acc);
  if (p.residual) {  // the input, same shape as the output (checked)
    float x[NF / 2];
#pragma unroll
    for (int n = 0; n < NF / 8; ++n)
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int half = k >> 1, f = u.f0 + 8 * n + 2 * t + (k & 1);
        x[4 * n + k] = pixel[half] >= 0 && f < p.f ? LoadValue(p.x + pixel[half] * p.f + f) : 0.f;
      }
#pragma unroll
    for (int i = 0; i < NF / 2; ++i) acc[i] += x[i];
    p.res_act.Apply(acc);
  }
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    if (pixel[half] < 0) continue;
#pragma unroll
    for (int n = 0; n < NF / 8; ++n) {
      const int f = u.f0 + 8 * n + 2 * t;
      if (f >= p.f) continue;
      E* y = p.y + pixel[half] * p.f + f;
      const float v0 = acc[4 * n + 2 * half], v1 = acc[4 * n + 2 * half + 1];
      if (f + 1 < p.f && (p.f % 2) == 0) {
        StorePair(y, v0, v1);
      } else {
        y[0] = Element<E>::FromFloat(v0);
        if (f + 1 < p.f) y[1] = Element<E>::FromFloat(v1);
      }
    }
  }
}

template <class E>
__device__ __forceinline__ long long OutputPixel(const BlockArgsOf<E>& a, const Unit& u, int row) {
  if (row >= a.tile_h * a.tile_w) return -1;
  int oy, ox;
  a.tile_w_div.fast_divmod(oy, ox, row);
  const int yy = u.oy0 + oy, xx = u.ox0 + ox;
  if (yy >= a.p.out_h || xx >= a.p.out_w) return -1;
  return (static_cast<long long>(u.image) * a.p.out_h + yy) * a.p.out_w + xx;
}

// The channels of the input region multiplied by the channel scale (a squeeze-excitation output),
// in place, by the kGroups computing warpgroups together; the region is the first stage's A
// operand, so the writes are fenced for the tensor cores.
template <int kGroups, class E>
__device__ __forceinline__ void ScaleRegion(const BlockArgsOf<E>& a, uint32_t region, int image) {
  const ChainProblemOf<E>& p = a.p;
  const E* s = p.scale + static_cast<size_t>(p.scale_batch == 1 ? 0 : image) * p.c;
  const int per_slab = a.region_rows * 8;
  for (int i = threadIdx.x % (kGroups * kConsumers); i < per_slab * a.c_slabs; i += kGroups * kConsumers) {
    const int q = i / per_slab, r = (i - q * per_slab) >> 3, piece = i & 7;
    const int c = q * kSlabElems<E> + kPieceElems<E> * piece;
    const uint32_t at = region + q * a.x_slab_bytes + SwizzledOffset(r, piece);
    float4 v = LoadShared4(at);
    if constexpr (kIsHalf<E>) {  // the piece's 8 channels, two to a word
      float* words = reinterpret_cast<float*>(&v);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const uint32_t bits = __float_as_uint(words[k]);
        const uint16_t lo = static_cast<uint16_t>(bits & 0xFFFFu), hi = static_cast<uint16_t>(bits >> 16);
        const int ch = c + 2 * k;
        const float v0 = Element<E>::ToFloat(*reinterpret_cast<const E*>(&lo)) * (ch < p.c ? LoadValue(s + ch) : 0.f);
        const float v1 = Element<E>::ToFloat(*reinterpret_cast<const E*>(&hi)) * (ch + 1 < p.c ? LoadValue(s + ch + 1) : 0.f);
        words[k] = __uint_as_float(PackHalves<E>(v0, v1));
      }
    } else {
      v.x *= c < p.c ? __ldg(s + c) : 0.f;
      v.y *= c + 1 < p.c ? __ldg(s + c + 1) : 0.f;
      v.z *= c + 2 < p.c ? __ldg(s + c + 2) : 0.f;
      v.w *= c + 3 < p.c ? __ldg(s + c + 3) : 0.f;
    }
    StoreShared4(at, v);
  }
  FenceForAsyncProxy();
  if constexpr (kGroups == 1) {
    SyncConsumers();
  } else {
    SyncGroups();
  }
}

// The first pointwise stage of one chunk over the whole region, issued (asynchronous on sm_90):
// acc1[b] = region rows [64b, 64b + 64) x W1 chunk^T.
template <bool kExact, class E>
__device__ __forceinline__ void IssueFirst(const BlockArgsOf<E>& a, float (&acc1)[2][kChunk / 2], uint32_t region, uint32_t w1,
                                           bool two) {
  using Gemm = BlockGemm<kChunk, kExact, E>;
  // One arrive and one group for both row blocks, and no branch among the steps: the compiler then
  // neither adds arrives between them nor loses count of the groups in flight.
  if (two) {
    Gemm::Fence(acc1[0]);
    Gemm::Begin(acc1[1]);
    for (int q = 0; q < a.c_slabs; ++q) {
      const uint32_t at = region + q * a.x_slab_bytes, b = w1 + q * kChunk * kSlabRowBytes;
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        Gemm::Step(acc1[0], at, b, kk, q == 0 && kk == 0);
        Gemm::Step(acc1[1], at + kTileRows * kSlabRowBytes, b, kk, q == 0 && kk == 0);
      }
    }
  } else {
    Gemm::Begin(acc1[0]);
    for (int q = 0; q < a.c_slabs; ++q) {
      const uint32_t at = region + q * a.x_slab_bytes, b = w1 + q * kChunk * kSlabRowBytes;
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) Gemm::Step(acc1[0], at, b, kk, q == 0 && kk == 0);
    }
  }
  Gemm::Commit();
}

// Which of this thread's four first-stage rows (2 blocks x 2 halves, from region row `row0`) lie in
// the image, as a mask: the depthwise stage's zero padding applies to its input, U. The same for
// every chunk of a unit.
template <class E>
__device__ __forceinline__ unsigned InsideMask(const BlockArgsOf<E>& a, const Unit& u, int row0 = 0) {
  const ChainProblemOf<E>& p = a.p;
  const int lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3, g = lane >> 2;
  unsigned mask = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int row = row0 + (k >> 1) * kTileRows + warp * 16 + g + 8 * (k & 1);
    bool inside = row < a.region_rows;
    if (p.dw) {
      int ry, rx;
      a.region_w_div.fast_divmod(ry, rx, row);
      const int iy = u.y0 + ry, ix = u.x0 + rx;
      inside = inside && iy >= 0 && iy < p.h && ix >= 0 && ix < p.w;
    }
    mask |= static_cast<unsigned>(inside) << k;
  }
  return mask;
}

// A 4-byte word into shared memory: two adjacent half channels, as packed.
__device__ __forceinline__ void StoreSharedWord(uint32_t address, uint32_t word) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(address), "r"(word) : "memory");
}

// Two adjacent channels into shared memory: an A operand of the tensor cores (in E) or U (FP32).
template <class E>
__device__ __forceinline__ void StoreSharedPair(uint32_t address, float v0, float v1) {
  if constexpr (kIsHalf<E>) {
    StoreSharedWord(address, PackHalves<E>(v0, v1));
  } else {
    StoreShared2(address, v0, v1);
  }
}

// One value into a swizzled A operand slab in E (the depthwise stage's sink).
template <class E>
__device__ __forceinline__ void StoreSharedValue(uint32_t address, float v) {
  if constexpr (kIsHalf<E>) {
    const E h = Element<E>::FromFloat(v);
    asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(address), "h"(*reinterpret_cast<const uint16_t*>(&h)) : "memory");
  } else {
    StoreShared1(address, v);
  }
}

// A single pointwise stage (no first stage, no depthwise stage): the chunk's input rows (the tile's
// pixels, 32 channels each, as loaded), times the channel scale where there is one, into V, the
// stage's A operand (in E, swizzled), by the warps of one computing warpgroup, lane = channel.
// Channels past the input's end are zeros (loaded as zeros, and scaled by 0). The writes are for
// the tensor cores: the caller fences them.
template <class E>
__device__ __forceinline__ void ScaleChunk(const BlockArgsOf<E>& a, uint32_t input, int image, int m0, int m_valid, uint32_t v_slab) {
  const ChainProblemOf<E>& p = a.p;
  const int lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3;
  float s = lane < m_valid ? 1.f : 0.f;
  if (p.scale != nullptr && lane < m_valid) s = LoadValue(p.scale + static_cast<size_t>(p.scale_batch == 1 ? 0 : image) * p.c + m0 + lane);
  const uint32_t lane_input = input + lane * static_cast<uint32_t>(sizeof(E));
  for (int row = warp; row < a.region_rows; row += kConsumers / 32)
    StoreSharedValue<E>(v_slab + SwizzledAt<E>(row, lane), s * LoadSharedValue<E>(lane_input + row * kChunkRowBytes<E>));
}

// How StoreFirst stores a pair of values (v0 at the lower address), after applying the activation
// to all of them where it must: for half kernels, rounded to E and clamped on the rounded pair where
// the activation commutes with the rounding (PackedClamp), else activated in FP32 first. `keep` is
// the word's mask: a half zeroed where its value is outside the image or past the chunk's channels.
template <class E, class Out>
__device__ __forceinline__ auto FirstStagePairStore(const Activation& act, float (&v)[kChunk]) {
  if constexpr (kIsHalf<E>) {
    const PackedClamp<E> clamp(act);
    if (!clamp.takes) act.Apply(v);
    return [clamp](uint32_t at, float v0, float v1, uint32_t keep) { StoreSharedWord(at, clamp(v0, v1) & keep); };
  } else {
    act.Apply(v);  // (both blocks at one dispatch)
    return [](uint32_t at, float v0, float v1, uint32_t keep) {
      StoreSharedPair<Out>(at, keep & 0x0000ffffu ? v0 : 0.f, keep & 0xffff0000u ? v1 : 0.f);
    };
  }
}

// The first stage's epilogue: act1(acc1 + b1), zero outside the image (`inside`) and past the
// intermediate's channels, into U (for the depthwise stage: FP32 rows kUPitch bytes apart, or for
// half kernels E rows kHalfUPitch apart) or, without a depthwise stage, into V (in E, swizzled, the
// last stage's A operand). Rows past the region are not written.
template <bool kSwizzled, class E>
__device__ __forceinline__ void StoreFirst(const BlockArgsOf<E>& a, const float (&acc1)[2][kChunk / 2], const E* b1, int m_valid,
                                           unsigned inside, uint32_t out, int row0) {
  using Out = std::conditional_t<kSwizzled || kIsHalf<E>, E, float>;  // (a half U: rounded to E by the store, as the op rounds)
  constexpr int kPitch = kUPitchOf<E>;
  const int lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3, g = lane >> 2, t = lane & 3;
  float v[2][kChunk / 2];
#pragma unroll
  for (int b = 0; b < 2; ++b)
#pragma unroll
    for (int n = 0; n < kChunk / 8; ++n)
#pragma unroll
      for (int k = 0; k < 4; ++k) v[b][4 * n + k] = acc1[b][4 * n + k] + Element<E>::ToFloat(b1[8 * n + 2 * t + (k & 1)]);
  const auto store = FirstStagePairStore<E, Out>(a.p.act1, reinterpret_cast<float(&)[kChunk]>(v));
  const bool whole = m_valid >= kChunk;
#pragma unroll
  for (int b = 0; b < 2; ++b) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = row0 + b * kTileRows + warp * 16 + g + 8 * half;
      if (row >= a.region_rows) continue;
      const bool in = (inside >> (2 * b + half)) & 1;
      const auto at = [&](int col) { return out + (kSwizzled ? SwizzledAt<E>(row, col) : row * kPitch + col * sizeof(Out)); };
      if (in && whole) {  // a row inside the image, of a whole chunk (most rows): no test per value
#pragma unroll
        for (int n = 0; n < kChunk / 8; ++n) store(at(8 * n + 2 * t), v[b][4 * n + 2 * half], v[b][4 * n + 2 * half + 1], ~0u);
        continue;
      }
#pragma unroll
      for (int n = 0; n < kChunk / 8; ++n) {
        const int col = 8 * n + 2 * t;
        const uint32_t keep = (in && col < m_valid ? 0x0000ffffu : 0u) | (in && col + 1 < m_valid ? 0xffff0000u : 0u);
        store(at(col), v[b][4 * n + 2 * half], v[b][4 * n + 2 * half + 1], keep);
      }
    }
  }
}

// The depthwise stage's sink into V, the last stage's A operand (swizzled, in E). Pixel (oy, ox) of
// the tile is V's row oy * tile_w + ox; with the slab's own row index (its address / 128) added,
// a lane's address is (row << 7) + (((row << 4) & 0x70) ^ SwizzledAt(0, lane)): the slab is
// 1024-byte aligned, so the swizzle (an XOR with the row's low three bits) sees the same bits.
// Three instructions an address, where SwizzledAt from the slab takes six.
template <class E>
struct OperandSink {
  uint32_t slab_row;   // the slab's address / 128
  uint32_t lane_bits;  // SwizzledAt<E>(0, lane)
  int tile_w;
  __device__ __forceinline__ uint32_t At(uint32_t row) const { return (row << 7) + (((row << 4) & 0x70u) ^ lane_bits); }
  __device__ __forceinline__ void One(int oy, int ox, float v) const {
    StoreSharedValue<E>(At(slab_row + static_cast<uint32_t>(oy * tile_w + ox)), v);
  }
  template <int BH, int BW>
  __device__ __forceinline__ void Block(int oy0, int ox0, const float (&v)[BH * BW]) const {
#pragma unroll
    for (int r = 0; r < BH; ++r) {
      const uint32_t row = slab_row + static_cast<uint32_t>((oy0 + r) * tile_w + ox0);
#pragma unroll
      for (int x = 0; x < BW; ++x) StoreSharedValue<E>(At(row + x), v[r * BW + x]);
    }
  }
  // Two adjacent channels a lane (DepthwisePairsChunk; lane_bits then of the lane's first channel,
  // whose pair shares its 4-byte word: the swizzle moves 16-byte pieces). Half types only.
  __device__ __forceinline__ void OneWord(int oy, int ox, uint32_t word) const {
    StoreSharedWord(At(slab_row + static_cast<uint32_t>(oy * tile_w + ox)), word);
  }
  template <int BH, int BW>
  __device__ __forceinline__ void BlockWords(int oy0, int ox0, const uint32_t (&words)[BH * BW]) const {
#pragma unroll
    for (int r = 0; r < BH; ++r) {
      const uint32_t row = slab_row + static_cast<uint32_t>((oy0 + r) * tile_w + ox0);
#pragma unroll
      for (int x = 0; x < BW; ++x) StoreSharedWord(At(row + x), words[r * BW + x]);
    }
  }
};

// The depthwise stage's sink into the output (PW->DW): pixel (oy, ox) of the tile at
// y_tile[(oy * out_w + ox) * m], y_tile being the tile's first pixel at this lane's channel. Every
// pixel handed here is stored (the caller cuts the tile to the image); a block steps a pointer
// along its rows rather than computing each pixel's address.
template <class E>
struct OutputSink {
  E* y_tile;
  int out_w, m;
  bool lane_in;  // the lane's channel exists
  __device__ __forceinline__ void One(int oy, int ox, float v) const {
    if (lane_in) y_tile[(static_cast<size_t>(oy) * out_w + ox) * m] = Element<E>::FromFloat(v);
  }
  template <int BH, int BW>
  __device__ __forceinline__ void Block(int oy0, int ox0, const float (&v)[BH * BW]) const {
    if (!lane_in) return;
    E* row = y_tile + (static_cast<size_t>(oy0) * out_w + ox0) * m;
#pragma unroll
    for (int r = 0; r < BH; ++r, row += static_cast<size_t>(out_w) * m) {
      E* at = row;
#pragma unroll
      for (int x = 0; x < BW; ++x, at += m) *at = Element<E>::FromFloat(v[r * BW + x]);
    }
  }
  // Two adjacent channels a lane (DepthwisePairsChunk; y_tile then at the lane's first channel,
  // lane_in its first channel's existence, second_in its second's): one 4-byte store where both
  // exist and the pair is aligned to it (m even), else one value at a time.
  bool second_in;
  __device__ __forceinline__ void OneWord(int oy, int ox, uint32_t word) const {
    if (lane_in) StoreWord(y_tile + (static_cast<size_t>(oy) * out_w + ox) * m, word, second_in && m % 2 == 0);
  }
  template <int BH, int BW>
  __device__ __forceinline__ void BlockWords(int oy0, int ox0, const uint32_t (&words)[BH * BW]) const {
    if (!lane_in) return;
    E* row = y_tile + (static_cast<size_t>(oy0) * out_w + ox0) * m;
    const bool paired = second_in && m % 2 == 0;  // (uniform but at the chunk's end)
#pragma unroll
    for (int r = 0; r < BH; ++r, row += static_cast<size_t>(out_w) * m) {
      E* at = row;
#pragma unroll
      for (int x = 0; x < BW; ++x, at += m) StoreWord(at, words[r * BW + x], paired);
    }
  }
  // A pair's word: one 4-byte store where it is aligned to it, else its halves that exist.
  __device__ __forceinline__ void StoreWord(E* at, uint32_t word, bool paired) const {
    if (paired) {
      *reinterpret_cast<uint32_t*>(at) = word;
    } else {
      reinterpret_cast<uint16_t*>(at)[0] = static_cast<uint16_t>(word);
      if (second_in) reinterpret_cast<uint16_t*>(at)[1] = static_cast<uint16_t>(word >> 16);
    }
  }
};

// The lane's (first) channel in the depthwise stage: the lane itself, or for a half U read in pairs
// (Depthwise), the first of its two channels.
template <class E>
__device__ __forceinline__ int DepthwiseLaneChannel(bool from_u, int lane) {
  return kIsHalf<E> && from_u ? 2 * (lane & 15) : lane;
}

// With a last stage: the depthwise stage of a chunk into V, that stage's A operand (swizzled, in E).
template <class E>
__device__ __forceinline__ void DepthwiseToOperand(const BlockArgsOf<E>& a, const DepthwiseGeometry& geometry, uint32_t input,
                                                   const uint8_t* operands, int m_valid, uint32_t v_slab) {
  const ChainProblemOf<E>& p = a.p;
  const int lane = threadIdx.x & 31;
  const E* wd = reinterpret_cast<const E*>(operands + a.wd_in_stage);
  const E* bd = reinterpret_cast<const E*>(operands + a.bd_in_stage);
  const OperandSink<E> sink{v_slab >> 7, SwizzledAt<E>(0, DepthwiseLaneChannel<E>(p.pw1, lane)), a.tile_w};
  Depthwise(p.pw1, p.kernel, p.stride, geometry, input, wd, bd, m_valid, p.actd, sink);
}

// Without a last stage (PW->DW): the depthwise stage of chunk `m0` straight to the output, the
// tile cut to the image.
template <class E>
__device__ __forceinline__ void DepthwiseToOutput(const BlockArgsOf<E>& a, const Unit& u, const DepthwiseGeometry& geometry,
                                                  uint32_t input, const uint8_t* operands, int m0, int m_valid) {
  const ChainProblemOf<E>& p = a.p;
  const int lane = threadIdx.x & 31;
  const E* wd = reinterpret_cast<const E*>(operands + a.wd_in_stage);
  const E* bd = reinterpret_cast<const E*>(operands + a.bd_in_stage);
  DepthwiseGeometry in_image = geometry;
  in_image.tile_h = min(geometry.tile_h, p.out_h - u.oy0);
  in_image.tile_w = min(geometry.tile_w, p.out_w - u.ox0);
  const int c = DepthwiseLaneChannel<E>(p.pw1, lane);
  const OutputSink<E> sink{p.y + ((static_cast<size_t>(u.image) * p.out_h + u.oy0) * p.out_w + u.ox0) * p.m + m0 + c, p.out_w, p.m,
                           c < m_valid, c + 1 < m_valid};
  Depthwise(p.pw1, p.kernel, p.stride, in_image, input, wd, bd, m_valid, p.actd, sink);
}

// The first stage's epilogue of a chunk whose gemm has finished: into U for a depthwise stage, else
// into V, the last stage's operand (fenced for the tensor cores). `row0`: the region row of acc1's
// first row (128 for the second half of a wide region).
template <class E>
__device__ __forceinline__ void FinishFirst(const BlockArgsOf<E>& a, const float (&acc1)[2][kChunk / 2], const uint8_t* operands,
                                            int m_valid, unsigned inside, uint32_t u_slab, uint32_t v_slab, int row0 = 0) {
  const E* b1 = reinterpret_cast<const E*>(operands + a.b1_in_stage);
  if (a.p.dw) {
    StoreFirst<false>(a, acc1, b1, m_valid, inside, u_slab, row0);
  } else {
    StoreFirst<true>(a, acc1, b1, m_valid, inside, v_slab, row0);
    FenceForAsyncProxy();
  }
}

// With a last stage: a chunk's operand V, from U or (no first stage) the chunk's input, by its
// depthwise stage or (a single pointwise stage) the scaled copy. False where the first stage wrote
// V itself (PW->PW); true where the caller still fences V's writes and syncs the warpgroup.
template <class E>
__device__ __forceinline__ bool FillOperand(const BlockArgsOf<E>& a, const DepthwiseGeometry& geometry, uint32_t u_slab,
                                            const uint8_t* operands, int image, int m0, int m_valid, uint32_t v_slab) {
  const ChainProblemOf<E>& p = a.p;
  const uint32_t loaded = SharedAddress(operands + a.xs_in_stage);  // (no first stage: the chunk's input)
  if (p.dw) {
    DepthwiseToOperand(a, geometry, p.pw1 ? u_slab : loaded, operands, m_valid, v_slab);
    return true;
  }
  if (!p.pw1) {
    ScaleChunk(a, loaded, image, m0, m_valid, v_slab);
    return true;
  }
  return false;
}

// The last stage's gemm of one chunk, issued: acc2 += V W2 chunk^T (acc2 = V W2^T for the unit's
// first chunk). kFence as BlockGemm::Begin's.
template <bool kFence, class Gemm2, class E>
__device__ __forceinline__ void IssueLast(float (&acc2)[Gemm2::kRegs], uint32_t v_slab, const uint8_t* operands, uint32_t w2_in_stage,
                                          bool first) {
  Gemm2::template Begin<kFence>(acc2);
#pragma unroll
  for (int kk = 0; kk < kChunkSteps<E>; ++kk) Gemm2::Step(acc2, v_slab, SharedAddress(operands + w2_in_stage), kk, first && kk == 0);
  Gemm2::Commit();
}

// The computing warpgroup. Per unit, the chunks i = 0, 1, ... of this CTA run as a software
// pipeline, so that the tensor cores work while the CUDA cores do:
//   iteration i:  issue P1(i+1)  |  DW(i): U -> V[i%2]  |  issue P2(i) on V[i%2]
//                 wait for P1(i+1) (P2(i) stays in flight)  |  U = epilogue of P1(i+1)
// A ring stage is released once P2 of its chunk has finished (the wait of the next iteration),
// so the ring needs three stages: chunk i+1's while i computes and i-1's last reader finishes.
//
// kWide: a region of more than 128 pixels (PW->DW->PW), its first stage in two halves (below). A
// kernel of its own (FusedBlockKernel's kWide): in one body with the narrow path, the branch between
// the halves cost every kernel waits and spills that ptxas added.
template <int NF, bool kExact, bool kWide, class E>
__device__ __forceinline__ void Consume(const BlockArgsOf<E>& a, uint8_t* smem, Barriers& bars, int cluster, int clusters, int rank) {
  using Gemm1 = BlockGemm<kChunk, kExact, E>;
  using Gemm2 = BlockGemm<NF == 0 ? 8 : NF, kExact, E>;
  constexpr bool kAsync = Gemm2::kAsync;
  const ChainProblemOf<E>& p = a.p;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const uint32_t base = SharedAddress(smem);
  const uint32_t u_slab = base + a.u_off;
  const bool two_blocks = a.region_rows > kTileRows;
  // A wide region (more than 128 pixels: stride-2 tiles of more than about 25 pixels) has its first
  // stage in two halves of up to 128 rows, one after the other through the same accumulators, with
  // no other gemm in flight (the chunk's last stage waited for first; PW->DW->PW, one warpgroup)
  const bool two_blocks_b = a.region_rows > 3 * kTileRows;
  constexpr uint32_t kHalfRegion = 2 * kTileRows * kSlabRowBytes;
  const DepthwiseGeometry geometry{a.tile_h, a.tile_w, a.region_w, a.dw_blocks, a.dw_blocks_w};
  const int mine = a.chunks > rank ? (a.chunks - 1 - rank) / a.split + 1 : 0;  // chunks of this CTA per unit

  float acc1[2][kChunk / 2];
  float acc2[Gemm2::kRegs];
#pragma unroll
  for (int i = 0; i < Gemm2::kRegs; ++i) acc2[i] = 0.f;
  RingCursor head;  // the stage of the unit's first chunk
  int units_done = 0;
  // With resident weights chunk i always has stage i (the ring's depth is the CTA's chunks), filled
  // once (parity 0), never released.
  auto staged = [&](int s) { return smem + a.ring_off + s * a.stage_bytes; };
  auto release = [&](const RingCursor& c) {
    if (!a.resident) BarrierArrive(&bars.empty[c.stage]);
  };

  for (int index = cluster; index < a.units; index += clusters, ++units_done) {
    const Unit u = DecodeUnit(a, index, NF);
    if (a.resident) head = RingCursor{};
    const unsigned inside = p.pw1 ? InsideMask(a, u) : 0u;
    const unsigned inside_b = kWide ? InsideMask(a, u, 2 * kTileRows) : 0u;
    const RegionSlot slot = RegionOf(a, units_done);
    const int buffer = slot.buffer;
    const uint32_t region = base + a.x_off + buffer * a.region_bytes;
    // a wide region's second half of a chunk's first stage (rows 128 on): issued with no gemm in
    // flight, waited for, and its epilogue written; `last`: the unit's last chunk, whose first stage
    // frees the region buffer
    auto second_half = [&](const uint8_t* operands, int m_valid, uint32_t v_slab, bool last) {
      IssueFirst<kExact>(a, acc1, region + kHalfRegion, SharedAddress(operands), two_blocks_b);
      WaitGemms<kAsync>();
      Gemm1::Fence(acc1[0]);
      Gemm1::Fence(acc1[1]);
      if (last) BarrierArrive(&bars.x_empty[buffer]);
      FinishFirst(a, acc1, operands, m_valid, inside_b, u_slab, v_slab, 2 * kTileRows);
    };
    // prologue: chunk 0's first stage
    if (p.pw1) {
      BarrierWait(&bars.full[head.stage], head.parity);
      BarrierWait(&bars.x_full[buffer], slot.parity);
      if (tid == 0 && units_done == 0) TraceMark(a, kTraceOperands);
      if (p.scale != nullptr) ScaleRegion<1>(a, region, u.image);
      const uint32_t w1 = SharedAddress(staged(head.stage));
      const int m_valid = min(kChunk, p.m - rank * kChunk);
      IssueFirst<kExact>(a, acc1, region, w1, two_blocks);
      WaitGemms<kAsync>();
      Gemm1::Fence(acc1[0]);
      Gemm1::Fence(acc1[1]);
      if (mine == 1 && !kWide) BarrierArrive(&bars.x_empty[buffer]);
      FinishFirst(a, acc1, staged(head.stage), m_valid, inside, u_slab, base + a.v_off);
      if constexpr (kWide) second_half(staged(head.stage), m_valid, base + a.v_off, mine == 1);
      SyncConsumers();
      if (tid == 0 && units_done == 0) TraceMark(a, kTraceFirstChunk);
    }
    // The last stage's accumulators pinned here, where no group holds them: its groups below chain
    // onto each other without touching them (Begin<false>).
    Gemm2::Fence(acc2);
    RingCursor previous, current = head;
    for (int i = 0; i < mine; ++i) {
      const RingCursor following = current.Next(a.stages);
      const int j = rank + i * a.split;
      const int m0 = j * kChunk, m_valid = min(kChunk, p.m - m0);
      uint8_t* operands = staged(current.stage);
      const uint32_t v_slab = base + a.v_off + (i & 1) * a.v_bytes;
      const bool next = i + 1 < mine;
      if (!p.pw1) {  // (with a first stage, waited for below or in the prologue)
        BarrierWait(&bars.full[current.stage], current.parity);
        if (tid == 0 && units_done == 0 && i == 0) TraceMark(a, kTraceOperands);
      }
      if (next && p.pw1) {
        BarrierWait(&bars.full[following.stage], following.parity);
        IssueFirst<kExact>(a, acc1, region, SharedAddress(staged(following.stage)), two_blocks);
      }
      if (!p.pwl) {
        DepthwiseToOutput(a, u, geometry, p.pw1 ? u_slab : SharedAddress(operands + a.xs_in_stage), operands, m0, m_valid);
      } else {
        if (FillOperand(a, geometry, u_slab, operands, u.image, m0, m_valid, v_slab)) {
          FenceForAsyncProxy();
          SyncConsumers();  // V[i%2] written
        }
        IssueLast<false, Gemm2, E>(acc2, v_slab, operands, a.w2_in_stage, i == 0);
      }
      // P1(i+1) done; P2(i) may still run (it reads V[i%2] and this stage's W2), P2(i-1) is done
      // (a wide region: P2(i) done too, so that the second half's gemm is issued with none in flight)
      if constexpr (kAsync) {
        if (p.pwl && !kWide) {
          cute::warpgroup_wait<1>();
        } else {
          cute::warpgroup_wait<0>();
        }
      }
      Gemm1::Fence(acc1[0]);
      Gemm1::Fence(acc1[1]);
      // release the stage nothing reads any more: chunk i-1's (its P2 just finished), or without a
      // last stage chunk i's own (its depthwise stage is done)
      if (!p.pwl) {
        SyncConsumers();  // U is rewritten below: every warp's depthwise stage has read it
        release(current);
      } else if (i > 0) {
        release(previous);
      }
      if (next && p.pw1) {
        const int next_valid = min(kChunk, p.m - m0 - a.split * kChunk);
        const uint32_t next_v = base + a.v_off + ((i + 1) & 1) * a.v_bytes;
        if (i + 2 == mine && !kWide) BarrierArrive(&bars.x_empty[buffer]);  // the last chunk's first stage has read the region
        FinishFirst(a, acc1, staged(following.stage), next_valid, inside, u_slab, next_v);
        if constexpr (kWide) second_half(staged(following.stage), next_valid, next_v, i + 2 == mine);
      }
      SyncConsumers();  // U (or V) of chunk i+1 written; U of chunk i no longer read
      previous = current;
      current = following;
    }
    head = current;  // the next unit's first chunk
    if (!p.pwl) {  // (the depthwise stage stored the unit's chunks)
      if (tid == 0 && units_done == 0) TraceMark(a, kTraceStored);
      continue;
    }
    WaitGemms<kAsync>();
    Gemm2::Fence(acc2);
    release(previous);  // the last chunk's stage
    if (tid == 0 && units_done == 0) TraceMark(a, kTraceChunks);

    if (a.split == 1) {
      if constexpr (NF > 0) StoreTile<NF>(a, u, acc2);
      if (tid == 0 && units_done == 0) TraceMark(a, kTraceStored);
      continue;
    }
    // The cluster's CTAs each hold a share of the sums; each CTA adds every CTA's shares of its part
    // of the tile's rows (rows_each of them) in rank order, the same bits in every CTA. Each CTA
    // stores each row's shares into the adding CTA's shared memory, slot [rank][row], by asynchronous
    // remote stores that count their bytes on that CTA's `shares` barrier: the adding CTA waits for
    // its bytes, not for a cluster barrier, and no CTA waits for its stores. The cluster barrier
    // before the stores (arrived at in FusedBlockKernel for the first unit, below for the others)
    // says every peer runs, and has read the previous unit's shares out of the slots.
    const uint32_t shares = base + a.red_off;
    const int rows_each = CeilDiv(kTileRows, a.split);
    const int row0 = rank * rows_each, rows = max(min(kTileRows, row0 + rows_each) - row0, 0);
    ClusterWait();
    if (tid == 0) BarrierArriveExpect(&bars.shares, static_cast<uint32_t>(a.split * rows * NF * 4));  // every peer's rows x NF floats
    const uint32_t shares_bar = SharedAddress(&bars.shares);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int row = warp * 16 + g + 8 * half, owner = row / rows_each;
      const uint32_t slot = PeerAddress(shares + ((rank * rows_each + row - owner * rows_each) * a.red_ld + 2 * t) * 4, owner);
      const uint32_t owner_bar = PeerAddress(shares_bar, owner);
#pragma unroll
      for (int n = 0; n < NF / 8; ++n) StoreAsyncPeer2(slot + 32 * n, owner_bar, acc2[4 * n + 2 * half], acc2[4 * n + 2 * half + 1]);
    }
    BarrierWait(&bars.shares, static_cast<uint32_t>(units_done) & 1u);
    if (tid == 0 && units_done == 0) TraceMark(a, kTraceShares);
    constexpr int kPairs = NF == 0 ? 1 : NF / 2;  // (no last stage: not reached)
    for (int i = tid; i < rows * kPairs; i += kConsumers) {
      const int local = i / kPairs, col = 2 * (i % kPairs);
      const long long pixel = OutputPixel(a, u, row0 + local);
      const int f = u.f0 + col;
      if (pixel < 0 || f >= p.f) continue;
      float2 sum = make_float2(0.f, 0.f);
      for (int peer = 0; peer < a.split; ++peer) {
        const float2 s = LoadShared2(shares + ((peer * rows_each + local) * a.red_ld + col) * 4);
        sum.x += s.x, sum.y += s.y;
      }
      StoreOutputPair(p, pixel, f, sum.x, sum.y);
    }
    if (tid == 0 && units_done == 0) TraceMark(a, kTraceStored);
    // (the slots' values are used: a relaxed arrival; the next unit's stores wait for it)
    if (index + clusters < a.units) ClusterArriveRelaxed();
  }
  if (ClusteredSplit(p, a.split) && units_done == 0) ClusterWait();  // (a cluster with no unit: the first arrival's)
}

// Two computing warpgroups on each unit (`groups` 2): warpgroup w computes the CTA's chunks
// i = w, w + 2, ... one after the other (first stage, depthwise stage, last stage, each finished
// before the next begins) into its own U, V and partial sums of the last stage. The two overlap each
// other rather than themselves: the chain of chunks a unit waits for is half as long, which is what
// bounds the late blocks, whose units are about as many as the SMs. A ring stage has one reader,
// which releases it, so the ring needs no more stages than with one warpgroup. After the unit's
// chunks warpgroup 1 leaves its sums in shared memory and warpgroup 0 adds them and stores the tile.
// Without a last stage (PW->DW, NF 0) each warpgroup writes its chunks' channels of the output
// itself, and the two never wait for each other: twice the warps issuing on a CTA whose shared
// memory (the whole input region of a wide first stage) leaves room for no second CTA on the SM;
// a split then gives each CTA of a unit every split-th chunk, as with one warpgroup.
template <int NF, class E>
__device__ __forceinline__ void ConsumeHalves(const BlockArgsOf<E>& a, uint8_t* smem, Barriers& bars, int cluster, int clusters,
                                              int rank, int group) {
  using Gemm1 = BlockGemm<kChunk, false, E>;
  using Gemm2 = BlockGemm<NF == 0 ? 8 : NF, false, E>;
  constexpr bool kAsync = Gemm2::kAsync;
  constexpr bool kLast = NF > 0;  // a last pointwise stage (else PW->DW)
  const ChainProblemOf<E>& p = a.p;
  const int tid = threadIdx.x % kConsumers;
  const uint32_t base = SharedAddress(smem);
  const uint32_t u_slab = base + a.u_off + group * a.u_bytes;
  const uint32_t v_slab = base + a.v_off + group * a.v_bytes;
  const uint32_t shares = base + a.red_off;
  const bool two_blocks = a.region_rows > kTileRows;
  const DepthwiseGeometry geometry{a.tile_h, a.tile_w, a.region_w, a.dw_blocks, a.dw_blocks_w};
  // the CTA's chunks of a unit: rank, rank + split, ... (a split only without a last stage), and of
  // those this warpgroup's: group, group + 2, ...
  const int mine = a.chunks > rank ? (a.chunks - 1 - rank) / a.split + 1 : 0;
  const int own = (mine - group + 1) / 2;

  float acc1[2][kChunk / 2];
  float acc2[Gemm2::kRegs];
  RingCursor head;  // the stage of the unit's first chunk
  int units_done = 0;
  auto staged = [&](int s) { return smem + a.ring_off + s * a.stage_bytes; };

  for (int index = cluster; index < a.units; index += clusters, ++units_done) {
    const Unit u = DecodeUnit(a, index, NF);
    const unsigned inside = p.pw1 ? InsideMask(a, u) : 0u;
    const RegionSlot slot = RegionOf(a, units_done);
    const int buffer = slot.buffer;
    const uint32_t region = base + a.x_off + buffer * a.region_bytes;
    if (p.pw1) {
      BarrierWait(&bars.x_full[buffer], slot.parity);
      if (threadIdx.x == 0 && units_done == 0) TraceMark(a, kTraceOperands);
      if (p.scale != nullptr) ScaleRegion<2>(a, region, u.image);
      if (own == 0) BarrierArrive(&bars.x_empty[buffer]);
    }
    if (own == 0) {
#pragma unroll
      for (int i = 0; i < Gemm2::kRegs; ++i) acc2[i] = 0.f;
    }
    RingCursor at = group == 0 ? head : head.Next(a.stages);
    for (int k = 0; k < own; ++k) {
      const int m0 = (rank + (group + 2 * k) * a.split) * kChunk, m_valid = min(kChunk, p.m - m0);
      uint8_t* operands = staged(at.stage);
      BarrierWait(&bars.full[at.stage], at.parity);
      if (p.pw1) {
        IssueFirst<false>(a, acc1, region, SharedAddress(operands), two_blocks);
        WaitGemms<kAsync>();
        Gemm1::Fence(acc1[0]);
        Gemm1::Fence(acc1[1]);
        if (k + 1 == own) BarrierArrive(&bars.x_empty[buffer]);  // this warpgroup's last read of the region
        FinishFirst(a, acc1, operands, m_valid, inside, u_slab, v_slab);
        SyncConsumers(group);  // U (or V) written
      }
      if (!kLast) {  // PW->DW: the depthwise stage to the output, then U and the stage are free
        DepthwiseToOutput(a, u, geometry, u_slab, operands, m0, m_valid);
        SyncConsumers(group);  // U read (the next chunk's first-stage epilogue rewrites it)
        BarrierArrive(&bars.empty[at.stage]);
        at = at.Next(a.stages).Next(a.stages);
        continue;
      }
      if (FillOperand(a, geometry, u_slab, operands, u.image, m0, m_valid, v_slab)) {
        FenceForAsyncProxy();
        SyncConsumers(group);  // V written (and U read)
      }
      IssueLast<true, Gemm2, E>(acc2, v_slab, operands, a.w2_in_stage, k == 0);
      WaitGemms<kAsync>();
      Gemm2::Fence(acc2);
      BarrierArrive(&bars.empty[at.stage]);
      at = at.Next(a.stages).Next(a.stages);
      // (the next chunk's first-stage epilogue rewrites U, and its depthwise stage V: both were read
      // before the barriers above and the wait)
    }
    for (int i = 0; i < mine; ++i) head = head.Next(a.stages);
    if constexpr (kLast) {
      if (group == 1) {
#pragma unroll
        for (int i = 0; i < Gemm2::kRegs; ++i) StoreShared1(shares + (i * kConsumers + tid) * 4, acc2[i]);
      }
      SyncGroups();
      if (group == 0) {
#pragma unroll
        for (int i = 0; i < Gemm2::kRegs; ++i) acc2[i] += __uint_as_float(LoadShared1(shares + (i * kConsumers + tid) * 4));
        StoreTile<NF>(a, u, acc2);
        if (threadIdx.x == 0 && units_done == 0) TraceMark(a, kTraceStored);
      }
      SyncGroups();  // the shares are read before warpgroup 1 writes the next unit's
    }
  }
}

// Two or three CTAs share an SM (one computes while the others wait on barriers and copies) below 96
// output channels; wider accumulators, and the exact FP32 path's operands, need the registers of one.
// A wide region's shared memory leaves room for two CTAs at most: their registers.
template <int NF, bool kExact, int kGroups, bool kWide = false>
constexpr int MinBlocksPerSm() {
  return kExact || NF >= 96 || kGroups > 1 ? 1 : NF <= 32 && !kWide ? 3 : 2;
}

// kWide: a region of more than 128 pixels (Consume's kWide), a kernel of its own for a few widths.
template <int NF, bool kExact, int kGroups, class E, bool kWide = false>
__global__ void __launch_bounds__(BlockThreads(kGroups), MinBlocksPerSm<NF, kExact, kGroups, kWide>())
    FusedBlockKernel(const __grid_constant__ BlockArgsOf<E> a, const __grid_constant__ CUtensorMap tx, const __grid_constant__ CUtensorMap tw1,
                     const __grid_constant__ CUtensorMap tw2) {
  static_assert(!kWide || (kGroups == 1 && NF > 0), "a wide region: PW->DW->PW with one computing warpgroup");
  extern __shared__ uint8_t dynamic_shared[];
  uint8_t* smem = dynamic_shared + ((kSlabAlign - (SharedAddress(dynamic_shared) & (kSlabAlign - 1))) & (kSlabAlign - 1));
  Barriers& bars = *reinterpret_cast<Barriers*>(smem + a.bar_off);
  if (threadIdx.x == 0) TraceOpen(a);
  if (a.tma && threadIdx.x == kGroups * kConsumers) {  // the loading thread: the descriptors while the barriers are made
    cute::prefetch_tma_descriptor(&tx);  // (the region's, or without a first stage the chunks' input)
    if (a.p.pw1) cute::prefetch_tma_descriptor(&tw1);
    if (a.p.pwl) cute::prefetch_tma_descriptor(&tw2);
  }
  if (threadIdx.x == 0) {
    const uint32_t producer_arrivals = a.tma ? 1 : 32;
    for (int s = 0; s < a.stages; ++s) {
      BarrierInit(&bars.full[s], producer_arrivals);
      BarrierInit(&bars.empty[s], kConsumers);
    }
    for (int r = 0; r < 2; ++r) {
      BarrierInit(&bars.x_full[r], producer_arrivals);
      BarrierInit(&bars.x_empty[r], kGroups * kConsumers);  // every computing warpgroup reads the region
    }
    BarrierInit(&bars.shares, 1);  // (its CTA's expecting arrival; the peers' stores count bytes)
    BarrierInitFence();  // (to the cluster too: peers' stores complete on this CTA's shares barrier)
  }
  __syncthreads();
  // (a clustered split has one computing warpgroup and every thread reaches the end: the host checks)
  const bool clustered = ClusteredSplit(a.p, a.split);
  const int rank = clustered ? RankInCluster() : static_cast<int>(blockIdx.x) % a.split;
  // A cluster's first barrier: arrived at here, waited for just before the first remote store (every
  // peer then runs, its barriers initialized), so that no CTA waits here for its peers to start.
  if (clustered) ClusterArriveRelaxed();
  if (threadIdx.x == 0) TraceMark(a, kTraceBarriers);
  // Every warp waits here for the previous kernel in the stream (its outputs may be this kernel's
  // input, scale or residual, and its reads this kernel's output); with weights_first the loading
  // warp waits in Produce instead, after the copies that need no waiting.
  const bool loading = threadIdx.x >= kGroups * kConsumers;
  if (!loading || !a.weights_first) WaitPreviousGrid();
  if (threadIdx.x == 0) TraceMark(a, kTraceInputs);
  const int cluster = blockIdx.x / a.split, clusters = gridDim.x / a.split;
  // the role as a warp-uniform value (a shuffle): the tensor-core code stays on a path the compiler
  // knows is uniform, so it does not serialize the asynchronous gemms
  const int warp = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 32, 0);
  if (warp >= kGroups * kConsumers / 32) {
    if constexpr (kGroups > 1) {  // the loading warpgroup gives its registers to the computing ones; one warp of it loads
      cutlass::arch::warpgroup_reg_dealloc<kLoaderRegisters>();
      if (warp != kGroups * kConsumers / 32) {
        LaunchNextGrid();
        return;
      }
    }
    Produce<NF, kGroups>(a, smem, bars, &tx, &tw1, &tw2, cluster, clusters, rank);
  } else if constexpr (kGroups == 1) {
    Consume<NF, kExact, kWide>(a, smem, bars, cluster, clusters, rank);
  } else {
    static_assert(!kExact, "two computing warpgroups: tensor cores (TF32, FP16, BF16)");
    cutlass::arch::warpgroup_reg_alloc<kComputeRegisters>();
    ConsumeHalves<NF>(a, smem, bars, cluster, clusters, rank, warp / (kConsumers / 32));
  }
  LaunchNextGrid();
  // (no CTA reads a peer's shared memory, and the shares barrier waits for every store into its CTA:
  // a CTA leaves without waiting for its peers)
  if (threadIdx.x == 0) TraceMark(a, kTraceExit);
}

}  // namespace block
}  // namespace fcm
