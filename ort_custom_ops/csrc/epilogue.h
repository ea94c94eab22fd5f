// Epilogues: what happens to a stage's accumulator after its main loop.
//
// A stage's result is `activation(acc + bias)`; the last stage may add the group's input (residual)
// and apply one more activation. These are small value-level functions shared by the CPU and the
// CUDA kernels, so adding an activation is one enum value and one case here.
#pragma once

#include <cmath>
#include <string>

#if defined(__CUDACC__)
#define FCM_HD __host__ __device__ __forceinline__
#else
#define FCM_HD inline
#endif

namespace fcm {

enum class Act : int { kNone = 0, kRelu, kClip, kHardSwish, kSwish, kSigmoid };

// An activation with its parameters (clip bounds; ReLU6 is a clip to [0, 6]).
struct Activation {
  Act kind = Act::kNone;
  float lo = 0.f;
  float hi = 0.f;

  FCM_HD float operator()(float x) const {
    switch (kind) {
      case Act::kNone:
        return x;
      case Act::kRelu:
        return x > 0.f ? x : 0.f;
      case Act::kClip:
        return fminf(fmaxf(x, lo), hi);
      case Act::kHardSwish:
        return x * fminf(fmaxf(x + 3.f, 0.f), 6.f) * (1.f / 6.f);
      case Act::kSwish:
        return x / (1.f + expf(-x));
      case Act::kSigmoid:
        return 1.f / (1.f + expf(-x));
    }
    return x;
  }
};

// Parses the attribute spelling ("none", "relu", "relu6", "clip", "hard_swish", "swish", "sigmoid");
// `clip` supplies the bounds for "clip". Returns false for an unknown name.
inline bool ParseActivation(const std::string& name, const float* clip, Activation* out) {
  Activation a;
  if (name == "none" || name.empty()) {
    a.kind = Act::kNone;
  } else if (name == "relu") {
    a.kind = Act::kRelu;
  } else if (name == "relu6") {
    a = {Act::kClip, 0.f, 6.f};
  } else if (name == "clip") {
    if (clip == nullptr) return false;
    a = {Act::kClip, clip[0], clip[1]};
  } else if (name == "hard_swish") {
    a.kind = Act::kHardSwish;
  } else if (name == "swish") {
    a.kind = Act::kSwish;
  } else if (name == "sigmoid") {
    a.kind = Act::kSigmoid;
  } else {
    return false;
  }
  *out = a;
  return true;
}

}  // namespace fcm
