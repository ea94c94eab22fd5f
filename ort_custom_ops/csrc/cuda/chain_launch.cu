// The host side of the FCM ops' CUDA kernels: plans (tile, output-channel range, split of the
// intermediate channels) ranked by a cost estimate, and the launch. Independent of ONNX Runtime.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>

#include "../plan_text.h"
#include "chain_device.cuh"
#include "device.h"
#include "launch_config.h"

namespace fcm {
namespace chain {
namespace {

// The epilogue of a split: y = res_act(act2(sum of the shares + b2) + x).
__global__ void ReduceSplits(const KernelArgs a) {
  const ChainProblem& p = a.p;
  const size_t plane = static_cast<size_t>(p.out_h) * p.out_w;
  const size_t total = static_cast<size_t>(p.n) * p.f * plane;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (int s = 0; s < a.split; ++s) sum += a.partial[s * total + i];
    StoreOutput(p, sum, static_cast<int>((i / plane) % p.f), i);
  }
}

// ---- host side ----------------------------------------------------------------------------------

// The kernel a plan with `pixels` per block and `f_tile` output channels per block runs.
KernelFn PickKernel(const ChainProblem& p, int pixels, int f_tile) {
  const int width = WidthFor(p, f_tile);
  if (p.pw1 && p.dw && p.pwl) return PickPwDwPw(p, pixels, width);
  if (!p.pw1 && p.dw && p.pwl) return PickDwPw(p, pixels, width);
  if (p.pw1 && p.dw && !p.pwl) return PickPwDw(p, pixels, width);
  if (p.pw1 && !p.dw && p.pwl) return PickPwPw(p, pixels, width);
  return nullptr;
}

KernelArgs MakeArgs(const ChainProblem& p, const ChainPlan& plan, float* partial) {
  KernelArgs a{};
  a.p = p;
  a.partial = partial;
  a.tile_h = plan.tile_h, a.tile_w = plan.tile_w;
  a.tiles_w = (p.out_w + a.tile_w - 1) / a.tile_w;
  a.thw = a.tile_h * a.tile_w;
  a.in_h = p.dw ? (a.tile_h - 1) * p.stride + p.kernel : a.tile_h;
  a.in_w = p.dw ? (a.tile_w - 1) * p.stride + p.kernel : a.tile_w;
  a.in_hw = a.in_h * a.in_w;
  // Without a first pointwise stage (DW->PW) the region is only read by the depthwise stage, so it
  // may be held wider than needed: whole 16-byte pieces from a 4-aligned image column, when every
  // block's region starts at the same offset from one (tile_w * stride % 4 == 0) and image rows
  // are 16-byte aligned.
  a.region_vec = !p.pw1 && p.w % 4 == 0 && reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && (a.tile_w * p.stride) % 4 == 0;
  a.col_shift = a.region_vec ? ((-p.pad_left % 4) + 4) % 4 : 0;
  a.row_w = a.region_vec ? RoundUp(a.col_shift + a.in_w, 4) : a.in_w;
  a.units = a.region_vec ? a.row_w / 4 : a.in_w;
  a.units_div = DivReciprocal(a.units);
  const int step_lines = kThreads / a.units;
  a.step_u = kThreads - step_lines * a.units;
  a.step_ch = step_lines / a.in_h;
  a.step_r = step_lines - a.step_ch * a.in_h;
  a.cp = RoundUp(p.c, 8);
  a.ks1 = a.cp / 8;
  a.ldx = LdB(a.in_h * a.row_w);
  a.ldt = LdB(a.in_hw);
  a.ldu = LdB(plan.pixels);
  a.ldw1 = a.cp + 4;
  // 16-byte weight copies need every row 16-byte aligned in device memory
  auto aligned = [](const float* w, int ld) { return ld % 4 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0; };
  a.w1_vec = p.pw1 && aligned(p.w1, p.c);
  a.w2_vec = p.pwl && aligned(p.w2, p.m);
  a.in_h_div = DivReciprocal(a.in_h);
  a.w1_row_div = DivReciprocal(std::max(1, a.cp / 4));
  a.f_tile = p.pwl ? plan.f_tile : 0;
  a.f_tiles = p.pwl ? (p.f + plan.f_tile - 1) / plan.f_tile : 1;
  a.ftp = RoundUp(a.f_tile, 16);
  a.chunks = (p.m + kChunk - 1) / kChunk;
  a.chunks_per_split = (a.chunks + plan.split - 1) / plan.split;
  a.buffers = plan.buffers;
  a.w1_direct = plan.w1_direct;
  a.split = plan.split;
  a.cluster = plan.cluster;
  return a;
}

size_t SharedBytes(const ChainProblem& p, const KernelArgs& a, int pixels) {
  size_t floats = p.pw1 ? static_cast<size_t>(a.cp) * a.ldx : static_cast<size_t>(a.buffers) * kChunk * a.ldx;
  if (p.pw1) floats += static_cast<size_t>(kChunk) * a.ldt;
  if (p.dw && p.pwl) floats += static_cast<size_t>(kChunk) * a.ldu;
  if (p.pw1 && !a.w1_direct) floats += static_cast<size_t>(a.buffers) * kChunk * a.ldw1;
  if (p.pwl) floats += static_cast<size_t>(a.buffers) * a.ftp * kLdW2;
  size_t bytes = floats * sizeof(float);
  if (p.pw1 && p.dw) bytes += RoundUp(a.ldx, 16);  // the inside-the-image mask
  // a cluster's share of the tile, written over the buffers after the last chunk
  if (a.cluster) bytes = std::max(bytes, sizeof(float) * a.ftp * LdShare(pixels));
  return bytes;
}

int AllowAndOccupancy(KernelFn kernel, size_t bytes) { return CtasPerSm(reinterpret_cast<const void*>(kernel), kThreads, bytes); }

constexpr int kMaxCluster = 16;  // blocks per cluster on sm_90 (above 8 as a non-portable size)

int ClusterCapacity(KernelFn kernel, size_t bytes, int size) {
  return ClustersPerGpu(reinterpret_cast<const void*>(kernel), kThreads, bytes, dim3(1, 1, size));
}

// A rough cost of a plan in microseconds, for ranking plans of one problem. The kernels are
// latency-bound (Nsight Compute on H100: ~1 instruction per cycle and SM with one block of 8 warps,
// ~1.5 with two), so the model counts a block's instructions per warp (staging, the two pointwise
// stages in m16n8k8 steps, the depthwise taps, the epilogues; scaled to the measured times) and
// takes the busiest SM's blocks at that rate, against the device-memory traffic; plus the split's
// reduction.
// FCM_CUDA_COST_SCALE scales the instruction term against the fixed costs (launches, the split's
// reduction, device memory), to try calibrations without a rebuild.
double CostScale() {
  static const double scale = [] {
    const char* text = std::getenv("FCM_CUDA_COST_SCALE");
    const double value = text != nullptr ? std::atof(text) : 1.0;
    return value > 0.0 ? value : 1.0;
  }();
  return scale;
}

double EstimateMicros(const ChainProblem& p, const KernelArgs& a, const ChainPlan& plan, int sms, int per_sm) {
  constexpr double kClockGHz = 1.75, kBytesPerUs = 2.5e6, kLaunchUs = 2.5;
  const double kCalibration = 2.5 * CostScale();
  const int chunks = p.pwl ? a.chunks_per_split : 1;
  const double mma = p.tf32 ? 7.0 : 45.0;  // instructions per m16n8k8 step with its operand loads
  const int kk = p.dw ? p.kernel * p.kernel : 0;
  const int cols = plan.pixels / 64;
  // LoadRegion: a thread's copies of the region (16-byte pieces or floats), 16 units each (not
  // refit: Nsight Compute counts ~48 instructions per copy; kCalibration scales the whole count)
  auto region_copies = [&](int channels) { return std::ceil(static_cast<double>(channels) * a.in_h * a.units / kThreads); };
  double chunk = 60.0;  // loop control and barriers
  if (p.pw1 && !plan.w1_direct) chunk += kChunk * a.cp / 4.0 / kThreads * (a.w1_vec ? 18.0 : 4 * 16.0);
  if (p.pwl) chunk += a.ftp * kChunk / 4.0 / kThreads * (a.w2_vec ? 18.0 : 4 * 16.0);
  if (!p.pw1) chunk += region_copies(kChunk) * 16.0;
  if (p.pw1) {
    const double pairs = std::ceil(std::ceil((a.in_hw + 7) / 8 / 2.0) / kWarps);
    chunk += pairs * (a.ks1 * (2.0 * mma + (plan.w1_direct ? 40.0 : 8.0)) + 100.0);
  }
  if (p.dw) {
    // K 3/5: 8-pixel runs per thread (2 instructions a tap, weights per run); other sizes per pixel
    const double runs = std::ceil(a.tile_w / 8.0) * std::ceil(a.tile_h / 8.0);
    chunk += (p.kernel == 3 || p.kernel == 5) ? runs * (8.0 * (2.0 * kk + 6.0) + kk + 10.0)
                                              : kChunk / (static_cast<double>(kThreads) / plan.pixels) * (3.0 * kk + 20.0);
  }
  if (p.pwl) chunk += kChunkSteps * (2.0 * cols + (a.ftp / 16.0) * (2.0 + cols * mma));
  double block = chunks * chunk + 200.0;
  if (p.pw1) block += region_copies(a.cp) * 16.0 + a.cp * a.ldx / 4.0 / kThreads * 8.0;
  if (p.pwl) block += (a.ftp / 16.0) * cols * 4.0 * 15.0;
  const double busiest = std::ceil(static_cast<double>(plan.blocks) / sms);
  // issue rate per SM against resident blocks (measured on H100: ~1 with one block of 8 warps, ~1.5
  // with two; the values for three and four are a guess, for ranking plans only)
  const double resident = std::min(static_cast<double>(per_sm), busiest);
  const double ipc = resident >= 4 ? 2.0 : resident >= 3 ? 1.8 : resident >= 2 ? 1.5 : 1.0;
  const double compute_us = kCalibration * busiest * block * kWarps / ipc / (kClockGHz * 1e3);
  const double plane_in = static_cast<double>(p.h) * p.w, plane_out = static_cast<double>(p.out_h) * p.out_w;
  const double halo = static_cast<double>(a.in_hw) / std::max(1.0, a.thw * (p.dw ? p.stride * p.stride : 1.0));
  const double bytes = 4.0 * p.n * (p.c * plane_in * (1.0 + 0.3 * (halo - 1.0)) + (p.pwl ? p.f : p.m) * plane_out);
  double us = std::max(compute_us, bytes / kBytesPerUs);
  // a split's shares: a cluster's two waits and its reads of the other blocks' shared memory, or
  // the workspace's round trip and a second launch
  if (plan.split > 1 && plan.cluster) us += 1.0 + busiest * a.ftp * plan.pixels * kWarps / (kThreads * ipc * kClockGHz * 1e3);
  else if (plan.split > 1) us += kLaunchUs + 8.0 * plan.split * p.n * p.f * plane_out / kBytesPerUs;
  return us;
}

}  // namespace
}  // namespace chain

