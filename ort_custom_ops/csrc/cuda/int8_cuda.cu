// The int8 ops (int8_ops.h) on ONNX Runtime's CUDA execution provider, with the CPU kernels' exact
// arithmetic (int8_arith.h is shared): NHWC int8 tensors, int32 accumulators, TFLite's requantization.
//
// Every convolution, alone (QConv) or a chain of stages (QFused*), runs as one kernel of tiles: a
// block computes a tile of the last stage's output for one image, each earlier stage's output only
// over the region the next stage reads, kept in shared memory as int8 (as TFLite stores it between
// layers), so an expanded tensor never goes to device memory. A stage is one of three loops over its
// output region (pointwise: int8 tensor-core products, mma.sync m16n8k32; depthwise; a standard
// convolution), each ending in the same epilogue: bias, requantization, activation table, and the
// store (to shared memory, to the output, or through the residual ADD).
//
// Per-channel requantization factors and tables go to device memory once, when ONNX Runtime creates
// the kernel (with the allocator it gives the kernel); per call, only the pointwise stages'
// zero-point terms take a workspace, from ONNX Runtime's allocator.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "../int8_ops.h"
#include "cuda_ops.h"
#include "int8_cuda.h"

namespace fcm {
namespace int8 {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxStages = 3;
constexpr int kFiltersPerThread = 8;  // standard convolution: accumulators per thread, one pixel each

// ---- device-side parameters ----------------------------------------------------------------------

// A stage's requantization with its per-channel arrays in device memory.
struct DeviceRequant {
  Scheme scheme;
  int32_t zero_point, lo, hi;
  float lo_f, hi_f;
  const float* scale;
  const int32_t* multiplier;
  const int32_t* shift;
  const int8_t* table;  // 256 entries or null

  __device__ __forceinline__ int8_t operator()(int32_t acc, int c) const {
    // only the factors the scheme uses are loaded
    const int8_t v = scheme == Scheme::kFp32
                         ? RequantizeValue(Scheme::kFp32, acc, __ldg(scale + c), 0, 0, zero_point, lo, hi, lo_f, hi_f)
                         : RequantizeValue(Scheme::kFixedPoint, acc, 0.f, __ldg(multiplier + c), __ldg(shift + c), zero_point,
                                           lo, hi, lo_f, hi_f);
    return table != nullptr ? __ldg(table + static_cast<int32_t>(v) + 128) : v;
  }
};

enum StageKind : int { kPointwise = 0, kDepthwise = 1, kStandard = 2 };

struct DeviceStage {
  int kind;
  int in_c, out_c, multiplier, kh, kw, sh, sw, dh, dw, pad_top, pad_left;
  int in_h, in_w, out_h, out_w;
  int x_zero_point;
  bool packed;              // pointwise: input channels in aligned fours, loaded as 32-bit words
  int buffer_offset;        // shared bytes where this stage's output region is kept (not the last stage)
  int buffer_stride;        // bytes per pixel there
  const int32_t* zero_point_terms;  // pointwise: x_zero_point * sum_k w[f][k] per filter (device memory)
  const int8_t* weights;
  const int32_t* bias;      // may be null
  DeviceRequant requant;
};

struct ChainArgs {
  DeviceStage stage[kMaxStages];
  int stages;
  const int8_t* x;
  int8_t* y;
  int tile_h, tile_w, tiles_x;
  bool residual;
  AddRequantizer add;  // a = the chain's input, b = the last stage's output
};

// A region of a feature map: pixel (r, c) at data + ((r - r0) * cols + (c - c0)) * stride.
struct View {
  const int8_t* data;
  int r0, c0, cols, stride;
  __device__ __forceinline__ const int8_t* Pixel(int r, int c) const {
    return data + (static_cast<int64_t>(r - r0) * cols + (c - c0)) * stride;
  }
};

// Where a stage's values go: a shared region, or (last stage) the output image, possibly through the
// residual ADD with the chain's input at the same position.
struct Sink {
  int8_t* data;
  int r0, c0, cols, stride;
  const int8_t* residual;  // the chain's input image, or null
  AddRequantizer add;

