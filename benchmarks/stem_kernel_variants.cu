// Variants of the stem convolution kernel timed alone (the layer op's CUDA kernel, conv_layer_cuda.cu, took
// the fastest): MobileNetV2's stem at batch 32 (3x3 stride 2, 3 -> 32 channels, NHWC, ReLU6), CUDA events
// over 50 launches, and the time to write its output alone (the bound). GPU machine:
//
//   nvcc -O3 -arch=sm_90a -std=c++17 -o stem_kernel_variants benchmarks/stem_kernel_variants.cu && ./stem_kernel_variants
//
// A: the general loops (runtime kernel size and channels), FT output channels a thread, scalar weight
//    reads from shared memory; B: 3x3x3 unrolled, 16-byte weight reads, FT = 4, 8, 16, 32; C: as B with
//    FT = 16, the CTA's output tile through shared memory for coalesced stores; D: as B, two adjacent
//    output pixels a thread; E: a CTA per output row, its input rows staged in shared memory (D and E are
//    checked against A's output on random data before they are timed).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>
#include <cuda_runtime.h>
struct Args { const float* x; const float* w; const float* b; float* y; int n, h, wi, c, f, oh, ow, k, s, pt, pl; };

// A: runtime loops, FT channels per thread, staged [tap][c][f] scalar smem reads
template <int FT> __global__ void __launch_bounds__(256) VarA(Args a, unsigned work) {
  extern __shared__ float st[];
  const int taps = a.k * a.k;
  for (int i = threadIdx.x; i < taps * a.c * a.f; i += blockDim.x) { int f = i % a.f, r = i / a.f, c = r % a.c, t = r / a.c; st[i] = a.w[(f * a.c + c) * taps + t]; }
  __syncthreads();
  const unsigned slices = a.f / FT;
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < work; idx += gridDim.x * blockDim.x) {
    int f0 = (idx % slices) * FT, p = idx / slices; int ox = p % a.ow, oy = (p / a.ow) % a.oh, im = p / (a.ow * a.oh);
    float acc[FT]; for (int j = 0; j < FT; ++j) acc[j] = a.b[f0 + j];
    for (int ky = 0; ky < a.k; ++ky) { int iy = oy * a.s - a.pt + ky; if (iy < 0 || iy >= a.h) continue;
      for (int kx = 0; kx < a.k; ++kx) { int ix = ox * a.s - a.pl + kx; if (ix < 0 || ix >= a.wi) continue;
        const float* in = a.x + ((size_t)(im * a.h + iy) * a.wi + ix) * a.c; int t = ky * a.k + kx;
        for (int c = 0; c < a.c; ++c) { float v = __ldg(in + c);
#pragma unroll
          for (int j = 0; j < FT; ++j) acc[j] = fmaf(v, st[(t * a.c + c) * a.f + f0 + j], acc[j]); } } }
#pragma unroll
    for (int j = 0; j < FT; ++j) acc[j] = fminf(fmaxf(acc[j], 0.f), 6.f);
    float4* out = reinterpret_cast<float4*>(a.y + (size_t)p * a.f + f0);
#pragma unroll
    for (int i = 0; i < FT / 4; ++i) out[i] = make_float4(acc[4*i], acc[4*i+1], acc[4*i+2], acc[4*i+3]);
  }
}
// the weights into shared memory as [tap][c][f] (every variant's CTA does this once)
template <int C> __device__ void StageWeights(const Args& a, float* st, int taps) {
  for (int i = threadIdx.x; i < taps * C * a.f; i += blockDim.x) { int f = i % a.f, r = i / a.f, c = r % C, t = r / C; st[i] = a.w[(f * C + c) * taps + t]; }
  __syncthreads();
}
// acc += the K x K x C window of output pixel p, channels f0..f0+FT (16-byte weight reads)
template <int K, int C, int FT> __device__ __forceinline__ void UnrolledSums(const Args& a, const float* st, unsigned p, int f0, float (&acc)[FT]) {
  int ox = p % a.ow, oy = (p / a.ow) % a.oh, im = p / (a.ow * a.oh);
  const int iy0 = oy * a.s - a.pt, ix0 = ox * a.s - a.pl;
#pragma unroll
  for (int ky = 0; ky < K; ++ky) { int iy = iy0 + ky; if (iy < 0 || iy >= a.h) continue;
#pragma unroll
    for (int kx = 0; kx < K; ++kx) { int ix = ix0 + kx; if (ix < 0 || ix >= a.wi) continue;
      const float* in = a.x + ((size_t)(im * a.h + iy) * a.wi + ix) * C;
#pragma unroll
      for (int c = 0; c < C; ++c) { float v = __ldg(in + c);
        const float4* wr = reinterpret_cast<const float4*>(st + ((ky * K + kx) * C + c) * a.f + f0);
#pragma unroll
        for (int q = 0; q < FT / 4; ++q) { float4 w4 = wr[q];
          acc[4*q] = fmaf(v, w4.x, acc[4*q]); acc[4*q+1] = fmaf(v, w4.y, acc[4*q+1]); acc[4*q+2] = fmaf(v, w4.z, acc[4*q+2]); acc[4*q+3] = fmaf(v, w4.w, acc[4*q+3]); } } } }
}
// B: compile-time K, C; float4 smem weight reads; FT channels per thread
template <int K, int C, int FT> __global__ void __launch_bounds__(256) VarB(Args a, unsigned work) {
  extern __shared__ float st[];
  StageWeights<C>(a, st, K * K);
  const unsigned slices = a.f / FT;
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < work; idx += gridDim.x * blockDim.x) {
    int f0 = (idx % slices) * FT; unsigned p = idx / slices;
    float acc[FT];
#pragma unroll
    for (int j = 0; j < FT; ++j) acc[j] = a.b[f0 + j];
    UnrolledSums<K, C, FT>(a, st, p, f0, acc);
#pragma unroll
    for (int j = 0; j < FT; ++j) acc[j] = fminf(fmaxf(acc[j], 0.f), 6.f);
    float4* out = reinterpret_cast<float4*>(a.y + (size_t)p * a.f + f0);
#pragma unroll
    for (int i = 0; i < FT / 4; ++i) out[i] = make_float4(acc[4*i], acc[4*i+1], acc[4*i+2], acc[4*i+3]);
  }
}
// C: as B FT16, but the block's output tile goes through shared memory: coalesced 16-byte stores
template <int K, int C, int FT> __global__ void __launch_bounds__(256) VarC(Args a, unsigned tiles) {
  extern __shared__ float st[];
  float* tile = st + K * K * C * 32;  // 256 / (32 / FT) pixels x 32 channels
  StageWeights<C>(a, st, K * K);
  constexpr int slices = 32 / FT, pixels = 256 / slices;
  const unsigned total_pixels = a.n * a.oh * a.ow;
  for (unsigned t0 = blockIdx.x; t0 < tiles; t0 += gridDim.x) {
    const int f0 = (threadIdx.x % slices) * FT; const unsigned p = t0 * pixels + threadIdx.x / slices;
    float acc[FT];
#pragma unroll
    for (int j = 0; j < FT; ++j) acc[j] = a.b[f0 + j];
    if (p < total_pixels) UnrolledSums<K, C, FT>(a, st, p, f0, acc);
    __syncthreads();
    float4* mine = reinterpret_cast<float4*>(tile + (threadIdx.x / slices) * 32 + f0);
#pragma unroll
    for (int q = 0; q < FT / 4; ++q) mine[q] = make_float4(fminf(fmaxf(acc[4*q],0.f),6.f), fminf(fmaxf(acc[4*q+1],0.f),6.f), fminf(fmaxf(acc[4*q+2],0.f),6.f), fminf(fmaxf(acc[4*q+3],0.f),6.f));
    __syncthreads();
    const unsigned base = t0 * pixels; const unsigned valid = min((unsigned)pixels, total_pixels - base);
    float4* out = reinterpret_cast<float4*>(a.y + (size_t)base * 32);
    const float4* from = reinterpret_cast<const float4*>(tile);
    for (unsigned i = threadIdx.x; i < valid * 8; i += 256) out[i] = from[i];
  }
}
// D: as B, but two horizontally adjacent output pixels a thread (with stride 2 they share an input
// column): each 16-byte weight read from shared memory serves both pixels
template <int K, int C, int FT> __global__ void __launch_bounds__(256) VarD(Args a, unsigned work) {
  extern __shared__ float st[];
  StageWeights<C>(a, st, K * K);
  const unsigned slices = a.f / FT, pairs_w = (a.ow + 1) / 2;
  for (unsigned idx = blockIdx.x * blockDim.x + threadIdx.x; idx < work; idx += gridDim.x * blockDim.x) {
    const int f0 = (idx % slices) * FT; const unsigned q = idx / slices;
    const int ox0 = (q % pairs_w) * 2, oy = (q / pairs_w) % a.oh, im = q / (pairs_w * a.oh);
    const bool second = ox0 + 1 < a.ow;
    float acc[2][FT];
#pragma unroll
    for (int j = 0; j < FT; ++j) acc[0][j] = acc[1][j] = a.b[f0 + j];
    const int iy0 = oy * a.s - a.pt, ix0 = ox0 * a.s - a.pl;
#pragma unroll
    for (int ky = 0; ky < K; ++ky) { const int iy = iy0 + ky; if (iy < 0 || iy >= a.h) continue;
      const float* row = a.x + (size_t)(im * a.h + iy) * a.wi * C;
      float in[2][K][C];
#pragma unroll
      for (int e = 0; e < 2; ++e)
#pragma unroll
        for (int kx = 0; kx < K; ++kx) { const int ix = ix0 + e * a.s + kx; const bool ok = ix >= 0 && ix < a.wi && (e == 0 || second);
#pragma unroll
          for (int c = 0; c < C; ++c) in[e][kx][c] = ok ? __ldg(row + ix * C + c) : 0.f; }
#pragma unroll
      for (int kx = 0; kx < K; ++kx)
#pragma unroll
        for (int c = 0; c < C; ++c) {
          const float4* wr = reinterpret_cast<const float4*>(st + ((ky * K + kx) * C + c) * a.f + f0);
#pragma unroll
          for (int g = 0; g < FT / 4; ++g) { const float4 w4 = wr[g];
#pragma unroll
            for (int e = 0; e < 2; ++e) { const float v = in[e][kx][c];
              acc[e][4*g] = fmaf(v, w4.x, acc[e][4*g]); acc[e][4*g+1] = fmaf(v, w4.y, acc[e][4*g+1]);
              acc[e][4*g+2] = fmaf(v, w4.z, acc[e][4*g+2]); acc[e][4*g+3] = fmaf(v, w4.w, acc[e][4*g+3]); } } } }
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      if (e == 1 && !second) break;
      float4* out = reinterpret_cast<float4*>(a.y + ((size_t)(im * a.oh + oy) * a.ow + ox0 + e) * a.f + f0);
#pragma unroll
      for (int i = 0; i < FT / 4; ++i) out[i] = make_float4(fminf(fmaxf(acc[e][4*i], 0.f), 6.f), fminf(fmaxf(acc[e][4*i+1], 0.f), 6.f),
                                                            fminf(fmaxf(acc[e][4*i+2], 0.f), 6.f), fminf(fmaxf(acc[e][4*i+3], 0.f), 6.f));
    }
  }
}
// E: a CTA per output row: its K input rows staged in shared memory (coalesced loads, zero outside the
// image), then a thread per (pixel, slice of FT channels) as B, its inputs read from there
template <int K, int C, int FT> __global__ void __launch_bounds__(256) VarE(Args a, unsigned rows) {
  extern __shared__ float st[];
  float* in = st + K * K * C * a.f;  // [K][wi + 2 * pad][C]
  StageWeights<C>(a, st, K * K);
  const int slices = a.f / FT, padded_w = a.wi + 2 * (K - 1);
  for (unsigned r = blockIdx.x; r < rows; r += gridDim.x) {
    const int oy = r % a.oh, im = r / a.oh;
    __syncthreads();  // the previous row's reads are done
    for (int i = threadIdx.x; i < K * padded_w * C; i += blockDim.x) {
      const int ky = i / (padded_w * C), rest = i % (padded_w * C), px = rest / C - (K - 1), c = rest % C;
      const int iy = oy * a.s - a.pt + ky;
      in[i] = iy >= 0 && iy < a.h && px >= 0 && px < a.wi ? __ldg(a.x + ((size_t)(im * a.h + iy) * a.wi + px) * C + c) : 0.f;
    }
    __syncthreads();
    for (int t = threadIdx.x; t < a.ow * slices; t += blockDim.x) {
      const int ox = t / slices, f0 = (t % slices) * FT;
      float acc[FT];
#pragma unroll
      for (int j = 0; j < FT; ++j) acc[j] = a.b[f0 + j];
#pragma unroll
      for (int ky = 0; ky < K; ++ky)
#pragma unroll
        for (int kx = 0; kx < K; ++kx)
#pragma unroll
          for (int c = 0; c < C; ++c) {
            const float v = in[(ky * padded_w + ox * a.s - a.pl + kx + (K - 1)) * C + c];
            const float4* wr = reinterpret_cast<const float4*>(st + ((ky * K + kx) * C + c) * a.f + f0);
#pragma unroll
            for (int g = 0; g < FT / 4; ++g) { const float4 w4 = wr[g];
              acc[4*g] = fmaf(v, w4.x, acc[4*g]); acc[4*g+1] = fmaf(v, w4.y, acc[4*g+1]); acc[4*g+2] = fmaf(v, w4.z, acc[4*g+2]); acc[4*g+3] = fmaf(v, w4.w, acc[4*g+3]); } }
      float4* out = reinterpret_cast<float4*>(a.y + ((size_t)(im * a.oh + oy) * a.ow + ox) * a.f + f0);
#pragma unroll
      for (int i = 0; i < FT / 4; ++i) out[i] = make_float4(fminf(fmaxf(acc[4*i], 0.f), 6.f), fminf(fmaxf(acc[4*i+1], 0.f), 6.f),
                                                            fminf(fmaxf(acc[4*i+2], 0.f), 6.f), fminf(fmaxf(acc[4*i+3], 0.f), 6.f));
    }
  }
}
// copy floor: write 51 MB
__global__ void Fill(float4* y, size_t n) { for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) y[i] = make_float4(1, 2, 3, 4); }

