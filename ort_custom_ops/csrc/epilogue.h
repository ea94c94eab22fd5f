// Epilogues: what happens to a stage's accumulator after its main loop.
//
// A stage's result is `activation(acc + bias)`; the last stage may add the group's input (residual)
// and apply one more activation. These are small value-level functions shared by the CPU and the
// CUDA kernels, so adding an activation is one enum value, its formula in ActivationValue and its
// name in FCM_FOR_EACH_ACT and ParseActivation.
#pragma once

#include <cmath>
#include <string>

#if defined(__CUDACC__)
#define FCM_HD __host__ __device__ __forceinline__
#define FCM_UNROLL _Pragma("unroll")
#else
#define FCM_HD inline
#define FCM_UNROLL
#endif

namespace fcm {

enum class Act : int { kNone = 0, kRelu, kClip, kHardSwish, kSwish, kSigmoid };

// One activation's formula: the only place an activation is defined. `kind` is a constant where
// Activation calls it, so the switch folds away.
FCM_HD float ActivationValue(Act kind, float x, float lo, float hi) {
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

// Every Act, for the dispatch below (an activation added to Act goes here too).
#define FCM_FOR_EACH_ACT(X) X(Act::kNone) X(Act::kRelu) X(Act::kClip) X(Act::kHardSwish) X(Act::kSwish) X(Act::kSigmoid)

// An activation with its parameters (clip bounds; ReLU6 is a clip to [0, 6]).
struct Activation {
  Act kind = Act::kNone;
  float lo = 0.f;
  float hi = 0.f;

  FCM_HD float operator()(float x) const {
    switch (kind) {
#define FCM_ACT_ONE(K) \
  case K:              \
    return ActivationValue(K, x, lo, hi);
      FCM_FOR_EACH_ACT(FCM_ACT_ONE)
#undef FCM_ACT_ONE
    }
    return x;
  }

  // The activation of n values in place, dispatched once rather than per value (the GPU kernels'
  // epilogues hold a fragment's values in registers).
  template <int N>
  FCM_HD void Apply(float (&v)[N]) const {
    switch (kind) {
#define FCM_ACT_ALL(K)                                                   \
  case K:                                                                \
    FCM_UNROLL for (int i = 0; i < N; ++i) v[i] = ActivationValue(K, v[i], lo, hi); \
    return;
      FCM_FOR_EACH_ACT(FCM_ACT_ALL)
#undef FCM_ACT_ALL
    }
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