  __device__ __forceinline__ void Store(int r, int c, int ch, int8_t v) const {
    const int64_t at = (static_cast<int64_t>(r - r0) * cols + (c - c0)) * stride + ch;
    if (residual != nullptr) v = add(residual[at], v);
    data[at] = v;
  }
};

struct Region {
  int r0, r1, c0, c1;
  __device__ __forceinline__ int Cols() const { return c1 - c0; }
  __device__ __forceinline__ int Pixels() const { return (r1 - r0) * (c1 - c0); }
};

// ---- the stages ------------------------------------------------------------------------------------

// Four int8 values p[k..k+3] as one 32-bit word, zeros from `limit` on: one load when channels come
// in aligned fours (kPacked), else byte by byte.
template <bool kPacked>
__device__ __forceinline__ uint32_t Word(const int8_t* p, int k, int limit) {
  if (kPacked) return k < limit ? *reinterpret_cast<const uint32_t*>(p + k) : 0u;
  uint32_t word = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (k + i < limit) word |= static_cast<uint32_t>(static_cast<uint8_t>(p[k + i])) << (8 * i);
  }
  return word;
}

// c += a (16 x 32, row-major) * b (32 x 8, column-major) on int8 tensor cores, int32 accumulators.
// Fragments (lane = 4 * group + quad): a0/a1 rows group/group + 8 at k = 4 * quad .. + 3, a2/a3 the
// same rows at k + 16; b0/b1 column group at k = 4 * quad and + 16; c0/c1 row group, columns
// 2 * quad and + 1, c2/c3 row group + 8.
__device__ __forceinline__ void MmaS8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                      uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The epilogue of every stage: bias, requantization (and activation table), the store.
__device__ __forceinline__ void Finish(const DeviceStage& s, const Sink& sink, int r, int c, int ch, int32_t acc) {
  sink.Store(r, c, ch, s.requant(WithBias(acc, s.bias != nullptr ? s.bias[ch] : 0), ch));
}

// Pointwise: out[p][f] = requant(sum_k x[p][k] * w[f][k] - x_zp * sum_k w[f][k] + b[f]), the sums
// on int8 tensor cores: a warp task is 16 pixels (the rows of A) times 32 filters (four n8 tiles of
// B, straight from the weights [F, C], which are B column-major), k in steps of 32.
template <bool kPacked>
__device__ __forceinline__ void Pointwise(const DeviceStage s, const View in, const Region out, const Sink sink) {
  constexpr int kTiles = 4;
  const int pixels = out.Pixels(), cols = out.Cols(), k_total = s.in_c, filters = s.out_c;
  const int pixel_groups = (pixels + 15) / 16, filter_groups = (filters + 8 * kTiles - 1) / (8 * kTiles);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, group = lane / 4, quad = lane % 4;
  for (int task = warp; task < pixel_groups * filter_groups; task += kThreads / 32) {
    const int p0 = (task % pixel_groups) * 16, f0 = (task / pixel_groups) * 8 * kTiles;
    const int pa = p0 + group, pb = pa + 8;  // this lane's two rows
    // rows past the region repeat its last pixel, filters past the last its weights: never stored
    const int qa = min(pa, pixels - 1), qb = min(pb, pixels - 1);
    const int8_t* xa = in.Pixel(out.r0 + qa / cols, out.c0 + qa % cols);
    const int8_t* xb = in.Pixel(out.r0 + qb / cols, out.c0 + qb % cols);
    const int8_t* w[kTiles];
#pragma unroll
    for (int t = 0; t < kTiles; ++t) w[t] = s.weights + static_cast<int64_t>(min(f0 + 8 * t + group, filters - 1)) * k_total;
    int acc[kTiles][4] = {};
    for (int k0 = 0; k0 < k_total; k0 += 32) {
      const int ka = k0 + 4 * quad, kb = ka + 16;
      const uint32_t a0 = Word<kPacked>(xa, ka, k_total), a1 = Word<kPacked>(xb, ka, k_total);
      const uint32_t a2 = Word<kPacked>(xa, kb, k_total), a3 = Word<kPacked>(xb, kb, k_total);
#pragma unroll
      for (int t = 0; t < kTiles; ++t) MmaS8(acc[t], a0, a1, a2, a3, Word<kPacked>(w[t], ka, k_total), Word<kPacked>(w[t], kb, k_total));
    }
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int p = half == 0 ? pa : pb;
      if (p >= pixels) continue;
      const int r = out.r0 + p / cols, c = out.c0 + p % cols;
#pragma unroll
      for (int t = 0; t < kTiles; ++t) {
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          const int f = f0 + 8 * t + 2 * quad + j;
          // exact in int32 (wrapping arithmetic cancels): |sum (x - zp) * w| < 2^31 for in_c <= 65536
          if (f < filters) Finish(s, sink, r, c, f, acc[t][2 * half + j] - s.zero_point_terms[f]);
        }
      }
    }
  }
}

// Calls visit(iy, ix, tap) for each kernel tap of output pixel (r, c) that lies inside the input
// (tap = kh * kw_size + kw); taps on the padding hold the zero point and contribute nothing.
template <typename Visit>
__device__ __forceinline__ void ForEachTap(const DeviceStage& s, int r, int c, Visit&& visit) {
  for (int kh = 0; kh < s.kh; ++kh) {
    const int iy = r * s.sh - s.pad_top + kh * s.dh;
    if (iy < 0 || iy >= s.in_h) continue;
    for (int kw = 0; kw < s.kw; ++kw) {
      const int ix = c * s.sw - s.pad_left + kw * s.dw;
      if (ix >= 0 && ix < s.in_w) visit(iy, ix, kh * s.kw + kw);
    }
  }
}