using namespace chain;

ChainPlan CompletePlan(const ChainProblem& p, ChainPlan plan) {
  const DeviceInfo& device = CurrentDevice();
  const int chunks = (p.m + kChunk - 1) / kChunk;
  auto fail = [&](const char* why) {
    plan.error = why;
    return plan;
  };
  if (PickKernel(p, 64, 0) == nullptr) return fail("unknown stage sequence");
  if (plan.pixels != 64 && plan.pixels != 128) return fail("pixels per block must be 64 or 128");
  if (plan.tile_h < 1 || plan.tile_w < 1 || plan.tile_h * plan.tile_w > plan.pixels) return fail("tile larger than the block's pixels");
  if (p.pwl && (plan.f_tile < 1 || RoundUp(plan.f_tile, 16) > MaxTileF(plan.pixels))) return fail("f_tile out of range");
  if (plan.split < 1 || plan.split > (p.pwl ? chunks : 1)) return fail("split out of range");
  if (plan.buffers != 1 && plan.buffers != 2) return fail("buffers must be 1 or 2");
  if (plan.w1_direct && !p.pw1) return fail("w1_direct needs a first pointwise stage");
  if (p.pwl) plan.f_tile = RoundUp(plan.f_tile, 16);
  const int split = plan.split;
  if (plan.cluster && (split < 2 || split > kMaxCluster)) return fail("a cluster needs a split of 2 to 16");
  if (plan.cluster && !ClusterCompiled(CompiledWidth(p, plan.pixels, WidthFor(p, plan.f_tile))))
    return fail("no cluster in this kernel (full output-channel width: f_tile above 64, or 128 pixels after a pointwise stage)");
  const KernelArgs a = MakeArgs(p, plan, nullptr);
  if ((a.chunks + a.chunks_per_split - 1) / a.chunks_per_split != split) return fail("split");  // would leave a share empty
  // the kernels address an image's channels with 32-bit offsets
  if (static_cast<long long>(p.c) * p.h * p.w >= (1LL << 31) || static_cast<long long>(p.m) * p.out_h * p.out_w >= (1LL << 31))
    return fail("an image larger than 2^31 elements");
  const KernelFn kernel = PickKernel(p, plan.pixels, plan.f_tile);
  plan.shared_bytes = SharedBytes(p, a, plan.pixels);
  if (plan.shared_bytes > static_cast<size_t>(device.shared_optin)) return fail("does not fit in shared memory");
  const int per_sm = AllowAndOccupancy(kernel, plan.shared_bytes);
  if (per_sm == 0) return fail("does not fit on an SM");
  if (plan.cluster && ClusterCapacity(kernel, plan.shared_bytes, split) == 0)
    return fail("no cluster of split blocks runs here (sm_90, and a GPC with room for the cluster)");
  const long long tiles = static_cast<long long>((p.out_h + plan.tile_h - 1) / plan.tile_h) * a.tiles_w;
  plan.blocks = tiles * p.n * (p.pwl ? static_cast<long long>(a.f_tiles) * split : chunks);
  if (plan.blocks / p.n > 0x7fffffffLL) return fail("too many tiles");
  plan.workspace_bytes = split > 1 && !plan.cluster ? sizeof(float) * static_cast<size_t>(split) * p.n * p.f * p.out_h * p.out_w : 0;
  plan.resident = per_sm;
  plan.estimate_us = EstimateMicros(p, a, plan, device.sms, per_sm);
  plan.error.clear();
  return plan;
}

