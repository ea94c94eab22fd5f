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
// The pieces: LoadRegion / StageRows (device -> shared, cp.async; weights in 16-byte copies),
// FirstPointwise and LastPointwise (block GEMMs on TF32 tensor cores, mma.sync m16n8k8 with A
// fragments read by ldmatrix, or exact FP32 FMAs in the same fragment layout), Depthwise (each
// thread one channel over a column of pixels, so a weight is loaded once per 8 pixels), and the
// epilogues (epilogue.h: bias + activation, applied to a thread's values with one dispatch;
// residual).
//
// Split > 1 divides a tile's intermediate channels among blocks. Each writes its sums to a
// workspace and ReduceSplits, a second kernel, adds them; or, where the plan asks for it (sm_90),
// the blocks sharing a tile form a thread-block cluster, each leaves its sums in shared memory and
// the cluster adds them through distributed shared memory (SumClusterShares). Both add the shares
// in the same order, so both give the same bits, and apply the epilogue.
#pragma once

#include <type_traits>

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

// Leading dimension of a block's share of a split tile in shared memory ([f_tile][LdShare]): rows
// 16-byte aligned, and the accumulator owners' float2 stores (rows g, columns 2t) hit distinct
// banks two at a time.
__host__ __device__ constexpr int LdShare(int pixels) { return pixels + 8; }

// Leading dimension of the staged last-stage weights ([f_tile][kChunk] row-major): 16-byte rows
// whose 8-row groups start in distinct 4-bank groups, as ldmatrix wants.
constexpr int kLdW2 = kChunk + 4;

// Largest output-channel count per block: the last stage's accumulators (kPixels / 64 n-tiles of
// 8 pixels per warp, times this / 16 m-tiles, times 4) must fit the registers.
__host__ __device__ constexpr int MaxTileF(int pixels) { return pixels == 64 ? 256 : 128; }

// The output-channel capacity a kernel is compiled for. The accumulators hold registers for the
// whole capacity, and registers decide how many blocks share an SM; the kernels are latency-bound
// (a block loads, then computes, then stores), so narrow capacities are compiled for more resident
// blocks. kWidthFull: MaxTileF.
enum Width : int { kWidth32 = 0, kWidth64 = 1, kWidthFull = 2 };
__host__ __device__ constexpr int MaxMt(int pixels, int width) {
  return width == kWidth32 ? 2 : width == kWidth64 ? 4 : MaxTileF(pixels) / 16;
}
// Resident blocks per SM a kernel is compiled for (its register budget). A first pointwise stage
// holds 16 more accumulators: it spills below 80 registers, so it stops at 3 blocks.
__host__ __device__ constexpr int MinBlocks(int width, bool pw1) {
  return width == kWidthFull ? 2 : (pw1 || width == kWidth64) ? 3 : 4;
}

struct KernelArgs {
  ChainProblem p;
  float* partial;  // split > 1: [split][n][f][out_h * out_w]
  int tile_h, tile_w, tiles_w, thw;
  int in_h, in_w, in_hw;
  // The input region as held in shared memory: rows of row_w floats, region column j at stored
  // column j + col_shift. With region_vec the rows are copied in 16-byte pieces from a 4-aligned
  // image column (row_w a multiple of 4, col_shift the region's offset from it); else row_w = in_w.
  int row_w, col_shift;
  bool region_vec;
  // LoadRegion's walk: copies per stored row (units), and the step of kThreads copies as
  // (channels, rows, units); units_div = DivReciprocal(units)
  int units, step_ch, step_r, step_u;
  unsigned long long units_div;
  int cp, ks1;  // input channels padded to 8, and the first stage's k-steps
  int ldx, ldt, ldu;
  int ldw1;            // leading dimension of the staged first-stage weights ([kChunk][cp + 4])
  bool w1_vec, w2_vec;  // weights staged with 16-byte copies (rows 16-byte aligned in device memory)
  // reciprocals for Div: the input region's height, and the W1 row's 16-byte pieces (cp / 4)
  unsigned long long in_h_div, w1_row_div;
  int f_tile, f_tiles, ftp;  // ftp: f_tile padded to 16 (rows of the staged last-stage weights)
  int chunks, chunks_per_split, buffers;
  int split;     // blocks sharing a tile's intermediate channels (consecutive in blockIdx.z)
  bool cluster;  // split > 1: those blocks form a cluster and add their shares in it (sm_90)
  bool w1_direct;  // first-stage weights read from device memory (too many input channels to stage them)
};

// The output epilogue of the last pointwise stage, on one value: y[at] = res_act(act2(sum + b2[f]) +
// x[at]). The main loop (unsplit), the cluster sum and ReduceSplits end in it.
__device__ __forceinline__ void StoreOutput(const ChainProblem& p, float sum, int f, size_t at) {
  float v = p.act2(sum + __ldg(p.b2 + f));
  if (p.residual) v = p.res_act(v + __ldg(p.x + at));  // same shape as the output (checked)
  p.y[at] = v;
}

// ---- tensor-core and FMA fragments ---------------------------------------------------------------