// Depthwise (channel multiplier m): out[p][o] = requant(sum over taps inside the image of
// (x[tap][o / m] - x_zp) * w[tap][o] + b[o]). A thread per output value, channels fastest; with
// multiplier 1 and channels in fours, a thread per four channels of a pixel (one 4-byte load per tap).
__device__ __forceinline__ void Depthwise(const DeviceStage s, const View in, const Region out, const Sink sink) {
  const int channels = s.out_c, cols = out.Cols();
  const bool quads = s.multiplier == 1 && channels % 4 == 0 && in.stride % 4 == 0 &&
                     (reinterpret_cast<uintptr_t>(in.data) | reinterpret_cast<uintptr_t>(s.weights)) % 4 == 0;
  const int per_pixel = quads ? channels / 4 : channels, total = out.Pixels() * per_pixel;
  for (int i = threadIdx.x; i < total; i += kThreads) {
    const int p = i / per_pixel, q = i - p * per_pixel;
    const int r = out.r0 + p / cols, c = out.c0 + p % cols;
    if (quads) {
      const int o = q * 4;
      int32_t acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
      ForEachTap(s, r, c, [&](int iy, int ix, int tap) {
        const char4 x = *reinterpret_cast<const char4*>(in.Pixel(iy, ix) + o);
        const char4 w = __ldg(reinterpret_cast<const char4*>(s.weights + tap * channels + o));
        acc0 += (x.x - s.x_zero_point) * w.x, acc1 += (x.y - s.x_zero_point) * w.y;
        acc2 += (x.z - s.x_zero_point) * w.z, acc3 += (x.w - s.x_zero_point) * w.w;
      });
      Finish(s, sink, r, c, o, acc0), Finish(s, sink, r, c, o + 1, acc1);
      Finish(s, sink, r, c, o + 2, acc2), Finish(s, sink, r, c, o + 3, acc3);
      continue;
    }
    const int ic = q / s.multiplier;
    int32_t acc = 0;
    ForEachTap(s, r, c, [&](int iy, int ix, int tap) {
      acc += (static_cast<int32_t>(in.Pixel(iy, ix)[ic]) - s.x_zero_point) * __ldg(s.weights + tap * channels + q);
    });
    Finish(s, sink, r, c, q, acc);
  }
}

// A standard convolution, weights [F, KH, KW, C]: a lane per pixel and kFiltersPerThread filters
// per thread, whose weights every lane of the warp reads alike.
__device__ __forceinline__ void Standard(const DeviceStage s, const View in, const Region out, const Sink sink) {
  const int pixels = out.Pixels(), cols = out.Cols(), filters = s.out_c, patch = s.kh * s.kw * s.in_c;
  const int pixel_groups = (pixels + 31) / 32, filter_groups = (filters + kFiltersPerThread - 1) / kFiltersPerThread;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int task = warp; task < pixel_groups * filter_groups; task += kThreads / 32) {
    const int p = (task % pixel_groups) * 32 + lane, f0 = (task / pixel_groups) * kFiltersPerThread;
    const int pc = p < pixels ? p : pixels - 1;
    const int r = out.r0 + pc / cols, c = out.c0 + pc % cols;
    const int8_t* w[kFiltersPerThread];
#pragma unroll
    for (int j = 0; j < kFiltersPerThread; ++j) w[j] = s.weights + static_cast<int64_t>(min(f0 + j, filters - 1)) * patch;
    int32_t acc[kFiltersPerThread] = {};
    ForEachTap(s, r, c, [&](int iy, int ix, int tap) {
      const int8_t* px = in.Pixel(iy, ix);
      const int at = tap * s.in_c;
      for (int ch = 0; ch < s.in_c; ++ch) {
        const int32_t x = static_cast<int32_t>(px[ch]) - s.x_zero_point;
#pragma unroll
        for (int j = 0; j < kFiltersPerThread; ++j) acc[j] += x * __ldg(w[j] + at + ch);
      }
    });
    if (p >= pixels) continue;
#pragma unroll
    for (int j = 0; j < kFiltersPerThread; ++j) {
      if (f0 + j >= filters) break;
      Finish(s, sink, r, c, f0 + j, acc[j]);
    }
  }
}

// The input rows (or columns) [*lo, *hi) a stage reads for its output rows [o0, o1), clipped to the
// input: outside it is padding, never stored.
__host__ __device__ inline void InputSpan(int o0, int o1, int stride, int pad, int k, int dilation, int size, int* lo,
                                          int* hi) {
  const int first = o0 * stride - pad, last = (o1 - 1) * stride - pad + dilation * (k - 1);
  *lo = first < 0 ? 0 : first;
  *hi = last + 1 > size ? size : last + 1;
  if (*hi < *lo) *hi = *lo;
}

