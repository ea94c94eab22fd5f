// The depthwise stage of one 32-channel chunk, on the CUDA cores, from shared memory to a sink.
//
// In: the chunk's input over the tile's region (one row of 32 channels per region pixel, row-major
// over the region, rows kPitch bytes apart, not swizzled; from a first stage FP32 in FP32 kernels and
// the element type in half kernels, else the tensors' element type), its weights [32 channels][K*K] and biases [32] (staged in shared memory
// with the chunk's other operands, in the tensors' element type). It computes in FP32. Out:
// act(bias + sum over taps) for every output pixel of the tile, one value per lane, handed to a
// sink: the last pointwise stage's A operand (a swizzled slab) or, without one, the output tensor.
// Channels past the intermediate's end come out as zeros.
//
// A sink takes a warp's block of BH x BW pixels at once where the block lies wholly in the tile
// (`sink.template Block<BH, BW>(oy0, ox0, v)`, v row-major: most blocks), so that it computes the
// block's first address once and steps from it; else pixel by pixel (`sink.One(oy, ox, value)`),
// only for the pixels in the tile.
//
// Lane = channel: a warp's 32 lanes read one region pixel's 32 channels, a 128-byte slab row (one
// shared-memory wavefront), and each warp computes blocks of BH x BW output pixels at a time, so one
// input row loaded into registers serves every tap and output row of the block that uses it (shared
// memory, not the FMA units, bounds this stage: about 1 byte per FMA with 2 x 8 blocks). With the
// pitch a constant, a load's address is the block's base plus an immediate.
#pragma once

#include "../../epilogue.h"
#include "block_gemm.cuh"
#include "depthwise_shape.h"
#include "element.cuh"

