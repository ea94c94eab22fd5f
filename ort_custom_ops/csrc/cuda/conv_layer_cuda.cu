// The convolution layer op on the CUDA cores (conv_layer.h says what it computes): a direct convolution,
// one thread per (output pixel, FT adjacent output channels; an RGB stem by tiles whose input is staged
// in shared memory, ConvStemKernel), the bias and the activation applied in registers and Y written
// once with vector stores. It is made for the layers the rewrite gives it: a
// network's stem (a KxK convolution of few input channels: little work per output and a large output,
// so one pass over memory is what counts; ONNX Runtime spends a layout conversion, the convolution, a
// bias pass and an activation pass on it) and depthwise convolutions no group takes.
//
// The weights are staged once per CTA in shared memory as [tap][input channel][output channel], so
// that a thread's FT channels are adjacent, when they fit in 48 KB; else every thread reads them
// through the read-only cache. CTAs loop over the threads' work (a grid of a few waves), so staging
// is paid a few times per SM, not once per 256 outputs.
#include "conv_layer_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../conv_layer.h"
#include "block/block_gemm.cuh"
#include "block/element.cuh"
#include "device.h"
#include "device_element.cuh"

namespace fcm {
namespace {

using block::Element;

constexpr int kThreads = 256;
constexpr size_t kStagedBytes = 48 * 1024;  // the weights a CTA stages at most (no opt-in needed)

template <class E>
struct ConvLayerArgs {
  const E* x;
  const E* w;  // [F, C / group, KH, KW]
  const E* b;  // [F]
  E* y;
  int n, h, w_in, c, f, out_h, out_w;
  int kh, kw, sh, sw, pad_top, pad_left;
  unsigned work;  // threads' worth of work: n * out_h * out_w * (f / FT)
  Activation act;
  // X * x_scale + x_shift per input channel, each of scale_count / shift_count values: 0 (none: the
  // pointer then holds B, never null, so that a load the compiler hoists above the count's check
  // stays in bounds; without that, fp16 kernels read address 0), 1 (every channel) or c
  const E* x_scale;
  const E* x_shift;
  int scale_count, shift_count;
  const float* x_float;  // a half layer's X in fp32 (x then points at the same bytes), else null
};

// X's value at an index in two steps, its bits as loaded and then their value (InputAt takes both), so
// that a lane can issue a batch of loads before it waits for the first (ConvStemKernel's region).
template <class E>
__device__ __forceinline__ uint32_t InputBitsAt(const ConvLayerArgs<E>& a, size_t index) {
  if constexpr (block::kIsHalf<E>) {
    if (a.x_float != nullptr) return __float_as_uint(__ldg(a.x_float + index));
    return __ldg(reinterpret_cast<const unsigned short*>(a.x) + index);
  } else {
    return __float_as_uint(__ldg(a.x + index));
  }
}

template <class E>
__device__ __forceinline__ float InputOfBits(const ConvLayerArgs<E>& a, uint32_t bits) {
  if constexpr (block::kIsHalf<E>) {
    if (a.x_float != nullptr) return Element<E>::ToFloat(Element<E>::FromFloat(__uint_as_float(bits)));
    const unsigned short half_bits = static_cast<unsigned short>(bits);
    E value;
    memcpy(&value, &half_bits, sizeof(E));
    return Element<E>::ToFloat(value);
  } else {
    return __uint_as_float(bits);
  }
}

// X's value at `index` as a float: an fp32 X rounded to E first (what a Cast to E before the layer gives).
template <class E>
__device__ __forceinline__ float InputAt(const ConvLayerArgs<E>& a, size_t index) {
  return InputOfBits(a, InputBitsAt(a, index));
}

// X * scale + shift as the convolution reads an input value, rounded to E after each step
// (conv_layer.h); has_scale / has_shift: the node has XS / XB.
template <class E>
__device__ __forceinline__ float ScaledShifted(float v, bool has_scale, float scale, bool has_shift, float shift) {
  if (has_scale) {
    v *= scale;
    if constexpr (block::kIsHalf<E>) v = Element<E>::ToFloat(Element<E>::FromFloat(v));
  }
  if (has_shift) {
    v += shift;
    if constexpr (block::kIsHalf<E>) v = Element<E>::ToFloat(Element<E>::FromFloat(v));
  }
  return v;
}

// Channel c's value of the input scale or shift (`count` values: 1 for every channel, or one each).
template <class E>
__device__ __forceinline__ float AffineValue(const ConvLayerArgs<E>& a, const E* values, int count, int c) {
  return Element<E>::ToFloat(__ldg(values + (count == a.c ? c : 0)));
}

// An input value of channel c as the convolution reads it: X * XS + XB where the node has them.
template <class E>
__device__ __forceinline__ float InputValue(const ConvLayerArgs<E>& a, float v, int c) {
  const bool has_scale = a.scale_count != 0, has_shift = a.shift_count != 0;
  return ScaledShifted<E>(v, has_scale, has_scale ? AffineValue(a, a.x_scale, a.scale_count, c) : 0.f, has_shift,
                          has_shift ? AffineValue(a, a.x_shift, a.shift_count, c) : 0.f);
}

// FT values of E from `from` into floats: one or two 16-byte loads where FT elements fill them (the
// host picks FT so that they are aligned), else one load per value.
template <int FT, class E>
__device__ __forceinline__ void LoadFloats(const E* from, float (&out)[FT]) {
  constexpr int kBytes = FT * static_cast<int>(sizeof(E));
  if constexpr (kBytes % 16 == 0) {
    E values[FT];
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) reinterpret_cast<uint4*>(values)[i] = __ldg(reinterpret_cast<const uint4*>(from) + i);
#pragma unroll
    for (int j = 0; j < FT; ++j) out[j] = Element<E>::ToFloat(values[j]);
  } else {
#pragma unroll
    for (int j = 0; j < FT; ++j) out[j] = Element<E>::ToFloat(from[j]);
  }
}

template <int FT, class E>
__device__ __forceinline__ void StoreValues(E* to, const float (&v)[FT]) {
  constexpr int kBytes = FT * static_cast<int>(sizeof(E));
  E values[FT];
#pragma unroll
  for (int j = 0; j < FT; ++j) values[j] = Element<E>::FromFloat(v[j]);
  if constexpr (kBytes % 16 == 0) {
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) reinterpret_cast<uint4*>(to)[i] = reinterpret_cast<const uint4*>(values)[i];
  } else {
#pragma unroll
    for (int j = 0; j < FT; ++j) to[j] = values[j];
  }
}

