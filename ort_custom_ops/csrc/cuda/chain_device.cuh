// The device side of the FCM ops' CUDA kernels: one fused-chain kernel template for the four kinds.
//
// A block computes one output tile (tile_h x tile_w <= kPixels pixels of one image) for a range
// of output channels. The intermediate channels (the inputs of the last pointwise stage) go in
// chunks of 32: for each chunk the first pointwise stage (if any) computes it over the tile's input
// region (tile plus halo) from the input tile held in shared memory, the depthwise stage (if any)
// reduces it to the output tile, and the last pointwise stage adds the chunk's contribution to
// accumulators in registers. Nothing intermediate reaches device memory. The next chunk's weights
// (and, for DW->PW, its input channels) are copied asynchronously while this chunk computes.
// PW->DW has no last pointwise stage: a block owns one chunk of output channels and stores the
// depthwise result directly.
//
// The pieces: LoadRegion / StageFragments (device -> shared, cp.async), FirstPointwise and
// LastPointwise (block GEMMs on TF32 tensor cores, mma.sync m16n8k8, or exact FP32 FMAs in the same
// fragment layout), Depthwise, and the epilogues (epilogue.h: bias + activation, residual).
//
// Split > 1 divides a tile's intermediate channels among blocks; each writes partial sums to a
// workspace and ReduceSplits adds them (deterministically) and applies the epilogue.
#pragma once

#include "chain_launch.h"

namespace fcm {
namespace chain {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 32;  // intermediate channels per step
constexpr int kChunkSteps = kChunk / 8;

__host__ __device__ constexpr int RoundUp(int v, int to) { return (v + to - 1) / to * to; }

// A leading dimension >= n, congruent to 8 mod 32: B fragments (rows t, columns g) hit 32 banks.
__host__ __device__ constexpr int LdB(int n) { return RoundUp(n, 8) + ((8 - RoundUp(n, 8) % 32) + 32) % 32; }

// Largest output-channel count per block: the last stage's accumulators (kPixels / 64 n-tiles of
// 8 pixels per warp, times this / 16 m-tiles, times 4) must fit the registers.
__host__ __device__ constexpr int MaxTileF(int pixels) { return pixels == 64 ? 256 : 128; }

struct KernelArgs {
  ChainProblem p;
  float* partial;  // split > 1: [split][n][f][out_h * out_w]
  int tile_h, tile_w, tiles_w, thw;
  int in_h, in_w, in_hw;
  int cp, ks1;  // input channels padded to 8, and the first stage's k-steps
  int ldx, ldt, ldu;
  int f_tile, f_tiles, ftp;  // ftp: f_tile padded to 16 (rows of the staged last-stage weights)
  int chunks, chunks_per_split, buffers;
  bool w1_direct;  // first-stage weights read from device memory (too many input channels to stage them)
};

// ---- tensor-core and FMA fragments ---------------------------------------------------------------

__device__ __forceinline__ float RoundTf32(float x) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return __uint_as_float(r);
}

// The staged weights (A operands) are in fragment order: for m-tile mt, k-step ks and lane
// (g = lane / 4, t = lane % 4) one float4 {A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4]}, so a warp
// loads an A fragment with one 16-byte shared load per lane.
__device__ __forceinline__ int FragIndex(int row, int col, int ksteps) {
  const int mt = row >> 4, r = row & 15, ks = col >> 3, kk = col & 7;
  const int lane = ((r & 7) << 2) | (kk & 3);
  const int e = (r >> 3) | ((kk >> 2) << 1);
  return (((mt * ksteps + ks) << 5) | lane) * 4 + e;
}

// A B fragment (8 k x 8 n) of a row-major shared matrix: TF32 holds what mma.sync takes (lane
// (g, t): B[t][g], B[t+4][g]); FP32 holds what the FMA path needs (B[k][2t], B[k][2t+1], k < 8).
template <bool kTf32>
struct BFrag;

template <>
struct BFrag<true> {
  float b0, b1;
  // `src` points at B[k0][n0]; the values are already rounded to TF32 where they were written
  __device__ __forceinline__ void Load(const float* src, int ld, int lane) {
    const int g = lane >> 2, t = lane & 3;
    b0 = src[t * ld + g];
    b1 = src[(t + 4) * ld + g];
  }
};

template <>
struct BFrag<false> {
  float2 v[8];
  __device__ __forceinline__ void Load(const float* src, int ld, int lane) {
    const int t = lane & 3;
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = *reinterpret_cast<const float2*>(src + k * ld + 2 * t);
  }
};

// c (16x8, lane (g, t) holding C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]) += A (16x8) * B (8x8).
__device__ __forceinline__ void Mma(float (&c)[4], const float4& a, const BFrag<true>& b) {
  const unsigned a0 = __float_as_uint(RoundTf32(a.x)), a1 = __float_as_uint(RoundTf32(a.y));
  const unsigned a2 = __float_as_uint(RoundTf32(a.z)), a3 = __float_as_uint(RoundTf32(a.w));
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(__float_as_uint(b.b0)), "r"(__float_as_uint(b.b1)));
}

