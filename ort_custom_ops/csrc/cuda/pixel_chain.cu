// PW->PW on one pixel per image: a squeeze-and-excitation branch's two projections.
//
// In: a ChainProblem with a first and a last pointwise stage, no depthwise stage, h = w = 1 (NHWC and
// NCHW are then the same memory: x [n, c], y [n, f]), and a scratch buffer of n x m floats for the
// hidden layer. Out: y = res_act(act2(W2 act1(W1 (x * scale) + b1) + b2) + x), FP32 on the CUDA cores
// for every element type (the hidden layer rounded to it, as the reference rounds a stage's output).
//
// Why not the block or chain kernels: their tiles are pixels of one image, so here each unit is one
// pixel (a 64-row tensor-core tile one row full) and a unit's chunks run one after the other: 80-100
// us for MobileNetV3's 576- and 672-channel branches at batch 32, where ONNX Runtime's two
// convolutions take 24-28 us (benchmarks/2026-12-03-h200-retune-se). Here each stage is a batched
// matrix-vector product spread over the rows of its weights: a warp per row, its lanes along the row
// (coalesced), the images of a CTA's group in shared memory, so that each weight is read once per
// group of images. Where the rows' length allows (a multiple of 16 bytes' values, as every network's
// channel counts are), the inputs are staged and the weights read as 16-byte vectors, several in
// flight a lane: read a value at a time, the first stage of a 672-channel branch (28 rows, 16 CTAs)
// waited on ~21 loads one after another per lane for its staging and again for its weights, and
// EfficientNetB0's FP16 branches took 18-34 us fused against 17-20 us for ONNX Runtime's subgraph
// (fcm tune's times, benchmarks/2026-12-07-h100-mma-stem), so that the tune left 13 of 16 unfused.
#include <algorithm>
#include <cstdint>

#include "block/element.cuh"
#include "pixel_chain.h"

