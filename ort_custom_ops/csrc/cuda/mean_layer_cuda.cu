// The spatial-mean layer op on the GPU (mean_layer.h says what it computes), one deterministic pass over
// the map: no atomics, every sum in an order fixed by the shapes and the device's SM count alone.
//
// A CTA takes a tile of adjacent channels of one image (`tile` channel vectors: 16 bytes a load where the
// channel count and the pointers allow, else one element) and a range of its pixels; its threads are
// `rows` rows of `tile` lanes, lane l reading vector l of pixels row, row + rows, ... (adjacent lanes
// read adjacent bytes, and where one tile holds every channel, adjacent rows read adjacent pixels: whole
// lines of memory). The rows' fp32 sums are then added in shared memory as a fixed tree. Where the
// channel tiles of every image would leave SMs idle (a small batch, few channels: 112x112x32 at batch
// 32 makes 32 CTAs for 132 SMs), the pixels are split over several CTAs, each writing its fp32 sums to a
// workspace, and a second kernel adds each channel's sums in split order and writes the mean; else the
// one kernel writes it (7x7x1280 at batch 1: the map is 250 KB, and a second launch would cost more than
// splitting saves). Both kernels are launched for programmatic dependent launch (sm_90): each may
// start while the kernel before it in the stream finishes, and waits for it (griddepcontrol.wait) before
// reading what it wrote.
//
// FCM_CUDA_MEAN_SPLITS=cluster (sm_90; to compare with the default on a model): a split's CTAs are one
// thread-block cluster instead (at most 8 of them, so a split of more takes more pixels a CTA), and the
// first adds the others' sums from their shared memory, in rank order: one launch and no workspace,
// where the default's second kernel costs a launch per mean.
#include "mean_layer_cuda.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../mean_layer.h"
#include "block/element.cuh"
#include "block/pipeline.cuh"
#include "device.h"
#include "launch_config.h"

namespace fcm {
namespace {

using block::Element;

constexpr int kThreads = 256;
constexpr int kMaxTile = 32;  // channel vectors a CTA covers at most: one warp's lanes
// Pixel vectors each thread of a split sums at least (fewer: the split's workspace traffic and second
// launch outweigh the occupancy it gains).
constexpr int kMinPixelsPerThread = 8;
constexpr int kCtasPerSm = 4;  // the CTAs a split aims at per SM (loads in flight to cover memory latency)
constexpr int kMaxClusterSplit = 8;  // a cluster's CTAs at most (the portable size)

struct MeanArgs {
  int n;           // images
  int pixels, c;   // per image: H * W, and channels (elements)
  int vectors;     // channel vectors per pixel: c / V
  int tile, rows;  // lanes (channel vectors) and rows of pixels of a CTA: tile * rows <= kThreads
  int tiles;       // channel tiles per image
  int chunk;       // pixels a CTA sums (all of them without a split)
  float* partial;  // [split][n * c] fp32 sums, or null (no split: the CTAs write Y)
  int cluster;     // 1: the split's CTAs are a cluster, the first adding the others' sums (no partial)
};

// The cluster barrier with its release and acquire: what each thread of the cluster wrote to shared
// memory before it is visible to every thread of the cluster after it (sm_90).
__device__ __forceinline__ void ClusterSync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.aligned;\nbarrier.cluster.wait.aligned;\n" ::: "memory");
#endif
}

// A float from a peer CTA's shared memory (`remote`, a PeerAddress).
__device__ __forceinline__ float LoadPeer(uint32_t remote) {
  float value = 0.f;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(value) : "r"(remote) : "memory");
#endif
  return value;
}

using block::RankInCluster;

// V elements of E from `from` as floats: one 16-byte load, or one element.
template <class E, int V>
__device__ __forceinline__ void LoadVector(const E* from, float (&out)[V]) {
  if constexpr (V * sizeof(E) == 16) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(from));
    E values[V];
    memcpy(values, &raw, sizeof(raw));
#pragma unroll
    for (int j = 0; j < V; ++j) out[j] = Element<E>::ToFloat(values[j]);
  } else {
    static_assert(V == 1, "16-byte vectors or single elements");
    out[0] = Element<E>::ToFloat(from[0]);
  }
}