__global__ void __launch_bounds__(kThreads) ChainTiles(const __grid_constant__ ChainArgs args) {
  extern __shared__ int4 shared_words[];
  int8_t* shared = reinterpret_cast<int8_t*>(shared_words);
  const int image = blockIdx.y, tile = blockIdx.x;
  const DeviceStage& last = args.stage[args.stages - 1];

  // each stage's output region, from the last stage's tile backwards
  Region region[kMaxStages];
  {
    const int ty = tile / args.tiles_x, tx = tile - ty * args.tiles_x;
    Region r{ty * args.tile_h, min((ty + 1) * args.tile_h, last.out_h), tx * args.tile_w, min((tx + 1) * args.tile_w, last.out_w)};
    for (int s = args.stages - 1; s >= 0; --s) {
      region[s] = r;
      const DeviceStage& st = args.stage[s];
      InputSpan(r.r0, r.r1, st.sh, st.pad_top, st.kh, st.dh, st.in_h, &r.r0, &r.r1);
      InputSpan(r.c0, r.c1, st.sw, st.pad_left, st.kw, st.dw, st.in_w, &r.c0, &r.c1);
    }
  }

  const DeviceStage& first = args.stage[0];
  const int8_t* x_image = args.x + static_cast<int64_t>(image) * first.in_h * first.in_w * first.in_c;
  View in{x_image, 0, 0, first.in_w, first.in_c};
  for (int s = 0; s < args.stages; ++s) {
    const DeviceStage st = args.stage[s];  // by value: int8 stores could alias it otherwise
    const Region out = region[s];
    Sink sink;
    if (s + 1 < args.stages) {
      sink = Sink{shared + st.buffer_offset, out.r0, out.c0, out.Cols(), st.buffer_stride, nullptr, AddRequantizer{}};
    } else {
      int8_t* y_image = args.y + static_cast<int64_t>(image) * st.out_h * st.out_w * st.out_c;
      sink = Sink{y_image, 0, 0, st.out_w, st.out_c, args.residual ? x_image : nullptr, args.add};
    }
    switch (st.kind) {
      case kPointwise:
        if (st.packed) {
          Pointwise<true>(st, in, out, sink);
        } else {
          Pointwise<false>(st, in, out, sink);
        }
        break;
      case kDepthwise: Depthwise(st, in, out, sink); break;
      default: Standard(st, in, out, sink); break;
    }
    __syncthreads();
    if (s + 1 < args.stages) in = View{shared + st.buffer_offset, out.r0, out.c0, out.Cols(), st.buffer_stride};
  }
}

// The zero-point terms of a node's pointwise stages: terms[f] = x_zero_point * sum_k w[f][k], a warp
// per filter (blockIdx.y: the stage), before the node's tiles run.
struct ZeroPointTermsArgs {
  const int8_t* weights[kMaxStages];
  int32_t* terms[kMaxStages];
  int in_c[kMaxStages], out_c[kMaxStages], zero_point[kMaxStages];
};

__global__ void ZeroPointTerms(const __grid_constant__ ZeroPointTermsArgs args) {
  const int s = blockIdx.y, f = blockIdx.x * (kThreads / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (f >= args.out_c[s]) return;
  const int8_t* w = args.weights[s] + static_cast<int64_t>(f) * args.in_c[s];
  int32_t sum = 0;
  for (int k = lane; k < args.in_c[s]; k += 32) sum += w[k];
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
  if (lane == 0) args.terms[s][f] = args.zero_point[s] * sum;
}

__global__ void AddValues(const int8_t* a, const int8_t* b, int8_t* y, size_t count, const AddRequantizer add) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    y[i] = add(a[i], b[i]);
}

// XNNPACK's MEAN over H and W: a thread per (image, channel), channels fastest.
__global__ void MeanHW(const int8_t* x, int8_t* y, int n, int hw, int c, const MeanParams p, float factor) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<int64_t>(n) * c) return;
  const int64_t image = i / c, ch = i - image * c;
  const int8_t* src = x + image * hw * c + ch;
  int64_t sum = -static_cast<int64_t>(hw) * p.x_zero_point;
  for (int k = 0; k < hw; ++k) sum += src[static_cast<int64_t>(k) * c];
  const int64_t v = static_cast<int64_t>(rintf(static_cast<float>(sum) * factor)) + p.y_zero_point;
  y[i] = static_cast<int8_t>(v < -128 ? -128 : (v > 127 ? 127 : v));
}

// ---- host side -------------------------------------------------------------------------------------

Ort::Status CudaError(const std::string& node, cudaError_t err) {
  return Ort::Status(("FCM node '" + node + "' (CUDA): " + cudaGetErrorString(err)).c_str(), ORT_EP_FAIL);
}