// n / d for 0 <= n, n * d < 2^32, with DivReciprocal(d) = ceil(2^32 / d): a multiply instead of the
// ~20-instruction division sequence.
__host__ __device__ __forceinline__ unsigned long long DivReciprocal(int d) {
  return ((1ULL << 32) + static_cast<unsigned long long>(d) - 1) / static_cast<unsigned long long>(d);
}
__device__ __forceinline__ int Div(int n, unsigned long long reciprocal) {
  return static_cast<int>((static_cast<unsigned long long>(static_cast<unsigned>(n)) * reciprocal) >> 32);
}

// The shared-window address of a shared-memory pointer. Taken once per stage and offset from
// there: on sm_90 each conversion costs several instructions.
__device__ __forceinline__ unsigned SharedAddress(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }

// x rounded to TF32 for mma.sync: half a TF32 ulp added to the bits. The tensor cores ignore the
// 13 low bits, so this is round to nearest (ties away, as cvt.rna) in one instruction instead of
// the three cvt.rna takes on sm_90; infinities and NaNs stay what they are once truncated.
__device__ __forceinline__ unsigned Tf32Bits(float x) { return __float_as_uint(x) + 0x1000u; }
__device__ __forceinline__ float RoundTf32(float x) { return __uint_as_float(Tf32Bits(x)); }

// A fragments (16 rows x 8 k of a row-major shared matrix) as mma.sync takes them, lane (g, t)
// holding {A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4]}: one ldmatrix.x4 reading the four 8x4
// blocks. `address` is the lane's row (ALaneOffset) plus the fragment's offset, in the shared
// window; rows 16-byte aligned.
__device__ __forceinline__ int ALaneOffset(int ld, int lane) {
  const int mat = lane >> 3;
  return ((mat & 1) * 8 + (lane & 7)) * ld + (mat >> 1) * 4;
}
__device__ __forceinline__ float4 LoadA(unsigned address) {
  unsigned r0, r1, r2, r3;
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(address));
  return make_float4(__uint_as_float(r0), __uint_as_float(r1), __uint_as_float(r2), __uint_as_float(r3));
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

// An A fragment as Mma takes it: rounded to TF32 once, however many B fragments it meets.
template <bool kTf32>
__device__ __forceinline__ float4 PrepareA(float4 a) {
  if constexpr (kTf32) return make_float4(RoundTf32(a.x), RoundTf32(a.y), RoundTf32(a.z), RoundTf32(a.w));
  return a;
}

// c (16x8, lane (g, t) holding C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]) += A (16x8) * B (8x8);
// A and B rounded to TF32 already (where they were staged or written, or by PrepareA).
__device__ __forceinline__ void Mma(float (&c)[4], const float4& a, const BFrag<true>& b) {
  const unsigned a0 = __float_as_uint(a.x), a1 = __float_as_uint(a.y);
  const unsigned a2 = __float_as_uint(a.z), a3 = __float_as_uint(a.w);
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

// Asynchronous 4-byte copy (sm_80+) to the shared-window address dst; `valid` false writes zero.
__device__ __forceinline__ void CopyAsync(unsigned dst, const float* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0));
}
// Asynchronous 16-byte copy of `bytes` (0-16) from src, the rest zero-filled; both 16-byte aligned.
__device__ __forceinline__ void CopyAsync16(unsigned dst, const float* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void CommitCopies() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void WaitCopies() { asm volatile("cp.async.wait_group 0;\n" ::); }

// ---- thread-block clusters (sm_90) --------------------------------------------------------------

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// Every thread of the cluster's blocks waits here; shared-memory writes before it are visible to
// the cluster's reads after it.
__device__ __forceinline__ void ClusterSync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ int ClusterRank() {
  unsigned rank;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
  return static_cast<int>(rank);
}
// The 4 floats at shared-window address `address` (16-byte aligned) of the cluster's block `rank`.
__device__ __forceinline__ float4 LoadClusterShared4(unsigned address, int rank) {
  unsigned remote;
  float4 v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(address), "r"(rank));
  asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "r"(remote)
               : "memory");
  return v;
}
#endif

// Channels [c0, c0 + rows) of image n over the input region (in_h x in_w from (iy0, ix0)) into
// dst[rows][ld] (rows of a.row_w); zero outside the image and for channels >= c_end. The copies
// (16-byte pieces with region_vec, else single floats) are numbered along the rows and dealt to
// the threads in turn, so every lane has work whatever the region's width; a thread steps from
// one copy to its next by adding (step_ch, step_r, step_u) with carries instead of dividing.
inline __device__ void LoadRegion(const KernelArgs& a, int n, int c0, int rows, int c_end, int iy0, int ix0, float* dst,
                                  int ld) {
  const ChainProblem& p = a.p;
  // offsets within the image in 32 bits (CompletePlan checks the image fits)
  const float* image = p.x + static_cast<size_t>(n) * p.c * p.h * p.w;
  const int plane = p.h * p.w;
  const unsigned dst_address = SharedAddress(dst);
  const int line = Div(threadIdx.x, a.units_div);
  int u = threadIdx.x - line * a.units;
  int ch = Div(line, a.in_h_div), r = line - ch * a.in_h;
  const int piece = a.region_vec ? 4 : 1;
  const int x0 = ix0 - a.col_shift;  // the image column of stored column 0
  while (ch < rows) {
    const int iy = iy0 + r, c = c0 + ch, ix = x0 + u * piece;
    const bool inside = c < c_end && static_cast<unsigned>(iy) < static_cast<unsigned>(p.h) &&
                        static_cast<unsigned>(ix) < static_cast<unsigned>(p.w);
    const float* src = image + (inside ? c * plane + iy * p.w + ix : 0);
    const unsigned out = dst_address + 4u * static_cast<unsigned>(ch * ld + r * a.row_w + u * piece);
    // a 16-byte piece lies wholly inside or outside the image (4-aligned columns, width % 4 == 0)
    if (a.region_vec) CopyAsync16(out, src, inside ? 16 : 0);
    else CopyAsync(out, src, inside);
    u += a.step_u;
    if (u >= a.units) u -= a.units, ++r;
    r += a.step_r;
    if (r >= a.in_h) r -= a.in_h, ++ch;
    ch += a.step_ch;
  }
}

