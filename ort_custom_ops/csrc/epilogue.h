// Epilogues: what happens to a stage's accumulator after its main loop.
//
// A stage's result is `activation(acc + bias)`; the last stage may add the group's input (residual)
// and apply one more activation. These are small value-level functions shared by the CPU and the
// CUDA kernels. The activations themselves (the Act enum, FCM_FOR_EACH_ACT and the attribute
// spellings) come from the op vocabulary (vocabulary.h, generated from fcm_core/vocabulary.py):
// adding one there, and its formula in ActivationValue here, is all the kernels need.
#pragma once

#include <cmath>
#include <string>

#include "vocabulary.h"

#if defined(__CUDACC__)
#define FCM_HD __host__ __device__ __forceinline__
#define FCM_UNROLL _Pragma("unroll")
#else
#define FCM_HD inline
#define FCM_UNROLL
#endif

namespace fcm {

// e^x and a / b for the activations: on the GPU the hardware's approximations, with subnormals
// flushed (ex2.approx.ftz of x log2(e), and a times rcp.approx.ftz of b: two multi-function
// instructions and a multiply each; expf and an IEEE division are about 30, __expf and __fdividef
// add range fix-ups): the fused kernels apply them to every recomputed halo pixel, and there they
// were most of the instructions issued. Relative error ~1e-6 for |x| < 80; past that 1 + e^-x is
// infinite or 1 and the swish's or sigmoid's value 0 or x, as the exact ones nearly are.
FCM_HD float ActivationExp(float x) {
#if defined(__CUDA_ARCH__)
  float e;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(x * 1.4426950408889634f));
  return e;
#else
  return std::exp(x);
#endif
}
FCM_HD float ActivationDivide(float a, float b) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(b));
  return a * r;
#else
  return a / b;
#endif
}

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
      return ActivationDivide(x, 1.f + ActivationExp(-x));
    case Act::kSigmoid:
      return ActivationDivide(1.f, 1.f + ActivationExp(-x));
  }
  return x;
}

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
    // Clips (ReLU6 among them) first: the commonest activation, at one test instead of the
    // switch's chain of them (per fragment, on the GPU kernels' critical path).
    if (kind == Act::kClip) {
      FCM_UNROLL for (int i = 0; i < N; ++i) v[i] = ActivationValue(Act::kClip, v[i], lo, hi);
      return;
    }
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

// Parses an attribute spelling (vocabulary::kActivations: "none", "relu", "relu6", ...; empty is
// "none"); `clip` supplies the bounds of an activation without fixed ones that needs them ("clip").
// Returns false for an unknown name.
inline bool ParseActivation(const std::string& name, const float* clip, Activation* out) {
  for (const auto& known : vocabulary::kActivations) {
    if (name != known.name && !(name.empty() && known.kind == Act::kNone)) continue;
    Activation a;
    a.kind = known.kind;
    if (known.fixed_clip) {
      a.lo = known.lo, a.hi = known.hi;
    } else if (known.kind == Act::kClip) {
      if (clip == nullptr) return false;
      a.lo = clip[0], a.hi = clip[1];
    }
    *out = a;
    return true;
  }
  return false;
}

}  // namespace fcm