// Device memory from the allocator ONNX Runtime gives a kernel, freed with the kernel.
class DeviceBlock {
 public:
  DeviceBlock() = default;
  DeviceBlock(const DeviceBlock&) = delete;
  DeviceBlock& operator=(const DeviceBlock&) = delete;
  ~DeviceBlock() {
    if (allocator_ != nullptr) {
      if (data_ != nullptr) allocator_->Free(allocator_, data_);
      Ort::GetApi().ReleaseAllocator(allocator_);
    }
  }

  // Copies `bytes` to the device.
  Ort::Status Upload(const Ort::ConstKernelInfo& info, const std::vector<char>& bytes, const std::string& node) {
    if (bytes.empty()) return Ort::Status(nullptr);
    if (allocator_ == nullptr) {
      OrtStatus* status = Ort::GetApi().KernelInfoGetAllocator(info, OrtMemTypeDefault, &allocator_);
      if (status != nullptr) return Ort::Status(status);
    }
    data_ = allocator_->Alloc(allocator_, bytes.size());
    if (data_ == nullptr) return Ort::Status(("FCM node '" + node + "': out of device memory").c_str(), ORT_EP_FAIL);
    const cudaError_t err = cudaMemcpy(data_, bytes.data(), bytes.size(), cudaMemcpyDefault);
    if (err != cudaSuccess) return CudaError(node, err);
    return Ort::Status(nullptr);
  }
  const char* data() const { return static_cast<const char*>(data_); }

 private:
  OrtAllocator* allocator_ = nullptr;
  void* data_ = nullptr;
};

// The requantization arrays of a kernel's stages, packed for one upload: offsets first, pointers once
// the block is on the device.
class RequantUpload {
 public:
  size_t Add(const Requantizer& r) {
    Entry e;
    e.scale = Append(r.scale.data(), r.scale.size() * sizeof(float));
    e.multiplier = Append(r.multiplier.data(), r.multiplier.size() * sizeof(int32_t));
    e.shift = Append(r.shift.data(), r.shift.size() * sizeof(int32_t));
    e.table = r.table.empty() ? SIZE_MAX : Append(r.table.data(), r.table.size());
    entries_.push_back(e);
    return entries_.size() - 1;
  }
  const std::vector<char>& bytes() const { return bytes_; }
  DeviceRequant Resolve(size_t index, const Requantizer& r, const char* device) const {
    const Entry& e = entries_[index];
    return DeviceRequant{r.scheme, r.zero_point, r.lo, r.hi, r.lo_f, r.hi_f,
                         reinterpret_cast<const float*>(device + e.scale), reinterpret_cast<const int32_t*>(device + e.multiplier),
                         reinterpret_cast<const int32_t*>(device + e.shift),
                         e.table == SIZE_MAX ? nullptr : reinterpret_cast<const int8_t*>(device + e.table)};
  }

 private:
  struct Entry {
    size_t scale, multiplier, shift, table;
  };
  size_t Append(const void* data, size_t bytes) {
    const size_t at = (bytes_.size() + 15) / 16 * 16;
    bytes_.resize(at + bytes);
    std::memcpy(bytes_.data() + at, data, bytes);
    return at;
  }
  std::vector<char> bytes_;
  std::vector<Entry> entries_;
};

// Copies the requantization arrays of `layers` to `block` (one upload) and fills `requants` with
// their device views, in the layers' order.
Ort::Status UploadRequants(const Ort::ConstKernelInfo& info, const std::vector<ConvLayer>& layers, const std::string& node,
                           DeviceBlock* block, std::vector<DeviceRequant>* requants) {
  RequantUpload upload;
  std::vector<size_t> index;
  for (const ConvLayer& layer : layers) index.push_back(upload.Add(layer.requantize));
  Ort::Status status = block->Upload(info, upload.bytes(), node);
  if (!status.IsOK()) return status;
  requants->clear();
  for (size_t s = 0; s < layers.size(); ++s) requants->push_back(upload.Resolve(index[s], layers[s].requantize, block->data()));
  return Ort::Status(nullptr);
}

// The division of one call into tiles, per input shape.
struct TilePlan {
  int tile_h = 0, tile_w = 0, tiles_x = 0, tiles = 0;
  size_t shared_bytes = 0;
  std::vector<int> buffer_offset, buffer_stride;
  std::string error;
};

// Shared bytes per pixel of a stage's output kept on chip: a multiple of 16 (aligned runs) that is
// an odd number of 16-byte units (lanes reading 16 bytes of consecutive pixels hit distinct banks).
int BufferStride(int channels) {
  int units = (channels + 15) / 16;
  if (units % 2 == 0) ++units;
  return units * 16;
}

struct Shape {
  int h, w, c;
};