// An A fragment (lane (g, t): W1[g][t], W1[g+8][t], W1[g][t+4], W1[g+8][t+4] from (row0, col0))
// straight from device memory, zero beyond m rows / c columns.
__device__ __forceinline__ float4 LoadAGlobal(const ChainProblem& p, int row0, int col0, int lane) {
  const int g = lane >> 2, t = lane & 3;
  auto at = [&](int r, int c) { return (row0 + r < p.m && col0 + c < p.c) ? __ldg(p.w1 + static_cast<size_t>(row0 + r) * p.c + col0 + c) : 0.f; };
  return make_float4(at(g, t), at(g + 8, t), at(g, t + 4), at(g + 8, t + 4));
}

// The pieces (16-byte or single floats) of a rows x cols block dealt to the threads in turn: a
// thread's first piece, then every kThreads-th, stepping with carries instead of dividing.
// per_row_div: DivReciprocal(cols / 4) (used for 16-byte pieces).
struct PieceWalk {
  int r, u, dr, du, per_row;
  __device__ __forceinline__ PieceWalk(int cols, bool vec, unsigned long long per_row_div) {
    per_row = vec ? cols >> 2 : cols;
    if (vec) r = Div(threadIdx.x, per_row_div), dr = Div(kThreads, per_row_div);
    else r = threadIdx.x / per_row, dr = kThreads / per_row;  // 4-byte weights: the rare, slow path
    u = threadIdx.x - r * per_row;
    du = kThreads - dr * per_row;
  }
  __device__ __forceinline__ void Next() {
    u += du;
    if (u >= per_row) u -= per_row, ++r;
    r += dr;
  }
};

// A block of a row-major weight matrix staged in shared memory: rows x cols (cols % 4 == 0) from
// (row0, col0) of src (leading dimension ld_src) into dst[rows][ld_dst]; zero for rows >= row_end
// or columns >= col_end. 16-byte copies when `vec` (ld_src and col0 multiples of 4, src 16-byte
// aligned), else 4-byte ones; per_row_div: DivReciprocal(cols / 4).
struct StagedBlock {
  const float* src;
  int ld_src, row0, rows, row_end, col0, cols, col_end;
  float* dst;
  int ld_dst;
  bool vec;
  unsigned long long per_row_div;
};

// This thread's copies of the block (asynchronous; the caller commits and waits).
inline __device__ void StageRows(const StagedBlock& b) {
  const unsigned dst_address = SharedAddress(b.dst);
  const int piece = b.vec ? 4 : 1;
  for (PieceWalk w(b.cols, b.vec, b.per_row_div); w.r < b.rows; w.Next()) {
    const int row = b.row0 + w.r, col = b.col0 + w.u * piece;
    const int valid = row < b.row_end ? max(0, min(piece, b.col_end - col)) : 0;
    const float* from = valid > 0 ? b.src + static_cast<size_t>(row) * b.ld_src + col : b.src;
    const unsigned to = dst_address + 4u * static_cast<unsigned>(w.r * b.ld_dst + w.u * piece);
    if (b.vec) CopyAsync16(to, from, valid * 4);
    else CopyAsync(to, from, valid > 0);
  }
}

// The pieces this thread staged with StageRows(b), rounded to TF32 in place: after the thread's
// copies completed and before the barrier that shows them to the block, so each staged weight is
// rounded once instead of by every warp that reads it.
inline __device__ void RoundStaged(const StagedBlock& b) {
  for (PieceWalk w(b.cols, b.vec, b.per_row_div); w.r < b.rows; w.Next()) {
    if (b.vec) {
      float4* at = reinterpret_cast<float4*>(b.dst + w.r * b.ld_dst + w.u * 4);
      float4 v = *at;
      v.x = RoundTf32(v.x), v.y = RoundTf32(v.y), v.z = RoundTf32(v.z), v.w = RoundTf32(v.w);
      *at = v;
    } else {
      float* at = b.dst + w.r * b.ld_dst + w.u;
      *at = RoundTf32(*at);
    }
  }
}

// ---- the stages ---------------------------------------------------------------------------------

