// The FCM op vocabulary for the C++ kernels. Generated from fcm_core/vocabulary.py by
// `python -m ort_custom_ops.ops.header`: do not edit (tests/ops/test_vocabulary.py fails when the two
// disagree).
#pragma once

#include <cstddef>

namespace fcm {

// What the kernels' epilogues compute (epilogue.h holds each formula).
enum class Act : int { kNone = 0, kRelu, kClip, kHardSwish, kSwish, kSigmoid };
#define FCM_FOR_EACH_ACT(X) X(Act::kNone) X(Act::kRelu) X(Act::kClip) X(Act::kHardSwish) X(Act::kSwish) X(Act::kSigmoid)

namespace vocabulary {

inline constexpr const char* kDomain = "ai.fcm";

// Attribute spellings of the activations; an alias runs another activation with fixed clip bounds.
struct ActivationName {
  const char* name;
  Act kind;
  bool fixed_clip;
  float lo, hi;
};
inline constexpr ActivationName kActivations[] = {
    {"none", Act::kNone, false, 0.f, 0.f},
    {"relu", Act::kRelu, false, 0.f, 0.f},
    {"relu6", Act::kClip, true, 0.0f, 6.0f},
    {"clip", Act::kClip, false, 0.f, 0.f},
    {"hard_swish", Act::kHardSwish, false, 0.f, 0.f},
    {"swish", Act::kSwish, false, 0.f, 0.f},
    {"sigmoid", Act::kSigmoid, false, 0.f, 0.f},
};
inline constexpr const char* kActivationList = "none, relu, relu6, clip, hard_swish, swish, sigmoid";

// The depthwise kernel sizes and strides the kernels take, and the same as text for messages.
inline constexpr int kDwKernels[] = {3, 5, 7};
inline constexpr int kDwStrides[] = {1, 2};
inline constexpr const char* kDwKernelList = "3, 5 or 7";
inline constexpr const char* kDwStrideList = "1 or 2";
template <size_t N>
constexpr bool OneOf(long long value, const int (&allowed)[N]) {
  for (int a : allowed) {
    if (value == a) return true;
  }
  return false;
}

// Every op type of the domain and the attributes it may carry.
inline constexpr const char* kFusedDwPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "allow_tf32", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kFp16FusedDwPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kBf16FusedDwPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kQFusedDwPwAttributes[] = {"scheme", "x_scale", "x_zero_point", "stage1_w_scales", "stage2_w_scales", "stage3_w_scales", "stage1_y_scale", "stage2_y_scale", "stage3_y_scale", "stage1_y_zero_point", "stage2_y_zero_point", "stage3_y_zero_point", "stage1_clamp", "stage2_clamp", "stage3_clamp", "stage1_table", "stage2_table", "stage3_table", "stage1_table_y_scale", "stage2_table_y_scale", "stage3_table_y_scale", "stage1_table_y_zero_point", "stage2_table_y_zero_point", "stage3_table_y_zero_point", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_y_scale", "residual_y_zero_point", "residual_clamp"};
inline constexpr const char* kFusedPwDwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "allow_tf32", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kFp16FusedPwDwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kBf16FusedPwDwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kQFusedPwDwAttributes[] = {"scheme", "x_scale", "x_zero_point", "stage1_w_scales", "stage2_w_scales", "stage3_w_scales", "stage1_y_scale", "stage2_y_scale", "stage3_y_scale", "stage1_y_zero_point", "stage2_y_zero_point", "stage3_y_zero_point", "stage1_clamp", "stage2_clamp", "stage3_clamp", "stage1_table", "stage2_table", "stage3_table", "stage1_table_y_scale", "stage2_table_y_scale", "stage3_table_y_scale", "stage1_table_y_zero_point", "stage2_table_y_zero_point", "stage3_table_y_zero_point", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_y_scale", "residual_y_zero_point", "residual_clamp"};
inline constexpr const char* kFusedPwPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "allow_tf32", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kFp16FusedPwPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kBf16FusedPwPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kQFusedPwPwAttributes[] = {"scheme", "x_scale", "x_zero_point", "stage1_w_scales", "stage2_w_scales", "stage3_w_scales", "stage1_y_scale", "stage2_y_scale", "stage3_y_scale", "stage1_y_zero_point", "stage2_y_zero_point", "stage3_y_zero_point", "stage1_clamp", "stage2_clamp", "stage3_clamp", "stage1_table", "stage2_table", "stage3_table", "stage1_table_y_scale", "stage2_table_y_scale", "stage3_table_y_scale", "stage1_table_y_zero_point", "stage2_table_y_zero_point", "stage3_table_y_zero_point", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_y_scale", "residual_y_zero_point", "residual_clamp"};
inline constexpr const char* kFusedPwDwPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "allow_tf32", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kFp16FusedPwDwPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kBf16FusedPwDwPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kQFusedPwDwPwAttributes[] = {"scheme", "x_scale", "x_zero_point", "stage1_w_scales", "stage2_w_scales", "stage3_w_scales", "stage1_y_scale", "stage2_y_scale", "stage3_y_scale", "stage1_y_zero_point", "stage2_y_zero_point", "stage3_y_zero_point", "stage1_clamp", "stage2_clamp", "stage3_clamp", "stage1_table", "stage2_table", "stage3_table", "stage1_table_y_scale", "stage2_table_y_scale", "stage3_table_y_scale", "stage1_table_y_zero_point", "stage2_table_y_zero_point", "stage3_table_y_zero_point", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_y_scale", "residual_y_zero_point", "residual_clamp"};
inline constexpr const char* kFusedPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "allow_tf32", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kFp16FusedPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kBf16FusedPwAttributes[] = {"stage1_activation", "stage2_activation", "stage3_activation", "stage1_clip", "stage2_clip", "stage3_clip", "dw_kernel", "dw_stride", "dw_pads", "residual", "residual_activation", "residual_clip", "channels_last", "cuda_plans", "cuda_plans_strict", "tile_h", "tile_w", "tile_f", "chunk", "split", "plan_batch"};
inline constexpr const char* kQConvAttributes[] = {"scheme", "depthwise", "kernel_shape", "strides", "dilations", "pads", "x_scale", "x_zero_point", "w_scales", "y_scale", "y_zero_point", "clamp", "table", "table_y_scale", "table_y_zero_point"};
inline constexpr const char* kQAddAttributes[] = {"a_scale", "a_zero_point", "b_scale", "b_zero_point", "y_scale", "y_zero_point", "clamp"};
inline constexpr const char* kQMeanAttributes[] = {"keepdims", "x_scale", "x_zero_point", "y_scale", "y_zero_point"};
inline constexpr const char* kConvAttributes[] = {"kernel_shape", "strides", "pads", "group", "stage1_activation", "stage1_clip", "channels_last"};
inline constexpr const char* kFp16ConvAttributes[] = {"kernel_shape", "strides", "pads", "group", "stage1_activation", "stage1_clip", "channels_last"};
inline constexpr const char* kBf16ConvAttributes[] = {"kernel_shape", "strides", "pads", "group", "stage1_activation", "stage1_clip", "channels_last"};
inline constexpr const char* kMeanAttributes[] = {"keepdims", "channels_last"};
inline constexpr const char* kFp16MeanAttributes[] = {"keepdims", "channels_last"};
inline constexpr const char* kBf16MeanAttributes[] = {"keepdims", "channels_last"};
struct OpAttributes {
  const char* op;
  const char* const* names;
  size_t count;
};
inline constexpr OpAttributes kOpAttributes[] = {
    {"FusedDwPw", kFusedDwPwAttributes, 22},
    {"Fp16FusedDwPw", kFp16FusedDwPwAttributes, 21},
    {"Bf16FusedDwPw", kBf16FusedDwPwAttributes, 21},
    {"QFusedDwPw", kQFusedDwPwAttributes, 31},
    {"FusedPwDw", kFusedPwDwAttributes, 22},
    {"Fp16FusedPwDw", kFp16FusedPwDwAttributes, 21},
    {"Bf16FusedPwDw", kBf16FusedPwDwAttributes, 21},
    {"QFusedPwDw", kQFusedPwDwAttributes, 31},
    {"FusedPwPw", kFusedPwPwAttributes, 22},
    {"Fp16FusedPwPw", kFp16FusedPwPwAttributes, 21},
    {"Bf16FusedPwPw", kBf16FusedPwPwAttributes, 21},
    {"QFusedPwPw", kQFusedPwPwAttributes, 31},
    {"FusedPwDwPw", kFusedPwDwPwAttributes, 22},
    {"Fp16FusedPwDwPw", kFp16FusedPwDwPwAttributes, 21},
    {"Bf16FusedPwDwPw", kBf16FusedPwDwPwAttributes, 21},
    {"QFusedPwDwPw", kQFusedPwDwPwAttributes, 31},
    {"FusedPw", kFusedPwAttributes, 22},
    {"Fp16FusedPw", kFp16FusedPwAttributes, 21},
    {"Bf16FusedPw", kBf16FusedPwAttributes, 21},
    {"QConv", kQConvAttributes, 15},
    {"QAdd", kQAddAttributes, 7},
    {"QMean", kQMeanAttributes, 5},
    {"Conv", kConvAttributes, 7},
    {"Fp16Conv", kFp16ConvAttributes, 7},
    {"Bf16Conv", kBf16ConvAttributes, 7},
    {"Mean", kMeanAttributes, 2},
    {"Fp16Mean", kFp16MeanAttributes, 2},
    {"Bf16Mean", kBf16MeanAttributes, 2},
};

// The vocabulary as one line of JSON (FcmLibraryVocabulary returns it).
inline constexpr const char* kText = "{\"activations\":{\"clip\":{\"clip\":null,\"kernel\":\"clip\"},\"hard_swish\":{\"clip\":null,\"kernel\":\"hard_swish\"},\"none\":{\"clip\":null,\"kernel\":\"none\"},\"relu\":{\"clip\":null,\"kernel\":\"relu\"},\"relu6\":{\"clip\":[0.0,6.0],\"kernel\":\"clip\"},\"sigmoid\":{\"clip\":null,\"kernel\":\"sigmoid\"},\"swish\":{\"clip\":null,\"kernel\":\"swish\"}},\"attributes\":{\"Bf16Conv\":[\"channels_last\",\"group\",\"kernel_shape\",\"pads\",\"stage1_activation\",\"stage1_clip\",\"strides\"],\"Bf16FusedDwPw\":[\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"Bf16FusedPw\":[\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"Bf16FusedPwDw\":[\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"Bf16FusedPwDwPw\":[\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"Bf16FusedPwPw\":[\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"Bf16Mean\":[\"channels_last\",\"keepdims\"],\"Conv\":[\"channels_last\",\"group\",\"kernel_shape\",\"pads\",\"stage1_activation\",\"stage1_clip\",\"strides\"],\"Fp16Conv\":[\"channels_last\",\"group\",\"kernel_shape\",\"pads\",\"stage1_activation\",\"stage1_clip\",\"strides\"],\"Fp16FusedDwPw\":[\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"Fp16FusedPw\":[\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"Fp16FusedPwDw\":[\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"Fp16FusedPwDwPw\":[\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"Fp16FusedPwPw\":[\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"Fp16Mean\":[\"channels_last\",\"keepdims\"],\"FusedDwPw\":[\"allow_tf32\",\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"FusedPw\":[\"allow_tf32\",\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"FusedPwDw\":[\"allow_tf32\",\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"FusedPwDwPw\":[\"allow_tf32\",\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"FusedPwPw\":[\"allow_tf32\",\"channels_last\",\"chunk\",\"cuda_plans\",\"cuda_plans_strict\",\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"plan_batch\",\"residual\",\"residual_activation\",\"residual_clip\",\"split\",\"stage1_activation\",\"stage1_clip\",\"stage2_activation\",\"stage2_clip\",\"stage3_activation\",\"stage3_clip\",\"tile_f\",\"tile_h\",\"tile_w\"],\"Mean\":[\"channels_last\",\"keepdims\"],\"QAdd\":[\"a_scale\",\"a_zero_point\",\"b_scale\",\"b_zero_point\",\"clamp\",\"y_scale\",\"y_zero_point\"],\"QConv\":[\"clamp\",\"depthwise\",\"dilations\",\"kernel_shape\",\"pads\",\"scheme\",\"strides\",\"table\",\"table_y_scale\",\"table_y_zero_point\",\"w_scales\",\"x_scale\",\"x_zero_point\",\"y_scale\",\"y_zero_point\"],\"QFusedDwPw\":[\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"residual\",\"residual_clamp\",\"residual_y_scale\",\"residual_y_zero_point\",\"scheme\",\"stage1_clamp\",\"stage1_table\",\"stage1_table_y_scale\",\"stage1_table_y_zero_point\",\"stage1_w_scales\",\"stage1_y_scale\",\"stage1_y_zero_point\",\"stage2_clamp\",\"stage2_table\",\"stage2_table_y_scale\",\"stage2_table_y_zero_point\",\"stage2_w_scales\",\"stage2_y_scale\",\"stage2_y_zero_point\",\"stage3_clamp\",\"stage3_table\",\"stage3_table_y_scale\",\"stage3_table_y_zero_point\",\"stage3_w_scales\",\"stage3_y_scale\",\"stage3_y_zero_point\",\"x_scale\",\"x_zero_point\"],\"QFusedPwDw\":[\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"residual\",\"residual_clamp\",\"residual_y_scale\",\"residual_y_zero_point\",\"scheme\",\"stage1_clamp\",\"stage1_table\",\"stage1_table_y_scale\",\"stage1_table_y_zero_point\",\"stage1_w_scales\",\"stage1_y_scale\",\"stage1_y_zero_point\",\"stage2_clamp\",\"stage2_table\",\"stage2_table_y_scale\",\"stage2_table_y_zero_point\",\"stage2_w_scales\",\"stage2_y_scale\",\"stage2_y_zero_point\",\"stage3_clamp\",\"stage3_table\",\"stage3_table_y_scale\",\"stage3_table_y_zero_point\",\"stage3_w_scales\",\"stage3_y_scale\",\"stage3_y_zero_point\",\"x_scale\",\"x_zero_point\"],\"QFusedPwDwPw\":[\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"residual\",\"residual_clamp\",\"residual_y_scale\",\"residual_y_zero_point\",\"scheme\",\"stage1_clamp\",\"stage1_table\",\"stage1_table_y_scale\",\"stage1_table_y_zero_point\",\"stage1_w_scales\",\"stage1_y_scale\",\"stage1_y_zero_point\",\"stage2_clamp\",\"stage2_table\",\"stage2_table_y_scale\",\"stage2_table_y_zero_point\",\"stage2_w_scales\",\"stage2_y_scale\",\"stage2_y_zero_point\",\"stage3_clamp\",\"stage3_table\",\"stage3_table_y_scale\",\"stage3_table_y_zero_point\",\"stage3_w_scales\",\"stage3_y_scale\",\"stage3_y_zero_point\",\"x_scale\",\"x_zero_point\"],\"QFusedPwPw\":[\"dw_kernel\",\"dw_pads\",\"dw_stride\",\"residual\",\"residual_clamp\",\"residual_y_scale\",\"residual_y_zero_point\",\"scheme\",\"stage1_clamp\",\"stage1_table\",\"stage1_table_y_scale\",\"stage1_table_y_zero_point\",\"stage1_w_scales\",\"stage1_y_scale\",\"stage1_y_zero_point\",\"stage2_clamp\",\"stage2_table\",\"stage2_table_y_scale\",\"stage2_table_y_zero_point\",\"stage2_w_scales\",\"stage2_y_scale\",\"stage2_y_zero_point\",\"stage3_clamp\",\"stage3_table\",\"stage3_table_y_scale\",\"stage3_table_y_zero_point\",\"stage3_w_scales\",\"stage3_y_scale\",\"stage3_y_zero_point\",\"x_scale\",\"x_zero_point\"],\"QMean\":[\"keepdims\",\"x_scale\",\"x_zero_point\",\"y_scale\",\"y_zero_point\"]},\"domain\":\"ai.fcm\",\"dw_kernels\":[3,5,7],\"dw_strides\":[1,2],\"kinds\":{\"dwpw\":{\"ops\":{\"bf16\":\"Bf16FusedDwPw\",\"fp16\":\"Fp16FusedDwPw\",\"fp32\":\"FusedDwPw\",\"int8\":\"QFusedDwPw\"},\"stages\":[\"dw\",\"pw\"]},\"pw\":{\"ops\":{\"bf16\":\"Bf16FusedPw\",\"fp16\":\"Fp16FusedPw\",\"fp32\":\"FusedPw\"},\"stages\":[\"pw\"]},\"pwdw\":{\"ops\":{\"bf16\":\"Bf16FusedPwDw\",\"fp16\":\"Fp16FusedPwDw\",\"fp32\":\"FusedPwDw\",\"int8\":\"QFusedPwDw\"},\"stages\":[\"pw\",\"dw\"]},\"pwdwpw\":{\"ops\":{\"bf16\":\"Bf16FusedPwDwPw\",\"fp16\":\"Fp16FusedPwDwPw\",\"fp32\":\"FusedPwDwPw\",\"int8\":\"QFusedPwDwPw\"},\"stages\":[\"pw\",\"dw\",\"pw\"]},\"pwpw\":{\"ops\":{\"bf16\":\"Bf16FusedPwPw\",\"fp16\":\"Fp16FusedPwPw\",\"fp32\":\"FusedPwPw\",\"int8\":\"QFusedPwPw\"},\"stages\":[\"pw\",\"pw\"]}}}";

}  // namespace vocabulary

// A fused op type: its name, stage count and which stages are depthwise.
struct FusedKind {
  const char* name;
  size_t stages;
  bool depthwise[3];
};
inline constexpr FusedKind kFp32Kinds[] = {
    {"FusedDwPw", 2, {true, false, false}},
    {"FusedPwDw", 2, {false, true, false}},
    {"FusedPwPw", 2, {false, false, false}},
    {"FusedPwDwPw", 3, {false, true, false}},
    {"FusedPw", 1, {false, false, false}},
};
inline constexpr FusedKind kFp16Kinds[] = {
    {"Fp16FusedDwPw", 2, {true, false, false}},
    {"Fp16FusedPwDw", 2, {false, true, false}},
    {"Fp16FusedPwPw", 2, {false, false, false}},
    {"Fp16FusedPwDwPw", 3, {false, true, false}},
    {"Fp16FusedPw", 1, {false, false, false}},
};
inline constexpr FusedKind kBf16Kinds[] = {
    {"Bf16FusedDwPw", 2, {true, false, false}},
    {"Bf16FusedPwDw", 2, {false, true, false}},
    {"Bf16FusedPwPw", 2, {false, false, false}},
    {"Bf16FusedPwDwPw", 3, {false, true, false}},
    {"Bf16FusedPw", 1, {false, false, false}},
};
namespace int8 {
inline constexpr FusedKind kFusedKinds[] = {
    {"QFusedDwPw", 2, {true, false, false}},
    {"QFusedPwDw", 2, {false, true, false}},
    {"QFusedPwPw", 2, {false, false, false}},
    {"QFusedPwDwPw", 3, {false, true, false}},
};
}  // namespace int8

// The float layer op types (FLOAT_LAYER_ATTRIBUTES), one per float precision: fp32, fp16, bf16.
inline constexpr const char* kConvLayerOps[] = {"Conv", "Fp16Conv", "Bf16Conv"};
inline constexpr const char* kMeanLayerOps[] = {"Mean", "Fp16Mean", "Bf16Mean"};

}  // namespace fcm