// Shared memory for output tiles of tile_h x tile_w: every stage's output region but the last's, at
// its largest (an interior tile).
size_t SharedBytes(const std::vector<ConvLayer>& stages, const std::vector<Shape>& in_shapes, int tile_h, int tile_w,
                   TilePlan* plan) {
  const size_t count = stages.size();
  std::vector<int> rows(count), cols(count);
  int r = tile_h, c = tile_w;
  for (size_t s = count; s-- > 0;) {
    rows[s] = r, cols[s] = c;
    const ConvGeometry& g = stages[s].geometry;
    r = std::min<int>(static_cast<int>((r - 1) * g.sh + g.dh * (g.kh - 1) + 1), in_shapes[s].h);
    c = std::min<int>(static_cast<int>((c - 1) * g.sw + g.dw * (g.kw - 1) + 1), in_shapes[s].w);
  }
  size_t bytes = 0;
  plan->buffer_offset.assign(count, 0), plan->buffer_stride.assign(count, 0);
  for (size_t s = 0; s + 1 < count; ++s) {
    plan->buffer_offset[s] = static_cast<int>(bytes);
    plan->buffer_stride[s] = BufferStride(static_cast<int>(stages[s].geometry.out_c));
    bytes += static_cast<size_t>(rows[s]) * cols[s] * plan->buffer_stride[s];
  }
  return bytes;
}

// Output tiles: the largest (up to 8 x 16) whose shared memory fits a budget that lets two blocks
// share an SM and whose grid fills the device twice over; smaller tiles (more halo recomputed) only
// while the grid is short, down to 2 x 2, or when nothing larger fits at all.
TilePlan PlanTiles(const std::vector<ConvLayer>& stages, const std::vector<Shape>& in_shapes, int out_h, int out_w,
                   int n, int device) {
  int sms = 0, optin = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  const size_t budget = std::min<size_t>(100 * 1024, static_cast<size_t>(optin));
  static const int kTiles[][2] = {{8, 16}, {8, 8}, {4, 8}, {4, 4}, {2, 4}, {2, 2}, {1, 2}, {1, 1}};
  TilePlan chosen;
  bool have = false;
  for (const auto& t : kTiles) {
    TilePlan plan;
    plan.tile_h = std::min(t[0], out_h), plan.tile_w = std::min(t[1], out_w);
    plan.shared_bytes = SharedBytes(stages, in_shapes, plan.tile_h, plan.tile_w, &plan);
    if (plan.shared_bytes > static_cast<size_t>(optin)) continue;
    plan.tiles_x = (out_w + plan.tile_w - 1) / plan.tile_w;
    plan.tiles = plan.tiles_x * ((out_h + plan.tile_h - 1) / plan.tile_h);
    const bool in_budget = plan.shared_bytes <= budget;
    if (!have || in_budget) chosen = plan;  // the first that fits at all; then each within the budget
    have = true;
    if (in_budget && (static_cast<int64_t>(plan.tiles) * n >= 2 * sms || t[0] * t[1] <= 4)) break;
  }
  if (!have) chosen.error = "one output pixel of this chain needs more shared memory than the device has";
  return chosen;
}

DeviceStage MakeStage(const ConvLayer& layer, const Shape& in, const int8_t* weights, const int32_t* bias,
                      const DeviceRequant& requant, const TilePlan& plan, size_t index) {
  const ConvGeometry& g = layer.geometry;
  DeviceStage s{};
  const bool pointwise = !g.depthwise && g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 &&
                         g.pads[0] == 0 && g.pads[1] == 0 && g.pads[2] == 0 && g.pads[3] == 0;
  s.kind = g.depthwise ? kDepthwise : (pointwise ? kPointwise : kStandard);
  s.in_c = static_cast<int>(g.in_c), s.out_c = static_cast<int>(g.out_c), s.multiplier = static_cast<int>(g.multiplier());
  s.kh = static_cast<int>(g.kh), s.kw = static_cast<int>(g.kw), s.sh = static_cast<int>(g.sh), s.sw = static_cast<int>(g.sw);
  s.dh = static_cast<int>(g.dh), s.dw = static_cast<int>(g.dw);
  s.pad_top = static_cast<int>(g.pads[0]), s.pad_left = static_cast<int>(g.pads[1]);
  s.in_h = in.h, s.in_w = in.w, s.out_h = static_cast<int>(g.OutHeight(in.h)), s.out_w = static_cast<int>(g.OutWidth(in.w));
  s.x_zero_point = layer.x_zero_point;
  s.packed = s.in_c % 4 == 0;
  s.buffer_offset = plan.buffer_offset[index], s.buffer_stride = plan.buffer_stride[index];
  s.weights = weights, s.bias = bias, s.requant = requant;
  return s;
}

bool Aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0; }

