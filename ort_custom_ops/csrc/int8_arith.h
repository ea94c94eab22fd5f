// TFLite's integer arithmetic for int8 tensors, value by value: the requantization epilogue shared by
// every int8 kernel (a convolution's int32 accumulator -> int8), and the ADD arithmetic.
//
// Two requantization schemes, bit for bit as extractor/integer.py computes them:
//   kFp32:       XNNPACK (the interpreter's default delegate): the factor x_scale * w_scale / y_scale
//                computed in float32, the accumulator converted to float32 and multiplied, clamped to the
//                activation range minus the zero point, rounded half to even, plus the zero point.
//   kFixedPoint: TFLite's builtin kernels: the factor (in double) as a Q31 multiplier and a shift, a
//                rounding doubling high multiply, a right shift rounding ties upward, the zero point, the
//                clamp.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

// The value-by-value arithmetic also runs in the CUDA kernels (cuda/int8_cuda.cu).
#if defined(__CUDACC__)
#define FCM_INT8_HD __host__ __device__
#else
#define FCM_INT8_HD
#endif

namespace fcm {
namespace int8 {

enum class Scheme : int { kFp32 = 0, kFixedPoint = 1 };

// "fp32" or "fixed_point"; false for anything else.
inline bool ParseScheme(const std::string& name, Scheme* out) {
  if (name == "fp32") {
    *out = Scheme::kFp32;
  } else if (name == "fixed_point") {
    *out = Scheme::kFixedPoint;
  } else {
    return false;
  }
  return true;
}

// `real` as multiplier * 2^(shift - 31) with a Q31 multiplier in [2^30, 2^31) (TFLite's
// QuantizeMultiplier: frexp, the fraction rounded half away from zero).
inline void QuantizeMultiplier(double real, int32_t* multiplier, int32_t* shift) {
  *multiplier = 0, *shift = 0;
  if (real == 0.0) return;
  int exponent = 0;
  const double fraction = std::frexp(real, &exponent);
  int64_t fixed = static_cast<int64_t>(std::floor(std::fabs(fraction) * 2147483648.0 + 0.5));
  if (fraction < 0) fixed = -fixed;
  if (fixed == (int64_t{1} << 31)) {
    fixed /= 2;
    ++exponent;
  }
  if (exponent < -31) return;
  if (exponent > 30) {
    *multiplier = INT32_MAX, *shift = 30;
    return;
  }
  *multiplier = static_cast<int32_t>(fixed), *shift = exponent;
}

// gemmlowp's SaturatingRoundingDoublingHighMul.
FCM_INT8_HD inline int32_t RoundingHighMul(int32_t a, int32_t b) {
  if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
  const int64_t product = static_cast<int64_t>(a) * b;
  const int64_t nudge = product >= 0 ? (int64_t{1} << 30) : 1 - (int64_t{1} << 30);
  return static_cast<int32_t>((product + nudge) / (int64_t{1} << 31));  // truncates toward zero, as C++ does
}

// gemmlowp's RoundingDivideByPOT: x / 2^exponent, ties away from zero (0 <= exponent <= 31).
FCM_INT8_HD inline int32_t RoundingShiftRight(int32_t x, int exponent) {
  const int64_t mask = (int64_t{1} << exponent) - 1;
  const int64_t remainder = static_cast<int64_t>(x) & mask;
  const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return static_cast<int32_t>((static_cast<int64_t>(x) >> exponent) + (remainder > threshold ? 1 : 0));
}

// round(acc * multiplier * 2^(shift - 31)) as the builtin int8 kernels compute it: the high multiply,
// then a right shift rounding ties upward.
FCM_INT8_HD inline int32_t MultiplyByQuantizedMultiplier(int32_t acc, int32_t multiplier, int32_t shift) {
  const int left = shift > 0 ? shift : 0, right = shift < 0 ? -shift : 0;
  int64_t shifted = static_cast<int64_t>(acc) * (int64_t{1} << left);
  if (shifted > INT32_MAX) shifted = INT32_MAX;
  if (shifted < INT32_MIN) shifted = INT32_MIN;
  const int64_t high = RoundingHighMul(static_cast<int32_t>(shifted), multiplier);
  const int64_t half = right > 0 ? (int64_t{1} << (right - 1)) : 0;
  return static_cast<int32_t>((high + half) >> right);
}

// One value's requantization: `acc` (the int32 accumulator of a channel) to int8, by `scale` (kFp32)
// or `multiplier`/`shift` (kFixedPoint), clamped to [lo, hi], the output zero point added.
FCM_INT8_HD inline int8_t RequantizeValue(Scheme scheme, int32_t acc, float scale, int32_t multiplier, int32_t shift,
                                     int32_t zero_point, int32_t lo, int32_t hi, float lo_f, float hi_f) {
  if (scheme == Scheme::kFp32) {
    float scaled = static_cast<float>(acc) * scale;
    scaled = scaled < lo_f ? lo_f : (scaled > hi_f ? hi_f : scaled);
    return static_cast<int8_t>(static_cast<int32_t>(rintf(scaled)) + zero_point);  // ties to even
  }
  int32_t out = MultiplyByQuantizedMultiplier(acc, multiplier, shift) + zero_point;
  out = out < lo ? lo : (out > hi ? hi : out);
  return static_cast<int8_t>(out);
}

// sum + bias as the int32 accumulator (saturated: only absurd biases reach the limits).
FCM_INT8_HD inline int32_t WithBias(int32_t sum, int32_t bias) {
  const int64_t total = static_cast<int64_t>(sum) + bias;
  return static_cast<int32_t>(total < INT32_MIN ? INT32_MIN : (total > INT32_MAX ? INT32_MAX : total));
}

// The per-channel requantization of a convolution's accumulators, prepared once from the scales.
struct Requantizer {
  Scheme scheme = Scheme::kFp32;
  int32_t zero_point = 0, lo = -128, hi = 127;
  std::vector<float> scale;                    // kFp32: per channel
  std::vector<int32_t> multiplier, shift;      // kFixedPoint: per channel
  float lo_f = 0.f, hi_f = 0.f;                // kFp32: the clamp minus the zero point