// Grid: tiles * n CTAs (x), splits (y). Sums its pixels of its channel tile; writes the mean (no split)
// or its fp32 sums (a split).
template <class E, int V>
__global__ void __launch_bounds__(kThreads) MeanPixelsKernel(const E* __restrict__ x, E* __restrict__ y, const MeanArgs a) {
  __shared__ float sums[V * kThreads];
  const int image = blockIdx.x / a.tiles, lane = threadIdx.x % a.tile, row = threadIdx.x / a.tile;
  const int vector = (blockIdx.x % a.tiles) * a.tile + lane;
  const int first = blockIdx.y * a.chunk, last = min(a.pixels, first + a.chunk);
  const bool active = row < a.rows && vector < a.vectors;
  float acc[V];
#pragma unroll
  for (int j = 0; j < V; ++j) acc[j] = 0.f;
  block::WaitPreviousGrid();  // X may be the previous kernel's output
  block::LaunchNextGrid();
  if (active) {
    const E* at = x + static_cast<size_t>(image) * a.pixels * a.c + static_cast<size_t>(vector) * V;
#pragma unroll 4
    for (int p = first + row; p < last; p += a.rows) {
      float v[V];
      LoadVector<E, V>(at + static_cast<size_t>(p) * a.c, v);
#pragma unroll
      for (int j = 0; j < V; ++j) acc[j] += v[j];
    }
  }
#pragma unroll
  for (int j = 0; j < V; ++j) sums[j * kThreads + threadIdx.x] = acc[j];
  // the rows' sums as a tree: row r takes row r + stride's, strides halving (rows need not be a power of 2)
  int stride = 1;
  while (stride * 2 < a.rows) stride *= 2;
  for (; stride > 0; stride /= 2) {
    __syncthreads();
    if (active && row < stride && row + stride < a.rows) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        acc[j] += sums[j * kThreads + threadIdx.x + stride * a.tile];
        sums[j * kThreads + threadIdx.x] = acc[j];
      }
    }
  }
  if (a.cluster) {
    // every CTA's row sums in its shared memory before any peer reads them; the first CTA of the
    // cluster adds the others' in rank order; none exits before it has read them
    ClusterSync();
    if (active && row == 0 && RankInCluster() == 0) {
      for (int peer = 1; peer < static_cast<int>(gridDim.y); ++peer) {
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += LoadPeer(block::PeerAddress(block::SharedAddress(&sums[j * kThreads + threadIdx.x]), peer));
      }
    }
    ClusterSync();
    if (RankInCluster() != 0) return;
  }
  if (!active || row != 0) return;
  const size_t at = static_cast<size_t>(image) * a.c + static_cast<size_t>(vector) * V;
  if (a.partial != nullptr) {
    float* to = a.partial + static_cast<size_t>(blockIdx.y) * a.n * a.c + at;
#pragma unroll
    for (int j = 0; j < V; ++j) to[j] = acc[j];
    return;
  }
  E values[V];
#pragma unroll
  for (int j = 0; j < V; ++j) values[j] = Element<E>::FromFloat(__fdiv_rn(acc[j], static_cast<float>(a.pixels)));
  if constexpr (V * sizeof(E) == 16) {
    uint4 raw;
    memcpy(&raw, values, sizeof(raw));
    *reinterpret_cast<uint4*>(y + at) = raw;
  } else {
    y[at] = values[0];
  }
}

// Each of the n * c means from the splits' sums, added in split order.
template <class E>
__global__ void __launch_bounds__(kThreads) MeanSplitsKernel(const float* __restrict__ partial, E* __restrict__ y,
                                                             const unsigned outputs, const int splits, const int pixels) {
  block::WaitPreviousGrid();  // the sums are the previous kernel's
  block::LaunchNextGrid();
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < outputs; i += gridDim.x * blockDim.x) {
    float sum = 0.f;
    for (int s = 0; s < splits; ++s) sum += partial[static_cast<size_t>(s) * outputs + i];
    y[i] = Element<E>::FromFloat(__fdiv_rn(sum, static_cast<float>(pixels)));
  }
}

// How a map of `n` images is cut: the CTAs' channel tiles, and the pixels each sums (a.chunk); returns
// the number of splits (1: none). `cluster`: a split is one cluster (at most kMaxClusterSplit CTAs).
int Plan(int n, int pixels, int c, int width, bool cluster, MeanArgs* a) {
  a->n = n, a->pixels = pixels, a->c = c, a->vectors = c / width;
  a->tile = std::min(a->vectors, kMaxTile);
  a->rows = kThreads / a->tile;
  a->tiles = (a->vectors + a->tile - 1) / a->tile;
  const int64_t ctas = static_cast<int64_t>(a->tiles) * n;
  const int64_t wanted = (static_cast<int64_t>(kCtasPerSm) * CurrentDevice().sms + ctas - 1) / ctas;
  const int64_t most = pixels / (static_cast<int64_t>(a->rows) * kMinPixelsPerThread);
  int splits = static_cast<int>(std::max<int64_t>(1, std::min(wanted, most)));
  if (cluster) splits = std::min(splits, kMaxClusterSplit);
  a->chunk = (pixels + splits - 1) / splits;
  splits = (pixels + a->chunk - 1) / a->chunk;  // (no split left empty)
  a->cluster = cluster && splits > 1 ? 1 : 0;
  return splits;
}