// Lets ChainTiles launch with up to the device's opt-in shared memory per block (once per device, for
// every kernel object: a per-plan limit could shrink below what another node's plan launches with).
cudaError_t AllowAllSharedMemory(int device) {
  static std::mutex mutex;
  static std::vector<int> done;
  std::lock_guard<std::mutex> lock(mutex);
  if (std::find(done.begin(), done.end(), device) != done.end()) return cudaSuccess;
  int optin = 0;
  cudaError_t err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (err == cudaSuccess) err = cudaFuncSetAttribute(ChainTiles, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
  if (err == cudaSuccess) done.push_back(device);
  return err;
}

// Plans (once per device and input shape) and launches a chain of convolution stages on `stream`.
class ChainLauncher {
 public:
  Ort::Status Launch(const std::string& node, const std::vector<ConvLayer>& stages, const std::vector<DeviceRequant>& requants,
                     const int8_t* x, const std::vector<const int8_t*>& weights, const std::vector<const int32_t*>& biases,
                     int64_t n, int64_t h, int64_t w, int8_t* y, bool residual, const AddRequantizer& add,
                     Ort::KernelContext& ctx) {
    std::vector<Shape> shapes{{static_cast<int>(h), static_cast<int>(w), static_cast<int>(stages[0].geometry.in_c)}};
    for (const ConvLayer& l : stages) {
      const Shape& s = shapes.back();
      shapes.push_back({static_cast<int>(l.geometry.OutHeight(s.h)), static_cast<int>(l.geometry.OutWidth(s.w)),
                        static_cast<int>(l.geometry.out_c)});
    }
    for (const Shape& s : shapes) {
      if (static_cast<int64_t>(s.h) * s.w * s.c >= (int64_t{1} << 31) || n > 65535)
        return Ort::Status(("FCM node '" + node + "' (CUDA): tensor too large for 32-bit indexing").c_str(), ORT_NOT_IMPLEMENTED);
    }
    int device = 0;
    cudaGetDevice(&device);
    TilePlan plan;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto key = std::make_tuple(device, n, h, w);
      auto found = plans_.find(key);
      if (found == plans_.end()) {
        found = plans_.emplace(key, PlanTiles(stages, shapes, shapes.back().h, shapes.back().w, static_cast<int>(n), device)).first;
        if (found->second.error.empty() && found->second.shared_bytes > 48 * 1024) {
          const cudaError_t err = AllowAllSharedMemory(device);
          if (err != cudaSuccess) found->second.error = cudaGetErrorString(err);
        }
      }
      plan = found->second;
    }
    if (!plan.error.empty()) return Ort::Status(("FCM node '" + node + "' (CUDA): " + plan.error).c_str(), ORT_NOT_IMPLEMENTED);

    ChainArgs args{};
    args.stages = static_cast<int>(stages.size());
    for (size_t s = 0; s < stages.size(); ++s) {
      args.stage[s] = MakeStage(stages[s], shapes[s], weights[s], biases[s], requants[s], plan, s);
      DeviceStage& st = args.stage[s];
      // words loaded from device memory need aligned tensors (shared buffers always are)
      if (st.kind == kPointwise && (!Aligned(weights[s], 4) || (s == 0 && !Aligned(x, 4)))) st.packed = false;
    }
    args.x = x, args.y = y, args.residual = residual, args.add = add;
    args.tile_h = plan.tile_h, args.tile_w = plan.tile_w, args.tiles_x = plan.tiles_x;

    // the pointwise stages' zero-point terms, computed from this call's weights into a workspace from
    // ONNX Runtime's allocator
    ZeroPointTermsArgs terms{};
    int pointwise = 0, widest = 0;
    size_t words = 0;
    for (int s = 0; s < args.stages; ++s) {
      const DeviceStage& st = args.stage[s];
      if (st.kind != kPointwise) continue;
      terms.weights[pointwise] = st.weights, terms.in_c[pointwise] = st.in_c, terms.out_c[pointwise] = st.out_c;
      terms.zero_point[pointwise] = st.x_zero_point;
      words += static_cast<size_t>(st.out_c), widest = std::max(widest, st.out_c), ++pointwise;
    }
    auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
    DeviceScratch scratch;
    int32_t* workspace = nullptr;
    if (pointwise > 0) {
      Ort::Status status = scratch.Take(ctx, device, stream, words * sizeof(int32_t), "FCM node '" + node + "' (CUDA), zero-point workspace");
      if (!status.IsOK()) return status;
      workspace = static_cast<int32_t*>(scratch.data());
      int32_t* next = workspace;
      for (int s = 0, i = 0; s < args.stages; ++s) {
        if (args.stage[s].kind != kPointwise) continue;
        terms.terms[i++] = next, args.stage[s].zero_point_terms = next;
        next += args.stage[s].out_c;
      }
      const unsigned blocks = static_cast<unsigned>((widest + kThreads / 32 - 1) / (kThreads / 32));
      ZeroPointTerms<<<dim3(blocks, static_cast<unsigned>(pointwise)), kThreads, 0, stream>>>(terms);
    }
    ChainTiles<<<dim3(plan.tiles, static_cast<unsigned>(n)), kThreads, plan.shared_bytes, stream>>>(args);
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? Ort::Status(nullptr) : CudaError(node, err);
  }

 private:
  std::mutex mutex_;  // one kernel object may run on several threads at once
  std::map<std::tuple<int, int64_t, int64_t, int64_t>, TilePlan> plans_;
};