  // x_scale * w_scales[c] / y_scale per channel; the output zero point and clamp [lo, hi].
  void Prepare(Scheme s, float x_scale, const std::vector<float>& w_scales, float y_scale, int32_t y_zero_point,
               int32_t clamp_lo, int32_t clamp_hi) {
    scheme = s, zero_point = y_zero_point, lo = clamp_lo, hi = clamp_hi;
    lo_f = static_cast<float>(lo - zero_point), hi_f = static_cast<float>(hi - zero_point);
    const size_t n = w_scales.size();
    scale.assign(n, 0.f), multiplier.assign(n, 0), shift.assign(n, 0);
    for (size_t c = 0; c < n; ++c) {
      scale[c] = x_scale * w_scales[c] / y_scale;  // float32 throughout, as XNNPACK
      const double real = static_cast<double>(x_scale) * static_cast<double>(w_scales[c]) / static_cast<double>(y_scale);
      QuantizeMultiplier(real, &multiplier[c], &shift[c]);
    }
  }

  size_t channels() const { return scale.size(); }

  // The requantized value, then (when `table` is set) mapped through it: an activation that is a
  // function of the int8 output alone (swish: LOGISTIC and MUL), table[v + 128].
  int8_t operator()(int32_t acc, size_t c) const {
    const int8_t v = Requantize(acc, c);
    return table.empty() ? v : table[static_cast<size_t>(static_cast<int32_t>(v) + 128)];
  }

  std::vector<int8_t> table;  // 256 entries or none

 private:
  int8_t Requantize(int32_t acc, size_t c) const {
    return RequantizeValue(scheme, acc, scale[c], multiplier[c], shift[c], zero_point, lo, hi, lo_f, hi_f);
  }
};

// TFLite's int8 ADD (the same in the builtin kernels and XNNPACK): both inputs shifted left by 20
// bits and rescaled to twice the larger input scale, summed, rescaled to the output, clamped.
struct AddRequantizer {
  static constexpr int kLeftShift = 20;
  int32_t a_zero_point = 0, b_zero_point = 0, y_zero_point = 0, lo = -128, hi = 127;
  int32_t a_multiplier = 0, a_shift = 0, b_multiplier = 0, b_shift = 0, y_multiplier = 0, y_shift = 0;

  // Returns an empty string, or why these scales have no TFLite ADD form.
  std::string Prepare(float a_scale, int32_t a_zp, float b_scale, int32_t b_zp, float y_scale, int32_t y_zp,
                      int32_t clamp_lo, int32_t clamp_hi) {
    a_zero_point = a_zp, b_zero_point = b_zp, y_zero_point = y_zp, lo = clamp_lo, hi = clamp_hi;
    const double twice_max = 2.0 * std::fmax(static_cast<double>(a_scale), static_cast<double>(b_scale));
    QuantizeMultiplier(a_scale / twice_max, &a_multiplier, &a_shift);
    QuantizeMultiplier(b_scale / twice_max, &b_multiplier, &b_shift);
    QuantizeMultiplier(twice_max / (static_cast<double>(1 << kLeftShift) * y_scale), &y_multiplier, &y_shift);
    if (a_shift > 0 || b_shift > 0 || y_shift > 0 || a_shift < -31 || b_shift < -31 || y_shift < -31) {
      return "the ADD's output scale is too small for its input scales (rescale factor >= 1)";
    }
    return "";
  }

  FCM_INT8_HD int8_t operator()(int8_t a, int8_t b) const {
    const int32_t sa = RoundingShiftRight(RoundingHighMul((a - a_zero_point) * (1 << kLeftShift), a_multiplier), -a_shift);
    const int32_t sb = RoundingShiftRight(RoundingHighMul((b - b_zero_point) * (1 << kLeftShift), b_multiplier), -b_shift);
    int32_t out = RoundingShiftRight(RoundingHighMul(sa + sb, y_multiplier), -y_shift) + y_zero_point;
    out = out < lo ? lo : (out > hi ? hi : out);
    return static_cast<int8_t>(out);
  }
};

}  // namespace int8
}  // namespace fcm