// FCM_CUDA_MEAN_SPLITS=cluster: a split as one cluster (the top of the file says how), where the device
// launches clusters; read at each call.
bool ClusterSplits() {
  const char* value = std::getenv("FCM_CUDA_MEAN_SPLITS");
  return value != nullptr && std::string(value) == "cluster" && CurrentDevice().major >= 9 && CurrentDevice().clusters != 0;
}

template <class E, int V>
cudaError_t LaunchPixels(const E* x, E* y, const MeanArgs& a, int n, int splits, cudaStream_t stream) {
  const LaunchConfig launch(dim3(static_cast<unsigned>(a.tiles * n), static_cast<unsigned>(splits)), kThreads, 0,
                            dim3(1, a.cluster ? static_cast<unsigned>(splits) : 1u), CurrentDevice().major >= 9, stream);
  return cudaLaunchKernelEx(&launch.config, MeanPixelsKernel<E, V>, x, y, a);
}

// The means of one call's X (checked shapes `s`) into Y, element type E on the device.
template <class E>
Ort::Status Run(Ort::KernelContext& ctx, const MeanLayerSpec& spec, const MeanLayerShapes& s) {
  constexpr int kVector = 16 / static_cast<int>(sizeof(E));
  auto y_value = ctx.GetOutput(0, s.OutputShape());
  if (s.n == 0 || s.c == 0) return Ort::Status(nullptr);
  const int64_t limit = int64_t{1} << 31;
  if (s.Pixels() >= limit || s.n * s.c >= limit)
    return Ort::Status("FCM CUDA: tensor too large for the mean layer's 32-bit indexing", ORT_NOT_IMPLEMENTED);
  const E* x = static_cast<const E*>(ctx.GetInput(0).GetTensorRawData());
  E* y = static_cast<E*>(y_value.GetTensorMutableRawData());
  const bool vectors = s.c % kVector == 0 && ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(y)) & 15) == 0;
  const int n = static_cast<int>(s.n);
  MeanArgs a{};
  const int splits = Plan(n, static_cast<int>(s.Pixels()), static_cast<int>(s.c), vectors ? kVector : 1, ClusterSplits(), &a);
  auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
  DeviceScratch workspace;  // (given back once the launches that use it are queued)
  if (splits > 1 && !a.cluster) {
    int device = 0;
    cudaGetDevice(&device);
    const size_t bytes = static_cast<size_t>(splits) * s.n * s.c * sizeof(float);
    Ort::Status status = workspace.Take(ctx, device, stream, bytes, "FCM CUDA (" + spec.node_name + "), the mean's split sums");
    if (!status.IsOK()) return status;
    a.partial = static_cast<float*>(workspace.data());
  }
  cudaError_t error = vectors ? LaunchPixels<E, kVector>(x, y, a, n, splits, stream) : LaunchPixels<E, 1>(x, y, a, n, splits, stream);
  if (error == cudaSuccess && splits > 1 && !a.cluster) {
    const unsigned outputs = static_cast<unsigned>(s.n * s.c);
    const unsigned blocks = std::min<unsigned>((outputs + kThreads - 1) / kThreads, 8u * CurrentDevice().sms);
    const LaunchConfig launch(dim3(blocks), kThreads, 0, dim3(1), CurrentDevice().major >= 9, stream);
    error = cudaLaunchKernelEx(&launch.config, MeanSplitsKernel<E>, static_cast<const float*>(a.partial), y, outputs, splits,
                               a.pixels);
  }
  if (error == cudaSuccess) error = cudaGetLastError();
  if (error != cudaSuccess) return Error(spec.node_name, std::string("CUDA mean layer failed: ") + cudaGetErrorString(error));
  return Ort::Status(nullptr);
}

// The op's kernel for every element type (the spec's).
struct CudaMeanLayerKernel {
  MeanLayerSpec spec;

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guarded([&]() -> Ort::Status {
      Ort::KernelContext ctx(context);
      MeanLayerShapes s;
      Ort::Status status = CheckMeanLayerCall(spec, ctx, &s);
      if (!status.IsOK()) return status;
      switch (spec.element) {
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return Run<__half>(ctx, spec, s);
        case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return Run<__nv_bfloat16>(ctx, spec, s);
        default: return Run<float>(ctx, spec, s);
      }
    });
  }
};

}  // namespace

std::unique_ptr<OrtCustomOp> MakeCudaMeanLayerOp(const char* name, Precision precision) {
  constexpr const char* kCuda = "CUDAExecutionProvider";
  if (precision == Precision::kFp16) return std::make_unique<MeanLayerOp<CudaMeanLayerKernel, Ort::Float16_t>>(name, kCuda);
  if (precision == Precision::kBf16) return std::make_unique<MeanLayerOp<CudaMeanLayerKernel, Ort::BFloat16_t>>(name, kCuda);
  return std::make_unique<MeanLayerOp<CudaMeanLayerKernel, float>>(name, kCuda);
}

}  // namespace fcm