// The weights [F, per_filter, taps] into shared memory as floats [tap][input channel of the filter][f],
// so that a thread's adjacent filters are adjacent; by the whole CTA.
template <class E>
__device__ __forceinline__ void StageWeights(const ConvLayerArgs<E>& a, int taps, int per_filter, float* staged) {
  const int count = taps * per_filter * a.f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) {
    const int f = i % a.f, rest = i / a.f, c = rest % per_filter, tap = rest / per_filter;
    staged[i] = Element<E>::ToFloat(a.w[(f * per_filter + c) * taps + tap]);
  }
  __syncthreads();
}

// acc[j] += v[j] * w[j] for j < FT (v[0] for every j where !per_channel): w the FT staged weights of
// adjacent filters, read as 16-byte vectors (FT a multiple of 4, w aligned).
template <int FT>
__device__ __forceinline__ void FmaStagedWeights(float (&acc)[FT], const float* v, bool per_channel, const float* w) {
  const float4* w4 = reinterpret_cast<const float4*>(w);
#pragma unroll
  for (int q = 0; q < FT / 4; ++q) {
    const float4 wv = w4[q];
    const float wq[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
    for (int r = 0; r < 4; ++r) acc[4 * q + r] = fmaf(v[per_channel ? 4 * q + r : 0], wq[r], acc[4 * q + r]);
  }
}

// kDepthwise: output channel f reads input channel f (group = C = F); else every input channel.
// kStaged: the weights in shared memory (StageWeights). kK3: a 3x3 depthwise layer whose 9 taps'
// vector loads are issued before the first is used (a tap in the padding loads the nearest pixel
// inside and is then skipped), where the taps' bounds checks between them made each load wait for
// the last (EfficientNetB0's FP16 112x112 layer at batch 32 on an H100: 118 us against 125,
// benchmarks/2026-12-07-h100-mma-stem; both far above its ~17 us of bytes: issue-bound).
template <class E, int FT, bool kDepthwise, bool kStaged, bool kK3 = false>
__global__ void __launch_bounds__(kThreads, kK3 ? 3 : 1) ConvLayerKernel(const ConvLayerArgs<E> a) {
  static_assert(!kK3 || (kDepthwise && block::kIsHalf<E> && FT * sizeof(E) == 16), "3x3 depthwise, one 16-byte load a tap");
  extern __shared__ float4 staged_vectors[];
  float* staged = reinterpret_cast<float*>(staged_vectors);
  const int kh = a.kh, kw = a.kw, channels = a.c;
  const int taps = kh * kw, per_filter = kDepthwise ? 1 : channels;
  if constexpr (kStaged) StageWeights(a, taps, per_filter, staged);
  // acc[j] += v * weight(tap, input channel c of the filter, f0 + j) for j < FT (kDepthwise: v[j])
  auto accumulate = [&](float (&acc)[FT], const float* v, bool per_channel, int tap, int c, int f0) {
    if constexpr (kStaged && FT % 4 == 0) {  // (F and f0 are multiples of 4: aligned vectors)
      FmaStagedWeights(acc, v, per_channel, staged + (tap * per_filter + c) * a.f + f0);
    } else {
#pragma unroll
      for (int j = 0; j < FT; ++j) {
        const float w = kStaged ? staged[(tap * per_filter + c) * a.f + f0 + j]
                                : Element<E>::ToFloat(__ldg(a.w + ((f0 + j) * per_filter + c) * taps + tap));
        acc[j] = fmaf(v[per_channel ? j : 0], w, acc[j]);
      }
    }
  };
  const unsigned slices = a.f / FT;
  // (unsigned: work < 2^31 and the stride below it, so the index cannot wrap)
  for (unsigned index = blockIdx.x * blockDim.x + threadIdx.x; index < a.work; index += gridDim.x * blockDim.x) {
    const int f0 = static_cast<int>(index % slices) * FT, pixel = static_cast<int>(index / slices);
    const int ox = pixel % a.out_w, oy = (pixel / a.out_w) % a.out_h, image = pixel / (a.out_w * a.out_h);
    const int iy0 = oy * a.sh - a.pad_top, ix0 = ox * a.sw - a.pad_left;
    float acc[FT];
    LoadFloats<FT>(a.b + f0, acc);
    if constexpr (kK3) {
      uint4 raw[9];
      unsigned inside = 0;  // bit tap: the tap lies in X
#pragma unroll
      for (int tap = 0; tap < 9; ++tap) {
        const int iy = iy0 + tap / 3, ix = ix0 + tap % 3;
        inside |= (iy >= 0 && iy < a.h && ix >= 0 && ix < a.w_in) ? 1u << tap : 0u;
        const int cy = min(max(iy, 0), a.h - 1), cx = min(max(ix, 0), a.w_in - 1);
        raw[tap] = __ldg(reinterpret_cast<const uint4*>(a.x + (static_cast<size_t>(image * a.h + cy) * a.w_in + cx) * channels + f0));
      }
#pragma unroll
      for (int tap = 0; tap < 9; ++tap) {
        if (!(inside & 1u << tap)) continue;
        const E* values = reinterpret_cast<const E*>(&raw[tap]);
        float v[FT];
#pragma unroll
        for (int j = 0; j < FT; ++j) v[j] = InputValue(a, Element<E>::ToFloat(values[j]), f0 + j);
        accumulate(acc, v, true, tap, 0, f0);
      }
    } else {
#pragma unroll
      for (int ky = 0; ky < kh; ++ky) {
        const int iy = iy0 + ky;
        if (iy < 0 || iy >= a.h) continue;
#pragma unroll
        for (int kx = 0; kx < kw; ++kx) {
          const int ix = ix0 + kx;
          if (ix < 0 || ix >= a.w_in) continue;
          const size_t at = (static_cast<size_t>(image * a.h + iy) * a.w_in + ix) * channels;
          const int tap = ky * kw + kx;
          if constexpr (kDepthwise) {  // (never an fp32 X: CheckConvLayerCall)
            float v[FT];
            LoadFloats<FT>(a.x + at + f0, v);
#pragma unroll
            for (int j = 0; j < FT; ++j) v[j] = InputValue(a, v[j], f0 + j);
            accumulate(acc, v, true, tap, 0, f0);
          } else {
#pragma unroll
            for (int c = 0; c < channels; ++c) {
              const float v = InputValue(a, InputAt(a, at + c), c);
              accumulate(acc, &v, false, tap, c, f0);
            }
          }
        }
      }
    }
    if constexpr (block::kIsHalf<E>) {  // the sum in E before the activation (conv_layer.h)
#pragma unroll
      for (int j = 0; j < FT; ++j) acc[j] = Element<E>::ToFloat(Element<E>::FromFloat(acc[j]));
    }
    a.act.Apply(acc);
    StoreValues<FT>(a.y + static_cast<size_t>(pixel) * a.f + f0, acc);
  }
}

// A 3x3 depthwise layer in a half type, kPixels adjacent output pixels of one row and 8 channels a
// thread: each input row's kCols columns are loaded once (16 bytes each, all issued before the first
// is used; a column outside X loads the nearest inside and is skipped), converted once, and each
// serves the up to 3 pixels whose taps cover it. One pixel a thread (ConvLayerKernel) issued ~500
// instructions for its 72 products, its index arithmetic, conversions and weight loads repeated per
// pixel: EfficientNetB0's FP16 112x112 layer took 118-125 us at batch 32 on an H100, against ~17 us
// of bytes (benchmarks/2026-12-07-h100-mma-stem); by rows, 79.5 us (2026-12-07-h100-depthwise-rows).
// Each sum is ConvLayerKernel's, in its order (bias, then the taps row by row).
constexpr int kRowPixels = 4;

template <class E, int kS>
__global__ void __launch_bounds__(kThreads, 2) DepthwiseRowsKernel(const ConvLayerArgs<E> a) {
  static_assert(block::kIsHalf<E>, "8 channels a 16-byte load");
  constexpr int FT = 8, kCols = (kRowPixels - 1) * kS + 3;
  extern __shared__ float4 staged_vectors[];
  float* staged = reinterpret_cast<float*>(staged_vectors);
  StageWeights(a, 9, 1, staged);
  const unsigned slices = a.f / FT;
  const int groups_x = (a.out_w + kRowPixels - 1) / kRowPixels;
  for (unsigned index = blockIdx.x * blockDim.x + threadIdx.x; index < a.work; index += gridDim.x * blockDim.x) {
    const int f0 = static_cast<int>(index % slices) * FT, group = static_cast<int>(index / slices);
    const int ox0 = group % groups_x * kRowPixels, oy = (group / groups_x) % a.out_h, image = group / (groups_x * a.out_h);
    const int iy0 = oy * kS - a.pad_top, ix0 = ox0 * kS - a.pad_left;
    float acc[kRowPixels][FT];
#pragma unroll
    for (int p = 0; p < kRowPixels; ++p) LoadFloats<FT>(a.b + f0, acc[p]);
#pragma unroll
    for (int ky = 0; ky < 3; ++ky) {
      const int iy = iy0 + ky;
      if (iy < 0 || iy >= a.h) continue;
      const E* row = a.x + static_cast<size_t>(image * a.h + iy) * a.w_in * a.c + f0;
      uint4 raw[kCols];
      unsigned inside = 0;  // bit c: column c lies in X
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int ix = ix0 + c;
        inside |= (ix >= 0 && ix < a.w_in) ? 1u << c : 0u;
        raw[c] = __ldg(reinterpret_cast<const uint4*>(row + static_cast<size_t>(min(max(ix, 0), a.w_in - 1)) * a.c));
      }
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        if (!(inside & 1u << c)) continue;
        const E* values = reinterpret_cast<const E*>(&raw[c]);
        float v[FT];
#pragma unroll
        for (int j = 0; j < FT; ++j) v[j] = InputValue(a, Element<E>::ToFloat(values[j]), f0 + j);
#pragma unroll
        for (int p = 0; p < kRowPixels; ++p) {
          const int kx = c - p * kS;  // (a constant: the loops are unrolled)
          if (kx < 0 || kx > 2) continue;
          FmaStagedWeights(acc[p], v, true, staged + (ky * 3 + kx) * a.f + f0);
        }
      }
    }
#pragma unroll
    for (int p = 0; p < kRowPixels; ++p) {
      if (ox0 + p >= a.out_w) break;
#pragma unroll
      for (int j = 0; j < FT; ++j) acc[p][j] = Element<E>::ToFloat(Element<E>::FromFloat(acc[p][j]));  // the sum in E first (conv_layer.h)
      a.act.Apply(acc[p]);
      StoreValues<FT>(a.y + (static_cast<size_t>(image * a.out_h + oy) * a.out_w + ox0 + p) * a.f + f0, acc[p]);
    }
  }
}

