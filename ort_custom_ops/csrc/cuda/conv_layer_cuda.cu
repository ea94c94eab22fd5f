// The convolution layer op on the CUDA cores (conv_layer.h says what it computes): a direct convolution,
// one thread per (output pixel, FT adjacent output channels; an RGB stem's threads several adjacent
// pixels), the bias and the activation applied in registers and Y written once with vector stores. It is made for the layers the rewrite gives it: a
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

#include "../conv_layer.h"
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
};

// An input value of channel c as the convolution reads it: X * XS + XB where the node has them, rounded
// to E after each step (conv_layer.h).
template <class E>
__device__ __forceinline__ float InputValue(const ConvLayerArgs<E>& a, float v, int c) {
  if (a.scale_count != 0) {
    v *= Element<E>::ToFloat(__ldg(a.x_scale + (a.scale_count == a.c ? c : 0)));
    if constexpr (block::kIsHalf<E>) v = Element<E>::ToFloat(Element<E>::FromFloat(v));
  }
  if (a.shift_count != 0) {
    v += Element<E>::ToFloat(__ldg(a.x_shift + (a.shift_count == a.c ? c : 0)));
    if constexpr (block::kIsHalf<E>) v = Element<E>::ToFloat(Element<E>::FromFloat(v));
  }
  return v;
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

// kDepthwise: output channel f reads input channel f (group = C = F); else every input channel.
// kStaged: the weights in shared memory (StageWeights).
template <class E, int FT, bool kDepthwise, bool kStaged>
__global__ void __launch_bounds__(kThreads) ConvLayerKernel(const ConvLayerArgs<E> a) {
  extern __shared__ float4 staged_vectors[];
  float* staged = reinterpret_cast<float*>(staged_vectors);
  const int kh = a.kh, kw = a.kw, channels = a.c;
  const int taps = kh * kw, per_filter = kDepthwise ? 1 : channels;
  if constexpr (kStaged) StageWeights(a, taps, per_filter, staged);
  // acc[j] += v * weight(tap, input channel c of the filter, f0 + j) for j < FT (kDepthwise: v[j])
  auto accumulate = [&](float (&acc)[FT], const float* v, bool per_channel, int tap, int c, int f0) {
    if constexpr (kStaged && FT % 4 == 0) {  // (F and f0 are multiples of 4: aligned vectors)
      const float4* w4 = reinterpret_cast<const float4*>(staged + (tap * per_filter + c) * a.f + f0);
#pragma unroll
      for (int q = 0; q < FT / 4; ++q) {
        const float4 w = w4[q];
        const float wq[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[4 * q + r] = fmaf(v[per_channel ? 4 * q + r : 0], wq[r], acc[4 * q + r]);
      }
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
#pragma unroll
    for (int ky = 0; ky < kh; ++ky) {
      const int iy = iy0 + ky;
      if (iy < 0 || iy >= a.h) continue;
#pragma unroll
      for (int kx = 0; kx < kw; ++kx) {
        const int ix = ix0 + kx;
        if (ix < 0 || ix >= a.w_in) continue;
        const E* in = a.x + (static_cast<size_t>(image * a.h + iy) * a.w_in + ix) * channels;
        const int tap = ky * kw + kx;
        if constexpr (kDepthwise) {
          float v[FT];
          LoadFloats<FT>(in + f0, v);
#pragma unroll
          for (int j = 0; j < FT; ++j) v[j] = InputValue(a, v[j], f0 + j);
          accumulate(acc, v, true, tap, 0, f0);
        } else {
#pragma unroll
          for (int c = 0; c < channels; ++c) {
            const float v = InputValue(a, Element<E>::ToFloat(__ldg(in + c)), c);
            accumulate(acc, &v, false, tap, c, f0);
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

// An RGB stem (kK x kK taps of kC input channels, every filter reading every channel): the same sums
// in the same order as ConvLayerKernel's, but each thread takes kPixels consecutive output pixels
// of FT filters, so that each staged weight vector it reads from shared memory serves kPixels
// pixels. With one pixel a thread, those reads (a 16-byte load per 4 FMAs) bound the kernel, not
// its FMAs: MobileNetV2's FP16 stem took 40 us at batch 32 on an H100 against ~10 us of FMAs
// (benchmarks/2026-12-06-h100-means-retune). A tap outside the input adds 0 * w, as skipping it
// would.
template <class E, int FT, int kK, int kC, int kPixels>
__global__ void __launch_bounds__(kThreads, 2) ConvStemKernel(const ConvLayerArgs<E> a) {
  static_assert(FT % 4 == 0, "the staged weights are read as float4");
  extern __shared__ float4 staged_vectors[];
  float* staged = reinterpret_cast<float*>(staged_vectors);
  StageWeights(a, kK * kK, kC, staged);
  const unsigned slices = a.f / FT;
  const int pixels = a.n * a.out_h * a.out_w;
  for (unsigned index = blockIdx.x * blockDim.x + threadIdx.x; index < a.work; index += gridDim.x * blockDim.x) {
    const int f0 = static_cast<int>(index % slices) * FT, first = static_cast<int>(index / slices) * kPixels;
    int iy0[kPixels], ix0[kPixels], base[kPixels];  // each pixel's first input row and column, and its image's offset
#pragma unroll
    for (int j = 0; j < kPixels; ++j) {
      const int pixel = min(first + j, pixels - 1);  // (a pixel past the end computes the last one again, unstored)
      const int ox = pixel % a.out_w, oy = (pixel / a.out_w) % a.out_h, image = pixel / (a.out_w * a.out_h);
      iy0[j] = oy * a.sh - a.pad_top, ix0[j] = ox * a.sw - a.pad_left, base[j] = image * a.h;
    }
    float acc[kPixels][FT];
#pragma unroll
    for (int j = 0; j < kPixels; ++j) LoadFloats<FT>(a.b + f0, acc[j]);
#pragma unroll 1  // (one row of taps at a time: all of them unrolled hold too many loads in registers)
    for (int ky = 0; ky < kK; ++ky) {
#pragma unroll
      for (int kx = 0; kx < kK; ++kx) {
        float v[kPixels][kC];
#pragma unroll
        for (int j = 0; j < kPixels; ++j) {
          const int iy = iy0[j] + ky, ix = ix0[j] + kx;
          const bool inside = iy >= 0 && iy < a.h && ix >= 0 && ix < a.w_in;
          const E* in = a.x + (static_cast<size_t>(base[j] + (inside ? iy : 0)) * a.w_in + (inside ? ix : 0)) * kC;
#pragma unroll
          for (int c = 0; c < kC; ++c) v[j][c] = inside ? InputValue(a, Element<E>::ToFloat(__ldg(in + c)), c) : 0.f;
        }
#pragma unroll
        for (int c = 0; c < kC; ++c) {
          const float4* w4 = reinterpret_cast<const float4*>(staged + ((ky * kK + kx) * kC + c) * a.f + f0);
#pragma unroll
          for (int q = 0; q < FT / 4; ++q) {
            const float4 w = w4[q];
#pragma unroll
            for (int j = 0; j < kPixels; ++j) {
              acc[j][4 * q + 0] = fmaf(v[j][c], w.x, acc[j][4 * q + 0]);
              acc[j][4 * q + 1] = fmaf(v[j][c], w.y, acc[j][4 * q + 1]);
              acc[j][4 * q + 2] = fmaf(v[j][c], w.z, acc[j][4 * q + 2]);
              acc[j][4 * q + 3] = fmaf(v[j][c], w.w, acc[j][4 * q + 3]);
            }
          }
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kPixels; ++j) {
      if (first + j >= pixels) break;
      if constexpr (block::kIsHalf<E>) {  // the sum in E before the activation (conv_layer.h)
#pragma unroll
        for (int t = 0; t < FT; ++t) acc[j][t] = Element<E>::ToFloat(Element<E>::FromFloat(acc[j][t]));
      }
      a.act.Apply(acc[j]);
      StoreValues<FT>(a.y + static_cast<size_t>(first + j) * a.f + f0, acc[j]);
    }
  }
}

// `kernel` on a.work threads' worth of work, its grid a few waves of resident CTAs (each loops).
template <class E>
cudaError_t LaunchWaves(void (*kernel)(ConvLayerArgs<E>), const ConvLayerArgs<E>& a, size_t shared, cudaStream_t stream) {
  const int resident = std::max(1, CtasPerSm(reinterpret_cast<const void*>(kernel), kThreads, shared)) * CurrentDevice().sms;
  const int blocks = static_cast<int>(std::max(1u, std::min((a.work + kThreads - 1) / kThreads, 4u * resident)));
  kernel<<<blocks, kThreads, shared, stream>>>(a);
  return cudaGetLastError();
}

// One kernel instance (`staged`: the weights fit shared memory).
template <class E, int FT, bool kDepthwise, bool kStaged>
cudaError_t LaunchKernel(ConvLayerArgs<E> a, size_t shared, cudaStream_t stream) {
  a.work = static_cast<unsigned>(a.n * a.out_h * a.out_w * (a.f / FT));
  return LaunchWaves(&ConvLayerKernel<E, FT, kDepthwise, kStaged>, a, shared, stream);
}

// The stem kernel, each thread kPixels pixels of FT filters.
template <class E, int FT, int kK, int kC, int kPixels>
cudaError_t LaunchStem(ConvLayerArgs<E> a, size_t shared, cudaStream_t stream) {
  const unsigned groups = static_cast<unsigned>((a.n * a.out_h * a.out_w + kPixels - 1) / kPixels);
  a.work = groups * static_cast<unsigned>(a.f / FT);
  return LaunchWaves(&ConvStemKernel<E, FT, kK, kC, kPixels>, a, shared, stream);
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

// FT: 8 output channels a thread where the channel count allows (two or one 16-byte stores), else 4, else
// 1; 1 also where a tensor does not start on 16 bytes (vector accesses need it). The stems of RGB
// networks (3x3, 3 input channels, 16k filters) unrolled, 16 filters a thread: 1.8x faster than the
// general loops on MobileNetV2's stem at batch 32 (H200, 47 against 85 us); and kStemPixels pixels a
// thread (ConvStemKernel).
constexpr int kStemPixels = 4;
template <class E, bool kDepthwise>
cudaError_t Launch(const ConvLayerArgs<E>& a, cudaStream_t stream) {
  const bool aligned = ((reinterpret_cast<uintptr_t>(a.x) | reinterpret_cast<uintptr_t>(a.b) | reinterpret_cast<uintptr_t>(a.y)) & 15) == 0;
  if constexpr (!kDepthwise) {
    const size_t bytes = StagedBytes(a, false);
    if (aligned && a.kh == 3 && a.kw == 3 && a.c == 3 && a.f % 16 == 0 && bytes <= kStagedBytes)
      return LaunchStem<E, 16, 3, 3, kStemPixels>(a, bytes, stream);
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
      Ort::Status status = CheckConvLayerCall(spec, ctx, &s);
      if (!status.IsOK()) return status;
      auto y = ctx.GetOutput(0, s.OutputShape());
      if (s.n == 0 || s.out_h == 0 || s.out_w == 0 || s.f == 0) return Ort::Status(nullptr);
      const int64_t limit = int64_t{1} << 31;
      if (s.n * s.h * s.w * s.c >= limit || s.n * s.out_h * s.out_w * s.f >= limit || s.f * s.c * spec.kh * spec.kw >= limit)
        return Ort::Status("FCM CUDA: tensor too large for the convolution layer's 32-bit indexing", ORT_NOT_IMPLEMENTED);
      auto in = [&](size_t i) { return reinterpret_cast<const E*>(ctx.GetInput(i).template GetTensorData<T>()); };
      ConvLayerArgs<E> a{};
      a.x = in(0), a.w = in(1), a.b = in(2);
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
