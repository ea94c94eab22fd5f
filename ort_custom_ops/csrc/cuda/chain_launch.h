// The fused-chain CUDA kernels as a plain launcher, independent of ONNX Runtime (the ORT op,
// cuda_op.cu, calls it).
//
// In: a ChainProblem (device pointers, shapes, the stages). PlanChain chooses how to divide the
// work (tile, output-channel range and intermediate-channel split per block) and says how much
// workspace the launch needs; LaunchChain runs it on a stream.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <vector>

#include "../epilogue.h"

namespace fcm {

// The problem in element type T (float; the block kernels also take __half and __nv_bfloat16, with
// every tensor in that type): tensors, shapes and stages.
template <class T>
struct ChainProblemOf {
  const T* x = nullptr;  // [n, c, h, w]
  T* y = nullptr;        // [n, out_c, out_h, out_w]
  const T* scale = nullptr;  // optional [scale_batch, c]: multiplies x's channels (pointwise first stage)
  int scale_batch = 0;
  // the stages the chain has: first pointwise (pw1), depthwise (dw), last pointwise (pwl)
  bool pw1 = false, dw = false, pwl = false;
  const T* w1 = nullptr;  // [m, c]
  const T* b1 = nullptr;  // [m]
  const T* wd = nullptr;  // [m, k, k]
  const T* bd = nullptr;  // [m]
  const T* w2 = nullptr;  // [f, m]
  const T* b2 = nullptr;  // [f]
  Activation act1, actd, act2;
  int n = 0, c = 0, h = 0, w = 0;
  int m = 0;  // intermediate channels: the first pointwise stage's outputs (c without one)
  int f = 0;  // output channels of the last pointwise stage (0 without one)
  int out_h = 0, out_w = 0;
  int kernel = 1, stride = 1, pad_top = 0, pad_left = 0;
  bool residual = false;
  Activation res_act;
  bool tf32 = true;  // FP32: pointwise stages on TF32 tensor cores; false: exact FP32 (half types: unused)
};

using ChainProblem = ChainProblemOf<float>;

// How one launch divides the work.
struct ChainPlan {
  std::string error;  // non-empty: no launch fits (the reason)
  int pixels = 0;     // output pixels per block the kernel is compiled for (64 or 128)
  int tile_h = 0, tile_w = 0;
  int f_tile = 0;     // output channels per block (last pointwise stage)
  int split = 1;      // blocks sharing one output tile's intermediate channels
  // split > 1: a second kernel adds the shares from a workspace; with `cluster` (sm_90, splits of
  // 2 to 16) the sharing blocks form a thread-block cluster and add them in distributed shared memory
  bool cluster = false;
  int buffers = 2;    // weight/input chunk buffers (2: the next chunk loads while this one computes)
  bool w1_direct = false;  // first-stage weights read from device memory instead of staged in shared
  size_t shared_bytes = 0;
  size_t workspace_bytes = 0;  // device memory the launch needs (split > 1 without a cluster)
  long long blocks = 0;
  int resident = 0;            // blocks an SM holds at once (registers and shared memory)
  double estimate_us = 0.0;    // the plan's cost estimate (for comparisons, not a prediction)
};

ChainPlan PlanChain(const ChainProblem& p);
// Every plan that fits this device, with its estimate (PlanChain takes the cheapest; the kernel
// benchmark times them).
std::vector<ChainPlan> ChainCandidates(const ChainProblem& p);
// A plan with the division fields set (pixels, tile, f_tile, split, buffers, w1_direct, cluster)
// checked and completed (shared memory, blocks, workspace, estimate); error says why it cannot run.
ChainPlan CompletePlan(const ChainProblem& p, ChainPlan plan);
// The plan "pixels,HxW,f_tile,split,buffers,w1_direct[,cluster]" (a node's cuda_plans, or the
// FCM_CUDA_PLAN debugging override), clamped to the problem's sizes. The kernels' own
// plans (PlanChain) add split shares through the workspace; `fcm tune` times clusters too.
ChainPlan ForcedPlan(const ChainProblem& p, const std::string& text);
// Runs the chain with `plan` (from PlanChain for the same shapes); `workspace` holds at least
// plan.workspace_bytes. Everything goes to `stream`.
cudaError_t LaunchChain(const ChainProblem& p, const ChainPlan& plan, void* workspace, cudaStream_t stream);
std::string DescribePlan(const ChainPlan& plan);

}  // namespace fcm