// The first pointwise stage over the input region: t[32][ldt] = act1(W1[m0 .. m0+32, :] x xs + b1),
// zero at pixels outside the image (the depthwise stage's padding) and for channels >= m. w1s is
// the chunk's staged W1 ([32][ldw1]). Warps take pairs of 8-pixel columns; each A fragment serves
// two of them.
template <bool kTf32, bool kDw>
__device__ void FirstPointwise(const KernelArgs& a, const float* w1s, const float* xs, const unsigned char* inside,
                               int m0, float* t) {
  const ChainProblem& p = a.p;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tq = lane & 3;
  const int n_tiles = (a.in_hw + 7) >> 3;
  const unsigned a_lane = SharedAddress(w1s) + 4u * ALaneOffset(a.ldw1, lane);
  for (int nb = warp * 2; nb < n_tiles; nb += 2 * kWarps) {
    // without a second column the first is computed twice (and dropped below): no branch in the k loop
    const bool second = nb + 1 < n_tiles;
    const int second_column = second ? 8 : 0;
    float c[2][2][4] = {};
    auto k_loop = [&](auto direct) {
      for (int ks = 0; ks < a.ks1; ++ks) {
        BFrag<kTf32> b0, b1;
        const float* row = xs + ks * 8 * a.ldx + nb * 8;
        b0.Load(row, a.ldx, lane);
        b1.Load(row + second_column, a.ldx, lane);
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          // staged W1 is rounded already (RoundStaged)
          float4 av;
          if constexpr (decltype(direct)::value) av = PrepareA<kTf32>(LoadAGlobal(p, m0 + mt * 16, ks * 8, lane));
          else av = LoadA(a_lane + 4u * (mt * 16 * a.ldw1 + ks * 8));
          Mma(c[mt][0], av, b0);
          Mma(c[mt][1], av, b1);
        }
      }
    };
    if (a.w1_direct) k_loop(std::true_type{});
    else k_loop(std::false_type{});
    // the epilogue on the lane's 16 values: v[((mt * 2 + hi) * 2 + j) * 2 + e] is row
    // mt * 16 + hi * 8 + g, pixel (nb + j) * 8 + 2 * tq + e
    float v[16];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int hi = 0; hi < 2; ++hi) {
        const int m = m0 + mt * 16 + g + hi * 8;
        const float bias = m < p.m ? __ldg(p.b1 + m) : 0.f;
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) v[((mt * 2 + hi) * 2 + j) * 2 + e] = c[mt][j][hi * 2 + e] + bias;
      }
    p.act1.Apply(v);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      if (j == 1 && !second) continue;
      const int q = (nb + j) * 8 + 2 * tq;
      bool in0 = true, in1 = true;
      if constexpr (kDw) {
        const unsigned short pair = *reinterpret_cast<const unsigned short*>(inside + q);
        in0 = (pair & 0xff) != 0, in1 = (pair >> 8) != 0;
      }
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int hi = 0; hi < 2; ++hi) {
          const int row = mt * 16 + g + hi * 8;
          const bool row_ok = m0 + row < p.m;
          float2 out;
          out.x = row_ok && in0 ? v[((mt * 2 + hi) * 2 + j) * 2] : 0.f;
          out.y = row_ok && in1 ? v[((mt * 2 + hi) * 2 + j) * 2 + 1] : 0.f;
          // without a depthwise stage this is the last stage's B operand: round it once here
          if (!kDw && kTf32) out.x = RoundTf32(out.x), out.y = RoundTf32(out.y);
          *reinterpret_cast<float2*>(t + row * a.ldt + q) = out;
        }
    }
  }
}

// One run of kRun output rows of a K x K depthwise filter with stride S, for one channel and
// column: v[r] += sum over (kh, kw) of w[kh][kw] * in[(r * S + kh) * row_w + kw]. It walks the
// input rows once, each feeding every output row it belongs to, so an input value is read from
// shared memory once per run rather than once per tap; the sums keep the (kh, kw) order. Output
// rows past `last` (beyond the tile, not stored) read the last row needed: in bounds, no branch.
template <int K, int S, int kRun>
__device__ __forceinline__ void DepthwiseRunSliding(const float* in, int row_w, int last, const float (&w)[K * K],
                                                    float (&v)[kRun]) {
  constexpr int kRows = (kRun - 1) * S + K;
  const int last_row = last * S + K - 1;
#pragma unroll
  for (int ir = 0; ir < kRows; ++ir) {
    const float* row = in + min(ir, last_row) * row_w;
    float x[K];
#pragma unroll
    for (int kw = 0; kw < K; ++kw) x[kw] = row[kw];
#pragma unroll
    for (int kh = 0; kh < K; ++kh) {
      const int d = ir - kh;
      if (d >= 0 && d % S == 0 && d / S < kRun) {
#pragma unroll
        for (int kw = 0; kw < K; ++kw) v[d / S] = fmaf(w[kh * K + kw], x[kw], v[d / S]);
      }
    }
  }
}

