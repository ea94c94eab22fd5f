// CUDA kernels of the FCM ops: one fused-chain kernel template for the four kinds.
//
// A block computes one output tile (tile_h x tile_w pixels of one image) for tile_f output
// channels. It keeps the input tile in shared memory and walks the intermediate channels (the
// ones entering the last pointwise stage) in chunks: for each chunk the first pointwise stage
// (if any) computes the chunk over the tile plus its halo, the depthwise stage (if any) reduces it
// to the output tile, and the last pointwise stage adds the chunk's contribution to accumulators
// held in registers. Nothing intermediate reaches device memory. The epilogue then adds the bias,
// applies the activation and the residual, and stores. PW->DW has no last pointwise stage: its
// blocks own a chunk of output channels and store the depthwise result directly.
//
// The pieces are separate: LoadTile (input -> shared), StageWeights, BlockGemm (a pointwise stage:
// TF32 tensor cores, mma.sync m16n8k8, or exact FP32 FMAs in the same fragment layout),
// DepthwiseStage, and the epilogues (epilogue.h), so a new kind or activation reuses them.
//
// A split > 1 divides the intermediate channels among blocks; each writes its partial sums to a
// workspace from ONNX Runtime's allocator and a second kernel reduces them (deterministically)
// and applies the epilogue. All launches go to the stream ONNX Runtime gives the kernel.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "../fused_op.h"
#include "cuda_ops.h"