// The exact path: the same fragments, FP32 FMAs; the A rows come from the lanes holding them.
__device__ __forceinline__ void Mma(float (&c)[4], const float4& a, const BFrag<false>& b) {
  const int g = (threadIdx.x & 31) >> 2;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int from = g * 4 + (k & 3);
    const float lo = __shfl_sync(0xffffffffu, k < 4 ? a.x : a.z, from);
    const float hi = __shfl_sync(0xffffffffu, k < 4 ? a.y : a.w, from);
    c[0] = fmaf(lo, b.v[k].x, c[0]);
    c[1] = fmaf(lo, b.v[k].y, c[1]);
    c[2] = fmaf(hi, b.v[k].x, c[2]);
    c[3] = fmaf(hi, b.v[k].y, c[3]);
  }
}

// ---- device -> shared ---------------------------------------------------------------------------

// Asynchronous 4-byte copy (sm_80+); `valid` false writes zero.
__device__ __forceinline__ void CopyAsync(float* dst, const float* src, bool valid) {
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(address), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void CommitCopies() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void WaitCopies() { asm volatile("cp.async.wait_group 0;\n" ::); }

// Channels [c0, c0 + rows) of image n over the input region (in_h x in_w from (iy0, ix0)) into
// dst[rows][ld]; zero outside the image and for channels >= c_end. A warp copies one region row, or
// several when rows are narrow (8 or 16 lanes each), so few lanes idle.
inline __device__ void LoadRegion(const KernelArgs& a, int n, int c0, int rows, int c_end, int iy0, int ix0, float* dst,
                                  int ld) {
  const ChainProblem& p = a.p;
  const int lane_width = a.in_w <= 8 ? 8 : a.in_w <= 16 ? 16 : 32;
  const int per_warp = 32 / lane_width;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int sub = lane / lane_width, sub_lane = lane - sub * lane_width;
  for (int line = warp * per_warp + sub; line < rows * a.in_h; line += kWarps * per_warp) {
    const int ch = line / a.in_h, r = line - ch * a.in_h;
    const int iy = iy0 + r, c = c0 + ch;
    const bool row_inside = c < c_end && iy >= 0 && iy < p.h;
    const float* src = p.x + (static_cast<size_t>(n) * p.c + (row_inside ? c : 0)) * p.h * p.w +
                       static_cast<size_t>(row_inside ? iy : 0) * p.w;
    float* out = dst + ch * ld + r * a.in_w;
    for (int col = sub_lane; col < a.in_w; col += lane_width) {
      const int ix = ix0 + col;
      const bool inside = row_inside && ix >= 0 && ix < p.w;
      CopyAsync(out + col, inside ? src + ix : p.x, inside);
    }
  }
}

// An A fragment (see FragIndex) of W1 straight from device memory, zero beyond m rows / c columns.
__device__ __forceinline__ float4 LoadAGlobal(const ChainProblem& p, int row0, int col0, int lane) {
  const int g = lane >> 2, t = lane & 3;
  auto at = [&](int r, int c) { return (row0 + r < p.m && col0 + c < p.c) ? __ldg(p.w1 + static_cast<size_t>(row0 + r) * p.c + col0 + c) : 0.f; };
  return make_float4(at(g, t), at(g + 8, t), at(g, t + 4), at(g + 8, t + 4));
}

// rows x cols of a row-major [.. x ld_src] matrix from (row0, col0) into fragment order at dst;
// zero for rows >= row_end or columns >= col_end. rows % 16 == 0, cols % 8 == 0.
inline __device__ void StageFragments(const float* src, int ld_src, int row0, int rows, int row_end, int col0, int cols,
                               int col_end, float* dst) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int ksteps = cols >> 3;
  for (int r = warp; r < rows; r += kWarps) {
    const bool row_ok = row0 + r < row_end;
    const float* line = src + static_cast<size_t>(row_ok ? row0 + r : 0) * ld_src;
    for (int k = lane; k < cols; k += 32) {
      const bool ok = row_ok && col0 + k < col_end;
      CopyAsync(dst + FragIndex(r, k, ksteps), ok ? line + col0 + k : src, ok);
    }
  }
}