// An RGB stem (kK x kK taps of kC input channels, every filter reading every channel), by output
// tiles of 32 columns: the CTA stages its tile's input region in shared memory (coalesced reads, the
// input affine applied once per value, zeros for the padding), then each lane takes one column and
// kPixels rows of 16 filters. Reading the input straight from global memory, a warp's lanes were 6 to
// 48 bytes apart per 2-byte value: the L1's wavefronts, not the FMAs, bound the kernel (MobileNetV2's
// FP16 stem 40-51 us at batch 32 on an H100 against ~12 us of FMAs, benchmarks/2026-12-06-h100-
// tiles-stem). The region is kept as [channel][row][column mod stride][column / stride], so that the
// lanes' reads at a stride are adjacent words (no bank conflicts); the 16 filters' weights are
// broadcast 16-byte reads. Warps split the filters in slices of 16 (F / 16 of them, dividing 8) and the
// rows in the rest. Each sum is ConvLayerKernel's, in its order (bias, then taps, then channels); a
// tap in the padding adds 0 * w, as skipping it would.
constexpr int kStemCols = 32;  // output columns per tile: one per lane
constexpr int kStemFilters = 16;
constexpr int kStemMaxStride = 2;  // (larger strides take the direct kernel)
constexpr int kStemAffineFloats = 8;  // the input affine's staged floats (2 per channel), keeping the region 16-byte aligned
constexpr int kStemRowsInFlight = 2;  // region rows a warp loads before it stores them

struct StemTiles {
  int slices, rows, region_rows, region_cols, plane_cols;  // plane: the region's columns of one residue mod the stride
  int sw;
  __host__ __device__ StemTiles(int f, int sh, int sw, int k, int pixels)
      : slices(f / kStemFilters),
        rows(kThreads / 32 / slices * pixels),
        region_rows((rows - 1) * sh + k),
        region_cols((kStemCols - 1) * sw + k),
        plane_cols((region_cols + sw - 1) / sw),
        sw(sw) {}
  __host__ __device__ int RegionFloats(int channels) const { return channels * region_rows * sw * plane_cols; }
};