namespace fcm {
namespace {

constexpr int kWarps = 8, kRowsPerWarp = 1, kRowsPerBlock = kWarps * kRowsPerWarp;
constexpr int kSharedFloats = 12 * 1024;  // 48 KB: the images' inputs, without opting in to more
// A lane's 16-byte loads issued before the first is used: staging the inputs, and reading a row's
// weights (with 4 there the 8-image kernels spill a few bytes)
constexpr int kInputVectorsInFlight = 4, kWeightVectorsInFlight = 2;

using block::Element;

// Values of T in one 16-byte vector.
template <class T>
constexpr int kVector = 16 / static_cast<int>(sizeof(T));

// One 16-byte vector of T at `from` (aligned) as floats.
template <class T>
__device__ __forceinline__ void LoadVector(const T* from, float (&out)[kVector<T>]) {
  const uint4 bits = __ldg(reinterpret_cast<const uint4*>(from));
  const T* values = reinterpret_cast<const T*>(&bits);
#pragma unroll
  for (int j = 0; j < kVector<T>; ++j) out[j] = Element<T>::ToFloat(values[j]);
}

// One stage: inputs of type In (the tensors' E, or the FP32 hidden layer), weights and the rest of E,
// outputs of type Out.
template <class In, class E, class Out>
struct PixelStage {
  const In* in;    // [n, k]
  const E* scale;  // optional [scale_batch, k]: multiplies the input's channels
  int scale_batch;
  const E* w;  // [r, k]
  const E* b;  // [r]
  Activation act;
  const E* residual;  // optional [n, r]: added after act, then res_act
  Activation res_act;
  Out* out;  // [n, r]
  int n, k, r;
};

// Block (row block, image group): rows blockIdx.x * kRowsPerBlock ..., images blockIdx.y * kImages ...
// kVectors: k is a multiple of both vectors' values (kVector<In>, kVector<E>) and the inputs and weights
// start on 16 bytes: they are read as 16-byte vectors (the scales a value at a time).
template <int kImages, bool kVectors, class In, class E, class Out>
__global__ void __launch_bounds__(kWarps * 32) PixelStageKernel(const PixelStage<In, E, Out> s) {
  extern __shared__ float4 input_vectors[];
  float* inputs = reinterpret_cast<float*>(input_vectors);  // [kImages][k]
  const int image0 = blockIdx.y * kImages, images = min(kImages, s.n - image0);
  if constexpr (kVectors) {
    constexpr int kIn = kVector<In>;
    const int vectors = images * s.k / kIn;  // (k is a multiple of kIn: a vector lies in one image)
#pragma unroll kInputVectorsInFlight
    for (int i = threadIdx.x; i < vectors; i += blockDim.x) {
      const int image = image0 + i * kIn / s.k, channel = i * kIn % s.k;
      float v[kIn];
      LoadVector(s.in + static_cast<size_t>(image) * s.k + channel, v);
      if (s.scale != nullptr) {
        const E* scale = s.scale + static_cast<size_t>(s.scale_batch == 1 ? 0 : image) * s.k + channel;
#pragma unroll
        for (int j = 0; j < kIn; ++j) v[j] *= Element<E>::ToFloat(__ldg(scale + j));
      }
#pragma unroll
      for (int j = 0; j < kIn; ++j) inputs[i * kIn + j] = v[j];
    }
  } else {
    for (int i = threadIdx.x; i < images * s.k; i += blockDim.x) {
      const int image = image0 + i / s.k, channel = i % s.k;
      float v = Element<In>::ToFloat(s.in[static_cast<size_t>(image) * s.k + channel]);
      if (s.scale != nullptr)
        v *= Element<E>::ToFloat(__ldg(s.scale + static_cast<size_t>(s.scale_batch == 1 ? 0 : image) * s.k + channel));
      inputs[i] = v;
    }
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int j = 0; j < kRowsPerWarp; ++j) {
    const int row = blockIdx.x * kRowsPerBlock + warp * kRowsPerWarp + j;
    if (row >= s.r) break;  // (warp-uniform)
    const E* w = s.w + static_cast<size_t>(row) * s.k;
    float acc[kImages];
#pragma unroll
    for (int i = 0; i < kImages; ++i) acc[i] = 0.f;
    if constexpr (kVectors) {
      constexpr int kW = kVector<E>;
#pragma unroll kWeightVectorsInFlight
      for (int c = lane * kW; c < s.k; c += 32 * kW) {
        float wv[kW];
        LoadVector(w + c, wv);
#pragma unroll
        for (int i = 0; i < kImages; ++i) {
          // (k and c are multiples of 4: the image's values at c start a 16-byte vector of the inputs)
          const float4* in = reinterpret_cast<const float4*>(inputs + (i < images ? i : 0) * s.k + c);
#pragma unroll
          for (int q = 0; q < kW / 4; ++q) {
            const float4 v = in[q];
            acc[i] = fmaf(wv[4 * q + 0], v.x, acc[i]);
            acc[i] = fmaf(wv[4 * q + 1], v.y, acc[i]);
            acc[i] = fmaf(wv[4 * q + 2], v.z, acc[i]);
            acc[i] = fmaf(wv[4 * q + 3], v.w, acc[i]);
          }
        }
      }
    } else {
      for (int c = lane; c < s.k; c += 32) {
        const float wv = Element<E>::ToFloat(__ldg(w + c));
#pragma unroll
        for (int i = 0; i < kImages; ++i) acc[i] = fmaf(wv, inputs[(i < images ? i : 0) * s.k + c], acc[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < kImages; ++i)
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) acc[i] += __shfl_xor_sync(0xffffffffu, acc[i], offset);
    // lane i writes image i's value
#pragma unroll
    for (int i = 0; i < kImages; ++i) {
      if (lane != i || i >= images) continue;
      const size_t at = static_cast<size_t>(image0 + i) * s.r + row;
      float v = s.act(acc[i] + Element<E>::ToFloat(__ldg(s.b + row)));
      if (s.residual != nullptr) v = s.res_act(v + Element<E>::ToFloat(__ldg(s.residual + at)));
      // (a hidden layer of a half chain is rounded to E, as the reference rounds each stage's output)
      s.out[at] = Element<Out>::FromFloat(Element<E>::ToFloat(Element<E>::FromFloat(v)));
    }
  }
}

// The most images per CTA (8, 4, 2, 1) whose inputs fit the shared memory; 0 if not even one's.
int ImagesPerBlock(int k) {
  for (int images : {8, 4, 2, 1})
    if (images * k <= kSharedFloats) return images;
  return 0;
}

template <bool kVectors, class In, class E, class Out>
cudaError_t LaunchStageOf(const PixelStage<In, E, Out>& s, cudaStream_t stream) {
  const int images = ImagesPerBlock(s.k);
  const dim3 grid((s.r + kRowsPerBlock - 1) / kRowsPerBlock, (s.n + images - 1) / images);
  const size_t shared = static_cast<size_t>(images) * s.k * sizeof(float);
  switch (images) {
    case 8:
      PixelStageKernel<8, kVectors><<<grid, kWarps * 32, shared, stream>>>(s);
      break;
    case 4:
      PixelStageKernel<4, kVectors><<<grid, kWarps * 32, shared, stream>>>(s);
      break;
    case 2:
      PixelStageKernel<2, kVectors><<<grid, kWarps * 32, shared, stream>>>(s);
      break;
    default:
      PixelStageKernel<1, kVectors><<<grid, kWarps * 32, shared, stream>>>(s);
  }
  return cudaGetLastError();
}

// The stage as vectors where k and the tensors' alignment allow (PixelStageKernel's kVectors).
template <class In, class E, class Out>
cudaError_t LaunchStage(const PixelStage<In, E, Out>& s, cudaStream_t stream) {
  const auto address = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
  // (the scale is read a value at a time: its alignment does not matter)
  const bool vectors = s.k % kVector<In> == 0 && s.k % kVector<E> == 0 && ((address(s.in) | address(s.w)) & 15) == 0;
  return vectors ? LaunchStageOf<true>(s, stream) : LaunchStageOf<false>(s, stream);
}

}  // namespace

template <class E>
bool PixelChainFits(const ChainProblemOf<E>& p) {
  return p.pw1 && !p.dw && p.pwl && p.h == 1 && p.w == 1 && p.out_h == 1 && p.out_w == 1 && ImagesPerBlock(p.c) > 0 &&
         ImagesPerBlock(p.m) > 0;
}

template <class E>
cudaError_t LaunchPixelChain(const ChainProblemOf<E>& p, float* hidden, cudaStream_t stream) {
  PixelStage<E, E, float> first{p.x, p.scale, p.scale_batch, p.w1, p.b1, p.act1, nullptr, Activation{}, hidden, p.n, p.c, p.m};
  cudaError_t err = LaunchStage(first, stream);
  if (err != cudaSuccess) return err;
  PixelStage<float, E, E> last{hidden, nullptr, 0, p.w2, p.b2, p.act2, p.residual ? p.x : nullptr, p.res_act, p.y, p.n, p.m, p.f};
  return LaunchStage(last, stream);
}

#define FCM_PIXEL_CHAIN(E)                                     \
  template bool PixelChainFits<E>(const ChainProblemOf<E>& p); \
  template cudaError_t LaunchPixelChain<E>(const ChainProblemOf<E>& p, float* hidden, cudaStream_t stream);
FCM_PIXEL_CHAIN(float)
FCM_PIXEL_CHAIN(__half)
FCM_PIXEL_CHAIN(__nv_bfloat16)
#undef FCM_PIXEL_CHAIN

}  // namespace fcm