// ---- the stages ---------------------------------------------------------------------------------

// The first pointwise stage over the input region: t[32][ldt] = act1(W1[m0 .. m0+32, :] x xs + b1),
// zero at pixels outside the image (the depthwise stage's padding) and for channels >= m. Warps
// take pairs of 8-pixel columns; each A fragment serves two of them.
template <bool kTf32, bool kDw>
__device__ void FirstPointwise(const KernelArgs& a, const float* w1f, const float* xs, const unsigned char* inside,
                               int m0, float* t) {
  const ChainProblem& p = a.p;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  const int n_tiles = (a.in_hw + 7) >> 3;
  for (int nb = warp * 2; nb < n_tiles; nb += 2 * kWarps) {
    const bool second = nb + 1 < n_tiles;
    float c[2][2][4] = {};
    for (int ks = 0; ks < a.ks1; ++ks) {
      BFrag<kTf32> b0, b1;
      const float* row = xs + ks * 8 * a.ldx + nb * 8;
      b0.Load(row, a.ldx, lane);
      if (second) b1.Load(row + 8, a.ldx, lane);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const float4 av = a.w1_direct ? LoadAGlobal(p, m0 + mt * 16, ks * 8, lane)
                                      : reinterpret_cast<const float4*>(w1f)[((mt * a.ks1 + ks) << 5) | lane];
        Mma(c[mt][0], av, b0);
        if (second) Mma(c[mt][1], av, b1);
      }
    }
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int row = mt * 16 + g + hi * 8, m = m0 + row;
        const float bias = m < p.m ? __ldg(p.b1 + m) : 0.f;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          if (j == 1 && !second) continue;
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int q = (nb + j) * 8 + 2 * tq + e;
            float v = 0.f;
            if (m < p.m && (!kDw || inside[q])) v = p.act1(c[mt][j][hi * 2 + e] + bias);
            // without a depthwise stage this is the last stage's B operand: round it once here
            t[row * a.ldt + q] = (!kDw && kTf32) ? RoundTf32(v) : v;
          }
        }
      }
    }
  }
}