namespace fcm {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxTilesPerWarp = 12;  // 16x8 accumulator tiles per warp in the last stage: 48 registers

struct StageArgs {
  const float* w = nullptr;
  const float* b = nullptr;
  Activation act;
};

struct ChainArgs {
  const float* x;
  float* y;
  float* partial;  // split > 1: [split][N][F][Ho*Wo]
  const float* scale;
  int scale_batch;
  StageArgs pw1, dw, pwl;  // first pointwise, depthwise, last pointwise (those the kind has)
  int n, c, h, w;
  int m;  // intermediate channels: the chunked dimension (PW->DW: its output channels)
  int f;  // output channels of the last pointwise stage
  int out_h, out_w;
  int kernel, stride, pad_top, pad_left;
  int tile_h, tile_w, tiles_w, in_h, in_w;
  int chunk, tile_f, f_tiles, split, m_per_split;
  int cp, ldi, ldo, ldw1, ldwl;
  bool residual;
  Activation res_act;
};

// ---- small helpers ---------------------------------------------------------------------------

__host__ __device__ inline int RoundUp(int v, int to) { return (v + to - 1) / to * to; }

// A leading dimension >= n, congruent to 8 mod 32: B fragments (rows t, columns g) hit 32 banks.
__host__ __device__ inline int LdB(int n) {
  const int base = RoundUp(n, 8);
  return base + ((8 - base % 32) + 32) % 32;
}

__device__ inline unsigned ToTf32(float x) {
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

__device__ inline void MmaTf32(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// One 16x8 output tile of C += A[16 x K] * B[K x 8]: A row-major (lda), B row-major (ldb), K a
// multiple of 8, both zero-padded. Lane (g = lane/4, t = lane%4) holds C[g][2t], C[g][2t+1],
// C[g+8][2t], C[g+8][2t+1], for the tensor-core and the FMA path alike.
template <bool kTf32>
__device__ inline void MmaTile(float (&c)[4], const float* a, int lda, const float* b, int ldb, int k_steps, int lane) {
  const int g = lane >> 2, t = lane & 3;
  const float* a0 = a + g * lda;
  const float* a1 = a + (g + 8) * lda;
  for (int ks = 0; ks < k_steps; ++ks) {
    const int k0 = ks * 8;
    if constexpr (kTf32) {
      const unsigned fa[4] = {ToTf32(a0[k0 + t]), ToTf32(a1[k0 + t]), ToTf32(a0[k0 + t + 4]), ToTf32(a1[k0 + t + 4])};
      const unsigned fb[2] = {ToTf32(b[(k0 + t) * ldb + g]), ToTf32(b[(k0 + t + 4) * ldb + g])};
      MmaTf32(c, fa, fb);
    } else {
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) {
        const float r0 = a0[k0 + kk], r1 = a1[k0 + kk];
        const float b0 = b[(k0 + kk) * ldb + 2 * t], b1 = b[(k0 + kk) * ldb + 2 * t + 1];
        c[0] = fmaf(r0, b0, c[0]);
        c[1] = fmaf(r0, b1, c[1]);
        c[2] = fmaf(r1, b0, c[2]);
        c[3] = fmaf(r1, b1, c[3]);
      }
    }
  }
}

// ---- the stages --------------------------------------------------------------------------------

// Asynchronous 4-byte global -> shared copies (sm_80+): every copy of a stage is in flight at once,
// so a tile costs one memory latency, not one per element. `valid` false zero-fills.
__device__ inline void CopyAsync(float* dst, const float* src, bool valid) {
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(address), "l"(src), "r"(valid ? 4 : 0));
}

__device__ inline void WaitCopies() {
  asm volatile("cp.async.commit_group;\n" ::);
  asm volatile("cp.async.wait_group 0;\n" ::);
}

// Input channels [c0, c0 + count) of image n over the tile's input region into dst[rows][ldi];
// zero outside the image, beyond `count` (up to `rows`) and in the padding columns. Each warp
// copies whole region rows (coalesced); the copies are asynchronous (call WaitCopies, then
// ScaleTile when there is a channel scale, before reading).
__device__ void LoadTile(const ChainArgs& a, int n, int c0, int count, int rows, int iy0, int ix0, float* dst) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int p_in = a.in_h * a.in_w;
  const int lines = count * a.in_h;
  for (int line = warp; line < lines; line += kWarps) {
    const int ch = line / a.in_h, r = line - ch * a.in_h;
    const int iy = iy0 + r;
    const bool row_inside = iy >= 0 && iy < a.h;
    const float* src = a.x + ((static_cast<size_t>(n) * a.c + c0 + ch) * a.h + (row_inside ? iy : 0)) * a.w;
    float* out = dst + ch * a.ldi + r * a.in_w;
    for (int col = lane; col < a.in_w; col += 32) {
      const int ix = ix0 + col;
      const bool inside = row_inside && ix >= 0 && ix < a.w;
      CopyAsync(out + col, inside ? src + ix : a.x, inside);
    }
  }
  // the padding columns of every row, and whole rows beyond `count`
  const int tail = a.ldi - p_in;
  for (int i = threadIdx.x; i < count * tail; i += kThreads) {
    const int ch = i / tail;
    dst[ch * a.ldi + p_in + (i - ch * tail)] = 0.f;
  }
  for (int i = threadIdx.x; i < (rows - count) * a.ldi; i += kThreads) dst[count * a.ldi + i] = 0.f;
}

// Multiply the loaded channels by the squeeze-and-excitation scale (after WaitCopies).
__device__ void ScaleTile(const ChainArgs& a, int n, int count, float* dst) {
  if (a.scale == nullptr) return;
  const float* scale = a.scale + (a.scale_batch == 1 ? 0 : n) * a.c;
  const int p_in = a.in_h * a.in_w;
  for (int i = threadIdx.x; i < count * p_in; i += kThreads) {
    const int ch = i / p_in;
    dst[ch * a.ldi + (i - ch * p_in)] *= __ldg(scale + ch);
  }
}

