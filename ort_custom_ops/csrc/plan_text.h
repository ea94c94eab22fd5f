// The text of one CUDA launch plan, "pixels,HxW,f_tile,split,buffers,w1_direct[,cluster]", read in
// one place: by spec.cc when ONNX Runtime creates a kernel (a node's cuda_plans attribute) and by
// the CUDA launcher (FCM_CUDA_PLAN and the tuned plans). Plain C++, so CPU-only builds check it too.
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

}  // namespace fcm