namespace fcm {
namespace block {

// Output pixels a warp computes at once, by kernel size and stride (the host sizes the region's
// slack for the blocks that run past the tile's edge).
__host__ __device__ constexpr int DepthwiseBlockH(int, int) { return 2; }
__host__ __device__ constexpr int DepthwiseBlockW(int, int stride) { return stride == 1 ? 8 : 4; }

struct DepthwiseGeometry {
  int tile_h, tile_w;  // the tile's output pixels
  int region_w;        // input region width (pixels)
  int blocks;          // BH x BW blocks covering the tile, and how many to a row of blocks
  cutlass::FastDivmod blocks_w;
};

// One input value of type In at a shared-window address, as a float.
template <class In>
__device__ __forceinline__ float LoadSharedValue(uint32_t address) {
  if constexpr (kIsHalf<In>) {
    uint16_t bits;
    asm volatile("ld.shared.b16 %0, [%1];\n" : "=h"(bits) : "r"(address));
    return Element<In>::ToFloat(*reinterpret_cast<const In*>(&bits));
  } else {
    return __uint_as_float(LoadShared1(address));
  }
}

// channel = lane
template <int K, int S, int kPitch, class In, class W, class Sink>
__device__ __forceinline__ void DepthwiseChunk(const DepthwiseGeometry& g, uint32_t input, const W* weights, const W* bias,
                                               int valid_channels, const Activation& act, const Sink& sink) {
  constexpr int BH = DepthwiseBlockH(K, S), BW = DepthwiseBlockW(K, S);
  constexpr int kRows = (BH - 1) * S + K;  // input rows of a block
  constexpr int kCols = (BW - 1) * S + K;  // input pixels per input row
  constexpr bool kWeightsInRegisters = K == 3;
  const int lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3;
  const bool valid = lane < valid_channels;
  const float b = Element<W>::ToFloat(bias[lane]);
  const W* w_lane = weights + lane * K * K;  // stride K*K (odd): 32 distinct banks (FP32; half: 2 lanes a bank)
  float w3[kWeightsInRegisters ? K * K : 1];
  if constexpr (kWeightsInRegisters) {
#pragma unroll
    for (int i = 0; i < K * K; ++i) w3[i] = Element<W>::ToFloat(w_lane[i]);
  }
  const uint32_t lane_input = input + lane * static_cast<uint32_t>(sizeof(In));
  for (int block = warp; block < g.blocks; block += kConsumers / 32) {
    int by, bx;
    g.blocks_w.fast_divmod(by, bx, block);
    const int oy0 = by * BH, ox0 = bx * BW;
    float acc[BH][BW];
#pragma unroll
    for (int r = 0; r < BH; ++r)
#pragma unroll
      for (int x = 0; x < BW; ++x) acc[r][x] = b;
#pragma unroll
    for (int iy = 0; iy < kRows; ++iy) {
      const uint32_t row0 = lane_input + ((oy0 * S + iy) * g.region_w + ox0 * S) * kPitch;
      float in[kCols];
#pragma unroll
      for (int i = 0; i < kCols; ++i) in[i] = LoadSharedValue<In>(row0 + i * kPitch);
#pragma unroll
      for (int r = 0; r < BH; ++r) {
        const int dy = iy - r * S;
        if (dy < 0 || dy >= K) continue;  // resolved at compile time
        float w[K];
#pragma unroll
        for (int dx = 0; dx < K; ++dx) w[dx] = kWeightsInRegisters ? w3[dy * K + dx] : Element<W>::ToFloat(w_lane[dy * K + dx]);
#pragma unroll
        for (int x = 0; x < BW; ++x)
#pragma unroll
          for (int dx = 0; dx < K; ++dx) acc[r][x] = fmaf(in[x * S + dx], w[dx], acc[r][x]);
      }
    }
    float v[BH * BW];
#pragma unroll
    for (int r = 0; r < BH; ++r)
#pragma unroll
      for (int x = 0; x < BW; ++x) v[r * BW + x] = acc[r][x];
    act.Apply(v);
    if (valid_channels < kChunk) {  // (a partial chunk only: a uniform test otherwise)
#pragma unroll
      for (int i = 0; i < BH * BW; ++i) v[i] = valid ? v[i] : 0.f;
    }
    if (oy0 + BH <= g.tile_h && ox0 + BW <= g.tile_w) {
      sink.template Block<BH, BW>(oy0, ox0, v);
    } else {
#pragma unroll
      for (int r = 0; r < BH; ++r)
#pragma unroll
        for (int x = 0; x < BW; ++x)
          if (oy0 + r < g.tile_h && ox0 + x < g.tile_w) sink.One(oy0 + r, ox0 + x, v[r * BW + x]);
    }
  }
}

// The chunk's depthwise stage at the problem's kernel size and stride (depthwise_shape.h), with the
// input's row pitch a constant.
template <int kPitch, class In, class W, class Sink>
__device__ __forceinline__ void DepthwiseOfPitch(int kernel, int stride, const DepthwiseGeometry& g, uint32_t input, const W* weights,
                                                 const W* bias, int valid_channels, const Activation& act, const Sink& sink) {
  WithDepthwiseShape(kernel, stride, [&](auto k, auto s) {
    DepthwiseChunk<decltype(k)::value, decltype(s)::value, kPitch, In>(g, input, weights, bias, valid_channels, act, sink);
  });
}

// A stage's activation applied to its values' pair once rounded to a half type, where that gives
// what rounding the activated values gives: ReLU and clips commute with rounding to nearest (it is
// monotonic, and a bound rounds as a value at it does), so a packed max and min per pair replace
// two float clamps per value, the half kernels' most issued instruction (Nsight Compute,
// benchmarks/2026-12-07-h100-half-u-pairs): the first stage's output (StoreFirst) and the depthwise
// stage's (DepthwisePairsChunk). Other activations: `takes` false, the pair only rounded.
template <class E>
struct PackedClamp {
  using Pair = std::conditional_t<std::is_same_v<E, __half>, __half2, __nv_bfloat162>;
  Pair lo, hi;
  bool takes = false, has_lo = false, has_hi = false;
  __device__ __forceinline__ explicit PackedClamp(const Activation& act) {
    takes = act.kind == Act::kNone || act.kind == Act::kRelu || act.kind == Act::kClip;
    has_lo = act.kind == Act::kRelu || act.kind == Act::kClip, has_hi = act.kind == Act::kClip;
    const float l = act.kind == Act::kRelu ? 0.f : act.lo;
    lo = PairOf(PackHalves<E>(l, l)), hi = PairOf(PackHalves<E>(act.hi, act.hi));
  }
  __device__ __forceinline__ static Pair PairOf(uint32_t word) { return *reinterpret_cast<const Pair*>(&word); }
  // v0 and v1 rounded and clamped, as the word they make in memory (v0 at the lower address)
  __device__ __forceinline__ uint32_t operator()(float v0, float v1) const {
    Pair pair = PairOf(PackHalves<E>(v0, v1));
    if (has_lo) pair = __hmax2(pair, lo);  // has_lo and has_hi imply takes
    if (has_hi) pair = __hmin2(pair, hi);
    return *reinterpret_cast<const uint32_t*>(&pair);
  }
};

// The depthwise stage of one chunk from a half U, two channels a lane: lane = (half h = lane / 16,
// channel pair q = lane % 16), each warp's block of BH x BW output pixels split by columns, half h
// taking columns [h * BW / 2, (h + 1) * BW / 2) of channels 2q and 2q + 1. A load of a warp reads two
// pixels' 32 channels (64 bytes each, 4 pixels apart: with the pitch, disjoint bank halves), one
// wavefront where the one-channel form takes one per pixel: (BH - 1) * S + K rows of
// (BW / 2 - 1) * S + K pixels a block against rows of (BW - 1) * S + K. The sums are in FP32 as in
// DepthwiseChunk, each output's taps in the same order. The sink takes pairs of channels
// (BlockWords, OneWord), and `valid_channels` is even or the chunk's end (the pair's second channel
// past it comes out as zero).
template <int K, int S, int kPitch, class E, class Sink>
__device__ __forceinline__ void DepthwisePairsChunk(const DepthwiseGeometry& g, uint32_t input, const E* weights, const E* bias,
                                                    int valid_channels, const Activation& act, const Sink& sink) {
  constexpr int BH = DepthwiseBlockH(K, S), BW = DepthwiseBlockW(K, S), HW = BW / 2;
  static_assert(BW % 2 == 0 && HW * S * kPitch / 4 % 32 == 16, "the two pixels of a load on disjoint bank halves");
  constexpr int kRows = (BH - 1) * S + K;   // input rows of a block
  constexpr int kCols = (HW - 1) * S + K;   // input pixels per input row, for a lane's half of the block
  constexpr bool kWeightsInRegisters = K == 3;
  const int lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3, h = lane >> 4, c0 = 2 * (lane & 15);
  const bool valid0 = c0 < valid_channels, valid1 = c0 + 1 < valid_channels;
  const uint32_t keep = (valid0 ? 0x0000ffffu : 0u) | (valid1 ? 0xffff0000u : 0u);  // a channel past the chunk's: 0
  const PackedClamp<E> clamp(act);
  const float b0 = Element<E>::ToFloat(bias[c0]), b1 = Element<E>::ToFloat(bias[c0 + 1]);
  const E* w0 = weights + c0 * K * K;
  const E* w1 = w0 + K * K;
  float w3[2][kWeightsInRegisters ? K * K : 1];
  if constexpr (kWeightsInRegisters) {
#pragma unroll
    for (int i = 0; i < K * K; ++i) w3[0][i] = Element<E>::ToFloat(w0[i]), w3[1][i] = Element<E>::ToFloat(w1[i]);
  }
  const uint32_t lane_input = input + c0 * static_cast<uint32_t>(sizeof(E)) + h * HW * S * kPitch;
  for (int block = warp; block < g.blocks; block += kConsumers / 32) {
    int by, bx;
    g.blocks_w.fast_divmod(by, bx, block);
    const int oy0 = by * BH, ox0 = bx * BW;  // the block's first pixel; this lane's: ox0 + h * HW
    float acc[2][BH][HW];
#pragma unroll
    for (int r = 0; r < BH; ++r)
#pragma unroll
      for (int x = 0; x < HW; ++x) acc[0][r][x] = b0, acc[1][r][x] = b1;
#pragma unroll
    for (int iy = 0; iy < kRows; ++iy) {
      const uint32_t row0 = lane_input + ((oy0 * S + iy) * g.region_w + ox0 * S) * kPitch;
      float in[2][kCols];
#pragma unroll
      for (int i = 0; i < kCols; ++i) {
        const float2 pair = UnpackHalves<E>(LoadShared1(row0 + i * kPitch));
        in[0][i] = pair.x, in[1][i] = pair.y;
      }
#pragma unroll
      for (int r = 0; r < BH; ++r) {
        const int dy = iy - r * S;
        if (dy < 0 || dy >= K) continue;  // resolved at compile time
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const E* w_lane = c == 0 ? w0 : w1;
          float w[K];
#pragma unroll
          for (int dx = 0; dx < K; ++dx) w[dx] = kWeightsInRegisters ? w3[c][dy * K + dx] : Element<E>::ToFloat(w_lane[dy * K + dx]);
#pragma unroll
          for (int x = 0; x < HW; ++x)
#pragma unroll
            for (int dx = 0; dx < K; ++dx) acc[c][r][x] = fmaf(in[c][x * S + dx], w[dx], acc[c][r][x]);
        }
      }
    }
    float v0[BH * HW], v1[BH * HW];
#pragma unroll
    for (int r = 0; r < BH; ++r)
#pragma unroll
      for (int x = 0; x < HW; ++x) v0[r * HW + x] = acc[0][r][x], v1[r * HW + x] = acc[1][r][x];
    if (!clamp.takes) {
      act.Apply(v0);
      act.Apply(v1);
    }
    uint32_t words[BH * HW];  // the lane's two channels of each pixel, rounded (and clamped) as they are stored
#pragma unroll
    for (int i = 0; i < BH * HW; ++i) words[i] = clamp(v0[i], v1[i]);
    if (valid_channels < kChunk) {  // (a partial chunk only: a uniform test otherwise)
#pragma unroll
      for (int i = 0; i < BH * HW; ++i) words[i] &= keep;
    }
    const int lx0 = ox0 + h * HW;  // this lane's first column
    if (oy0 + BH <= g.tile_h && ox0 + BW <= g.tile_w) {
      sink.template BlockWords<BH, HW>(oy0, lx0, words);
    } else {
#pragma unroll
      for (int r = 0; r < BH; ++r)
#pragma unroll
        for (int x = 0; x < HW; ++x)
          if (oy0 + r < g.tile_h && lx0 + x < g.tile_w) sink.OneWord(oy0 + r, lx0 + x, words[r * HW + x]);
    }
  }
}

// The first stage's output (U) rows are padded to kUPitch bytes: the fragment owners' 8-byte stores
// (8 rows x 4 column pairs per instruction) then take the two wavefronts they need, and the lanes
// of a depthwise load still read 128 contiguous bytes. U holds FP32 for FP32 kernels (the first
// stage's accumulators) and the element type for the half kernels (the op rounds a stage's output to
// it), in rows of kHalfUPitch bytes: 64 of values and 16 of padding, so that the fragment owners'
// 4-byte stores fall on 32 distinct banks, and the two pixels a pairs load reads (4 apart) on
// disjoint halves of the banks (DepthwisePairsChunk). A region loaded straight from the input (no
// first stage) has rows of the chunk's 32 channels in the tensors' type: 128 bytes, or 64 for half
// types.
constexpr int kUPitch = 144;
constexpr int kHalfUPitch = 80;
template <class E>
constexpr int kUPitchOf = kIsHalf<E> ? kHalfUPitch : kUPitch;
template <class E>
constexpr int kChunkRowBytes = kChunk * static_cast<int>(sizeof(E));

// E: the tensors' element type (weights, biases, and a region loaded from the input). `from_u`: the
// input is U (a first stage's output), else the chunk's input as loaded. Half kernels read U two
// channels a lane (DepthwisePairs, with the sink's pair methods); the rest one channel a lane.
template <class E, class Sink>
__device__ __forceinline__ void Depthwise(bool from_u, int kernel, int stride, const DepthwiseGeometry& g, uint32_t input,
                                          const E* weights, const E* bias, int valid_channels, const Activation& act,
                                          const Sink& sink) {
  if (from_u) {
    if constexpr (kIsHalf<E>) {
      WithDepthwiseShape(kernel, stride, [&](auto k, auto s) {
        DepthwisePairsChunk<decltype(k)::value, decltype(s)::value, kHalfUPitch, E>(g, input, weights, bias, valid_channels, act, sink);
      });
    } else {
      DepthwiseOfPitch<kUPitch, float>(kernel, stride, g, input, weights, bias, valid_channels, act, sink);
    }
  } else {
    DepthwiseOfPitch<kChunkRowBytes<E>, E>(kernel, stride, g, input, weights, bias, valid_channels, act, sink);
  }
}

// The last input row and column (region pixel index) a chunk reads past the region, for the slack.
__host__ __device__ inline int DepthwiseLastRow(int kernel, int stride, int tile_h, int tile_w, int region_w) {
  const int bh = DepthwiseBlockH(kernel, stride), bw = DepthwiseBlockW(kernel, stride);
  const int last_y = (CeilDiv(tile_h, bh) * bh - 1) * stride + kernel - 1;
  const int last_x = (CeilDiv(tile_w, bw) * bw - 1) * stride + kernel - 1;
  return last_y * region_w + last_x;
}

}  // namespace block
}  // namespace fcm
