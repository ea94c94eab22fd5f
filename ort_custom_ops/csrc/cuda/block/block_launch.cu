// The host side of the fused-block kernels: plans ranked by a cost estimate, the shared-memory
// layout, TMA descriptors and the launch.
#include "block_launch.h"

#include <cuda.h>
#include <cudaTypedefs.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "../../plan_text.h"
#include "../device.h"
#include "../launch_config.h"
#include "block_args.h"
#include "depthwise.cuh"
#include "element.cuh"
#include "tile_layout.cuh"
#include "passes.h"

namespace fcm {
namespace block {

template <int NF, bool kExact, int kGroups, class E, bool kWide = false>
const void* KernelPointer();

namespace {

constexpr int kMaxStages = 16;    // block_kernel.cuh's Barriers hold this many
constexpr int kRingStages = 4;    // the deepest ring a plan asks for
constexpr int kBarrierBytes = 512;
constexpr int kMaxSplit = 8;      // portable cluster size (a split whose shares are added in a cluster)
constexpr int kMaxClusterSplit = 16;  // sm_90's non-portable cluster size: fcm tune's to time (UnrankedCandidates)

using KernelFn = const void*;

// The compiled kernels, by output-channel width: tensor-core ones (TF32 for FP32 tensors, FP16 and
// BF16 for theirs) for every width, exact FP32 for a few (the comparison mode; a problem rounds up
// to the next one); two-warpgroup tensor-core ones from 64 wide.
struct Width {
  int f_tile;
  KernelFn kernel;
  KernelFn halves = nullptr;  // two computing warpgroups
  KernelFn wide = nullptr;    // a region of more than 128 pixels (block_kernels_wide*.cu)
};

template <class E>
const std::vector<Width>& Widths(bool exact) {
#define FCM_WIDTH(NF, EXACT) {NF, KernelPointer<NF, EXACT, 1, E>()},
#define FCM_WIDE(NF) {NF, KernelPointer<NF, false, 1, E>(), nullptr, KernelPointer<NF, false, 1, E, true>()},
#define FCM_HALVES(NF) {NF, KernelPointer<NF, false, 1, E>(), KernelPointer<NF, false, 2, E>()},
#define FCM_HALVES_WIDE(NF) {NF, KernelPointer<NF, false, 1, E>(), KernelPointer<NF, false, 2, E>(), KernelPointer<NF, false, 1, E, true>()},
  static const std::vector<Width> tensor_cores = {FCM_WIDTH(16, false) FCM_WIDE(24) FCM_WIDE(32) FCM_WIDTH(40, false)
                                                      FCM_WIDTH(48, false) FCM_HALVES_WIDE(64) FCM_HALVES(80) FCM_HALVES(96) FCM_HALVES(112)
                                                          FCM_HALVES(128) FCM_HALVES_WIDE(160) FCM_HALVES(192)};
#undef FCM_HALVES_WIDE
#undef FCM_HALVES
#undef FCM_WIDE
#undef FCM_WIDTH
  if constexpr (kIsHalf<E>) {
    static const std::vector<Width> none;
    return exact ? none : tensor_cores;
  } else {
    static const std::vector<Width> fp32 = {{32, KernelPointer<32, true, 1, float>(), nullptr, KernelPointer<32, true, 1, float, true>()},
                                            {64, KernelPointer<64, true, 1, float>(), nullptr, KernelPointer<64, true, 1, float, true>()},
                                            {128, KernelPointer<128, true, 1, float>()},
                                            {192, KernelPointer<192, true, 1, float>()}};
    return exact ? fp32 : tensor_cores;
  }
}

template <class E>
KernelFn KernelFor(int f_tile, bool exact, int groups, bool wide = false) {
  if (f_tile == 0) {  // PW->DW: one computing warpgroup, or two on tensor cores
    if (wide) return nullptr;
    if (groups == 2) return exact ? nullptr : KernelPointer<0, false, 2, E>();
    if (groups != 1) return nullptr;
    if constexpr (kIsHalf<E>) return exact ? nullptr : KernelPointer<0, false, 1, E>();
    return exact ? KernelPointer<0, true, 1, float>() : KernelPointer<0, false, 1, float>();
  }
  // (a region of more than 128 pixels: one computing warpgroup, a few widths)
  for (const Width& w : Widths<E>(exact))
    if (w.f_tile == f_tile) return groups == 1 ? (wide ? w.wide : w.kernel) : groups == 2 && !wide ? w.halves : nullptr;
  return nullptr;
}

// The splits worth timing: powers of two (up to a cluster's 8 with a last pointwise stage), and
// without one also every chunk its own CTA.
template <class E>
std::vector<int> SplitCandidates(const ChainProblemOf<E>& p, int chunks) {
  std::vector<int> splits;
  const int most = p.pwl ? std::min(kMaxSplit, chunks) : chunks;
  for (int split = 1; split <= most; split *= 2) splits.push_back(split);
  if (!p.pwl && splits.back() != chunks) splits.push_back(chunks);
  return splits;
}

int Occupancy(KernelFn kernel, size_t bytes, int groups) { return CtasPerSm(kernel, BlockThreads(groups), bytes); }

// Clusters of `split` CTAs of `kernel` the device runs at once (0: none fit).
int ClusterCapacity(KernelFn kernel, size_t bytes, int split, int groups) {
  return ClustersPerGpu(kernel, BlockThreads(groups), bytes, dim3(split));
}

uint32_t Align(uint32_t v, uint32_t to) { return (v + to - 1) / to * to; }

// A leading dimension >= n, congruent to 8 mod 32: the fragment owners' float2 stores (8 rows by
// 4 column pairs) hit 32 banks.
int SharesLd(int n) { return RoundUp(n, 8) + ((8 - RoundUp(n, 8) % 32) + 32) % 32; }

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Channels and tensors that 16-byte copies can move: rows of 16-byte multiples, aligned tensors.
template <class E>
bool RowsOf16Bytes(const ChainProblemOf<E>& p) {
  constexpr int kPiece = kPieceElems<E>;
  if (p.c % kPiece != 0 || p.m % kPiece != 0 || !Aligned16(p.x)) return false;
  if (p.pw1 && (!Aligned16(p.w1) || !Aligned16(p.b1))) return false;
  if (p.dw && (!Aligned16(p.wd) || !Aligned16(p.bd))) return false;
  if (p.pwl && !Aligned16(p.w2)) return false;
  return true;
}

// The input pixels a tile of th x tw output pixels reads: the tile and the depthwise stage's halo.
template <class E>
int RegionPixels(const ChainProblemOf<E>& p, int th, int tw) {
  return p.dw ? ((th - 1) * p.stride + p.kernel) * ((tw - 1) * p.stride + p.kernel) : th * tw;
}

// Whether TMA can copy this problem's tiles: sm_90, rows of 16-byte multiples, aligned tensors.
// (The chunks' depthwise weights and biases go by bulk copies: 16-byte aligned, multiples of 16 bytes.)
template <class E>
bool TmaFits(const ChainProblemOf<E>& p, const DeviceInfo& d) {
  return d.major >= 9 && RowsOf16Bytes(p);
}

// A divisor for the kernel (an empty problem's zero counts divide nothing: 1 keeps the host's
// precomputation defined).
cutlass::FastDivmod Divisor(int d) { return cutlass::FastDivmod(d > 0 ? d : 1); }

// The layout of shared memory and the unit count; returns the bytes to ask for.
template <class E>
size_t MakeArgs(const ChainProblemOf<E>& p, const BlockPlan& plan, BlockArgsOf<E>* out) {
  constexpr uint32_t kBytes = sizeof(E);
  BlockArgsOf<E> a{};
  a.p = p;
  a.tile_h = plan.tile_h, a.tile_w = plan.tile_w;
  a.tiles_w = CeilDiv(p.out_w, plan.tile_w);
  a.tiles_per_image = CeilDiv(p.out_h, plan.tile_h) * a.tiles_w;
  a.f_slices = p.pwl ? CeilDiv(p.f, plan.f_tile) : 1;
  a.units = p.n * a.tiles_per_image * a.f_slices;
  a.f_slices_div = Divisor(a.f_slices), a.tiles_per_image_div = Divisor(a.tiles_per_image);
  a.tiles_w_div = Divisor(a.tiles_w), a.tile_w_div = Divisor(a.tile_w);
  a.groups = plan.groups;
  a.region_h = p.dw ? (plan.tile_h - 1) * p.stride + p.kernel : plan.tile_h;
  a.region_w = p.dw ? (plan.tile_w - 1) * p.stride + p.kernel : plan.tile_w;
  a.region_rows = a.region_h * a.region_w;
  a.region_w_div = Divisor(a.region_w);
  const int dw_blocks_w = CeilDiv(plan.tile_w, DepthwiseBlockW(p.kernel, p.stride));
  a.dw_blocks = p.dw ? CeilDiv(plan.tile_h, DepthwiseBlockH(p.kernel, p.stride)) * dw_blocks_w : 0;
  a.dw_blocks_w = Divisor(dw_blocks_w);
  a.c_slabs = CeilDiv(p.c, kSlabElems<E>);
  a.chunks = CeilDiv(p.m, kChunk);
  a.split = plan.split;
  a.resident = plan.stages == 0;
  a.stages = a.resident ? CeilDiv(a.chunks, plan.split) : plan.stages;
  a.regions = plan.regions;
  a.tma = plan.tma ? 1 : 0;
  a.vec = p.c % kPieceElems<E> == 0 && p.m % kPieceElems<E> == 0 && Aligned16(p.x) && (!p.pw1 || Aligned16(p.w1)) &&
          (!p.pwl || Aligned16(p.w2));
  // the depthwise stage's blocks may run past the tile's edge and read past the region: slack rows
  const int last_row = p.dw ? DepthwiseLastRow(p.kernel, p.stride, plan.tile_h, plan.tile_w, a.region_w) : 0;
  const uint32_t region_slab =
      Align(static_cast<uint32_t>(RoundUp(std::max(a.region_rows, last_row + 1), 8)) * kSlabRowBytes, kSlabAlign);
  const int taps = p.kernel * p.kernel;
  uint32_t at = 0;
  a.x_slab_bytes = region_slab;
  a.region_bytes = a.c_slabs * region_slab;
  a.x_off = at;
  if (p.pw1) at += a.regions * a.region_bytes;
  uint32_t stage = 0;
  if (p.pw1) stage += a.c_slabs * kChunk * kSlabRowBytes;
  a.w2_in_stage = stage;
  if (p.pwl) stage += Align(plan.f_tile * kSlabRowBytes, kSlabAlign);
  a.xs_in_stage = stage;
  if (!p.pw1) stage += region_slab;
  a.wd_in_stage = stage;
  if (p.dw) stage += Align(kChunk * taps * kBytes, 16);
  a.b1_in_stage = stage;
  if (p.pw1) stage += kChunk * kBytes;
  a.bd_in_stage = stage;
  if (p.dw) stage += kChunk * kBytes;
  a.stage_bytes = Align(stage, kSlabAlign);
  a.ring_off = at;
  at += a.stages * a.stage_bytes;
  a.u_off = at;
  a.u_bytes = p.pw1 && p.dw ? Align(static_cast<uint32_t>(RoundUp(std::max(a.region_rows, last_row + 1), 8)) * kUPitchOf<E>, kSlabAlign) : 0;
  at += a.groups * a.u_bytes;
  a.v_off = at;
  a.v_bytes = kTileRows * kSlabRowBytes;
  if (p.pwl) at += (a.groups == 1 ? 2 : a.groups) * a.v_bytes;  // one warpgroup double-buffers V
  a.red_ld = SharesLd(std::max(plan.f_tile, 8));
  a.red_off = at;
  // (a slot per peer and row a CTA adds: split x ceil(64 / split) rows, 64 or a few more)
  const int red_rows = plan.split * CeilDiv(kTileRows, std::max(plan.split, 1));
  if (p.pwl && plan.split > 1) at += Align(red_rows * a.red_ld * 4, 16);
  if (p.pwl && plan.groups > 1) at += Align(kConsumers * plan.f_tile / 2 * 4, 16);  // warpgroup 1's accumulators
  a.bar_off = Align(at, 16);
  at = a.bar_off + kBarrierBytes;
  // (the first stage's last 64-row block may read past the region's last slab: into the ring)
  a.region_tx = static_cast<uint32_t>(a.c_slabs * a.region_rows * kSlabRowBytes);
  a.stage_tx = (p.pw1 ? a.c_slabs * kChunk * kSlabRowBytes : 0) + (p.pwl ? plan.f_tile * kSlabRowBytes : 0) +
               (!p.pw1 ? a.region_rows * kChunkRowBytes<E> : 0);
  *out = a;
  return at + kSlabAlign;  // the kernel aligns its base to 1024 bytes
}

// Warp instructions per value of an activation on the CUDA cores (epilogue.h's device formulas).
double ActivationInstructions(const Activation& act) {
  switch (act.kind) {
    case Act::kNone:
      return 0.0;
    case Act::kRelu:
      return 1.0;
    case Act::kClip:
      return 2.0;
    case Act::kHardSwish:
      return 5.0;
    case Act::kSigmoid:  // the approximate exponential (a multiply and ex2), 1 +, the approximate reciprocal
      return 4.0;
    default:  // swish: the sigmoid's and a multiply
      return 5.0;
  }
}

// A rough cost in microseconds, for ranking plans of one problem. A CTA's chunk takes the longest of
// its share of the SM's pipes (tensor cores for the pointwise stages, shared-memory bandwidth for the
// depthwise stage: the resident CTAs split them), the CUDA-core instructions it issues, and a fixed
// latency (barriers, copies arriving). Instructions bound most chunks (Nsight Compute on
// EfficientNetB0's expand+depthwise kernels, H100): one CTA's warps issue about 0.65 a cycle
// (dependent chains, barrier waits: 1, 2 or 3 resident CTAs made 0.68, 1.33 and 1.87 a cycle), the
// SM at most about 2.2. The busiest SM runs its units in waves; against the device-memory traffic.
template <class E>
double Estimate(const ChainProblemOf<E>& p, const BlockArgsOf<E>& a, const BlockPlan& plan) {
  constexpr double kClockGhz = 1.7;
  constexpr double kTensorMacs = kIsHalf<E> ? 2048.0 : 1024.0;  // MACs per cycle and SM (TF32; FP16, BF16)
  constexpr double kSharedBytes = 128.0;  // per cycle and SM
  constexpr double kCtaIssue = 0.65, kSmIssue = 2.2;  // warp instructions per cycle
  const int resident = std::max(1, plan.resident);
  const double tensor = plan.exact ? kTensorMacs / 8 : kTensorMacs;
  const int chunks_mine = CeilDiv(a.chunks, plan.split);
  const int region_blocks = CeilDiv(a.region_rows, kTileRows);
  double mma = 0.0, cuda = 0.0;  // SM cycles of one chunk
  double issued = 1000.0;        // warp instructions of one chunk: fixed (waits, barriers, addressing), then per stage
  if (p.pw1) {
    mma += static_cast<double>(region_blocks) * kTileRows * a.c_slabs * kSlabElems<E> * kChunk / tensor;
    issued += region_blocks * kTileRows * (2.5 + ActivationInstructions(p.act1));  // bias, activation, store
  } else if (!p.dw) {
    issued += a.region_rows * 6.0;  // the scaled copy into the last stage's operand
  }
  if (p.pwl) mma += static_cast<double>(kTileRows) * plan.f_tile * kChunk / tensor;
  if (p.dw) {
    const int bh = DepthwiseBlockH(p.kernel, p.stride), bw = DepthwiseBlockW(p.kernel, p.stride);
    const double blocks = CeilDiv(plan.tile_h, bh) * CeilDiv(plan.tile_w, bw);
    const double partial = blocks - (plan.tile_h / bh) * (plan.tile_w / bw);  // cut by the tile's edge
    const double rows = (bh - 1) * p.stride + p.kernel, cols = (bw - 1) * p.stride + p.kernel;
    cuda += blocks * rows * cols * (p.pw1 ? kSlabRowBytes : kChunkRowBytes<E>) / kSharedBytes;  // (U is FP32)
    // a warp's block: its input loads, the taps' FMAs, and per output the activation and the sink (a
    // swizzled shared store and its address, or a global store from a stepped pointer)
    const double sink = p.pwl ? 4.0 : 3.0;
    issued += blocks * (rows * cols + bh * bw * (p.kernel * p.kernel + ActivationInstructions(p.actd) + sink));
    // a block cut by the tile's edge goes to its sink pixel by pixel, each tested (Nsight Compute,
    // Xception's 14 x 14 on 4 x 14 tiles: about 235 more instructions a 2 x 8 block)
    issued += partial * bh * bw * 15.0;
  }
  // two warpgroups: each runs every other chunk, unpipelined (a longer latency per chunk), the two on
  // the same pipes, and their sums are added at the end
  // (a wide region's second half waits for its own gemm and the last stage's: about one more round
  // trip of the tensor cores, assumed, not yet measured)
  const double latency = (plan.groups > 1 ? 3400.0 : a.resident ? 1800.0 : plan.stages == 3 ? 2600.0 : 2400.0) +
                         (region_blocks > 2 ? 1000.0 : 0.0);
  const double sharers = static_cast<double>(resident) * plan.groups;
  const double chunk = std::max({sharers * std::max(mma, cuda), sharers * issued / kSmIssue, issued / kCtaIssue, latency});
  const double region_wait = p.pw1 && plan.regions == 1 ? 1500.0 : 0.0;
  const double chain = plan.groups > 1 ? CeilDiv(chunks_mine, 2) * chunk + 1000.0 : chunks_mine * chunk;
  // per unit: the last stage's epilogue (bias, activations, residual, stores) besides the fixed part
  const double epilogue = p.pwl ? 4.0 * plan.f_tile / 2 * (4.0 + ActivationInstructions(p.act2)) / kCtaIssue : 0.0;
  const double unit = chain + 600.0 + epilogue + region_wait + (ClusteredSplit(p, plan.split) ? 800.0 : 0.0);
  const long long clusters = std::max(1, plan.grid / plan.split);
  const double waves = std::ceil(static_cast<double>(a.units) / clusters);
  const double compute_us = waves * unit / (kClockGhz * 1e3);
  const double bytes = static_cast<double>(sizeof(E)) * (static_cast<double>(p.n) * p.h * p.w * p.c * (a.f_slices > 1 ? 1.5 : 1.0) +
                              static_cast<double>(p.n) * p.out_h * p.out_w * (p.pwl ? p.f : p.m));
  const double memory_us = bytes / 3.5e6;
  return std::max(compute_us, memory_us) + 2.0;
}

}  // namespace

const std::vector<int>& CompiledWidths(bool exact) {
  static const auto widths = [](bool fp32) {
    std::vector<int> w;
    for (const Width& x : Widths<float>(fp32)) w.push_back(x.f_tile);
    return w;
  };
  static const std::vector<int> tf32 = widths(false), fp32 = widths(true);
  return exact ? fp32 : tf32;
}

template <class E>
BlockPlan CompleteBlockPlan(const ChainProblemOf<E>& p, BlockPlan plan) {
  const DeviceInfo& d = CurrentDevice();
  plan.error.clear();
  plan.exact = !kIsHalf<E> && !p.tf32;
  plan.arithmetic = plan.exact ? "FP32" : kIsHalf<E> ? Element<E>::kName : "TF32";
  auto fail = [&](const std::string& why) {
    plan.error = why;
    return plan;
  };
  if (plan.passes > 0) {  // the stages as separate kernels through a workspace (passes.h)
    if (plan.passes == 2 && plan.gemm_first != (p.pw1 && !p.pwl))
      return fail(plan.gemm_first ? "gemm+dw takes PW->DW nodes only" : "dw+gemm takes DW->PW nodes only");
    const std::string refusal = PassesRefusal(p, plan.passes, d.major);
    if (!refusal.empty()) return fail(refusal);
    plan.gemm_tiling = GemmTilingFromEnvironment();
    plan.workspace_bytes = PassesWorkspaceBytes(p, plan.passes, plan.gemm_tiling);
    plan.estimate_us = PassesEstimateUs(p, plan.passes, plan.gemm_tiling);
    return plan;
  }
  // (the half types' copies move 16-byte pieces: cp.async has no 2-byte copy)
  if (kIsHalf<E> && !RowsOf16Bytes(p))
    return fail(std::string(Element<E>::kName) + " tensors need channel counts that are multiples of 8 and 16-byte aligned rows");
  if (!p.pwl) plan.f_tile = 0;
  if (plan.tile_h < 1 || plan.tile_w < 1 || plan.tile_h * plan.tile_w > kTileRows) return fail("a tile holds 1 to 64 output pixels");
  if (plan.stages != 0 && (plan.stages < 3 || plan.stages > kRingStages)) return fail("3 or 4 stages, or 0 (resident weights)");
  if (plan.stages == 0) {
    if (!p.pw1) return fail("resident weights need a first pointwise stage");
    if (p.pwl && plan.f_tile < p.f) return fail("resident weights need one output-channel slice (f_tile >= f)");
    if (CeilDiv(CeilDiv(p.m, kChunk), plan.split) > kMaxStages) return fail("resident weights hold at most 16 chunks per CTA");
  }
  // With a last pointwise stage the CTAs of a split add their shares in a cluster; without one
  // (PW->DW) each writes its own chunks' channels, so a split is any number of independent CTAs.
  if (plan.split < 1) return fail("split is at least 1");
  if (p.pwl && plan.split > kMaxClusterSplit) return fail("split is 1 to 16 with a last pointwise stage (a cluster)");
  if (plan.split > CeilDiv(p.m, kChunk)) return fail("split is more than the intermediate's 32-channel chunks");
  if (ClusteredSplit(p, plan.split) && (d.major < 9 || !d.clusters))
    return fail("a split with a last pointwise stage needs thread-block clusters (sm_90)");
  if (plan.groups < 1 || plan.groups > kMaxGroups) return fail("groups is 1 or 2");
  if (plan.groups > 1) {
    if (plan.stages == 0) return fail("two warpgroups take no resident weights");
    if (plan.split > 1 && p.pwl) return fail("two warpgroups take no split with a last pointwise stage");
  }
  // a region of up to 256 pixels (the first stage in two halves: block_kernel.cuh's Consume) for
  // PW->DW->PW with one computing warpgroup, in kernels of their own; not among the candidates until
  // timed (a plan names it)
  const int region_rows = RegionPixels(p, plan.tile_h, plan.tile_w);
  plan.wide = region_rows > 2 * kTileRows;
  if (plan.wide && !(p.pw1 && p.dw && p.pwl && plan.groups == 1))
    return fail("the tile's input region is more than 128 pixels (256 for PW->DW->PW with one warpgroup)");
  if (region_rows > 4 * kTileRows) return fail("the tile's input region is more than 256 pixels");
  KernelFn kernel = KernelFor<E>(plan.f_tile, plan.exact, plan.groups, plan.wide);
  if (kernel == nullptr)
    return fail("no kernel is compiled for f_tile " + std::to_string(plan.f_tile) +
                (plan.groups > 1 ? " with two warpgroups (tensor cores: PW->DW, or 64 to 192 wide)" : "") +
                (plan.wide ? " with an input region of more than 128 pixels (24, 32, 64, 160; exact FP32: 32, 64)" : ""));
  plan.tma = TmaFits(p, d);
  BlockArgsOf<E> a;
  // two region buffers where they cost no resident CTA, else one
  plan.regions = 1;
  plan.shared_bytes = MakeArgs(p, plan, &a);
  if (p.pw1 && plan.shared_bytes <= static_cast<size_t>(d.shared_optin)) {
    BlockPlan doubled = plan;
    doubled.regions = 2;
    BlockArgsOf<E> b;
    doubled.shared_bytes = MakeArgs(p, doubled, &b);
    if (doubled.shared_bytes <= static_cast<size_t>(d.shared_optin) &&
        Occupancy(kernel, doubled.shared_bytes, plan.groups) >= Occupancy(kernel, plan.shared_bytes, plan.groups)) {
      plan = doubled, a = b;
    }
  }
  if (plan.shared_bytes > static_cast<size_t>(d.shared_optin)) return fail("needs more shared memory than a CTA gets");
  plan.units = a.units;
  plan.resident = Occupancy(kernel, plan.shared_bytes, plan.groups);
  if (plan.resident == 0) return fail("no CTA fits an SM");
  long long slots = static_cast<long long>(plan.resident) * d.sms;
  if (ClusteredSplit(p, plan.split)) {
    const int clusters = ClusterCapacity(kernel, plan.shared_bytes, plan.split, plan.groups);
    if (clusters == 0) return fail("no cluster of this size fits the GPU");
    slots = static_cast<long long>(clusters) * plan.split;
  }
  const long long wanted = a.units * static_cast<long long>(plan.split);
  plan.grid = static_cast<int>(std::min(wanted, slots / plan.split * plan.split));
  plan.estimate_us = Estimate(p, a, plan);
  return plan;
}

// The separate-pass plans of `fewest` passes and more (1: a lone PW's GEMM, 2, 3) that take the problem.
template <class E>
std::vector<BlockPlan> SeparatePassPlans(const ChainProblemOf<E>& p, int fewest) {
  std::vector<BlockPlan> plans;
  for (int passes = fewest; passes <= 3; ++passes) {
    BlockPlan separate;
    separate.passes = passes;
    separate.gemm_first = passes == 2 && p.pw1 && !p.pwl;
    separate = CompleteBlockPlan(p, separate);
    if (separate.error.empty()) plans.push_back(separate);
  }
  return plans;
}

namespace {

// For each tile height (up to the output's, and 64 pixels), the widest tile whose input region is
// at most `max_region` pixels: visit(th, tw).
template <class E, class Visit>
void ForWidestTiles(const ChainProblemOf<E>& p, int max_region, Visit visit) {
  for (int th = 1; th <= std::min(p.out_h, kTileRows); ++th) {
    int tw = std::min(p.out_w, kTileRows / th);
    while (tw > 0 && RegionPixels(p, th, tw) > max_region) --tw;
    if (tw == 0) break;
    visit(th, tw);
  }
}

// `tile` evened out over `extent`: the same count of tiles, none longer than needed.
int Balanced(int extent, int tile) { return CeilDiv(extent, CeilDiv(extent, tile)); }

// The narrowest compiled output-channel width that holds `need` channels (0: none does).
int NarrowestWidth(bool exact, int need) {
  for (int w : CompiledWidths(exact))
    if (w >= need) return w;
  return 0;
}

}  // namespace

template <class E>
std::vector<BlockPlan> BlockCandidates(const ChainProblemOf<E>& p, bool separate_passes) {
  const DeviceInfo& d = CurrentDevice();
  // tiles: for each height, the widest (and the widest multiple of the depthwise block's width)
  // whose region is at most 128 pixels, balanced over the image; and each widened to whole
  // depthwise blocks, past the image's edge (Xception's 14 x 14 as 4 x 16: the depthwise stage's
  // pixel-by-pixel path at a tile's edge costs more than the pixels computed and dropped)
  std::vector<std::pair<int, int>> tiles;
  auto push = [&](int th, int tw) {
    const std::pair<int, int> tile(th, tw);
    if (th * tw <= kTileRows && RegionPixels(p, th, tw) <= 2 * kTileRows && std::find(tiles.begin(), tiles.end(), tile) == tiles.end())
      tiles.push_back(tile);
  };
  const int bh = p.dw ? DepthwiseBlockH(p.kernel, p.stride) : 1, bw = p.dw ? DepthwiseBlockW(p.kernel, p.stride) : 1;
  auto add = [&](int th, int tw) {
    const int balanced_h = Balanced(p.out_h, th), balanced_w = Balanced(p.out_w, tw);
    push(balanced_h, balanced_w);
    if (p.dw) push(RoundUp(balanced_h, bh), RoundUp(balanced_w, bw));
  };
  ForWidestTiles(p, 2 * kTileRows, [&](int th, int tw) {
    add(th, tw);
    if (tw > bw) add(th, tw / bw * bw);
  });
  std::vector<int> f_tiles = {0};
  if (p.pwl) {
    f_tiles.clear();
    for (int slices = 1; slices <= 16; ++slices) {
      const int need = CeilDiv(p.f, slices);
      const int w = NarrowestWidth(!kIsHalf<E> && !p.tf32, need);
      if (w > 0 && std::find(f_tiles.begin(), f_tiles.end(), w) == f_tiles.end()) f_tiles.push_back(w);
      if (need <= 16) break;
    }
  }
  const int chunks = CeilDiv(p.m, kChunk);
  std::vector<BlockPlan> plans;
  for (const auto& [th, tw] : tiles)
    for (int f_tile : f_tiles)
      for (int split : SplitCandidates(p, chunks)) {
        if (ClusteredSplit(p, split) && (d.major < 9 || !d.clusters)) break;
        for (int stages = 3; stages <= kMaxStages; ++stages)
          for (int groups = 1; groups <= (split == 1 || !p.pwl ? kMaxGroups : 1); ++groups) {
            BlockPlan plan;
            plan.tile_h = th, plan.tile_w = tw, plan.f_tile = f_tile, plan.split = split, plan.stages = stages;
            plan.groups = groups;
            plan = CompleteBlockPlan(p, plan);
            if (plan.error.empty()) plans.push_back(plan);
          }
      }
  // The stages as separate passes, where they take the problem: on wide products at large batches
  // the GEMM library's main loop beats the fused kernels' by more than the intermediates' round trips
  // through L2 cost. DW->PW's two and PW->DW->PW's three only, with clamps after their products:
  // that is what their estimate was fitted to; one pass, PW->DW's two passes and the other
  // activations are fcm tune's to time (unranked candidates) until it is fitted to them too.
  auto clamp = [](const Activation& a) { return a.kind == Act::kNone || a.kind == Act::kRelu || a.kind == Act::kClip; };
  const bool fitted = (!p.pw1 || clamp(p.act1)) && (!p.pwl || clamp(p.residual ? p.res_act : p.act2));
  if (separate_passes && fitted)
    for (const BlockPlan& separate : SeparatePassPlans(p, 2))
      if (!separate.gemm_first) plans.push_back(separate);
  return plans;
}

template <class E>
std::vector<BlockPlan> UnrankedCandidates(const ChainProblemOf<E>& p) {
  std::vector<BlockPlan> plans = SeparatePassPlans(p, 1);
  // the fused kernel's plans, best estimate first (made once, for the variants below)
  std::vector<BlockPlan> ranked;
  auto best_first = [&]() -> const std::vector<BlockPlan>& {
    if (ranked.empty()) {
      ranked = BlockCandidates(p, false);
      std::stable_sort(ranked.begin(), ranked.end(), [](const BlockPlan& a, const BlockPlan& b) { return a.estimate_us < b.estimate_us; });
    }
    return ranked;
  };
  // plan `r`'s tile, output-channel slice and stages split over `split` CTAs, added where it fits
  // and is not listed yet; whether it was
  auto add_split = [&](const BlockPlan& r, int split) {
    BlockPlan plan;
    plan.tile_h = r.tile_h, plan.tile_w = r.tile_w, plan.f_tile = r.f_tile, plan.split = split, plan.stages = r.stages;
    plan = CompleteBlockPlan(p, plan);
    const bool added = plan.error.empty() &&
                       std::none_of(plans.begin(), plans.end(), [&](const BlockPlan& q) { return BlockPlanText(q) == BlockPlanText(plan); });
    if (added) plans.push_back(plan);
    return added;
  };
  // Two computing warpgroups on an output narrower than the two-warpgroup kernels' 64 channels
  // (MobileNetV2's 112x112 and 56x56 blocks, 16-32 channels out, 3-11% of their byte bound in FP16):
  // the three best-estimated tiles, one 64-wide slice, the tail channels computed and dropped. The
  // estimate ranks them below the narrow kernels; they are fcm tune's to time.
  if (p.pwl && p.f < 64 && (kIsHalf<E> || p.tf32)) {
    std::vector<std::pair<int, int>> tiles;
    for (const BlockPlan& r : best_first()) {
      if (r.wide || std::find(tiles.begin(), tiles.end(), std::make_pair(r.tile_h, r.tile_w)) != tiles.end()) continue;
      tiles.emplace_back(r.tile_h, r.tile_w);
      BlockPlan plan;
      plan.tile_h = r.tile_h, plan.tile_w = r.tile_w, plan.f_tile = 64, plan.split = 1, plan.stages = 3, plan.groups = 2;
      plan = CompleteBlockPlan(p, plan);
      if (plan.error.empty()) plans.push_back(plan);
      if (tiles.size() == 3) break;
    }
  }
  // A cluster of 16 CTAs (sm_90's non-portable size) where the best-estimated plans split the chunks
  // over 8: at batch 1 a 7x7 block's unit is a chain of 30 chunks (FP32), 4 a CTA over 8 and 2 over
  // 16, and each chunk's latency, not its work, is what the blocks take (9-19 us each on an H100).
  if (p.pwl && CeilDiv(p.m, kChunk) >= kMaxClusterSplit) {
    int added = 0;
    for (const BlockPlan& r : best_first()) {
      if (r.split != kMaxSplit || r.groups != 1) continue;
      if (add_split(r, kMaxClusterSplit)) ++added;
      if (added == 3) break;
    }
  }
  // Splits that divide the chunks, where the best-estimated plans' split leaves some CTAs a chunk
  // short (12 chunks over 8: four CTAs with two, four with one), which the CTAs adding the shares
  // wait for: the nearest divisors of the chunk count on either side (12: 6 and 12; 30: 6 and 10),
  // for the six best-estimated plans.
  if (p.pwl) {
    const int chunks = CeilDiv(p.m, kChunk);
    const std::vector<BlockPlan>& ranked_plans = best_first();
    for (size_t i = 0; i < std::min<size_t>(6, ranked_plans.size()); ++i) {
      const BlockPlan& r = ranked_plans[i];
      if (r.split < 2 || r.groups != 1 || chunks % r.split == 0) continue;
      int below = 0, above = 0;
      for (int d = 2; d <= std::min(chunks, kMaxClusterSplit); ++d) {
        if (chunks % d != 0) continue;
        if (d < r.split) below = d;
        if (d > r.split && above == 0) above = d;
      }
      for (int split : {below, above})
        if (split != 0) add_split(r, split);
    }
  }
  if (!(p.pw1 && p.dw && p.pwl) || p.stride != 2) return plans;
  // tiles of at most 64 pixels in at most 8 rows of at least 4, whose region is 129 to 256 pixels:
  // for each height the widest, as it is and balanced over the image (wide_regions.py's sweep)
  std::vector<std::pair<int, int>> tiles;
  auto push = [&](int th, int tw) {
    const std::pair<int, int> tile(th, tw);
    const int region = RegionPixels(p, th, tw);
    if (th <= 8 && tw >= 4 && th * tw <= kTileRows && region > 2 * kTileRows && region <= 4 * kTileRows &&
        std::find(tiles.begin(), tiles.end(), tile) == tiles.end())
      tiles.push_back(tile);
  };
  ForWidestTiles(p, 4 * kTileRows, [&](int th, int tw) {
    push(Balanced(p.out_h, th), Balanced(p.out_w, tw));
    push(th, tw);
  });
  // one output-channel slice (the narrowest compiled width that holds f), and slices of 32
  std::vector<int> f_tiles;
  if (const int w = NarrowestWidth(!kIsHalf<E> && !p.tf32, p.f)) f_tiles.push_back(w);
  if (p.f > 32) f_tiles.push_back(32);
  // (three stages: a fourth changed no winner of the sweep by more than 1%)
  for (const auto& [th, tw] : tiles)
    for (int f_tile : f_tiles) {
      BlockPlan plan;
      plan.tile_h = th, plan.tile_w = tw, plan.f_tile = f_tile, plan.split = 1, plan.stages = 3;
      plan = CompleteBlockPlan(p, plan);
      if (plan.error.empty()) plans.push_back(plan);
    }
  return plans;
}

template <class E>
BlockPlan PlanBlock(const ChainProblemOf<E>& p, bool separate_passes) {
  // separate passes are the kernels' own choice only where their estimate was fitted to measured
  // times (two and three passes in FP32); in the half types they are fcm tune's to time
  const std::vector<BlockPlan> plans = BlockCandidates(p, separate_passes && !kIsHalf<E>);
  if (plans.empty()) {
    BlockPlan none;
    none.error = "no launch plan of the fused-block kernels fits this problem on this GPU";
    return none;
  }
  return *std::min_element(plans.begin(), plans.end(),
                           [](const BlockPlan& x, const BlockPlan& y) { return x.estimate_us < y.estimate_us; });
}

template <class E>
BlockPlan ParseBlockPlan(const ChainProblemOf<E>& p, const std::string& text) {
  BlockPlan plan;
  BlockPlanFields fields;
  if (!ParseBlockPlanText(text, &fields)) {
    plan.error = "a plan reads \"HxW,f_tile,split,stages[,groups]\", not \"" + text + "\"";
    return plan;
  }
  plan.tile_h = fields.tile_h, plan.tile_w = fields.tile_w, plan.f_tile = fields.f_tile, plan.split = fields.split;
  plan.stages = fields.stages, plan.groups = fields.groups, plan.passes = fields.passes, plan.gemm_first = fields.gemm_first;
  return CompleteBlockPlan(p, plan);
}

std::string BlockPlanText(const BlockPlan& plan) {
  if (plan.passes > 0)
    return plan.passes == 1 ? kOnePassPlan : plan.passes == 3 ? kThreePassPlan : plan.gemm_first ? kTwoPassPwDwPlan : kTwoPassPlan;
  char text[64];
  std::snprintf(text, sizeof(text), "%dx%d,%d,%d,%d", plan.tile_h, plan.tile_w, plan.f_tile, plan.split, plan.stages);
  return plan.groups == 1 ? std::string(text) : std::string(text) + "," + std::to_string(plan.groups);
}

std::string DescribeBlockPlan(const BlockPlan& plan) {
  if (!plan.error.empty()) return "no plan: " + plan.error;
  char text[256];
  if (plan.passes > 0) {
    std::snprintf(text, sizeof(text), "%s (%s, %s%s), %zu B workspace, ~%.1f us", BlockPlanText(plan).c_str(),
                  plan.passes == 1   ? "CUTLASS's GEMM"
                  : plan.passes == 3 ? "CUTLASS's GEMM, depthwise pass, CUTLASS's GEMM"
                  : plan.gemm_first  ? "CUTLASS's GEMM, then depthwise pass"
                                     : "depthwise pass, then CUTLASS's GEMM",
                  plan.arithmetic, plan.gemm_tiling == GemmTiling::kByShape ? ", GEMM tiles by shape" : "",
                  plan.workspace_bytes, plan.estimate_us);
    return text;
  }
  std::snprintf(text, sizeof(text), "%s (%s, %s), %zu B shared, %lld units on %d CTAs, %d per SM, ~%.1f us",
                BlockPlanText(plan).c_str(), plan.tma ? "TMA" : "cp.async", plan.arithmetic, plan.shared_bytes,
                plan.units, plan.grid, plan.resident, plan.estimate_us);
  return text;
}

namespace {

using EncodeTiled = PFN_cuTensorMapEncodeTiled_v12000;

EncodeTiled Encoder() {
  static const EncodeTiled encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<EncodeTiled>(fn);
  }();
  return encode;
}

// A tiled TMA descriptor of a row-major tensor of E (dims innermost first) with `box` boxes (128-byte
// rows where swizzled by 128 bytes); out-of-bounds elements read as zeros.
template <class E>
bool EncodeMap(CUtensorMap* map, const E* base, int rank, const uint64_t* dims, const uint32_t* box, bool swizzle = true) {
  uint64_t strides[4];
  uint64_t stride = sizeof(E);
  for (int i = 0; i + 1 < rank; ++i) strides[i] = (stride *= dims[i]);
  const uint32_t element_strides[5] = {1, 1, 1, 1, 1};
  return Encoder()(map, Element<E>::kTmaType, rank, const_cast<E*>(base), dims, strides, box, element_strides,
                   CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
                   CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                   CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

#if defined(FCM_BLOCK_TRACE)
namespace {
std::mutex trace_mutex;
TraceRecord* trace_records = nullptr;  // kTraceCapacity records on the device (TraceReset)
uint32_t trace_next = 0, trace_launches = 0;

// A launch's slots: its CTAs' records, consecutive from the next free one (wrapping).
template <class E>
void TraceLaunch(BlockArgsOf<E>* a, int grid) {
  std::lock_guard<std::mutex> lock(trace_mutex);
  a->trace = trace_records;
  a->trace_base = trace_next, a->trace_launch = trace_launches++;
  trace_next = static_cast<uint32_t>((trace_next + static_cast<uint64_t>(grid)) % kTraceCapacity);
}
}  // namespace

int TraceReset() {
  std::lock_guard<std::mutex> lock(trace_mutex);
  if (trace_records == nullptr && cudaMalloc(&trace_records, kTraceCapacity * sizeof(TraceRecord)) != cudaSuccess) {
    cudaGetLastError();
    trace_records = nullptr;
    return -2;
  }
  if (cudaMemset(trace_records, 0, kTraceCapacity * sizeof(TraceRecord)) != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) {
    cudaGetLastError();
    return -2;
  }
  trace_next = 0, trace_launches = 0;
  return static_cast<int>(kTraceCapacity);
}

int TraceCopy(void* out, int capacity) {
  std::lock_guard<std::mutex> lock(trace_mutex);
  if (trace_records == nullptr) return -2;
  const size_t count = std::min<size_t>(static_cast<size_t>(std::max(capacity, 0)), kTraceCapacity);
  if (cudaDeviceSynchronize() != cudaSuccess || cudaMemcpy(out, trace_records, count * sizeof(TraceRecord), cudaMemcpyDeviceToHost) != cudaSuccess) {
    cudaGetLastError();
    return -2;
  }
  return static_cast<int>(count);
}
#else
int TraceReset() { return -1; }
int TraceCopy(void*, int) { return -1; }
#endif

// Whether the weights' copies are issued before the kernel waits for the previous one
// (BlockArgsOf::weights_first): at batch 1, where each launch is short and its start overlaps the
// previous kernel's end (MobileNetV2 tuned for batch 1: 0.232-0.235 -> 0.224-0.226 ms); not at larger
// batches, where it was mixed (batch 32: MobileNetV2 2% faster, EfficientNetB0 and MobileNetV3-Large
// 1% slower; benchmarks/2026-12-08-h100-weights-first). FCM_CUDA_WEIGHTS_FIRST=1 or 0 forces it on or
// off (to compare on a model); read at each launch.
bool WeightsFirst(int64_t batch) {
  const char* value = std::getenv("FCM_CUDA_WEIGHTS_FIRST");
  if (value != nullptr && (std::string(value) == "1" || std::string(value) == "0")) return value[0] == '1';
  return batch == 1;
}

template <class E>
cudaError_t LaunchBlock(const ChainProblemOf<E>& p, const BlockPlan& plan, cudaStream_t stream, void* workspace) {
  if (!plan.error.empty()) return cudaErrorInvalidConfiguration;
  if (plan.passes > 0) return LaunchPasses(p, plan.passes, plan.gemm_tiling, workspace, stream);
  BlockArgsOf<E> a;
  MakeArgs(p, plan, &a);
  a.weights_first = WeightsFirst(p.n) ? 1 : 0;
  KernelFn kernel = KernelFor<E>(plan.f_tile, plan.exact, plan.groups, plan.wide);
  if (kernel == nullptr || Occupancy(kernel, plan.shared_bytes, plan.groups) == 0) return cudaErrorInvalidConfiguration;
  CUtensorMap maps[3];
  std::memset(maps, 0, sizeof(maps));
  if (plan.tma) {
    if (Encoder() == nullptr) return cudaErrorNotSupported;
    const uint64_t x_dims[4] = {static_cast<uint64_t>(p.c), static_cast<uint64_t>(p.w), static_cast<uint64_t>(p.h),
                                static_cast<uint64_t>(p.n)};
    // the region is the first stage's A operand (swizzled slabs), or without one the depthwise stage's
    // input (one chunk's channels a box, not swizzled)
    const uint32_t x_inner = p.pw1 ? kSlabElems<E> : kChunk;
    const uint32_t x_box[4] = {x_inner, static_cast<uint32_t>(a.region_w), static_cast<uint32_t>(a.region_h), 1};
    if (!EncodeMap(&maps[0], p.x, 4, x_dims, x_box, p.pw1)) return cudaErrorInvalidValue;
    if (p.pw1) {
      const uint64_t dims[2] = {static_cast<uint64_t>(p.c), static_cast<uint64_t>(p.m)};
      const uint32_t box[2] = {kSlabElems<E>, kChunk};
      if (!EncodeMap(&maps[1], p.w1, 2, dims, box)) return cudaErrorInvalidValue;
    }
    if (p.pwl) {
      const uint64_t dims[2] = {static_cast<uint64_t>(p.m), static_cast<uint64_t>(p.f)};
      const uint32_t box[2] = {kSlabElems<E>, static_cast<uint32_t>(plan.f_tile)};
      if (!EncodeMap(&maps[2], p.w2, 2, dims, box)) return cudaErrorInvalidValue;
    }
  }
#if defined(FCM_BLOCK_TRACE)
  TraceLaunch(&a, plan.grid);
#endif
  const int cluster = ClusteredSplit(p, plan.split) ? plan.split : 1;
  const LaunchConfig launch(dim3(plan.grid), BlockThreads(plan.groups), plan.shared_bytes, dim3(cluster), CurrentDevice().major >= 9,
                            stream);
  void* args[] = {&a, &maps[0], &maps[1], &maps[2]};
  cudaError_t err = cudaLaunchKernelExC(&launch.config, kernel, args);
  if (err == cudaSuccess) err = cudaGetLastError();
  return err;
}

#define FCM_BLOCK_LAUNCHER(E)                                                                      \
  template BlockPlan CompleteBlockPlan<E>(const ChainProblemOf<E>& p, BlockPlan plan);             \
  template std::vector<BlockPlan> BlockCandidates<E>(const ChainProblemOf<E>& p, bool separate_passes);                  \
  template std::vector<BlockPlan> UnrankedCandidates<E>(const ChainProblemOf<E>& p);                                     \
  template BlockPlan PlanBlock<E>(const ChainProblemOf<E>& p, bool separate_passes);              \
  template BlockPlan ParseBlockPlan<E>(const ChainProblemOf<E>& p, const std::string& text);       \
  template cudaError_t LaunchBlock<E>(const ChainProblemOf<E>& p, const BlockPlan& plan, cudaStream_t stream, void* workspace);
FCM_BLOCK_LAUNCHER(float)
FCM_BLOCK_LAUNCHER(__half)
FCM_BLOCK_LAUNCHER(__nv_bfloat16)
#undef FCM_BLOCK_LAUNCHER

}  // namespace block
}  // namespace fcm
