// What a fused node computes: a chain of depthwise/pointwise stages, read and checked once, when
// ONNX Runtime creates the kernel.
//
// Inputs of every FCM op: X [N, C, H, W] (channels_last: [N, H, W, C]), then per stage its weights
// and bias
//   pointwise: W [F, C], B [F]        depthwise: W [C, K, K], B [C]
// and, when the first stage is pointwise, an optional per-channel scale S of N x C values (a
// squeeze-and-excitation block's output) that multiplies X's channels before the stage: [N, C, 1, 1]
// or [N, C] (channels_last: also [N, 1, 1, C], the same values in the same order); N may be 1.
// Output: Y [N, F, Ho, Wo] (channels_last: [N, Ho, Wo, F]).
//
// Attributes: channels_last (0/1, default 0: the layout of X, Y and the residual; the weights are the
// same in both); stage<i>_activation (string, i = 1..stages) and stage<i>_clip (floats [lo, hi], for
// "clip"); dw_kernel, dw_stride, dw_pads ([top, left, bottom, right], ONNX order) for the depthwise
// stage; residual (0/1: add X to the output), residual_activation, residual_clip; and the tiling the
// planner's cost model chose (tile_h, tile_w, tile_f, chunk, split), kept as a record of its figures
// (the CUDA kernels plan their own division of the work for the device and shapes they run on);
// allow_tf32 (0/1, default 1) lets the CUDA kernels run pointwise stages on TF32 tensor cores;
// plan_batch is the batch size the tiling was chosen for; cuda_plans (string, from `fcm tune`)
// holds the CUDA launch plans measured fastest on the tuning GPU, per batch size:
// "BATCH:pixels,HxW,f_tile,split,buffers,w1_direct[,cluster];BATCH:..." (a batch size not listed, or a plan
// that does not fit the GPU the model runs on, gets the kernels' own plan); cuda_plans_strict (0/1,
// default 0): 1 makes a listed plan that cannot run an error naming why, instead of giving way to the
// kernels' own (how `fcm tune` times each candidate plan, and how the GPU tests force one).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "epilogue.h"

namespace fcm {

enum class StageType : int { kPointwise = 0, kDepthwise = 1 };

struct Stage {
  StageType type = StageType::kPointwise;
  int64_t in_channels = 0;   // known once the weights' shapes are
  int64_t out_channels = 0;
  int64_t kernel = 1;        // depthwise: K
  int64_t stride = 1;
  std::array<int64_t, 4> pads{0, 0, 0, 0};  // top, left, bottom, right
  Activation activation;
};

struct Tiling {
  int64_t tile_h = 0, tile_w = 0, tile_f = 0, chunk = 0, split = 1;
};

struct ChainSpec {
  std::string op_name;
  std::string node_name;  // for error messages
  std::vector<Stage> stages;
  bool channels_last = false;  // X, Y (and the residual) NHWC instead of NCHW
  bool residual = false;
  Activation residual_activation;
  Tiling tiling;
  bool allow_tf32 = true;  // CUDA: pointwise stages on TF32 tensor cores (as cuDNN's default)
  int64_t plan_batch = 0;  // the batch the tiling was planned for (0: any)
  std::vector<std::pair<int64_t, std::string>> cuda_plans;  // (batch, CUDA launch plan) from `fcm tune`
  bool cuda_plans_strict = false;  // a listed plan that cannot run is an error, not the kernels' own plan

  size_t WeightInput(size_t stage) const { return 1 + 2 * stage; }
  size_t BiasInput(size_t stage) const { return 2 + 2 * stage; }
  size_t ScaleInput() const { return 1 + 2 * stages.size(); }

  // Output spatial size for an input of h x w (0 when the input is too small).
  void OutputSize(int64_t h, int64_t w, int64_t* out_h, int64_t* out_w) const;
  // Height (width) of the input region that stage `s` reads to produce `rows` output rows.
  int64_t InputExtent(size_t s, int64_t rows) const;
};

// The stage types of a float op (vocabulary.h's kFp32Kinds, kFp16Kinds, kBf16Kinds): FusedDwPw = {dw, pw},
// Fp16FusedDwPw likewise, ...; {} if unknown.
std::vector<StageType> StageTypesOf(const std::string& op_name);

// Parses a cuda_plans attribute into (batch, plan) pairs; returns what is wrong, or an empty string.
// (channels_last nodes run the block kernels, whose plans read "HxW,f_tile,split,stages").
std::string ParseCudaPlans(const std::string& text, bool channels_last, std::vector<std::pair<int64_t, std::string>>* out);

// Checks the chain's channel counts against each other and the residual and activations; returns an
// empty string when the spec is consistent, or what is wrong.
std::string Validate(const ChainSpec& spec);

}  // namespace fcm