int main() {
  Args a{}; a.n = 32; a.h = 224; a.wi = 224; a.c = 3; a.f = 32; a.k = 3; a.s = 2; a.pt = 0; a.pl = 0; a.oh = 112; a.ow = 112;
  size_t nx = (size_t)a.n * a.h * a.wi * a.c, ny = (size_t)a.n * a.oh * a.ow * a.f;
  float *x, *w, *b, *y; cudaMalloc(&x, nx * 4); cudaMalloc(&w, 27 * 32 * 4); cudaMalloc(&b, 32 * 4); cudaMalloc(&y, ny * 4);
  std::vector<float> hx(nx, 0.5f), hw(27 * 32, 0.1f), hb(32, 0.f);
  cudaMemcpy(x, hx.data(), nx * 4, cudaMemcpyHostToDevice); cudaMemcpy(w, hw.data(), hw.size() * 4, cudaMemcpyHostToDevice); cudaMemcpy(b, hb.data(), 128, cudaMemcpyHostToDevice);
  a.x = x; a.w = w; a.b = b; a.y = y;
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  auto time = [&](const char* name, auto launch) {
    for (int i = 0; i < 5; ++i) launch(); cudaEventRecord(e0); for (int i = 0; i < 50; ++i) launch(); cudaEventRecord(e1); cudaEventSynchronize(e1);
    float ms; cudaEventElapsedTime(&ms, e0, e1); printf("%-28s %8.2f us  %s\n", name, ms * 1000 / 50, cudaGetErrorString(cudaGetLastError()));
  };
  int sms; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  size_t smem = 27 * 32 * 4;
  for (int mult : {4, 16, 1000}) {
    char buf[64];
    unsigned work8 = ny / 8, work4 = ny / 4, work16 = ny / 16, work32 = ny / 32;
    auto grid = [&](unsigned work) { return (int)std::min<unsigned>((work + 255) / 256, (unsigned)(mult * 8 * sms)); };
    sprintf(buf, "A FT8 x%d", mult); time(buf, [&] { VarA<8><<<grid(work8), 256, smem>>>(a, work8); });
    sprintf(buf, "B FT4 x%d", mult); time(buf, [&] { VarB<3, 3, 4><<<grid(work4), 256, smem>>>(a, work4); });
    sprintf(buf, "B FT8 x%d", mult); time(buf, [&] { VarB<3, 3, 8><<<grid(work8), 256, smem>>>(a, work8); });
    sprintf(buf, "B FT16 x%d", mult); time(buf, [&] { VarB<3, 3, 16><<<grid(work16), 256, smem>>>(a, work16); });
    sprintf(buf, "B FT32 x%d", mult); time(buf, [&] { VarB<3, 3, 32><<<grid(work32), 256, smem>>>(a, work32); });
  }
  for (int mult : {4, 16}) {
    char buf[64];
    unsigned tiles16 = (ny / 32 + 127) / 128;
    size_t sm16 = smem + 128 * 32 * 4;
    auto grid = [&](unsigned tiles) { return (int)std::min<unsigned>(tiles, (unsigned)(mult * 8 * sms)); };
    sprintf(buf, "C FT16 x%d", mult); time(buf, [&] { VarC<3, 3, 16><<<grid(tiles16), 256, sm16>>>(a, tiles16); });
  }
  // D and E, each checked against A's output (random data) before it is timed
  std::vector<float> rx(nx), rw(27 * 32), rb(32);
  unsigned seed = 1;
  auto rnd = [&] { seed = seed * 1664525u + 1013904223u; return (seed >> 8) / 16777216.0f - 0.5f; };
  for (auto& v : rx) v = rnd() * 4;
  for (auto& v : rw) v = rnd();
  for (auto& v : rb) v = rnd();
  cudaMemcpy(x, rx.data(), nx * 4, cudaMemcpyHostToDevice); cudaMemcpy(w, rw.data(), rw.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(b, rb.data(), 128, cudaMemcpyHostToDevice);
  a.pt = 0; a.pl = 0;  // (TensorFlow's SAME at stride 2 on an even size: the extra row and column after)
  float* want; cudaMalloc(&want, ny * 4);
  { unsigned work8 = ny / 8; Args r = a; r.y = want; VarA<8><<<(work8 + 255) / 256, 256, smem>>>(r, work8); }
  std::vector<float> hwant(ny), hgot(ny);
  cudaMemcpy(hwant.data(), want, ny * 4, cudaMemcpyDeviceToHost);
  auto check = [&](const char* name) {
    cudaMemcpy(hgot.data(), y, ny * 4, cudaMemcpyDeviceToHost);
    double worst = 0; for (size_t i = 0; i < ny; ++i) worst = std::max(worst, (double)std::fabs(hgot[i] - hwant[i]));
    printf("%-28s max |diff| from A %.3g%s\n", name, worst, worst > 1e-4 ? "  WRONG" : "");
  };
  for (int mult : {4, 16}) {
    char buf[64];
    auto grid = [&](unsigned work) { return (int)std::min<unsigned>((work + 255) / 256, (unsigned)(mult * 8 * sms)); };
    unsigned pairs16 = a.n * a.oh * ((a.ow + 1) / 2) * 2, pairs8 = pairs16 * 2;
    cudaMemset(y, 0xff, ny * 4); VarD<3, 3, 16><<<grid(pairs16), 256, smem>>>(a, pairs16); cudaDeviceSynchronize();
    sprintf(buf, "D FT16 x%d", mult); check(buf); time(buf, [&] { VarD<3, 3, 16><<<grid(pairs16), 256, smem>>>(a, pairs16); });
    cudaMemset(y, 0xff, ny * 4); VarD<3, 3, 8><<<grid(pairs8), 256, smem>>>(a, pairs8); cudaDeviceSynchronize();
    sprintf(buf, "D FT8 x%d", mult); check(buf); time(buf, [&] { VarD<3, 3, 8><<<grid(pairs8), 256, smem>>>(a, pairs8); });
    unsigned rows = a.n * a.oh;
    size_t sme = smem + 3 * (a.wi + 4) * 3 * 4;
    auto grid_rows = [&](unsigned r) { return (int)std::min<unsigned>(r, (unsigned)(mult * 8 * sms)); };
    cudaMemset(y, 0xff, ny * 4); VarE<3, 3, 16><<<grid_rows(rows), 256, sme>>>(a, rows); cudaDeviceSynchronize();
    sprintf(buf, "E FT16 x%d", mult); check(buf); time(buf, [&] { VarE<3, 3, 16><<<grid_rows(rows), 256, sme>>>(a, rows); });
    cudaMemset(y, 0xff, ny * 4); VarE<3, 3, 8><<<grid_rows(rows), 256, sme>>>(a, rows); cudaDeviceSynchronize();
    sprintf(buf, "E FT8 x%d", mult); check(buf); time(buf, [&] { VarE<3, 3, 8><<<grid_rows(rows), 256, sme>>>(a, rows); });
  }
  time("fill 51MB", [&] { Fill<<<sms * 8, 256>>>((float4*)y, ny / 4); });
  return 0;
}
