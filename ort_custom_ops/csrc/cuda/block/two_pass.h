// DW->PW in two kernels, for the wide products the fused-block kernels run slower than a GEMM
// library (Xception's 728 x 728 at 14x14: benchmarks/2026-12-06-h100-wide-groups): the depthwise
// stage writes its output to a workspace [pixels, m], then CUTLASS's Hopper GEMM (TMA,
// warp-specialized, TF32) multiplies it by W2 with the bias, the activation and the residual in its
// epilogue. The intermediate makes a round trip through L2 and device memory, which the fused
// kernels avoid; the product runs at the library's efficiency, which they do not.
//
// In: a ChainProblemOf<E> (FP32 with TF32 allowed, FP16 or BF16) with a depthwise and a last
// pointwise stage and nothing before them, NHWC. Out: y, as the fused kernels compute it (the
// depthwise stage in FP32, its output rounded to E, the product accumulated in FP32). The plan the
// block launcher names kTwoPassPlan ("dw+gemm"), one of the kernels' candidates where it takes the
// problem.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "../chain_launch.h"

namespace fcm {
namespace block {

// Why the two passes cannot run this problem on this device ("" where they can).
template <class E>
std::string TwoPassRefusal(const ChainProblemOf<E>& p, int device_major);
// The workspace the two passes need: the depthwise stage's output, in E.
template <class E>
size_t TwoPassWorkspaceBytes(const ChainProblemOf<E>& p);
// The time in microseconds, fitted to measured ones (device-memory bytes, and the GEMM's tiles in
// waves over the SMs).
template <class E>
double TwoPassEstimateUs(const ChainProblemOf<E>& p);
// Both kernels on `stream`; `workspace` holds TwoPassWorkspaceBytes(p).
template <class E>
cudaError_t LaunchTwoPass(const ChainProblemOf<E>& p, void* workspace, cudaStream_t stream);

}  // namespace block
}  // namespace fcm