// ---- the CUDA kernels of the ops: the CPU kernels' attributes and checks, device compute -------------

struct CudaQConvKernel : QConvKernel {
  DeviceBlock block;
  std::vector<DeviceRequant> requants;
  std::unique_ptr<ChainLauncher> launcher = std::make_unique<ChainLauncher>();

  Ort::Status Init(const Ort::ConstKernelInfo& info, const std::string& op_name, size_t stages) {
    Ort::Status status = QConvKernel::Init(info, op_name, stages);
    return status.IsOK() ? UploadRequants(info, {layer}, node, &block, &requants) : std::move(status);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guarded([&]() -> Ort::Status {
      Ort::KernelContext ctx(context);
      ConvCall call;
      Ort::Status status = Bind(ctx, &call);
      if (!status.IsOK() || call.n == 0) return status;
      return launcher->Launch(node, {call.layer}, requants, call.x, {call.weights}, {call.bias}, call.n, call.h, call.w,
                              call.y, false, AddRequantizer{}, ctx);
    });
  }
};

struct CudaQChainKernel : QChainKernel {
  DeviceBlock block;
  std::vector<DeviceRequant> requants;
  std::unique_ptr<ChainLauncher> launcher = std::make_unique<ChainLauncher>();

  Ort::Status Init(const Ort::ConstKernelInfo& info, const std::string& op_name, size_t stages) {
    Ort::Status status = QChainKernel::Init(info, op_name, stages);
    return status.IsOK() ? UploadRequants(info, chain.stages, node, &block, &requants) : std::move(status);
  }

  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guarded([&]() -> Ort::Status {
      Ort::KernelContext ctx(context);
      ChainCall call;
      Ort::Status status = Bind(ctx, &call);
      if (!status.IsOK() || call.n == 0) return status;
      return launcher->Launch(node, call.chain.stages, requants, call.x, call.weights, call.biases, call.n, call.h, call.w,
                              call.y, call.chain.residual, call.chain.add, ctx);
    });
  }
};

struct CudaQAddKernel : QAddKernel {
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guarded([&]() -> Ort::Status {
      Ort::KernelContext ctx(context);
      AddCall call;
      Ort::Status status = Bind(ctx, &call);
      if (!status.IsOK() || call.count == 0) return status;
      const size_t blocks = std::min<size_t>((call.count + kThreads - 1) / kThreads, 4096);
      AddValues<<<static_cast<unsigned>(blocks), kThreads, 0, static_cast<cudaStream_t>(ctx.GetGPUComputeStream())>>>(
          call.a, call.b, call.y, call.count, add);
      const cudaError_t err = cudaGetLastError();
      return err == cudaSuccess ? Ort::Status(nullptr) : CudaError(node, err);
    });
  }
};

struct CudaQMeanKernel : QMeanKernel {
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return Guarded([&]() -> Ort::Status {
      Ort::KernelContext ctx(context);
      MeanCall call;
      Ort::Status status = Bind(ctx, &call);
      if (!status.IsOK() || call.n == 0 || call.c == 0) return status;
      if (call.h * call.w * call.c >= (int64_t{1} << 31) || call.n * call.c >= (int64_t{1} << 31))
        return Ort::Status(("FCM node '" + node + "' (CUDA): tensor too large for 32-bit indexing").c_str(), ORT_NOT_IMPLEMENTED);
      const int64_t hw = call.h * call.w, outputs = call.n * call.c;
      const float factor = params.x_scale / params.y_scale / static_cast<float>(hw);  // float32, as the CPU kernel
      MeanHW<<<static_cast<unsigned>((outputs + kThreads - 1) / kThreads), kThreads, 0,
               static_cast<cudaStream_t>(ctx.GetGPUComputeStream())>>>(call.x, call.y, static_cast<int>(call.n),
                                                                      static_cast<int>(hw), static_cast<int>(call.c), params, factor);
      const cudaError_t err = cudaGetLastError();
      return err == cudaSuccess ? Ort::Status(nullptr) : CudaError(node, err);
    });
  }
};

}  // namespace

void AddInt8CudaOps(std::vector<std::unique_ptr<OrtCustomOp>>* ops) {
  static const char* kCuda = "CUDAExecutionProvider";
  ops->push_back(std::make_unique<Int8Op<CudaQConvKernel>>("QConv", 1, kCuda));
  for (const auto& kind : kFusedKinds) ops->push_back(std::make_unique<Int8Op<CudaQChainKernel>>(kind.name, kind.stages, kCuda));
  ops->push_back(std::make_unique<Int8Op<CudaQAddKernel>>("QAdd", 1, kCuda));
  ops->push_back(std::make_unique<Int8Op<CudaQMeanKernel>>("QMean", 1, kCuda));
}

}  // namespace int8
}  // namespace fcm