template <class E, int kK, int kC, int kPixels>
__global__ void __launch_bounds__(kThreads, 2) ConvStemKernel(const ConvLayerArgs<E> a) {
  static_assert(kC <= 4, "a value's place packs its channel in 2 bits");
  // a lane's values of a region row: the row holds ((kStemCols - 1) * stride + kK) * kC
  constexpr int kLaneValues = (((kStemCols - 1) * kStemMaxStride + kK) * kC + 31) / 32;
  extern __shared__ float4 staged_vectors[];
  float* staged = reinterpret_cast<float*>(staged_vectors);
  static_assert(kStemRowsInFlight * kLaneValues <= 32, "a bit per value in flight");
  // the input affine per channel, [scale x kC, shift x kC], after the weights; then the region
  float* affine = staged + kK * kK * kC * a.f;  // (a multiple of 4 floats: f is of 16)
  float* region = affine + kStemAffineFloats;
  const bool has_scale = a.scale_count != 0, has_shift = a.shift_count != 0;
  if (threadIdx.x < kC) {
    const int c = threadIdx.x;
    affine[c] = has_scale ? AffineValue(a, a.x_scale, a.scale_count, c) : 1.f;
    affine[kC + c] = has_shift ? AffineValue(a, a.x_shift, a.shift_count, c) : 0.f;
  }
  StageWeights(a, kK * kK, kC, staged);  // (its barrier publishes the affine too)
  const int sh = a.sh, sw = a.sw;
  const StemTiles t(a.f, sh, sw, kK, kPixels);
  const int tiles_x = (a.out_w + kStemCols - 1) / kStemCols, tiles_y = (a.out_h + t.rows - 1) / t.rows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int f0 = warp % t.slices * kStemFilters, row0 = warp / t.slices * kPixels;
  const int row_values = t.region_cols * kC;  // one region row's values: adjacent in X
  for (int tile = blockIdx.x; tile < a.n * tiles_y * tiles_x; tile += gridDim.x) {
    const int tx = tile % tiles_x, ty = (tile / tiles_x) % tiles_y, image = tile / (tiles_x * tiles_y);
    const int oy0 = ty * t.rows, ox0 = tx * kStemCols;
    const int iy0 = oy0 * sh - a.pad_top, ix0 = ox0 * sw - a.pad_left;
    __syncthreads();  // the previous tile's reads of the region are done
    // A warp per region row (rows warp, warp + 8, ...), its lanes along the row (coalesced), two rows
    // at a time: all their loads are issued before the first value is used, so that a lane waits for
    // global memory once per two rows. Lane l takes the row's values l, l + 32, ... (kLaneValues of
    // them), whose places in the region, past the row's part, are the same in every row and tile:
    // computed once per tile, so that a value costs an address, a bounds check, the load, its affine
    // and a store (the divisions and the layout's arithmetic per value made the load phase cost more
    // than the FMAs; a load at a time, the lanes waited ~30 times a tile:
    // benchmarks/2026-12-07-h100-gpu-tests-stem).
    int place[kLaneValues];  // the value's place in the region less the row's part, times 4, plus its channel; -1 past the row
#pragma unroll
    for (int k = 0; k < kLaneValues; ++k) {
      const int e = lane + 32 * k, col = e / kC, c = e - col * kC;
      place[k] = e < row_values ? (((c * t.region_rows) * sw + col % sw) * t.plane_cols + col / sw) * 4 + c : -1;
    }
    const int row_floats = sw * t.plane_cols;  // one region row's part of a channel's plane
    for (int row = warp; row < t.region_rows; row += kStemRowsInFlight * kThreads / 32) {
      uint32_t bits[kStemRowsInFlight][kLaneValues];
      unsigned inside = 0;  // bit r * kLaneValues + k: value k of row r lies in X (else padding: 0)
#pragma unroll
      for (int r = 0; r < kStemRowsInFlight; ++r) {
        const int region_row = row + r * kThreads / 32, iy = iy0 + region_row;
        const bool row_inside = region_row < t.region_rows && iy >= 0 && iy < a.h;
        const int row_start = ((image * a.h + (row_inside ? iy : 0)) * a.w_in + ix0) * kC;  // (negative where ix0 is: never read there)
#pragma unroll
        for (int k = 0; k < kLaneValues; ++k) {
          const int e = lane + 32 * k;
          const bool in_x = row_inside && place[k] >= 0 && static_cast<unsigned>(ix0 * kC + e) < static_cast<unsigned>(a.w_in * kC);
          // every lane loads (X[0] for the padding), so that no branch sits between the loads
          bits[r][k] = InputBitsAt(a, in_x ? static_cast<size_t>(row_start + e) : 0);
          inside |= in_x ? 1u << (r * kLaneValues + k) : 0u;
        }
      }
#pragma unroll
      for (int r = 0; r < kStemRowsInFlight; ++r) {
        const int region_row = row + r * kThreads / 32;
        if (region_row >= t.region_rows) break;
#pragma unroll
        for (int k = 0; k < kLaneValues; ++k) {
          if (place[k] < 0) continue;
          const int c = place[k] & 3;
          const float v = ScaledShifted<E>(InputOfBits(a, bits[r][k]), has_scale, affine[c], has_shift, affine[kC + c]);
          region[(place[k] >> 2) + region_row * row_floats] = inside & (1u << (r * kLaneValues + k)) ? v : 0.f;
        }
      }
    }
    __syncthreads();
    float acc[kPixels][kStemFilters];
#pragma unroll
    for (int j = 0; j < kPixels; ++j) LoadFloats<kStemFilters>(a.b + f0, acc[j]);
#pragma unroll 1  // (a row of taps at a time: all of them unrolled spill at 128 registers)
    for (int ky = 0; ky < kK; ++ky) {
#pragma unroll
      for (int kx = 0; kx < kK; ++kx) {
#pragma unroll
        for (int c = 0; c < kC; ++c) {
          const float4* w4 = reinterpret_cast<const float4*>(staged + ((ky * kK + kx) * kC + c) * a.f + f0);
          const float* in = region + ((c * t.region_rows + row0 * sh + ky) * sw + kx % sw) * t.plane_cols + lane + kx / sw;
          float v[kPixels];
#pragma unroll
          for (int j = 0; j < kPixels; ++j) v[j] = in[j * sh * sw * t.plane_cols];
#pragma unroll
          for (int q = 0; q < kStemFilters / 4; ++q) {
            const float4 w = w4[q];
#pragma unroll
            for (int j = 0; j < kPixels; ++j) {
              acc[j][4 * q + 0] = fmaf(v[j], w.x, acc[j][4 * q + 0]);
              acc[j][4 * q + 1] = fmaf(v[j], w.y, acc[j][4 * q + 1]);
              acc[j][4 * q + 2] = fmaf(v[j], w.z, acc[j][4 * q + 2]);
              acc[j][4 * q + 3] = fmaf(v[j], w.w, acc[j][4 * q + 3]);
            }
          }
        }
      }
    }
    const int ox = ox0 + lane;
#pragma unroll
    for (int j = 0; j < kPixels; ++j) {
      const int oy = oy0 + row0 + j;
      if (ox >= a.out_w || oy >= a.out_h) continue;
      if constexpr (block::kIsHalf<E>) {  // the sum in E before the activation (conv_layer.h)
#pragma unroll
        for (int q = 0; q < kStemFilters; ++q) acc[j][q] = Element<E>::ToFloat(Element<E>::FromFloat(acc[j][q]));
      }
      a.act.Apply(acc[j]);
      StoreValues<kStemFilters>(a.y + (static_cast<size_t>(image * a.out_h + oy) * a.out_w + ox) * a.f + f0, acc[j]);
    }
  }
}