std::vector<ChainPlan> ChainCandidates(const ChainProblem& p) {
  std::vector<ChainPlan> plans;
  const int chunks = (p.m + kChunk - 1) / kChunk;
  for (int pixels : {64, 128}) {
    std::vector<int> widths;
    // the depthwise stage gives each of 8 threads per channel a column of the tile: widths of 8
    // and 16 keep them all busy
    const std::vector<int> choices = p.dw ? std::vector<int>{8, 16} : std::vector<int>{4, 8, 16, 32, 64, 128};
    for (int w : choices) {
      const int tw = std::min(w, p.out_w);
      if (tw <= pixels && std::find(widths.begin(), widths.end(), tw) == widths.end()) widths.push_back(tw);
    }
    for (int tw : widths) {
      // the tallest tile that fits: halve the height until some plan fits shared memory
      for (int th = std::min(p.out_h, pixels / tw); th >= 1; th /= 2) {
        const size_t before = plans.size();
        const int base_f_tiles = p.pwl ? (p.f + MaxTileF(pixels) - 1) / MaxTileF(pixels) : 1;
        // narrower output-channel tiles: more blocks, and kernels compiled for more resident blocks
        int previous_f_tile = -1;
        for (int f_mult : {1, 2, 4, 8, 16}) {
          if (!p.pwl && f_mult > 1) break;
          const int f_tile = p.pwl ? RoundUp((p.f + base_f_tiles * f_mult - 1) / (base_f_tiles * f_mult), 16) : 0;
          if (f_mult > 1 && f_tile >= previous_f_tile) break;
          previous_f_tile = f_tile;
          for (int split = 1; split <= (p.pwl ? chunks : 1); split *= 2) {
            // staged weights with double buffering first; one buffer, then weights read from
            // device memory, only when that does not fit
            for (int variant = 0; variant < 4; ++variant) {
              ChainPlan plan;
              plan.pixels = pixels, plan.tile_h = th, plan.tile_w = tw, plan.f_tile = f_tile;
              plan.split = split, plan.buffers = 2 - variant % 2, plan.w1_direct = variant >= 2;
              if (plan.w1_direct && !p.pw1) break;
              plan = CompletePlan(p, plan);
              if (plan.error == "split") break;
              if (!plan.error.empty()) continue;
              plans.push_back(plan);
              break;
            }
          }
        }
        if (plans.size() > before) break;
      }
    }
  }
  return plans;
}