// The depthwise stage (K x K, or any size for K == 0) for 32 channels from src[32][ld] (the input region): thread (pixel px_index,
// channel group) handles its pixel in every kThreads / kPixels-th channel. Into u[32][ldu] (rounded
// to TF32 when it feeds tensor cores; zero for channels >= m and pixels beyond the tile), or, for
// PW->DW, straight to the output.
template <int kPixels, int K, bool kTf32, bool kStore>
__device__ void Depthwise(const KernelArgs& a, const float* src, int ld, int m0, int n, int oy0, int ox0, float* u) {
  const ChainProblem& p = a.p;
  constexpr int kGroups = kThreads / kPixels;
  const int kk = K > 0 ? K : p.kernel;  // K == 0: any kernel size, read at run time
  const int pix = threadIdx.x & (kPixels - 1), group = threadIdx.x / kPixels;
  const bool valid_pix = pix < a.thw;
  const int py = valid_pix ? pix / a.tile_w : 0, px = valid_pix ? pix - py * a.tile_w : 0;
  const int base = py * p.stride * a.in_w + px * p.stride;
  const int oy = oy0 + py, ox = ox0 + px;
  const bool store_ok = valid_pix && oy < p.out_h && ox < p.out_w;
  for (int mm = group; mm < kChunk; mm += kGroups) {
    const int m = m0 + mm;
    float v = 0.f;
    if (valid_pix && m < p.m) {
      const float* wk = p.wd + static_cast<size_t>(m) * kk * kk;
      const float* in = src + mm * ld + base;
      float acc = __ldg(p.bd + m);
#pragma unroll
      for (int kh = 0; kh < kk; ++kh)
#pragma unroll
        for (int kw = 0; kw < kk; ++kw) acc = fmaf(__ldg(wk + kh * kk + kw), in[kh * a.in_w + kw], acc);
      v = p.actd(acc);
    }
    if constexpr (kStore) {
      if (store_ok && m < p.m) {
        const size_t at = ((static_cast<size_t>(n) * p.m + m) * p.out_h + oy) * p.out_w + ox;
        if (p.residual) v = p.res_act(v + __ldg(p.x + at));  // same shape as the output (checked)
        p.y[at] = v;
      }
    } else {
      u[mm * a.ldu + pix] = kTf32 ? RoundTf32(v) : v;
    }
  }
}

// The last pointwise stage's contribution of one chunk: acc += W2[f0.., m0 .. m0+32] x u[32][ld].
// Warp w owns the 8-pixel columns w, w + 8, ... (kPixels / 64 of them) and every 16-row m-tile.
template <int kPixels, bool kTf32>
__device__ __forceinline__ void LastPointwise(const KernelArgs& a, const float* w2f, const float* u, int ld,
                                              int m_tiles, float (&acc)[kPixels / 64][MaxTileF(kPixels) / 16][4]) {
  constexpr int kCols = kPixels / 64, kMaxMt = MaxTileF(kPixels) / 16;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n_tiles = (a.thw + 7) >> 3;
#pragma unroll
  for (int ks = 0; ks < kChunkSteps; ++ks) {
    BFrag<kTf32> b[kCols];
#pragma unroll
    for (int j = 0; j < kCols; ++j)
      if (warp + j * kWarps < n_tiles) b[j].Load(u + ks * 8 * ld + (warp + j * kWarps) * 8, ld, lane);
#pragma unroll
    for (int mt = 0; mt < kMaxMt; ++mt) {
      if (mt < m_tiles) {
        const float4 av = reinterpret_cast<const float4*>(w2f)[((mt * kChunkSteps + ks) << 5) | lane];
#pragma unroll
        for (int j = 0; j < kCols; ++j)
          if (warp + j * kWarps < n_tiles) Mma(acc[j][mt], av, b[j]);
      }
    }
  }
}

// ---- the kernel ---------------------------------------------------------------------------------