// The half types' RGB stems (3x3, 3 input channels, stride 1 or 2, 8 to 32 filters) on the tensor
// cores: each output row of 16 pixels is an m16n8k16 product per 8 filters, A the pixels' input
// patches, B the weights, K = tap * 4 + channel (the 9 taps of 4 channels, the 4th zero, padded with
// zero taps to 48: three k steps). ConvStemKernel spent ~64% of its issue slots on the region's and
// the FMAs' address arithmetic (59.5 us for MobileNetV2's FP16 stem at batch 32 on an H100, against
// ~15 us of bytes: benchmarks/2026-12-07-h100-half-clamps); here a row of 16 pixels x 8 filters is
// 10 shared loads and 3 MMAs (33.9 us: benchmarks/2026-12-07-h100-mma-stem). The region is staged
// as E [row][column][4 channels], so that an A register (two channels of one tap of one pixel) is
// one 32-bit load; a tile is 16 output columns by 8 x rows_per_warp output rows (a warp per
// rows_per_warp rows). The products of half values are exact in the FP32 sums, which are in
// another order than ConvLayerKernel's: within the same rounding bound.
constexpr int kMmaStemCols = 16;  // output columns per tile: the MMA's M
constexpr int kMmaStemTapWords = 2;  // a region cell: 4 half channels, 2 words

struct MmaStemTiles {
  int rows, region_rows, region_cols, row_words;
  __host__ __device__ MmaStemTiles(int stride, int rows_per_warp)
      : rows(kThreads / 32 * rows_per_warp),
        region_rows((rows - 1) * stride + 3),
        region_cols((kMmaStemCols - 1) * stride + 3),
        // a cell of 2 words per column; at stride 1 a row's 36 words put the next row's cells on
        // the banks of this row's third column: 16 more words keep the taps 2 and 3 that one A
        // register reads apart (no bank conflicts)
        row_words(region_cols * kMmaStemTapWords + (stride == 1 ? 16 : 0)) {}
  __host__ __device__ int RegionBytes() const { return region_rows * row_words * 4; }
};

// The K index of B's and A's fragment registers: register `j` of the 6 (k steps 0-2, each two 8-wide
// halves) of lane quad position `t` covers taps 2j + t / 2, channels 2 (t % 2) and one more.
__device__ __forceinline__ int MmaStemTap(int j, int t) { return 2 * j + t / 2; }