ChainPlan PlanChain(const ChainProblem& p) {
  ChainPlan best;
  if (PickKernel(p, 64, 0) == nullptr) {
    best.error = "unknown stage sequence";
    return best;
  }
  if (p.n > 65535) {
    best.error = "batch larger than 65535";
    return best;
  }
  for (const ChainPlan& plan : ChainCandidates(p))
    if (best.pixels == 0 || plan.estimate_us < best.estimate_us) best = plan;
  if (best.pixels == 0) best.error = "no tiling fits in shared memory (too many input channels)";
  return best;
}

ChainPlan ForcedPlan(const ChainProblem& p, const std::string& text) {
  ChainPlan plan;
  PlanText fields;
  if (!ParsePlanText(text, &fields)) {
    plan.error = "a plan must read pixels,HxW,f_tile,split,buffers,w1_direct[,cluster] (e.g. 64,8x8,32,1,2,0)";
    return plan;
  }
  plan.pixels = fields.pixels, plan.tile_h = fields.tile_h, plan.tile_w = fields.tile_w;
  plan.f_tile = fields.f_tile, plan.split = fields.split, plan.buffers = fields.buffers;
  plan.w1_direct = fields.w1_direct != 0;
  plan.cluster = fields.cluster != 0;
  if (!p.pwl) plan.f_tile = 0, plan.split = 1, plan.cluster = false;
  plan.tile_h = std::min(plan.tile_h, p.out_h);
  plan.tile_w = std::min(plan.tile_w, p.out_w);
  if (p.pwl) plan.f_tile = std::min(plan.f_tile, RoundUp(p.f, 16));
  plan.split = std::min(plan.split, (p.m + kChunk - 1) / kChunk);
  if (!p.pw1) plan.w1_direct = false;
  ChainPlan done = CompletePlan(p, plan);
  if (done.error == "split") {  // fewer shares than asked: the largest that leaves none empty
    for (plan.split = plan.split - 1; plan.split >= 1; --plan.split) {
      done = CompletePlan(p, plan);
      if (done.error != "split") break;
    }
  }
  if (!done.error.empty()) done.error = "plan " + text + ": " + done.error;
  return done;
}