template <int kPixels, int K, bool kPw1, bool kDw, bool kPwl, bool kTf32>
__global__ void __launch_bounds__(kThreads, 2) ChainKernel(const KernelArgs a) {
  constexpr int kCols = kPixels / 64, kMaxMt = MaxTileF(kPixels) / 16;
  extern __shared__ __align__(16) float smem[];
  const ChainProblem& p = a.p;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.y;
  const int ty = blockIdx.x / a.tiles_w, tx = blockIdx.x - ty * a.tiles_w;
  const int oy0 = ty * a.tile_h, ox0 = tx * a.tile_w;
  const int iy0 = kDw ? oy0 * p.stride - p.pad_top : oy0;
  const int ix0 = kDw ? ox0 * p.stride - p.pad_left : ox0;

  int f0 = 0, f_end = 0, share = 0, chunk_begin, chunk_end;
  if constexpr (kPwl) {
    share = blockIdx.z / a.f_tiles;
    f0 = (blockIdx.z - share * a.f_tiles) * a.f_tile;
    f_end = min(p.f, f0 + a.f_tile);
    chunk_begin = share * a.chunks_per_split;
    chunk_end = min(a.chunks, chunk_begin + a.chunks_per_split);
  } else {
    chunk_begin = blockIdx.z;
    chunk_end = chunk_begin + 1;
  }
  const int m_tiles = (f_end - f0 + 15) >> 4;

  // shared memory (SharedBytes sizes it)
  float* next = smem;
  float* xs = next;  // the input region: all channels (pointwise first), else one chunk per buffer
  next += kPw1 ? a.cp * a.ldx : a.buffers * kChunk * a.ldx;
  float* ts = next;  // the first stage's output
  next += kPw1 ? kChunk * a.ldt : 0;
  float* us = next;  // the depthwise stage's output, when a pointwise stage follows
  next += (kDw && kPwl) ? kChunk * a.ldu : 0;
  float* w1f = next;
  next += (kPw1 && !a.w1_direct) ? a.buffers * kChunk * a.cp : 0;
  float* w2f = next;
  next += kPwl ? a.buffers * a.ftp * kChunk : 0;
  unsigned char* inside = reinterpret_cast<unsigned char*>(next);  // pointwise-then-depthwise: [ldx]

  auto issue = [&](int ci, int buf) {  // the chunk's weights (and DW->PW: its input channels)
    const int m0 = ci * kChunk;
    if constexpr (kPw1) {
      if (!a.w1_direct) StageFragments(p.w1, p.c, m0, kChunk, p.m, 0, a.cp, p.c, w1f + buf * kChunk * a.cp);
    } else {
      LoadRegion(a, n, m0, kChunk, p.c, iy0, ix0, xs + buf * kChunk * a.ldx, a.ldx);
    }
    if constexpr (kPwl) StageFragments(p.w2, p.m, f0, a.ftp, f_end, m0, kChunk, p.m, w2f + buf * a.ftp * kChunk);
    CommitCopies();
  };

  if constexpr (kPw1) {
    LoadRegion(a, n, 0, a.cp, p.c, iy0, ix0, xs, a.ldx);
    if constexpr (kDw) {
      for (int q = threadIdx.x; q < a.ldx; q += kThreads) {
        const int r = q / a.in_w, col = q - r * a.in_w;
        const int iy = iy0 + r, ix = ix0 + col;
        inside[q] = q < a.in_hw && iy >= 0 && iy < p.h && ix >= 0 && ix < p.w;
      }
    }
  }
  if (a.buffers == 2) issue(chunk_begin, 0);
  if constexpr (kPw1) {
    // the input region is read by every chunk: scale it and round it to TF32 once
    CommitCopies();
    WaitCopies();
    __syncthreads();
    if (kTf32 || p.scale != nullptr) {
      const float* scale = p.scale != nullptr ? p.scale + (p.scale_batch == 1 ? 0 : n) * p.c : nullptr;
      for (int ch = warp; ch < p.c; ch += kWarps) {
        const float sc = scale != nullptr ? __ldg(scale + ch) : 1.f;
        float* row = xs + ch * a.ldx;
        for (int q = lane; q < a.in_hw; q += 32) row[q] = kTf32 ? RoundTf32(row[q] * sc) : row[q] * sc;
      }
    }
  }

  float acc[kCols][kMaxMt][4];
#pragma unroll
  for (int j = 0; j < kCols; ++j)
#pragma unroll
    for (int mt = 0; mt < kMaxMt; ++mt) acc[j][mt][0] = acc[j][mt][1] = acc[j][mt][2] = acc[j][mt][3] = 0.f;

  for (int ci = chunk_begin; ci < chunk_end; ++ci) {
    const int buf = a.buffers == 2 ? (ci - chunk_begin) & 1 : 0;
    const int m0 = ci * kChunk;
    if (a.buffers == 1) {
      __syncthreads();  // the previous chunk is done with the buffers
      issue(ci, 0);
    }
    WaitCopies();
    __syncthreads();
    if (a.buffers == 2 && ci + 1 < chunk_end) issue(ci + 1, buf ^ 1);

    const float* dw_src = xs + buf * kChunk * a.ldx;
    int dw_ld = a.ldx;
    if constexpr (kPw1) {
      FirstPointwise<kTf32, kDw>(a, w1f + buf * kChunk * a.cp, xs, inside, m0, ts);
      __syncthreads();
      dw_src = ts, dw_ld = a.ldt;
    }
    if constexpr (kDw) {
      Depthwise<kPixels, K, kTf32, !kPwl>(a, dw_src, dw_ld, m0, n, oy0, ox0, us);
      if constexpr (kPwl) __syncthreads();
    }
    if constexpr (kPwl) {
      LastPointwise<kPixels, kTf32>(a, w2f + buf * a.ftp * kChunk, kDw ? us : ts, kDw ? a.ldu : a.ldt, m_tiles, acc);
    }
  }

  if constexpr (kPwl) {
    const int g = lane >> 2, tq = lane & 3;
    const int n_tiles = (a.thw + 7) >> 3;
    const size_t plane = static_cast<size_t>(p.out_h) * p.out_w;
#pragma unroll
    for (int j = 0; j < kCols; ++j) {
      const int nt = warp + j * kWarps;
      if (nt >= n_tiles) continue;
      int offset[2];
      bool ok[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int pix = nt * 8 + 2 * tq + e;
        const int py = pix / a.tile_w, px = pix - py * a.tile_w;
        const int oy = oy0 + py, ox = ox0 + px;
        ok[e] = pix < a.thw && oy < p.out_h && ox < p.out_w;
        offset[e] = oy * p.out_w + ox;
      }
#pragma unroll
      for (int mt = 0; mt < kMaxMt; ++mt) {
        if (mt >= m_tiles) continue;
#pragma unroll
        for (int hi = 0; hi < 2; ++hi) {
          const int f = f0 + mt * 16 + g + hi * 8;
          if (f >= f_end) continue;
          const size_t row = (static_cast<size_t>(n) * p.f + f) * plane;
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            if (!ok[e]) continue;
            const float sum = acc[j][mt][hi * 2 + e];
            if (a.chunks_per_split < a.chunks) {
              a.partial[static_cast<size_t>(share) * p.n * p.f * plane + row + offset[e]] = sum;
            } else {
              float v = p.act2(sum + __ldg(p.b2 + f));
              if (p.residual) v = p.res_act(v + __ldg(p.x + row + offset[e]));
              p.y[row + offset[e]] = v;
            }
          }
        }
      }
    }
  }
}

