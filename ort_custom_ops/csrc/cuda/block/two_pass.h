// DW->PW in two kernels, for the wide products the fused-block kernels run slower than a GEMM
// library (Xception's 728 x 728 at 14x14: benchmarks/2026-12-06-h100-wide-groups): the depthwise
// stage writes its output to a workspace [pixels, m], then CUTLASS's Hopper GEMM (TMA,
// warp-specialized, TF32) multiplies it by W2 with the bias, the activation and the residual in its
// epilogue. The intermediate makes a round trip through L2 and device memory, which the fused
// kernels avoid; the product runs at the library's efficiency, which they do not.
//
// In: a ChainProblem with a depthwise and a last pointwise stage and nothing before them (FP32
// tensors, TF32 allowed), NHWC. Out: y, as the fused kernels compute it. A plan the block launcher
// names kTwoPassPlan ("dw+gemm"); never the kernels' own choice: fcm tune times it among the
// candidates (FcmBlockCandidates), and a node's cuda_plans or a forced plan names it.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "../chain_launch.h"

namespace fcm {
namespace block {

// Why the two passes cannot run this problem on this device ("" where they can).
std::string TwoPassRefusal(const ChainProblem& p, int device_major);
// The workspace the two passes need: the depthwise stage's output, FP32.
size_t TwoPassWorkspaceBytes(const ChainProblem& p);
// A rough time in microseconds (device-memory bytes and the product's FLOPs at what a GEMM library
// reaches on such shapes).
double TwoPassEstimateUs(const ChainProblem& p);
// Both kernels on `stream`; `workspace` holds TwoPassWorkspaceBytes(p).
cudaError_t LaunchTwoPass(const ChainProblem& p, void* workspace, cudaStream_t stream);

}  // namespace block
}  // namespace fcm