cudaError_t LaunchChain(const ChainProblem& p, const ChainPlan& plan, void* workspace, cudaStream_t stream) {
  KernelFn kernel = PickKernel(p, plan.pixels, plan.f_tile);
  if (kernel == nullptr || !plan.error.empty()) return cudaErrorInvalidValue;
  if (AllowAndOccupancy(kernel, plan.shared_bytes) == 0) return cudaErrorInvalidConfiguration;
  const KernelArgs a = MakeArgs(p, plan, static_cast<float*>(workspace));
  const int tiles = ((p.out_h + plan.tile_h - 1) / plan.tile_h) * a.tiles_w;
  const int z = p.pwl ? a.f_tiles * plan.split : a.chunks;
  const dim3 grid(tiles, p.n, z);
  cudaError_t err = cudaSuccess;
  if (plan.cluster) {
    const LaunchConfig launch(grid, kThreads, plan.shared_bytes, dim3(1, 1, plan.split), false, stream);
    err = cudaLaunchKernelEx(&launch.config, kernel, a);
  } else {
    kernel<<<grid, kThreads, plan.shared_bytes, stream>>>(a);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess && plan.split > 1 && !plan.cluster) {
    const size_t total = static_cast<size_t>(p.n) * p.f * p.out_h * p.out_w;
    const int blocks = static_cast<int>(std::min<size_t>((total + 255) / 256, 8 * static_cast<size_t>(CurrentDevice().sms)));
    ReduceSplits<<<blocks, 256, 0, stream>>>(a);
    err = cudaGetLastError();
  }
  return err;
}

std::string DescribePlan(const ChainPlan& plan) {
  if (!plan.error.empty()) return "no plan: " + plan.error;
  char text[256];
  std::snprintf(text, sizeof(text),
                "%d px/block (%dx%d), f_tile %d, split %d, %d buffer(s)%s%s, %zu B shared, %lld blocks, %d per SM, est %.1f us",
                plan.pixels, plan.tile_h, plan.tile_w, plan.f_tile, plan.split, plan.buffers,
                plan.w1_direct ? ", W1 from device memory" : "", plan.cluster ? ", shares added in a cluster" : "",
                plan.shared_bytes,
                plan.blocks, plan.resident, plan.estimate_us);
  return text;
}

}  // namespace fcm