// rows x cols of a row-major [total_rows x total_cols] matrix, from (r0, c0), into dst[rows][ld],
// zero outside it; a warp per row, coalesced, asynchronous (WaitCopies before reading).
__device__ void StageWeights(const float* src, int total_rows, int total_cols, int r0, int c0, int rows, int cols,
                             float* dst, int ld) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int r = warp; r < rows; r += kWarps) {
    const bool row_inside = r0 + r < total_rows;
    const float* line = src + static_cast<size_t>(row_inside ? r0 + r : 0) * total_cols + c0;
    for (int k = lane; k < cols; k += 32) {
      const bool inside = row_inside && c0 + k < total_cols;
      CopyAsync(dst + r * ld + k, inside ? line + k : src, inside);
    }
  }
}

// The first pointwise stage over the input region: t1[chunk][ldi] = act(W1[m0.. , :] x xs + b),
// zero for pixels outside the image (they are the depthwise stage's padding) and padding columns.
template <bool kTf32>
__device__ void PointwiseToShared(const ChainArgs& a, const float* w1s, const float* xs, int m0, int iy0, int ix0,
                                  float* t1) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int p_in = a.in_h * a.in_w;
  const int m_tiles = a.chunk / 16, n_tiles = RoundUp(p_in, 8) / 8;
  const int g = lane >> 2, t = lane & 3;
  for (int tile = warp; tile < m_tiles * n_tiles; tile += kWarps) {
    const int mt = tile / n_tiles, nt = tile - mt * n_tiles;
    float c[4] = {0.f, 0.f, 0.f, 0.f};
    MmaTile<kTf32>(c, w1s + mt * 16 * a.ldw1, a.ldw1, xs + nt * 8, a.ldi, a.cp / 8, lane);
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int row = mt * 16 + g + (r >> 1) * 8, q = nt * 8 + 2 * t + (r & 1);
      const int m = m0 + row;
      float v = 0.f;
      if (q < p_in && m < a.m) {
        const int iy = iy0 + q / a.in_w, ix = ix0 + q % a.in_w;
        if (iy >= 0 && iy < a.h && ix >= 0 && ix < a.w) v = a.pw1.act(c[r] + __ldg(a.pw1.b + m));
      }
      t1[row * a.ldi + q] = v;
    }
  }
}

// The depthwise stage: out[chunk][ldo] over the output tile from src[chunk][ldi] (the input
// region); rows beyond the channel count and padding columns are zero. With `store`, the result
// is the op's output (PW->DW) and goes to device memory instead. A warp per channel, its K x K
// weights in registers.
template <int K>
__device__ void DepthwiseStageK(const ChainArgs& a, const float* src, int m0, int n, int oy0, int ox0, float* out,
                                bool store) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int p_out = a.tile_h * a.tile_w, s = a.stride;
  const int width = store ? p_out : RoundUp(p_out, 8);
  for (int mm = warp; mm < a.chunk; mm += kWarps) {
    const int m = m0 + mm;
    if (m >= a.m) {
      if (!store)
        for (int p = lane; p < width; p += 32) out[mm * a.ldo + p] = 0.f;
      continue;
    }
    float wk[K * K];
#pragma unroll
    for (int i = 0; i < K * K; ++i) wk[i] = __ldg(a.dw.w + static_cast<size_t>(m) * K * K + i);
    const float bias = __ldg(a.dw.b + m);
    const float* plane = src + mm * a.ldi;
    for (int p = lane; p < width; p += 32) {
      float v = 0.f;
      if (p < p_out) {
        const int py = p / a.tile_w, px = p - py * a.tile_w;
        const float* in = plane + (py * s) * a.in_w + px * s;
        float acc = bias;
#pragma unroll
        for (int kh = 0; kh < K; ++kh)
#pragma unroll
          for (int kw = 0; kw < K; ++kw) acc = fmaf(wk[kh * K + kw], in[kh * a.in_w + kw], acc);
        v = a.dw.act(acc);
        if (store) {
          const int oy = oy0 + py, ox = ox0 + px;
          if (oy < a.out_h && ox < a.out_w) a.y[((static_cast<size_t>(n) * a.m + m) * a.out_h + oy) * a.out_w + ox] = v;
          continue;
        }
      }
      out[mm * a.ldo + p] = v;
    }
  }
}

