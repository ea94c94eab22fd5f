// The CPU reference kernel of every FCM op: one generic chain executor.
//
// The output is cut into blocks of rows per image; for each block every stage computes just the rows
// the next one needs (halo rows are recomputed at block edges), in per-block buffers, so that no
// intermediate feature map is ever stored whole. The depthwise stage, the pointwise stage and the
// epilogue are separate functions (cpu_chain.cc). The blocks are channel-planar in either layout:
// with channels_last, X's rows are gathered into them and the output (and the residual) is
// read and written [N, H, W, C]. The arithmetic is fp32; for the half-precision ops every stage's output
// (after its activation) is rounded to the element type (ChainTensors::round), as stored between stages.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "../parallel_for.h"
#include "../spec.h"

namespace fcm {

struct ChainTensors {
  bool channels_last = false;          // x and y NHWC instead of NCHW
  const float* x = nullptr;            // [N, C, H, W] or [N, H, W, C]
  std::vector<const float*> weights;   // per stage
  std::vector<const float*> biases;    // per stage
  const float* scale = nullptr;        // optional [N or 1, C] multiplying X's channels (first stage pointwise)
  int64_t scale_batch = 0;             // 1 (broadcast) or N
  float* y = nullptr;                  // [N, F, Ho, Wo] or [N, Ho, Wo, F]
  int64_t n = 0, h = 0, w = 0;
  float (*round)(float) = nullptr;     // half precision: rounds each stage's output to the element type
};

void RunChainCpu(const ChainSpec& spec, const ChainTensors& t, const ParallelFor& parallel_for);

}  // namespace fcm