// The same run reading the input per tap, one weight row in registers at a time (K 5, whose 25
// weights would crowd the registers, and strides other than 1 and 2).
template <int K, int kRun>
__device__ __forceinline__ void DepthwiseRunPerTap(const float* in, int row_w, int stride, int last, const float* wk,
                                                   float (&v)[kRun]) {
  const int row_step = stride * row_w;
  int line_offset[kRun];
#pragma unroll
  for (int r = 0; r < kRun; ++r) line_offset[r] = min(r, last) * row_step;
#pragma unroll
  for (int kh = 0; kh < K; ++kh) {
    float w[K];
#pragma unroll
    for (int kw = 0; kw < K; ++kw) w[kw] = __ldg(wk + kh * K + kw);
    const float* rows = in + kh * row_w;
#pragma unroll
    for (int r = 0; r < kRun; ++r) {
#pragma unroll
      for (int kw = 0; kw < K; ++kw) v[r] = fmaf(w[kw], rows[line_offset[r] + kw], v[r]);
    }
  }
}

// The depthwise stage for 32 channels from src[32][ld] (the input region, in_h rows of row_w per
// channel, starting at column col_shift) into u[32][ldu] (rounded to TF32 when it feeds tensor
// cores), or, for PW->DW, straight to the output. Channels >= m (the last chunk's padding) are
// computed from zero inputs with zero bias: their values are finite and meet zero W2 columns
// (StageRows zero-fills them), so they need no test before the last stage.
//
// K 3 and 5: 8 threads per channel; a thread takes the tile's columns slot, slot + 8, ... and in
// each a run of up to 8 rows, so each weight is read once per 8 pixels and the activation is
// dispatched once per run. K == 0 (any size, read at run time): a thread per pixel and channel
// group, weights read per tap.
template <int kPixels, int K, bool kTf32, bool kStore>
__device__ void Depthwise(const KernelArgs& a, const float* src, int ld, int m0, int n, int oy0, int ox0, float* u) {
  const ChainProblem& p = a.p;
  auto put = [&](int m, int mm, int py, int px, float v) {  // one output value, already activated
    if constexpr (kStore) {
      const int oy = oy0 + py, ox = ox0 + px;
      if (m < p.m && oy < p.out_h && ox < p.out_w) {
        const size_t at = ((static_cast<size_t>(n) * p.m + m) * p.out_h + oy) * p.out_w + ox;
        if (p.residual) v = p.res_act(v + __ldg(p.x + at));  // same shape as the output (checked)
        p.y[at] = v;
      }
    } else {
      u[mm * a.ldu + py * a.tile_w + px] = kTf32 ? RoundTf32(v) : v;
    }
  };
  if constexpr (K > 0) {
    constexpr int kRun = 8;
    const int mm = threadIdx.x >> 3, slot = threadIdx.x & 7;
    const int m = m0 + mm;
    const bool m_ok = m < p.m;
    const float* wk = p.wd + static_cast<size_t>(m_ok ? m : 0) * K * K;
    const float bias = m_ok ? __ldg(p.bd + m) : 0.f;
    // K 3 at stride 1 or 2: the taps stay in registers for the chunk
    const bool sliding = K == 3 && (p.stride == 1 || p.stride == 2);
    float w[K == 3 ? 9 : 1];
    if constexpr (K == 3) {
#pragma unroll
      for (int i = 0; i < 9; ++i) w[i] = m_ok && sliding ? __ldg(wk + i) : 0.f;
    }
    const float* base = src + mm * ld + a.col_shift;
    for (int px = slot; px < a.tile_w; px += 8) {
      for (int py0 = 0; py0 < a.tile_h; py0 += kRun) {
        const float* in = base + py0 * p.stride * a.row_w + px * p.stride;
        const int last = a.tile_h - 1 - py0;
        float v[kRun];
#pragma unroll
        for (int r = 0; r < kRun; ++r) v[r] = bias;
        if constexpr (K == 3) {
          if (p.stride == 1) DepthwiseRunSliding<3, 1, kRun>(in, a.row_w, last, w, v);
          else if (p.stride == 2) DepthwiseRunSliding<3, 2, kRun>(in, a.row_w, last, w, v);
          else DepthwiseRunPerTap<3, kRun>(in, a.row_w, p.stride, last, wk, v);
        } else {
          DepthwiseRunPerTap<K, kRun>(in, a.row_w, p.stride, last, wk, v);
        }
        p.actd.Apply(v);
#pragma unroll
        for (int r = 0; r < kRun; ++r)
          if (py0 + r < a.tile_h) put(m, mm, py0 + r, px, v[r]);
      }
    }
  } else {
    constexpr int kGroups = kThreads / kPixels;
    const int kk = p.kernel;
    const int pix = threadIdx.x & (kPixels - 1), group = threadIdx.x / kPixels;
    if (pix >= a.thw) return;
    const int py = pix / a.tile_w, px = pix - py * a.tile_w;
    const int base = py * p.stride * a.row_w + px * p.stride + a.col_shift;
    for (int mm = group; mm < kChunk; mm += kGroups) {
      const int m = m0 + mm;
      const float* wk = p.wd + static_cast<size_t>(m < p.m ? m : 0) * kk * kk;
      const float* in = src + mm * ld + base;
      float acc = m < p.m ? __ldg(p.bd + m) : 0.f;
      for (int kh = 0; kh < kk; ++kh)
        for (int kw = 0; kw < kk; ++kw) acc = fmaf(__ldg(wk + kh * kk + kw), in[kh * a.row_w + kw], acc);
      put(m, mm, py, px, p.actd(acc));
    }
  }
}