__device__ void DepthwiseStage(const ChainArgs& a, const float* src, int m0, int n, int oy0, int ox0, float* out,
                               bool store) {
  switch (a.kernel) {
    case 3: DepthwiseStageK<3>(a, src, m0, n, oy0, ox0, out, store); break;
    case 5: DepthwiseStageK<5>(a, src, m0, n, oy0, ox0, out, store); break;
    default: DepthwiseStageK<7>(a, src, m0, n, oy0, ox0, out, store); break;
  }
}

// ---- the kernel -------------------------------------------------------------------------------

template <bool kPw1, bool kDw, bool kPwl, bool kTf32>
__global__ void __launch_bounds__(kThreads) ChainKernel(ChainArgs a) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.y;
  const int ty = blockIdx.x / a.tiles_w, tx = blockIdx.x - ty * a.tiles_w;
  const int oy0 = ty * a.tile_h, ox0 = tx * a.tile_w;
  const int iy0 = kDw ? oy0 * a.stride - a.pad_top : oy0;
  const int ix0 = kDw ? ox0 * a.stride - a.pad_left : ox0;
  const int p_out = a.tile_h * a.tile_w;

  int f0 = 0, share = 0, m_begin, m_end;
  if constexpr (kPwl) {
    const int ft = blockIdx.z % a.f_tiles;
    share = blockIdx.z / a.f_tiles;
    f0 = ft * a.tile_f;
    m_begin = share * a.m_per_split;
    m_end = min(a.m, m_begin + a.m_per_split);
  } else {
    m_begin = blockIdx.z * a.chunk;
    m_end = min(a.m, m_begin + a.chunk);
  }

  // shared memory (SharedBytes sizes it): the input tile, the first stage's output, the last
  // stage's input (PW->PW: the first stage's output itself), the staged weights of both
  float* next = smem;
  float* xs = next;
  next += (kPw1 ? a.cp : a.chunk) * a.ldi;
  float* t1 = kPw1 ? next : nullptr;
  next += kPw1 ? a.chunk * a.ldi : 0;
  float* u = (kDw && kPwl) ? next : t1;
  next += (kDw && kPwl) ? a.chunk * a.ldo : 0;
  float* w1s = next;
  next += kPw1 ? a.chunk * a.ldw1 : 0;
  float* wls = next;
  const int tf16 = kPwl ? RoundUp(min(a.tile_f, a.f - f0), 16) : 0;

  if constexpr (kPw1) {
    LoadTile(a, n, 0, a.c, a.cp, iy0, ix0, xs);
    WaitCopies();
    __syncthreads();
    ScaleTile(a, n, a.c, xs);
  }

  float acc[kMaxTilesPerWarp][4];