template <class E, int kFilterBlocks>
__global__ void __launch_bounds__(kThreads, 2) ConvStemMmaKernel(const ConvLayerArgs<E> a, const int rows_per_warp) {
  static_assert(block::kIsHalf<E>, "m16n8k16 takes half types");
  constexpr int kTaps = 9, kRegs = 6;  // a fragment's k pairs: 3 k steps x 2 halves
  extern __shared__ float4 staged_vectors[];
  char* region = reinterpret_cast<char*>(staged_vectors);
  const int s = a.sh;
  const MmaStemTiles tiles(s, rows_per_warp);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  // B: filter block b's 8 filters, this lane's filter g, its k pairs as half words (0 past the taps
  // and for the 4th channel)
  uint32_t b_regs[kFilterBlocks][kRegs];
  float bias[kFilterBlocks][2];
  const unsigned short* w_bits = reinterpret_cast<const unsigned short*>(a.w);
#pragma unroll
  for (int b = 0; b < kFilterBlocks; ++b) {
    const int f = b * 8 + g;
#pragma unroll
    for (int j = 0; j < kRegs; ++j) {
      const int tap = MmaStemTap(j, t), c = 2 * (t % 2);
      const uint32_t lo = tap < kTaps ? __ldg(w_bits + (f * 3 + c) * kTaps + tap) : 0u;
      const uint32_t hi = tap < kTaps && c + 1 < 3 ? __ldg(w_bits + (f * 3 + c + 1) * kTaps + tap) : 0u;
      b_regs[b][j] = lo | hi << 16;
    }
    bias[b][0] = Element<E>::ToFloat(a.b[b * 8 + 2 * t]);
    bias[b][1] = Element<E>::ToFloat(a.b[b * 8 + 2 * t + 1]);
  }
  // A: register j's byte offset in the region from the lane's pixel's first cell (its tap's row and
  // column, its channel pair); -1 for the zero taps
  int tap_offset[kRegs];
#pragma unroll
  for (int j = 0; j < kRegs; ++j) {
    const int tap = MmaStemTap(j, t);
    tap_offset[j] = tap < kTaps ? ((tap / 3) * tiles.row_words + (tap % 3) * kMmaStemTapWords + t % 2) * 4 : -1;
  }
  const bool has_scale = a.scale_count != 0, has_shift = a.shift_count != 0;
  float scale[3], shift[3];
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    scale[c] = has_scale ? AffineValue(a, a.x_scale, a.scale_count, c) : 1.f;
    shift[c] = has_shift ? AffineValue(a, a.x_shift, a.shift_count, c) : 0.f;
  }
  const int tiles_x = (a.out_w + kMmaStemCols - 1) / kMmaStemCols, tiles_y = (a.out_h + tiles.rows - 1) / tiles.rows;
  const int cells = tiles.region_rows * tiles.region_cols;
  for (int tile = blockIdx.x; tile < a.n * tiles_y * tiles_x; tile += gridDim.x) {
    const int tx = tile % tiles_x, ty = (tile / tiles_x) % tiles_y, image = tile / (tiles_x * tiles_y);
    const int oy0 = ty * tiles.rows, ox0 = tx * kMmaStemCols;
    const int iy0 = oy0 * s - a.pad_top, ix0 = ox0 * s - a.pad_left;
    __syncthreads();  // the previous tile's reads of the region are done
    // The region, kCellBatch cells a thread at a time: all their loads issued before the first value
    // is used (a lane waits for global memory once per batch); a cell in the padding reads X[0] and
    // stores zeros. 5 cells a thread cover the largest region (stride 2, 16 rows: 33 x 33 cells) in
    // one batch, where 4 left a second batch, and a second wait, to a quarter of the threads.
    constexpr int kCellBatch = 5;
    static_assert(kCellBatch * kThreads >= (15 * kStemMaxStride + 3) * ((kMmaStemCols - 1) * kStemMaxStride + 3),
                  "the largest region in one batch");
    for (int cell0 = threadIdx.x; cell0 < cells; cell0 += kCellBatch * kThreads) {
      uint32_t bits[kCellBatch][3];
      bool inside[kCellBatch];
#pragma unroll
      for (int i = 0; i < kCellBatch; ++i) {
        const int cell = cell0 + i * kThreads, row = cell / tiles.region_cols, col = cell - row * tiles.region_cols;
        const int iy = iy0 + row, ix = ix0 + col;
        inside[i] = cell < cells && iy >= 0 && iy < a.h && ix >= 0 && ix < a.w_in;
        const size_t at = inside[i] ? (static_cast<size_t>(image * a.h + iy) * a.w_in + ix) * 3 : 0;
#pragma unroll
        for (int c = 0; c < 3; ++c) bits[i][c] = InputBitsAt(a, at + (inside[i] ? c : 0));
      }
#pragma unroll
      for (int i = 0; i < kCellBatch; ++i) {
        const int cell = cell0 + i * kThreads, row = cell / tiles.region_cols, col = cell - row * tiles.region_cols;
        if (cell >= cells) break;
        float v[3];
#pragma unroll
        for (int c = 0; c < 3; ++c)
          v[c] = inside[i] ? ScaledShifted<E>(InputOfBits(a, bits[i][c]), has_scale, scale[c], has_shift, shift[c]) : 0.f;
        *reinterpret_cast<uint2*>(region + (row * tiles.row_words + col * kMmaStemTapWords) * 4) =
            make_uint2(block::PackHalves<E>(v[0], v[1]), block::PackHalves<E>(v[2], 0.f));
      }
    }
    __syncthreads();
    for (int r = 0; r < rows_per_warp; ++r) {
      const int row = warp * rows_per_warp + r, oy = oy0 + row;
      if (oy >= a.out_h) break;
      // the lane's pixels g and g + 8 of the row: their first cells
      const char* pixel = region + (row * s * tiles.row_words + g * s * kMmaStemTapWords) * 4;
      constexpr int kNextPixels = 8 * kMmaStemTapWords * 4;  // bytes from pixel g to g + 8, per unit of stride
      uint32_t a_regs[kRegs][2];  // [k pair j][pixel g, g + 8]
#pragma unroll
      for (int j = 0; j < kRegs; ++j) {
        const bool zero = tap_offset[j] < 0;
        a_regs[j][0] = zero ? 0u : *reinterpret_cast<const uint32_t*>(pixel + (zero ? 0 : tap_offset[j]));
        a_regs[j][1] = zero ? 0u : *reinterpret_cast<const uint32_t*>(pixel + (zero ? 0 : tap_offset[j]) + s * kNextPixels);
      }
      float acc[kFilterBlocks][4];
#pragma unroll
      for (int b = 0; b < kFilterBlocks; ++b) {
        acc[b][0] = acc[b][2] = bias[b][0];
        acc[b][1] = acc[b][3] = bias[b][1];
#pragma unroll
        for (int k = 0; k < 3; ++k)  // a k step: registers 2k (K 0-7 of the step) and 2k + 1 (K 8-15)
          block::SyncMma<E>::Op::fma(acc[b][0], acc[b][1], acc[b][2], acc[b][3], a_regs[2 * k][0], a_regs[2 * k][1],
                                     a_regs[2 * k + 1][0], a_regs[2 * k + 1][1], b_regs[b][2 * k], b_regs[b][2 * k + 1],
                                     acc[b][0], acc[b][1], acc[b][2], acc[b][3]);
      }
      // the sum in E before the activation (conv_layer.h), then the activation, then the pairs stored
      float out[kFilterBlocks * 4];
#pragma unroll
      for (int b = 0; b < kFilterBlocks; ++b)
#pragma unroll
        for (int q = 0; q < 4; ++q) out[b * 4 + q] = Element<E>::ToFloat(Element<E>::FromFloat(acc[b][q]));
      a.act.Apply(out);
#pragma unroll
      for (int half = 0; half < 2; ++half) {  // pixel g, then g + 8
        const int ox = ox0 + g + 8 * half;
        if (ox >= a.out_w) continue;
        E* y = a.y + (static_cast<size_t>(image * a.out_h + oy) * a.out_w + ox) * a.f + 2 * t;
#pragma unroll
        for (int b = 0; b < kFilterBlocks; ++b) block::StorePair<E>(y + b * 8, out[b * 4 + 2 * half], out[b * 4 + 2 * half + 1]);
      }
    }
  }
}

// `kernel` on a.work threads' worth of work, its grid a few waves of resident CTAs (each loops).
template <class E, class... Extra>
cudaError_t LaunchWaves(void (*kernel)(ConvLayerArgs<E>, Extra...), const ConvLayerArgs<E>& a, size_t shared, cudaStream_t stream,
                        Extra... extra) {
  const int resident = std::max(1, CtasPerSm(reinterpret_cast<const void*>(kernel), kThreads, shared)) * CurrentDevice().sms;
  const int blocks = static_cast<int>(std::max(1u, std::min((a.work + kThreads - 1) / kThreads, 4u * resident)));
  kernel<<<blocks, kThreads, shared, stream>>>(a, extra...);
  return cudaGetLastError();
}

// An environment variable's value that picks a kernel for comparing kernels on a model ("" where unset).
std::string KernelChoice(const char* variable) {
  const char* value = std::getenv(variable);
  return value == nullptr ? std::string() : std::string(value);
}