// The last pointwise stage's contribution of one chunk: acc += W2[f0.., m0 .. m0+32] x u[32][ld],
// w2s the chunk's staged W2 ([ftp][kLdW2]). Warp w owns the 8-pixel columns w, w + 8, ...
// (kPixels / 64 of them) and every 16-row m-tile.
template <int kPixels, int kMaxMt, bool kTf32>
__device__ __forceinline__ void LastPointwise(const KernelArgs& a, const float* w2s, const float* u, int ld,
                                              int m_tiles, float (&acc)[kPixels / 64][kMaxMt][4]) {
  constexpr int kCols = kPixels / 64;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n_tiles = (a.thw + 7) >> 3;
  const unsigned a_lane = SharedAddress(w2s) + 4u * ALaneOffset(kLdW2, lane);
  // a warp past the tile's last pixel column computes that column again (the result is not
  // stored): no branch around the fragments
  int column[kCols];
#pragma unroll
  for (int j = 0; j < kCols; ++j) column[j] = min(warp + j * kWarps, n_tiles - 1) * 8;
#pragma unroll
  for (int ks = 0; ks < kChunkSteps; ++ks) {
    BFrag<kTf32> b[kCols];
#pragma unroll
    for (int j = 0; j < kCols; ++j) b[j].Load(u + ks * 8 * ld + column[j], ld, lane);
#pragma unroll
    for (int mt = 0; mt < kMaxMt; ++mt) {
      if (mt < m_tiles) {
        const float4 av = LoadA(a_lane + 4u * (mt * 16 * kLdW2 + ks * 8));  // rounded by RoundStaged
#pragma unroll
        for (int j = 0; j < kCols; ++j) Mma(acc[j][mt], av, b[j]);
      }
    }
  }
}

// The split's shares of one output tile, added across the cluster that holds them (distributed
// shared memory): cluster block r takes the tile's 4-pixel pieces r * kThreads + i, stepping by
// split * kThreads, adds the shares in order 0, 1, ... (as ReduceSplits does, so both give the same
// bits; four shares' loads in flight at a time) and applies the epilogue. `shares` is this block's
// [f_tile][LdShare] sums (rows up to the tile's m-tiles, columns up to its 8-pixel columns). The
// cluster waits twice: until every share is written, and before any block exits, since the others
// read its shared memory.
template <int kPixels>
__device__ void SumClusterShares(const KernelArgs& a, float* shares) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const ChainProblem& p = a.p;
  ClusterSync();
  // the block's tile and output channels again (as the kernel finds them): nothing held through
  // the main loop for this
  const int n = blockIdx.y;
  const int ty = blockIdx.x / a.tiles_w, tx = blockIdx.x - ty * a.tiles_w;
  const int oy0 = ty * a.tile_h, ox0 = tx * a.tile_w;
  const int f0 = blockIdx.z / a.split * a.f_tile, f_end = min(p.f, f0 + a.f_tile);
  const int pieces = (a.thw + 3) >> 2;  // per row; the last may reach into the row's padding
  const int total = (f_end - f0) * pieces;
  const size_t plane = static_cast<size_t>(p.out_h) * p.out_w;
  const unsigned shares_address = SharedAddress(shares);
  for (int i = ClusterRank() * kThreads + static_cast<int>(threadIdx.x); i < total; i += a.split * kThreads) {
    const int row = i / pieces, pix0 = (i - row * pieces) * 4;
    const unsigned at = shares_address + 4u * static_cast<unsigned>(row * LdShare(kPixels) + pix0);
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s0 = 0; s0 < a.split; s0 += 4) {
      float4 part[4];
#pragma unroll
      for (int s = 0; s < 4; ++s)
        if (s0 + s < a.split) part[s] = LoadClusterShared4(at, s0 + s);
#pragma unroll
      for (int s = 0; s < 4; ++s)
        if (s0 + s < a.split) sum.x += part[s].x, sum.y += part[s].y, sum.z += part[s].z, sum.w += part[s].w;
    }
    const int f = f0 + row;
    const float sums[4] = {sum.x, sum.y, sum.z, sum.w};
    const size_t channel = (static_cast<size_t>(n) * p.f + f) * plane;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int pix = pix0 + e;
      const int py = pix / a.tile_w, px = pix - py * a.tile_w;
      const int oy = oy0 + py, ox = ox0 + px;
      if (pix >= a.thw || oy >= p.out_h || ox >= p.out_w) continue;
      StoreOutput(p, sums[e], f, channel + static_cast<size_t>(oy) * p.out_w + ox);
    }
  }
  ClusterSync();
#else
  // the host launches clusters only for kernels built for sm_90 (ClusterCapacity)
  __trap();
#endif
}

// ---- the kernel ---------------------------------------------------------------------------------

// Whether kernels of a capacity add split shares in clusters: not at full width, where the
// cluster's code costs the main loop registers (ptxas spills), and those kernels stay as they were.
__host__ __device__ constexpr bool ClusterCompiled(int width) { return width != kWidthFull; }