#pragma unroll
  for (int j = 0; j < kMaxTilesPerWarp; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  const int n_tiles_out = RoundUp(p_out, 8) / 8;
  const int out_tiles = (tf16 / 16) * n_tiles_out;

  for (int m0 = m_begin; m0 < m_end; m0 += a.chunk) {
    // this chunk's weights of the last stage are copied while the first stages run
    if constexpr (kPwl) StageWeights(a.pwl.w, a.f, a.m, f0, m0, tf16, a.chunk, wls, a.ldwl);
    if constexpr (kPw1) {
      StageWeights(a.pw1.w, a.m, a.c, m0, 0, a.chunk, a.cp, w1s, a.ldw1);
      WaitCopies();
      __syncthreads();
      PointwiseToShared<kTf32>(a, w1s, xs, m0, iy0, ix0, t1);
    } else {
      LoadTile(a, n, m0, min(a.chunk, a.m - m0), a.chunk, iy0, ix0, xs);  // DW->PW: this chunk's channels
      WaitCopies();
    }
    __syncthreads();
    if constexpr (kDw) {
      DepthwiseStage(a, kPw1 ? t1 : xs, m0, n, oy0, ox0, u, !kPwl);
      __syncthreads();
    }
    if constexpr (kPwl) {
#pragma unroll
      for (int j = 0; j < kMaxTilesPerWarp; ++j) {
        const int tile = j * kWarps + warp;
        if (tile < out_tiles) {
          const int mt = tile / n_tiles_out, nt = tile - mt * n_tiles_out;
          MmaTile<kTf32>(acc[j], wls + mt * 16 * a.ldwl, a.ldwl, u + nt * 8, a.ldo, a.chunk / 8, lane);
        }
      }
    }
    __syncthreads();  // the next chunk overwrites the shared buffers
  }

  if constexpr (kPwl) {
    const int g = lane >> 2, t = lane & 3;
    const size_t plane = static_cast<size_t>(a.out_h) * a.out_w;
#pragma unroll
    for (int j = 0; j < kMaxTilesPerWarp; ++j) {
      const int tile = j * kWarps + warp;
      if (tile >= out_tiles) continue;
      const int mt = tile / n_tiles_out, nt = tile - mt * n_tiles_out;
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int f = f0 + mt * 16 + g + (r >> 1) * 8, p = nt * 8 + 2 * t + (r & 1);
        if (f >= a.f || f >= f0 + a.tile_f || p >= p_out) continue;
        const int oy = oy0 + p / a.tile_w, ox = ox0 + p % a.tile_w;
        if (oy >= a.out_h || ox >= a.out_w) continue;
        const size_t at = (static_cast<size_t>(n) * a.f + f) * plane + static_cast<size_t>(oy) * a.out_w + ox;
        if (a.split > 1) {
          a.partial[static_cast<size_t>(share) * a.n * a.f * plane + at] = acc[j][r];
        } else {
          float v = a.pwl.act(acc[j][r] + __ldg(a.pwl.b + f));
          if (a.residual) v = a.res_act(v + __ldg(a.x + at));
          a.y[at] = v;
        }
      }
    }
  }
}

// The epilogue of a split reduction: y = res_act(act(sum of the shares + b) + x).
__global__ void ReduceSplits(ChainArgs a) {
  const size_t plane = static_cast<size_t>(a.out_h) * a.out_w;
  const size_t total = static_cast<size_t>(a.n) * a.f * plane;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total; i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (int s = 0; s < a.split; ++s) sum += a.partial[s * total + i];
    const int f = static_cast<int>((i / plane) % a.f);
    float v = a.pwl.act(sum + __ldg(a.pwl.b + f));
    if (a.residual) v = a.res_act(v + __ldg(a.x + i));
    a.y[i] = v;
  }
}

// ---- host side ---------------------------------------------------------------------------------

using KernelFn = void (*)(ChainArgs);

template <bool kPw1, bool kDw, bool kPwl>
KernelFn PickKernel(bool tf32) {
  return tf32 ? ChainKernel<kPw1, kDw, kPwl, true> : ChainKernel<kPw1, kDw, kPwl, false>;
}

size_t SharedBytes(const ChainArgs& a, bool pw1, bool dw, bool pwl) {
  const int tf16 = pwl ? RoundUp(a.tile_f, 16) : 0;
  size_t floats = static_cast<size_t>(pw1 ? a.cp : a.chunk) * a.ldi;
  if (pw1) floats += static_cast<size_t>(a.chunk) * a.ldi;
  if (pwl && dw) floats += static_cast<size_t>(a.chunk) * a.ldo;
  if (pw1) floats += static_cast<size_t>(a.chunk) * a.ldw1;
  if (pwl) floats += static_cast<size_t>(tf16) * a.ldwl;
  return floats * sizeof(float);
}

int SmCount() {
  static int count = [] {
    int device = 0, sms = 108;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    return sms;
  }();
  return count;
}