// How the half 3x3 depthwise layers of 8 channels a thread run: FCM_CUDA_DEPTHWISE unset or "rows",
// DepthwiseRowsKernel where it applies (weights staged, equal strides of 1 or 2), else one pixel a thread
// with its 9 loads issued at once; "taps", always the latter; "serial", one pixel a thread with its taps
// loaded one by one (the general kernel). Read at each launch.
enum class DepthwiseKernel { kTaps, kSerial, kRows };
DepthwiseKernel ChosenDepthwiseKernel() {
  const std::string name = KernelChoice("FCM_CUDA_DEPTHWISE");
  return name == "serial" ? DepthwiseKernel::kSerial : name == "taps" ? DepthwiseKernel::kTaps : DepthwiseKernel::kRows;
}

// One kernel instance (`staged`: the weights fit shared memory). An X of no pixels, whose padding
// alone makes an output, has no nearest pixel for the 3x3 depthwise kernels' loads: it takes the
// general kernel.
template <class E, int FT, bool kDepthwise, bool kStaged>
cudaError_t LaunchKernel(ConvLayerArgs<E> a, size_t shared, cudaStream_t stream) {
  a.work = static_cast<unsigned>(a.n * a.out_h * a.out_w * (a.f / FT));  // a thread per pixel and FT channels
  if constexpr (kDepthwise && block::kIsHalf<E> && FT == 8) {
    const DepthwiseKernel kind = ChosenDepthwiseKernel();
    if (a.kh == 3 && a.kw == 3 && a.h > 0 && a.w_in > 0 && kind != DepthwiseKernel::kSerial) {
      if (kStaged && kind == DepthwiseKernel::kRows && a.sh == a.sw && a.sh <= 2) {
        const int groups_x = (a.out_w + kRowPixels - 1) / kRowPixels;
        a.work = static_cast<unsigned>(a.n * a.out_h * groups_x * (a.f / FT));
        return a.sh == 1 ? LaunchWaves(&DepthwiseRowsKernel<E, 1>, a, shared, stream)
                         : LaunchWaves(&DepthwiseRowsKernel<E, 2>, a, shared, stream);
      }
      return LaunchWaves(&ConvLayerKernel<E, FT, kDepthwise, kStaged, true>, a, shared, stream);
    }
  }
  return LaunchWaves(&ConvLayerKernel<E, FT, kDepthwise, kStaged>, a, shared, stream);
}

// The stem's tiles for `pixels` rows a lane.
template <class E>
unsigned StemTileCount(const ConvLayerArgs<E>& a, int pixels) {
  const StemTiles t(a.f, a.sh, a.sw, a.kh, pixels);
  return static_cast<unsigned>(a.n * ((a.out_h + t.rows - 1) / t.rows) * ((a.out_w + kStemCols - 1) / kStemCols));
}

// The stem kernel on its tiles (a.work: a CTA's worth per tile).
template <class E, int kK, int kC, int kPixels>
cudaError_t LaunchStem(ConvLayerArgs<E> a, size_t shared, cudaStream_t stream) {
  a.work = StemTileCount(a, kPixels) * kThreads;
  return LaunchWaves(&ConvStemKernel<E, kK, kC, kPixels>, a, shared, stream);
}

// The tensor-core stem's tiles for `rows_per_warp` output rows a warp.
template <class E>
unsigned MmaStemTileCount(const ConvLayerArgs<E>& a, int rows_per_warp) {
  const MmaStemTiles tiles(a.sh, rows_per_warp);
  return static_cast<unsigned>(a.n * ((a.out_h + tiles.rows - 1) / tiles.rows) * ((a.out_w + kMmaStemCols - 1) / kMmaStemCols));
}

// The tensor-core stem for F = 8 * kFilterBlocks filters: 2 rows a warp (16 a tile), or 1 where those
// tiles would not give every SM one.
template <class E, int kFilterBlocks>
cudaError_t LaunchStemMma(ConvLayerArgs<E> a, cudaStream_t stream) {
  const int rows_per_warp = MmaStemTileCount(a, 2) < static_cast<unsigned>(CurrentDevice().sms) ? 1 : 2;
  a.work = MmaStemTileCount(a, rows_per_warp) * kThreads;
  const size_t shared = MmaStemTiles(a.sh, rows_per_warp).RegionBytes();
  return LaunchWaves(&ConvStemMmaKernel<E, kFilterBlocks>, a, shared, stream, rows_per_warp);
}

// The bytes the weights take staged (as floats, [tap][input channel of the filter][f]).
template <class E>
size_t StagedBytes(const ConvLayerArgs<E>& a, bool depthwise) {
  return static_cast<size_t>(a.kh) * a.kw * (depthwise ? 1 : a.c) * a.f * sizeof(float);
}

template <class E, int FT, bool kDepthwise>
cudaError_t LaunchOfWidth(const ConvLayerArgs<E>& a, cudaStream_t stream) {
  const size_t bytes = StagedBytes(a, kDepthwise);
  if (bytes > kStagedBytes) return LaunchKernel<E, FT, kDepthwise, false>(a, 0, stream);
  return LaunchKernel<E, FT, kDepthwise, true>(a, bytes, stream);
}

// Which kernel takes an RGB stem: by default the tensor cores' for the half types where it applies,
// else the FMA tiles; FCM_CUDA_STEM=tiles or direct picks the FMA tiles or the direct kernel, for
// comparing them on a model (read at each launch).
enum class StemKernel { kMma, kTiles, kDirect };
StemKernel ChosenStemKernel() {
  const std::string name = KernelChoice("FCM_CUDA_STEM");
  return name == "direct" ? StemKernel::kDirect : name == "tiles" ? StemKernel::kTiles : StemKernel::kMma;
}

