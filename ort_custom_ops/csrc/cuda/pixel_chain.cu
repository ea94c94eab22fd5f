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
// group of images.
#include <algorithm>

#include "block/element.cuh"
#include "pixel_chain.h"

namespace fcm {
namespace {

constexpr int kWarps = 8, kRowsPerWarp = 2, kRowsPerBlock = kWarps * kRowsPerWarp;
constexpr int kSharedFloats = 12 * 1024;  // 48 KB: the images' inputs, without opting in to more

using block::Element;

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

// Block (row block, image group): rows blockIdx.x * 16 ..., images blockIdx.y * kImages ...
template <int kImages, class In, class E, class Out>
__global__ void __launch_bounds__(kWarps * 32) PixelStageKernel(const PixelStage<In, E, Out> s) {
  extern __shared__ float inputs[];  // [kImages][k]
  const int image0 = blockIdx.y * kImages, images = min(kImages, s.n - image0);
  for (int i = threadIdx.x; i < images * s.k; i += blockDim.x) {
    const int image = image0 + i / s.k, channel = i % s.k;
    float v = Element<In>::ToFloat(s.in[static_cast<size_t>(image) * s.k + channel]);
    if (s.scale != nullptr)
      v *= Element<E>::ToFloat(__ldg(s.scale + static_cast<size_t>(s.scale_batch == 1 ? 0 : image) * s.k + channel));
    inputs[i] = v;
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
    for (int c = lane; c < s.k; c += 32) {
      const float wv = Element<E>::ToFloat(__ldg(w + c));
#pragma unroll
      for (int i = 0; i < kImages; ++i) acc[i] = fmaf(wv, inputs[(i < images ? i : 0) * s.k + c], acc[i]);
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

template <class In, class E, class Out>
cudaError_t LaunchStage(const PixelStage<In, E, Out>& s, cudaStream_t stream) {
  const int images = ImagesPerBlock(s.k);
  const dim3 grid((s.r + kRowsPerBlock - 1) / kRowsPerBlock, (s.n + images - 1) / images);
  const size_t shared = static_cast<size_t>(images) * s.k * sizeof(float);
  switch (images) {
    case 8:
      PixelStageKernel<8><<<grid, kWarps * 32, shared, stream>>>(s);
      break;
    case 4:
      PixelStageKernel<4><<<grid, kWarps * 32, shared, stream>>>(s);
      break;
    case 2:
      PixelStageKernel<2><<<grid, kWarps * 32, shared, stream>>>(s);
      break;
    default:
      PixelStageKernel<1><<<grid, kWarps * 32, shared, stream>>>(s);
  }
  return cudaGetLastError();
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