template <int kPixels, int kWidth, int K, bool kPw1, bool kDw, bool kPwl, bool kTf32>
__global__ void __launch_bounds__(kThreads, MinBlocks(kWidth, kPw1)) ChainKernel(const KernelArgs a) {
  constexpr int kCols = kPixels / 64, kMaxMt = MaxMt(kPixels, kWidth);
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
    // a tile's shares are consecutive in z, so a (1, 1, split) cluster holds all of them
    const int f_index = blockIdx.z / a.split;
    share = blockIdx.z - f_index * a.split;
    f0 = f_index * a.f_tile;
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
  float* w1s = next;  // the chunk's W1 rows, [kChunk][ldw1] per buffer
  next += (kPw1 && !a.w1_direct) ? a.buffers * kChunk * a.ldw1 : 0;
  float* w2s = next;  // the chunk's W2 columns, [ftp][kLdW2] per buffer
  next += kPwl ? a.buffers * a.ftp * kLdW2 : 0;
  unsigned char* inside = reinterpret_cast<unsigned char*>(next);  // pointwise-then-depthwise: [ldx]

  // chunk ci's weights in buffer buf: W1 rows m0 .. m0+32 (all input channels), W2 columns m0 ..
  // m0+32 of the block's output channels
  auto w1_block = [&](int ci, int buf) {
    return StagedBlock{p.w1, p.c, ci * kChunk, kChunk, p.m, 0, a.cp, p.c, w1s + buf * kChunk * a.ldw1, a.ldw1, a.w1_vec,
                       a.w1_row_div};
  };
  auto w2_block = [&](int ci, int buf) {
    return StagedBlock{p.w2, p.m, f0, a.ftp, f_end, ci * kChunk, kChunk, p.m, w2s + buf * a.ftp * kLdW2, kLdW2, a.w2_vec,
                       DivReciprocal(kChunk / 4)};
  };
  auto issue = [&](int ci, int buf) {  // the chunk's weights (and DW->PW: its input channels)
    if constexpr (kPw1) {
      if (!a.w1_direct) StageRows(w1_block(ci, buf));
    } else {
      LoadRegion(a, n, ci * kChunk, kChunk, p.c, iy0, ix0, xs + buf * kChunk * a.ldx, a.ldx);
    }
    if constexpr (kPwl) StageRows(w2_block(ci, buf));
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
  if constexpr (kDw && kPwl) {
    // the last pixel column's pixels beyond the tile, which the depthwise stage never writes
    const int tail = RoundUp(a.thw, 8) - a.thw;
    for (int i = threadIdx.x; i < kChunk * tail; i += kThreads) us[(i / tail) * a.ldu + a.thw + i % tail] = 0.f;
  }
  if (a.buffers == 2) issue(chunk_begin, 0);
  if constexpr (kPw1) {
    // the input region is read by every chunk: scale it and round it to TF32 once
    CommitCopies();
    WaitCopies();
    __syncthreads();
    if (p.scale != nullptr) {
      const float* scale = p.scale + (p.scale_batch == 1 ? 0 : n) * p.c;
      for (int ch = warp; ch < p.c; ch += kWarps) {
        const float sc = __ldg(scale + ch);
        float* row = xs + ch * a.ldx;
        for (int q = lane; q < a.in_hw; q += 32) row[q] = kTf32 ? RoundTf32(row[q] * sc) : row[q] * sc;
      }
    } else if (kTf32) {
      // rows of ldx (a multiple of 8) floats: 16-byte pieces; the padding past in_hw is rounded
      // too (never used for a stored result)
      float4* all = reinterpret_cast<float4*>(xs);
      for (int i = threadIdx.x; i < p.c * a.ldx / 4; i += kThreads) {
        float4 v = all[i];
        v.x = RoundTf32(v.x), v.y = RoundTf32(v.y), v.z = RoundTf32(v.z), v.w = RoundTf32(v.w);
        all[i] = v;
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
    if constexpr (kTf32) {  // this thread's staged weights of the chunk, before the barrier shows them
      if (kPw1 && !a.w1_direct) RoundStaged(w1_block(ci, buf));
      if (kPwl) RoundStaged(w2_block(ci, buf));
    }
    __syncthreads();
    if (a.buffers == 2 && ci + 1 < chunk_end) issue(ci + 1, buf ^ 1);

    const float* dw_src = xs + buf * kChunk * a.ldx;
    int dw_ld = a.ldx;
    if constexpr (kPw1) {
      FirstPointwise<kTf32, kDw>(a, w1s + buf * kChunk * a.ldw1, xs, inside, m0, ts);
      __syncthreads();
      dw_src = ts, dw_ld = a.ldt;
    }
    if constexpr (kDw) {
      Depthwise<kPixels, K, kTf32, !kPwl>(a, dw_src, dw_ld, m0, n, oy0, ox0, us);
      if constexpr (kPwl) __syncthreads();
    }
    if constexpr (kPwl) {
      LastPointwise<kPixels, kMaxMt, kTf32>(a, w2s + buf * a.ftp * kLdW2, kDw ? us : ts, kDw ? a.ldu : a.ldt, m_tiles, acc);
    }
  }

  if constexpr (kPwl) {
    const int g = lane >> 2, tq = lane & 3;
    const int n_tiles = (a.thw + 7) >> 3;
    const size_t plane = static_cast<size_t>(p.out_h) * p.out_w;
    if (ClusterCompiled(kWidth) && a.cluster) {
      // this block's share to shared memory, over the chunk buffers once every warp is done with
      // them; the cluster adds the shares
      __syncthreads();
#pragma unroll
      for (int j = 0; j < kCols; ++j) {
        const int nt = warp + j * kWarps;
        const int pix = nt * 8 + 2 * tq;
#pragma unroll
        for (int mt = 0; mt < kMaxMt; ++mt) {
          if (mt >= m_tiles || nt >= n_tiles) continue;
#pragma unroll
          for (int hi = 0; hi < 2; ++hi)
            *reinterpret_cast<float2*>(smem + (mt * 16 + g + hi * 8) * LdShare(kPixels) + pix) =
                make_float2(acc[j][mt][hi * 2], acc[j][mt][hi * 2 + 1]);
        }
      }
      SumClusterShares<kPixels>(a, smem);
      return;
    }
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
            if (a.split > 1) {
              a.partial[static_cast<size_t>(share) * p.n * p.f * plane + row + offset[e]] = sum;
            } else {
              StoreOutput(p, sum, f, row + offset[e]);
            }
          }
        }
      }
    }
  }
}