int SharedLimit() {
  static int limit = [] {
    int device = 0, bytes = 48 * 1024;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    return bytes;
  }();
  return limit;
}

// Raise a kernel's dynamic shared-memory limit when a launch needs more than it had (once per size).
cudaError_t AllowSharedMemory(KernelFn kernel, size_t bytes) {
  static std::mutex mutex;
  static std::unordered_map<KernelFn, size_t> allowed;
  std::lock_guard<std::mutex> lock(mutex);
  size_t& current = allowed[kernel];
  if (bytes <= current) return cudaSuccess;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (err == cudaSuccess) current = bytes;
  return err;
}

void Geometry(ChainArgs* a, bool dw) {
  a->in_h = dw ? (a->tile_h - 1) * a->stride + a->kernel : a->tile_h;
  a->in_w = dw ? (a->tile_w - 1) * a->stride + a->kernel : a->tile_w;
  a->tiles_w = (a->out_w + a->tile_w - 1) / a->tile_w;
  a->ldi = LdB(a->in_h * a->in_w);
  a->ldo = dw ? LdB(a->tile_h * a->tile_w) : a->ldi;
  a->ldw1 = a->cp + 4;     // A fragments (rows g, columns t) hit 32 banks
  a->ldwl = a->chunk + 4;
}

struct CudaChainKernel {
  ChainSpec spec;
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
};

bool Tf32Allowed(const ChainSpec& spec) {
  const char* force = std::getenv("FCM_CUDA_FP32");  // exact FP32 pointwise stages, for comparisons
  if (force != nullptr && force[0] == '1') return false;
  return spec.allow_tf32;
}

