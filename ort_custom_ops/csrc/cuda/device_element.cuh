// The device element type of an op's element type: float, __half for Ort::Float16_t, __nv_bfloat16 for
// Ort::BFloat16_t (the same bits).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../op.h"  // (ONNX Runtime's C++ API as the library includes it)

namespace fcm {

template <class T>
struct DeviceElement {
  using type = float;
};
template <>
struct DeviceElement<Ort::Float16_t> {
  using type = __half;
};
template <>
struct DeviceElement<Ort::BFloat16_t> {
  using type = __nv_bfloat16;
};

}  // namespace fcm
