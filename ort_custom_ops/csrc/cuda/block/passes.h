// The stages of a fused node as separate kernels through a workspace, for the wide products the
// fused-block kernels run slower than a GEMM library (Xception's 728 x 728 at 14x14:
// benchmarks/2026-12-06-h100-wide-groups). One pass for a lone PW: CUTLASS's Hopper GEMM
// (TMA, warp-specialized) multiplies the input by W2 with the bias, the activation and the residual
// in its epilogue (the fused kernels stream a lone PW's input through chunks of 32 channels, a
// serial chain per unit); a channel scale is folded into per-image weights in the workspace first,
// each image's rows then multiplied by its own. Two passes for DW->PW: the depthwise stage writes its
// output to the workspace [pixels, m], then CUTLASS's Hopper GEMM (TMA, warp-specialized) multiplies
// it by W2 with the bias, the activation and the residual in its epilogue. Two passes for PW->DW:
// a GEMM with W1 (its bias and activation) into the workspace, then the depthwise pass from it into
// the output (the fused kernels write PW->DW's whole expanded output anyway, so the passes add only
// its round trip). Three passes for PW->DW->PW: that GEMM first, then DW->PW's two. The
// intermediates make a round trip through L2 and device memory, which the fused kernels avoid; the
// products run at the library's efficiency, which they do not. The epilogues apply the node's own
// activations (any of the vocabulary's, with the fused kernels' formulas).
//
// In: a ChainProblemOf<E> (FP32 with TF32 allowed, FP16 or BF16), NHWC: a lone PW, DW->PW, PW->DW or
// PW->DW->PW. Out: y, as the fused kernels compute it (the depthwise stage in FP32, every
// intermediate rounded to E, the products accumulated in FP32). The plans kOnePassPlan ("gemm"),
// kTwoPassPlan ("dw+gemm"), kTwoPassPwDwPlan ("gemm+dw") and kThreePassPlan ("gemm+dw+gemm").
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "../chain_launch.h"

namespace fcm {
namespace block {

// How the passes' GEMMs are tiled. kByShape (the default): 64 x 64 tiles (one consumer warpgroup)
// for the products whose 128 x 128 tiles would not fill the SMs once and whose 64 x 64 tiles do not
// take more than one wave (MobileNetV2's 7x7 projections at batch 32, every product at batch 1),
// else 128 x 32 or 128 x 64 for outputs of at most that many channels, else 128 x 128; never
// stream-K. kLarge (FCM_CUDA_GEMM_TILES=large, for comparison): 128 x 128 tiles, and stream-K for
// the deep last product of three passes where that is faster by the estimate.
enum class GemmTiling { kLarge, kByShape };
GemmTiling GemmTilingFromEnvironment();

// Why `passes` (1, 2 or 3) separate passes cannot run this problem on this device ("" where they can).
template <class E>
std::string PassesRefusal(const ChainProblemOf<E>& p, int passes, int device_major);
// The workspace they need: the intermediates, in E (one pass: the scaled weights, if any).
template <class E>
size_t PassesWorkspaceBytes(const ChainProblemOf<E>& p, int passes, GemmTiling tiling);
// The time in microseconds, fitted to measured ones (device-memory bytes, and each GEMM's tiles in
// waves over the SMs).
template <class E>
double PassesEstimateUs(const ChainProblemOf<E>& p, int passes, GemmTiling tiling);
// Every pass on `stream`; `workspace` holds PassesWorkspaceBytes(p, passes, tiling) (may be null where
// that is 0).
template <class E>
cudaError_t LaunchPasses(const ChainProblemOf<E>& p, int passes, GemmTiling tiling, void* workspace, cudaStream_t stream);

}  // namespace block
}  // namespace fcm
