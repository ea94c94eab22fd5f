// The text of one CUDA launch plan, read in one place: by spec.cc when ONNX Runtime creates a kernel
// (a node's cuda_plans attribute) and by the CUDA launchers (those plans, and the FCM_CUDA_PLAN
// debugging override).
// Plain C++, so CPU-only builds check it too. Two families of kernels, two forms:
//   NCHW nodes (the chain kernels):           "pixels,HxW,f_tile,split,buffers,w1_direct[,cluster]"
//   channels_last nodes (the block kernels):  "HxW,f_tile,split,stages[,groups]"
#pragma once

#include <cstdio>
#include <string>

namespace fcm {

struct PlanText {
  int pixels = 0, tile_h = 0, tile_w = 0, f_tile = 0, split = 0, buffers = 0, w1_direct = 0;
  int cluster = 0;  // optional seventh field
};

// Whether `text` is exactly six or seven numbers in that form (nothing before or after); fills *out.
inline bool ParsePlanText(const std::string& text, PlanText* out) {
  PlanText v;
  int used = -1;
  const int fields = std::sscanf(text.c_str(), "%d,%dx%d,%d,%d,%d,%d%n,%d%n", &v.pixels, &v.tile_h, &v.tile_w, &v.f_tile,
                                 &v.split, &v.buffers, &v.w1_direct, &used, &v.cluster, &used);
  if ((fields != 7 && fields != 8) || used != static_cast<int>(text.size())) return false;
  *out = v;
  return true;
}

// A block-kernel plan: tile (output pixels), output channels per work unit, CTAs of a cluster
// sharing a unit, depth of the operand ring, and optionally the computing warpgroups of a CTA
// (2: they share each unit's chunks). Or the stages as separate kernels through a workspace
// (block/passes.cu): kOnePassPlan for a lone PW (the product as a GEMM), kTwoPassPlan for DW->PW
// (a depthwise pass, then the product as a GEMM), kTwoPassPwDwPlan for PW->DW (a GEMM, then the
// depthwise pass), kThreePassPlan for PW->DW->PW (a GEMM, a depthwise pass, a GEMM).
struct BlockPlanFields {
  int tile_h = 0, tile_w = 0, f_tile = 0, split = 0, stages = 0;
  int groups = 1;  // optional fifth field
  int passes = 0;  // 0: one fused kernel; 1, 2 or 3: separate passes
  bool gemm_first = false;  // two passes: PW->DW's (a GEMM first), not DW->PW's
};

constexpr const char* kOnePassPlan = "gemm";
constexpr const char* kTwoPassPlan = "dw+gemm";
constexpr const char* kTwoPassPwDwPlan = "gemm+dw";
constexpr const char* kThreePassPlan = "gemm+dw+gemm";

// Whether `text` is exactly "HxW,f_tile,split,stages[,groups]" (nothing before or after),
// or one of the separate passes' plans; fills *out.
inline bool ParseBlockPlanText(const std::string& text, BlockPlanFields* out) {
  BlockPlanFields v;
  if (text == kOnePassPlan || text == kTwoPassPlan || text == kTwoPassPwDwPlan || text == kThreePassPlan) {
    v.passes = text == kOnePassPlan ? 1 : text == kThreePassPlan ? 3 : 2;
    v.gemm_first = text == kTwoPassPwDwPlan;
    *out = v;
    return true;
  }
  int used = -1;
  const int fields = std::sscanf(text.c_str(), "%dx%d,%d,%d,%d%n,%d%n", &v.tile_h, &v.tile_w, &v.f_tile, &v.split, &v.stages,
                                 &used, &v.groups, &used);
  if ((fields != 5 && fields != 6) || used != static_cast<int>(text.size())) return false;
  *out = v;
  return true;
}

}  // namespace fcm