using KernelFn = void (*)(const KernelArgs);

// The kernel for p's stage sequence and depthwise size (K 3 and 5 compiled for their size, others
// read at run time), `pixels` per block, TF32 or exact; each stage sequence's instantiations live in
// their own file (chain_<kind>.cu) so they compile in parallel.
KernelFn PickPwDwPw(const ChainProblem& p, int pixels);
KernelFn PickDwPw(const ChainProblem& p, int pixels);
KernelFn PickPwDw(const ChainProblem& p, int pixels);
KernelFn PickPwPw(const ChainProblem& p, int pixels);

// Instantiates the kernel for K (0: any) and the stage flags.
template <int K, bool kPw1, bool kDw, bool kPwl>
KernelFn Instance(const ChainProblem& p, int pixels) {
  if (pixels == 64) return p.tf32 ? ChainKernel<64, K, kPw1, kDw, kPwl, true> : ChainKernel<64, K, kPw1, kDw, kPwl, false>;
  return p.tf32 ? ChainKernel<128, K, kPw1, kDw, kPwl, true> : ChainKernel<128, K, kPw1, kDw, kPwl, false>;
}

template <bool kPw1, bool kDw, bool kPwl>
KernelFn InstanceForKernelSize(const ChainProblem& p, int pixels) {
  if (p.kernel == 3) return Instance<3, kPw1, kDw, kPwl>(p, pixels);
  if (p.kernel == 5) return Instance<5, kPw1, kDw, kPwl>(p, pixels);
  return Instance<0, kPw1, kDw, kPwl>(p, pixels);
}

}  // namespace chain
}  // namespace fcm
