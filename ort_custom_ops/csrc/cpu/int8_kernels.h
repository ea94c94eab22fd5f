// The int8 CPU kernels: convolutions over NHWC int8 tensors with int32 accumulators and TFLite's
// requantization (int8_arith.h), one layer at a time or a chain of depthwise/pointwise stages fused.
//
// Weight layouts (TFLite's): standard convolution [F, KH, KW, C], depthwise [KH, KW, C * M] (output
// channel o reads input channel o / M), pointwise [F, C] (a 1x1 standard convolution). Biases int32 [F].
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "../int8_arith.h"
#include "../parallel_for.h"

namespace fcm {
namespace int8 {

// The geometry of one convolution.
struct ConvGeometry {
  bool depthwise = false;
  int64_t in_c = 0, out_c = 0;       // depthwise: out_c = in_c * multiplier
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
  std::array<int64_t, 4> pads{0, 0, 0, 0};  // top, left, bottom, right (ONNX order)

  int64_t multiplier() const { return depthwise ? out_c / in_c : 1; }
  // Output size along one axis; 0 when the kernel does not fit the padded input at all.
  static int64_t OutSize(int64_t in, int64_t pad0, int64_t pad1, int64_t k, int64_t stride, int64_t dilation) {
    const int64_t span = in + pad0 + pad1 - dilation * (k - 1) - 1;
    return span < 0 ? 0 : span / stride + 1;
  }
  int64_t OutHeight(int64_t h) const { return OutSize(h, pads[0], pads[2], kh, sh, dh); }
  int64_t OutWidth(int64_t w) const { return OutSize(w, pads[1], pads[3], kw, sw, dw); }
  // The checks a node's attributes must pass (empty when consistent); with at most 65536 products per
  // output value, no int32 sum of (int8 - zero point) * int8 products can overflow.
  std::string Validate() const;
};

// One convolution layer: geometry, zero point of its input, requantization of its output.
struct ConvLayer {
  ConvGeometry geometry;
  int32_t x_zero_point = 0;
  Requantizer requantize;
};

// Rows [row0, row0 + rows) of a feature map of `width` x `channels` (NHWC, one image).
struct RowsView {
  const int8_t* data = nullptr;
  int64_t row0 = 0, rows = 0, width = 0, channels = 0;
  const int8_t* Pixel(int64_t row, int64_t col) const { return data + ((row - row0) * width + col) * channels; }
};

// Output rows [out_r0, out_r1) of one image of `layer` into `out` (rows packed from out_r0), reading
// `in` (which must hold every input row in [0, in_h) that those output rows read; rows and columns
// outside the input are padding, i.e. the input's zero point, and contribute nothing).
void ConvRows(const ConvLayer& layer, const int8_t* weights, const int32_t* bias, const RowsView& in, int64_t in_h,
              int64_t out_r0, int64_t out_r1, int64_t out_w, int8_t* out);

// A whole [N, H, W, C] -> [N, Ho, Wo, F] convolution, blocks of rows in parallel.
void RunConv(const ConvLayer& layer, const int8_t* x, const int8_t* weights, const int32_t* bias, int64_t n,
             int64_t h, int64_t w, int8_t* y, const ParallelFor& parallel_for);

// A chain of convolution stages (each requantized to int8 as TFLite does between layers) and an
// optional residual ADD of the chain's input, computed block of rows by block of rows so that no
// intermediate feature map is stored whole.
struct Chain {
  std::vector<ConvLayer> stages;
  bool residual = false;
  AddRequantizer add;  // a = the chain's input, b = the last stage's output
};

void RunChain(const Chain& chain, const int8_t* x, const std::vector<const int8_t*>& weights,
              const std::vector<const int32_t*>& biases, int64_t n, int64_t h, int64_t w, int8_t* y,
              const ParallelFor& parallel_for);

// XNNPACK's int8 MEAN over H and W of [N, H, W, C]: the zero-point-shifted sum times the float32 factor
// x_scale / y_scale / (H * W), rounded half to even, plus the output zero point, clamped to int8.
struct MeanParams {
  int32_t x_zero_point = 0, y_zero_point = 0;
  float x_scale = 1.f, y_scale = 1.f;
};
void RunMeanHW(const MeanParams& p, const int8_t* x, int64_t n, int64_t h, int64_t w, int64_t c, int8_t* y);

}  // namespace int8
}  // namespace fcm
