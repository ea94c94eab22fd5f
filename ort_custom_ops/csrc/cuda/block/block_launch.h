// The host side of the fused-block kernels (NHWC): how a launch divides the work, and the launch.
// Independent of ONNX Runtime (the ORT op and the test harness call it).
//
// In: a ChainProblemOf<E> whose x and y are NHWC ([n, h, w, c] and [n, out_h, out_w, f], or m
// channels without a last pointwise stage) and whose weights are as the ops take them (W1 [m, c],
// Wd [m, k, k], W2 [f, m]), every tensor of element type E: float, __half or __nv_bfloat16.
// PlanBlock picks a plan for the device and shapes; LaunchBlock runs it on a stream.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "../chain_launch.h"
#include "passes.h"

namespace fcm {
namespace block {

struct BlockPlan {
  std::string error;      // non-empty: no launch fits (the reason)
  int tile_h = 0, tile_w = 0;  // output pixels per tile (tile_h * tile_w <= 64)
  int f_tile = 0;         // output channels per work unit: the kernel's compiled width (0: no last pointwise stage)
  int split = 1;          // CTAs of a cluster sharing a unit's intermediate channels (sm_90)
  int stages = 3;         // operand ring depth, 3 or 4; 0: resident (each chunk of a CTA its own stage, loaded once)
  int groups = 1;         // computing warpgroups of a CTA (2: they share each unit's chunks)
  int passes = 0;         // 0: the fused kernel; 1: PW, 2: DW->PW or PW->DW, 3: PW->DW->PW as separate kernels (passes.h)
  bool gemm_first = false;  // two passes: PW->DW's, a GEMM then the depthwise pass (gemm+dw)
  GemmTiling gemm_tiling = GemmTiling::kLarge;  // separate passes: their GEMMs' tiles (passes.h)
  // filled in by CompleteBlockPlan
  bool tma = false;       // TMA copies (sm_90, 16-byte aligned rows) instead of cp.async
  bool wide = false;      // an input region of more than 128 pixels (the wide-region kernels)
  int regions = 1;        // input-region buffers (2: the next unit's loads during this one)
  bool exact = false;     // FP32 FMAs instead of TF32 tensor cores
  const char* arithmetic = "TF32";  // of the pointwise stages: TF32, FP32 (exact), FP16 or BF16
  size_t shared_bytes = 0;
  long long units = 0;    // (image, tile, output-channel slice) triples
  int grid = 0;           // CTAs launched (a multiple of split); each loops over units
  int resident = 0;       // CTAs an SM holds at once
  size_t workspace_bytes = 0;  // device memory the launch needs (separate passes: the intermediates)
  double estimate_us = 0.0;
};

// The output-channel widths the kernels are compiled for.
const std::vector<int>& CompiledWidths(bool exact);

// The plan the kernels choose for this device and these shapes (`separate_passes`: or only among the
// fused kernel's plans, which need no workspace).
template <class E>
BlockPlan PlanBlock(const ChainProblemOf<E>& p, bool separate_passes = true);
// `plan` with its division fields (tile, f_tile, split, stages) checked and the rest filled in;
// error says why it cannot run.
template <class E>
BlockPlan CompleteBlockPlan(const ChainProblemOf<E>& p, BlockPlan plan);
// Every plan that fits, with its estimate (for the tuner; `separate_passes` false: the fused
// kernel's plans only).
template <class E>
std::vector<BlockPlan> BlockCandidates(const ChainProblemOf<E>& p, bool separate_passes = true);
// The plans a tuner times besides the best estimates, because the estimate does not rank them
// against the fused kernel's: the separate passes where they take the problem (their estimate is
// fitted to FP32 times of two and three passes; a half-type node is ranked on its FP32 problem,
// with twice its bytes), a lone PW's single GEMM and PW->DW's two passes among them (their
// estimates not yet fitted), two computing warpgroups on an output under 64 channels (one 64-wide
// slice, on the three best-estimated tiles; not yet timed), splits over a cluster of 16 CTAs
// (sm_90's non-portable size) where the best estimates split over 8 (not yet timed), and
// the wide-region plans (PW->DW->PW at stride 2, an input region of 129 to 256 pixels), which the
// kernels never choose themselves: measured forced on MobileNetV2's stride-2 blocks, they won on two
// (1.18x, 1.26x at batch 32) and lost on the others and at batch 1, which the estimate did not tell
// apart (benchmarks/2026-12-06-h100-wide-regions).
template <class E>
std::vector<BlockPlan> UnrankedCandidates(const ChainProblemOf<E>& p);
// "HxW,f_tile,split,stages[,groups]" (a tuned plan, or FCM_CUDA_PLAN) completed for this problem.
template <class E>
BlockPlan ParseBlockPlan(const ChainProblemOf<E>& p, const std::string& text);
std::string BlockPlanText(const BlockPlan& plan);
std::string DescribeBlockPlan(const BlockPlan& plan);

// `workspace`: plan.workspace_bytes of device memory where the plan needs them.
template <class E>
cudaError_t LaunchBlock(const ChainProblemOf<E>& p, const BlockPlan& plan, cudaStream_t stream, void* workspace = nullptr);

// Measurement builds (FCM_BLOCK_TRACE, trace.h): TraceReset allocates the device's records (once; call
// it before any traced launch, outside a CUDA graph's capture) and clears them; TraceCopy copies up to
// `capacity` records to `out` once the device is idle. Both return the records' count, negative where
// the library was built without tracing (-1) or the device refused (-2).
int TraceReset();
int TraceCopy(void* out, int capacity);

}  // namespace block
}  // namespace fcm