using KernelFn = void (*)(const KernelArgs);

// The narrowest capacity (Width) that holds f_tile output channels per block (PW->DW has no
// accumulators: the narrowest). InstanceForPixels runs the narrowest compiled one at least as wide.
inline int WidthFor(const ChainProblem& p, int f_tile) {
  const int ftp = p.pwl ? RoundUp(f_tile, 16) : 0;
  return ftp <= 32 ? kWidth32 : ftp <= 64 ? kWidth64 : kWidthFull;
}

// The kernel for p's stage sequence and depthwise size (K 3 and 5 compiled for their size, others
// read at run time), `pixels` per block, the capacity `width` (WidthFor), TF32 or exact; each stage
// sequence's instantiations live in their own file (chain_<kind>.cu) so they compile in parallel.
KernelFn PickPwDwPw(const ChainProblem& p, int pixels, int width);
KernelFn PickDwPw(const ChainProblem& p, int pixels, int width);
KernelFn PickPwDw(const ChainProblem& p, int pixels, int width);
KernelFn PickPwPw(const ChainProblem& p, int pixels, int width);

// The widths compiled: full only for the exact FP32 path (fewer instantiations for the slower mode)
// and for 128-pixel blocks with a first pointwise stage (they spill below 128 registers); 32 only
// without a first pointwise stage (with one it gains no blocks over 64); PW->DW at 32 (no
// accumulators). A width not compiled for these flags gets the next wider one (a wider capacity
// computes the same result).
// The capacity InstanceForPixels compiles for p's flags, `pixels` and the requested width.
inline int CompiledWidth(const ChainProblem& p, int pixels, int width) {
  if (!p.tf32 || (p.pwl && p.pw1 && pixels == 128)) return kWidthFull;
  if (!p.pwl) return kWidth32;
  if (p.pw1 && width == kWidth32) return kWidth64;
  return width;
}

template <int kPixels, int K, bool kPw1, bool kDw, bool kPwl>
KernelFn InstanceForPixels(const ChainProblem& p, int width) {
  if (!p.tf32) return ChainKernel<kPixels, kWidthFull, K, kPw1, kDw, kPwl, false>;
  if constexpr (!kPwl) {
    return ChainKernel<kPixels, kWidth32, K, kPw1, kDw, kPwl, true>;
  } else if constexpr (kPw1 && kPixels == 128) {
    return ChainKernel<kPixels, kWidthFull, K, kPw1, kDw, kPwl, true>;
  } else {
    if constexpr (!kPw1)
      if (width == kWidth32) return ChainKernel<kPixels, kWidth32, K, kPw1, kDw, kPwl, true>;
    if (width <= kWidth64) return ChainKernel<kPixels, kWidth64, K, kPw1, kDw, kPwl, true>;
    return ChainKernel<kPixels, kWidthFull, K, kPw1, kDw, kPwl, true>;
  }
}

// Instantiates the kernel for K (0: any) and the stage flags.
template <int K, bool kPw1, bool kDw, bool kPwl>
KernelFn Instance(const ChainProblem& p, int pixels, int width) {
  if (pixels == 64) return InstanceForPixels<64, K, kPw1, kDw, kPwl>(p, width);
  return InstanceForPixels<128, K, kPw1, kDw, kPwl>(p, width);
}

template <bool kPw1, bool kDw, bool kPwl>
KernelFn InstanceForKernelSize(const ChainProblem& p, int pixels, int width) {
  if (p.kernel == 3) return Instance<3, kPw1, kDw, kPwl>(p, pixels, width);
  if (p.kernel == 5) return Instance<5, kPw1, kDw, kPwl>(p, pixels, width);
  return Instance<0, kPw1, kDw, kPwl>(p, pixels, width);
}

}  // namespace chain
}  // namespace fcm
