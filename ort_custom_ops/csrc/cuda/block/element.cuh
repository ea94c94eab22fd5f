// The element types of the fused-block kernels' tensors: FP32 (pointwise stages on TF32 tensor
// cores, or exact FP32), FP16 and BF16 (pointwise stages on FP16 / BF16 tensor cores). Every type
// accumulates in FP32, and the depthwise stage computes in FP32 whatever the tensors hold.
//
// The shared-memory layout is the same in bytes for every type (tile_layout.cuh: 128-byte slab
// rows, 16-byte pieces), so a slab row holds 32 FP32 or 64 half channels, and a tensor-core k step
// reads 32 bytes of each row: 8 TF32 or 16 half channels.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "tile_layout.cuh"

namespace fcm {
namespace block {

template <class E>
struct Element;

template <>
struct Element<float> {
  static constexpr CUtensorMapDataType kTmaType = CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
  static constexpr const char* kName = "FP32";
  __device__ __forceinline__ static float ToFloat(float v) { return v; }
  __device__ __forceinline__ static float FromFloat(float v) { return v; }
};

template <>
struct Element<__half> {
  static constexpr CUtensorMapDataType kTmaType = CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  static constexpr const char* kName = "FP16";
  __device__ __forceinline__ static float ToFloat(__half v) { return __half2float(v); }
  __device__ __forceinline__ static __half FromFloat(float v) { return __float2half_rn(v); }
};

template <>
struct Element<__nv_bfloat16> {
  static constexpr CUtensorMapDataType kTmaType = CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  static constexpr const char* kName = "BF16";
  __device__ __forceinline__ static float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ __forceinline__ static __nv_bfloat16 FromFloat(float v) { return __float2bfloat16_rn(v); }
};

template <class E>
constexpr bool kIsHalf = sizeof(E) == 2;

// Channels of one 128-byte slab row, and of one 16-byte piece.
template <class E>
constexpr int kSlabElems = 128 / static_cast<int>(sizeof(E));
template <class E>
constexpr int kPieceElems = 16 / static_cast<int>(sizeof(E));

// Two values rounded to a half type, as the 32-bit word they make in memory (v0 at the lower
// address): one packing conversion (cvt.rn.f16x2.f32 / cvt.rn.bf16x2.f32), each value rounded to
// nearest as FromFloat rounds it, where two conversions and the packing took three or four.
template <class E>
__device__ __forceinline__ uint32_t PackHalves(float v0, float v1) {
  if constexpr (std::is_same_v<E, __half>) {
    const __half2 pair = __floats2half2_rn(v0, v1);
    return *reinterpret_cast<const uint32_t*>(&pair);
  } else {
    static_assert(std::is_same_v<E, __nv_bfloat16>, "a half type");
    const __nv_bfloat162 pair = __floats2bfloat162_rn(v0, v1);
    return *reinterpret_cast<const uint32_t*>(&pair);
  }
}

// The two values of such a word as floats (x: the lower address's).
template <class E>
__device__ __forceinline__ float2 UnpackHalves(uint32_t word) {
  if constexpr (std::is_same_v<E, __half>) {
    return __half22float2(*reinterpret_cast<const __half2*>(&word));
  } else {
    static_assert(std::is_same_v<E, __nv_bfloat16>, "a half type");
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&word));
  }
}

// Two adjacent values into device memory in one store (`at` aligned to the pair).
template <class E>
__device__ __forceinline__ void StorePair(E* at, float v0, float v1) {
  if constexpr (kIsHalf<E>) {
    *reinterpret_cast<uint32_t*>(at) = PackHalves<E>(v0, v1);
  } else {
    *reinterpret_cast<float2*>(at) = make_float2(v0, v1);
  }
}

// Tensor-core k steps (32 bytes each) over a chunk's 32 channels: the last stage's K per chunk.
template <class E>
constexpr int kChunkSteps = kChunk * static_cast<int>(sizeof(E)) / 32;

// Byte offset of channel `k` of `row` in a swizzled slab of E.
template <class E>
__host__ __device__ __forceinline__ uint32_t SwizzledAt(int row, int k) {
  return SwizzledOffset(row, k / kPieceElems<E>) + (k % kPieceElems<E>) * static_cast<uint32_t>(sizeof(E));
}

}  // namespace block
}  // namespace fcm