// FT: 8 output channels a thread where the channel count allows (two or one 16-byte stores), else 4, else
// 1; 1 also where a tensor does not start on 16 bytes (vector accesses need it). The half types' RGB
// stems of up to 32 filters (3x3, 3 input channels, the same stride each way) on the tensor cores
// (ConvStemMmaKernel); other stems of RGB networks (16, 32, 64 or 128 filters) on ConvStemKernel's tiles: 2 rows a
// lane with one slice of 16 filters, else 4 (16 rows a tile with one or two slices), fewer where
// those tiles would not give every SM one (a small batch: MobileNetV2's stem at batch 1 has 28 tiles
// of 4 rows a lane, 112 of 1), so that the work spreads over the SMs.
template <class E, bool kDepthwise>
cudaError_t Launch(const ConvLayerArgs<E>& a, cudaStream_t stream) {
  // (x is read as vectors by the depthwise kernels only, which never take an fp32 X)
  const bool aligned = ((reinterpret_cast<uintptr_t>(a.x) | reinterpret_cast<uintptr_t>(a.b) | reinterpret_cast<uintptr_t>(a.y)) & 15) == 0;
  if constexpr (!kDepthwise) {
    const StemKernel stem = ChosenStemKernel();
    // (pairs of output channels stored as words: y on 4 bytes, as a tensor of E pairs always is)
    const bool rgb_3x3 = a.h > 0 && a.w_in > 0 && a.kh == 3 && a.kw == 3 && a.c == 3;
    if constexpr (block::kIsHalf<E>) {
      if (stem == StemKernel::kMma && rgb_3x3 && a.sh == a.sw && a.sh <= kStemMaxStride && a.f % 8 == 0 && a.f <= 32 &&
          (reinterpret_cast<uintptr_t>(a.y) & 3) == 0) {
        switch (a.f / 8) {
          case 1: return LaunchStemMma<E, 1>(a, stream);
          case 2: return LaunchStemMma<E, 2>(a, stream);
          case 3: return LaunchStemMma<E, 3>(a, stream);
          default: return LaunchStemMma<E, 4>(a, stream);
        }
      }
    }
    const int slices = a.f / kStemFilters;
    // (an X of no pixels, whose padding alone makes an output, never reaches it: its loads start at X[0])
    if (aligned && stem != StemKernel::kDirect && rgb_3x3 && a.sw <= kStemMaxStride && a.f % kStemFilters == 0 && slices <= 8 && 8 % slices == 0) {
      int pixels = slices == 1 ? 2 : 4;
      while (pixels > 1 && StemTileCount(a, pixels) < static_cast<unsigned>(CurrentDevice().sms)) pixels /= 2;
      const size_t shared = StagedBytes(a, false) + (kStemAffineFloats + StemTiles(a.f, a.sh, a.sw, 3, pixels).RegionFloats(3)) * sizeof(float);
      if (shared <= kStagedBytes) {
        if (pixels == 4) return LaunchStem<E, 3, 3, 4>(a, shared, stream);
        return pixels == 2 ? LaunchStem<E, 3, 3, 2>(a, shared, stream) : LaunchStem<E, 3, 3, 1>(a, shared, stream);
      }
    }
  }
  if (aligned && a.f % 8 == 0) return LaunchOfWidth<E, 8, kDepthwise>(a, stream);
  if (aligned && a.f % 4 == 0) return LaunchOfWidth<E, 4, kDepthwise>(a, stream);
  return LaunchOfWidth<E, 1, kDepthwise>(a, stream);
}

// T: the op's element type; E: the same bits on the device.
template <class T>
struct CudaConvLayerKernelT {
  using E = typename DeviceElement<T>::type;
  ConvLayerSpec spec;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guarded([&]() -> Ort::Status {
      Ort::KernelContext ctx(context);
      ConvLayerShapes s;
      Ort::Status status = CheckConvLayerCall(spec, Ort::TypeToTensorType<T>::type, ctx, &s);
      if (!status.IsOK()) return status;
      auto y = ctx.GetOutput(0, s.OutputShape());
      if (s.n == 0 || s.out_h == 0 || s.out_w == 0 || s.f == 0) return Ort::Status(nullptr);
      const int64_t limit = int64_t{1} << 31;
      if (s.n * s.h * s.w * s.c >= limit || s.n * s.out_h * s.out_w * s.f >= limit || s.f * s.c * spec.kh * spec.kw >= limit)
        return Ort::Status("FCM CUDA: tensor too large for the convolution layer's 32-bit indexing", ORT_NOT_IMPLEMENTED);
      auto in = [&](size_t i) { return reinterpret_cast<const E*>(ctx.GetInput(i).template GetTensorData<T>()); };
      ConvLayerArgs<E> a{};
      // (an fp32 X: x points at its bytes too, so that a load of x hoisted above InputAt's branch stays
      // inside them: X holds twice the bytes the half indices reach)
      a.x = in(0), a.w = in(1), a.b = in(2);
      a.x_float = s.x_float ? ctx.GetInput(0).GetTensorData<float>() : nullptr;
      a.y = reinterpret_cast<E*>(y.template GetTensorMutableData<T>());
      a.n = static_cast<int>(s.n), a.h = static_cast<int>(s.h), a.w_in = static_cast<int>(s.w), a.c = static_cast<int>(s.c);
      a.f = static_cast<int>(s.f), a.out_h = static_cast<int>(s.out_h), a.out_w = static_cast<int>(s.out_w);
      a.kh = static_cast<int>(spec.kh), a.kw = static_cast<int>(spec.kw), a.sh = static_cast<int>(spec.sh), a.sw = static_cast<int>(spec.sw);
      a.pad_top = static_cast<int>(spec.pads[0]), a.pad_left = static_cast<int>(spec.pads[1]);
      a.act = spec.activation;
      a.x_scale = s.scale_count ? in(3) : a.b, a.scale_count = static_cast<int>(s.scale_count);
      a.x_shift = s.shift_count ? in(4) : a.b, a.shift_count = static_cast<int>(s.shift_count);
      auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
      const cudaError_t error = s.depthwise ? Launch<E, true>(a, stream) : Launch<E, false>(a, stream);
      if (error != cudaSuccess)
        return Error(spec.node_name, std::string("CUDA convolution layer failed: ") + cudaGetErrorString(error));
      return Ort::Status(nullptr);
    });
  }
};

}  // namespace

std::unique_ptr<OrtCustomOp> MakeCudaConvLayerOp(const char* name, Precision precision) {
  switch (precision) {
    case Precision::kFp16:
      return std::make_unique<ConvLayerOp<CudaConvLayerKernelT<Ort::Float16_t>, Ort::Float16_t>>(name, "CUDAExecutionProvider");
    case Precision::kBf16:
      return std::make_unique<ConvLayerOp<CudaConvLayerKernelT<Ort::BFloat16_t>, Ort::BFloat16_t>>(name, "CUDAExecutionProvider");
    default:
      return std::make_unique<ConvLayerOp<CudaConvLayerKernelT<float>, float>>(name, "CUDAExecutionProvider");
  }
}

}  // namespace fcm