OrtStatusPtr CudaChainKernel::ComputeV2(OrtKernelContext* context) {
  try {
    Ort::KernelContext ctx(context);
    CallShapes s;
    Ort::Status status = CheckCall(spec, ctx, &s);
    if (!status.IsOK()) return status.release();
    auto y = ctx.GetOutput(0, std::vector<int64_t>{s.n, s.out_c, s.out_h, s.out_w});
    if (s.n == 0) return nullptr;
    auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());

    const auto& st = spec.stages;
    const bool pw1 = st.front().type == StageType::kPointwise;
    const bool dw = std::any_of(st.begin(), st.end(), [](const Stage& x) { return x.type == StageType::kDepthwise; });
    const bool pwl = st.back().type == StageType::kPointwise;

    ChainArgs a{};
    a.x = ctx.GetInput(0).GetTensorData<float>();
    a.y = y.GetTensorMutableData<float>();
    a.n = static_cast<int>(s.n), a.c = static_cast<int>(s.c), a.h = static_cast<int>(s.h), a.w = static_cast<int>(s.w);
    a.out_h = static_cast<int>(s.out_h), a.out_w = static_cast<int>(s.out_w);
    size_t index = 0;
    auto next_stage = [&](StageArgs* out) {
      out->w = ctx.GetInput(spec.WeightInput(index)).GetTensorData<float>();
      out->b = ctx.GetInput(spec.BiasInput(index)).GetTensorData<float>();
      out->act = st[index].activation;
      ++index;
    };
    if (pw1) next_stage(&a.pw1);
    if (dw) {
      const Stage& d = st[index];
      a.kernel = static_cast<int>(d.kernel), a.stride = static_cast<int>(d.stride);
      a.pad_top = static_cast<int>(d.pads[0]), a.pad_left = static_cast<int>(d.pads[1]);
      next_stage(&a.dw);
    }
    if (pwl) next_stage(&a.pwl);
    // the chunked (intermediate) channels: the input of the last PW stage, or PW->DW's output
    const auto last_weights = ctx.GetInput(spec.WeightInput(st.size() - 1)).GetTensorTypeAndShapeInfo().GetShape();
    a.m = static_cast<int>(pwl ? last_weights[1] : last_weights[0]);
    a.f = pwl ? static_cast<int>(s.out_c) : 0;
    if (s.scale_batch > 0) {
      a.scale = ctx.GetInput(spec.ScaleInput()).GetTensorData<float>();
      a.scale_batch = static_cast<int>(s.scale_batch);
    }
    a.residual = spec.residual;
    a.res_act = spec.residual_activation;
    a.cp = RoundUp(a.c, 8);

    // The tiling: the planner's, when the call's batch is the one it planned for and its tiles are
    // not too small to pay for a block; otherwise tiles of 64-128 pixels. Then shrunk until it fits
    // shared memory and registers, and split (or shrunk) until the blocks fill the GPU.
    const Tiling& t = spec.tiling;
    const bool planned = t.tile_h > 0 && t.tile_w > 0 && (spec.plan_batch == 0 || spec.plan_batch == s.n) &&
                         t.tile_h * t.tile_w >= std::min<int64_t>(64, s.out_h * s.out_w);
    if (planned) {
      a.tile_h = static_cast<int>(std::min<int64_t>(t.tile_h, s.out_h));
      a.tile_w = static_cast<int>(std::min<int64_t>(t.tile_w, s.out_w));
    } else {
      a.tile_w = static_cast<int>(std::min<int64_t>(s.out_w, 16));
      a.tile_h = static_cast<int>(std::min<int64_t>(s.out_h, std::max(1, 128 / a.tile_w)));
    }
    a.chunk = RoundUp(static_cast<int>(std::clamp<int64_t>(planned && t.chunk > 0 ? t.chunk : 32, 16, 64)), 16);
    a.chunk = std::min(a.chunk, RoundUp(a.m, 16));
    a.tile_f = pwl ? static_cast<int>(planned && t.tile_f > 0 ? std::min<int64_t>(t.tile_f, a.f) : a.f) : 0;
    auto fit_tile_f = [&] {  // the last stage's accumulators must fit the warps' registers
      if (!pwl) return;
      const int n_tiles = RoundUp(a.tile_h * a.tile_w, 8) / 8;
      const int max_m_tiles = std::max(1, kWarps * kMaxTilesPerWarp / n_tiles);
      a.tile_f = std::min(a.tile_f, max_m_tiles * 16);
    };
    for (;;) {
      Geometry(&a, dw);
      fit_tile_f();
      const int n_tiles = RoundUp(a.tile_h * a.tile_w, 8) / 8;
      const bool fits_registers = !pwl || n_tiles <= kWarps * kMaxTilesPerWarp;
      if (fits_registers && SharedBytes(a, pw1, dw, pwl) <= static_cast<size_t>(SharedLimit())) break;
      if (a.chunk > 16) {
        a.chunk -= 16;
      } else if (a.tile_h >= a.tile_w && a.tile_h > 1) {
        a.tile_h = (a.tile_h + 1) / 2;
      } else if (a.tile_w > 1) {
        a.tile_w = (a.tile_w + 1) / 2;
      } else {
        return Ort::Status("FCM CUDA: the input tile does not fit in shared memory (too many input channels)",
                           ORT_NOT_IMPLEMENTED).release();
      }
    }
    if (pwl && a.tile_f < a.f) a.tile_f = std::max(16, a.tile_f / 16 * 16);  // blocks' filter ranges must not overlap
    a.f_tiles = pwl ? (a.f + a.tile_f - 1) / a.tile_f : 1;
    a.split = pwl ? static_cast<int>(std::clamp<int64_t>(planned ? t.split : 1, 1, std::max(1, a.m / a.chunk))) : 1;
    auto blocks = [&] {
      const int z = pwl ? a.f_tiles * a.split : (a.m + a.chunk - 1) / a.chunk;
      return static_cast<int64_t>((a.out_h + a.tile_h - 1) / a.tile_h) * a.tiles_w * a.n * z;
    };
    const int64_t enough = 2 * static_cast<int64_t>(SmCount());
    if (!planned) {
      while (blocks() < enough && pwl && a.split * 2 * a.chunk <= a.m) a.split *= 2;
      while (blocks() < enough && a.tile_h * a.tile_w > 32) {
        if (a.tile_h >= a.tile_w) a.tile_h = (a.tile_h + 1) / 2; else a.tile_w = (a.tile_w + 1) / 2;
        Geometry(&a, dw);
      }
    }
    a.m_per_split = RoundUp((a.m + a.split - 1) / a.split, a.chunk);
    a.split = (a.m + a.m_per_split - 1) / a.m_per_split;

    const int tiles = ((a.out_h + a.tile_h - 1) / a.tile_h) * a.tiles_w;
    const int z = pwl ? a.f_tiles * a.split : (a.m + a.chunk - 1) / a.chunk;
    if (a.n > 65535) return Ort::Status("FCM CUDA: batch larger than 65535", ORT_NOT_IMPLEMENTED).release();

    KernelFn kernel = nullptr;
    if (pw1 && dw && pwl) kernel = PickKernel<true, true, true>(Tf32Allowed(spec));
    if (!pw1 && dw && pwl) kernel = PickKernel<false, true, true>(Tf32Allowed(spec));
    if (pw1 && !dw && pwl) kernel = PickKernel<true, false, true>(Tf32Allowed(spec));
    if (pw1 && dw && !pwl) kernel = PickKernel<true, true, false>(Tf32Allowed(spec));
    if (kernel == nullptr) return Ort::Status("FCM CUDA: unknown stage sequence", ORT_INVALID_ARGUMENT).release();
    const size_t smem = SharedBytes(a, pw1, dw, pwl);
    cudaError_t err = AllowSharedMemory(kernel, smem);
    if (err != cudaSuccess) return Ort::Status(cudaGetErrorString(err), ORT_EP_FAIL).release();

    // split shares go through a workspace from ONNX Runtime's allocator (stream-ordered reuse)
    OrtAllocator* allocator = nullptr;
    void* workspace = nullptr;
    if (a.split > 1) {
      int device = 0;
      cudaGetDevice(&device);
      Ort::MemoryInfo device_memory("Cuda", OrtArenaAllocator, device, OrtMemTypeDefault);
      allocator = ctx.GetAllocator(*static_cast<const OrtMemoryInfo*>(device_memory));
      if (allocator == nullptr) return Ort::Status("FCM CUDA: no device allocator", ORT_EP_FAIL).release();
      const size_t bytes = sizeof(float) * static_cast<size_t>(a.split) * a.n * a.f * a.out_h * a.out_w;
      workspace = allocator->Alloc(allocator, bytes);
      a.partial = static_cast<float*>(workspace);
    }
    kernel<<<dim3(tiles, a.n, z), kThreads, smem, stream>>>(a);
    err = cudaGetLastError();
    if (err == cudaSuccess && a.split > 1) {
      const size_t total = static_cast<size_t>(a.n) * a.f * a.out_h * a.out_w;
      const int blocks = static_cast<int>(std::min<size_t>((total + 255) / 256, 65535));
      ReduceSplits<<<blocks, 256, 0, stream>>>(a);
      err = cudaGetLastError();
    }
    if (workspace != nullptr) allocator->Free(allocator, workspace);
    if (err != cudaSuccess) return Ort::Status((std::string("FCM CUDA: ") + cudaGetErrorString(err)).c_str(), ORT_EP_FAIL).release();
    return nullptr;
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  } catch (const std::exception& e) {
    return Ort::Status(e.what(), ORT_RUNTIME_EXCEPTION).release();
  }
}

}  // namespace

std::unique_ptr<OrtCustomOp> MakeCudaOp(const char* name, size_t stages) {
  return std::make_unique<FusedOp<CudaChainKernel>>(name, "CUDAExecutionProvider", stages);
}

}  // namespace fcm
