#include "int8_kernels.h"

#include <algorithm>
#include <sstream>

namespace fcm {
namespace int8 {

constexpr int64_t kMaxProducts = 65536;

std::string ConvGeometry::Validate() const {
  std::ostringstream m;
  if (in_c <= 0 || out_c <= 0) {
    m << "channel counts must be positive (" << in_c << " in, " << out_c << " out)";
  } else if (depthwise && out_c % in_c != 0) {
    m << "a depthwise convolution's " << out_c << " output channels are no multiple of its " << in_c << " inputs";
  } else if (kh <= 0 || kw <= 0 || kh > 64 || kw > 64) {
    m << "kernel " << kh << "x" << kw << " out of range (1..64)";
  } else if (sh <= 0 || sw <= 0 || sh > 64 || sw > 64 || dh <= 0 || dw <= 0 || dh > 64 || dw > 64) {
    m << "strides and dilations must be in 1..64";
  } else if (*std::min_element(pads.begin(), pads.end()) < 0 || *std::max_element(pads.begin(), pads.end()) > 1024) {
    m << "pads must be in 0..1024";
  } else if (!depthwise && kh * kw * in_c > kMaxProducts) {
    m << "a " << kh << "x" << kw << "x" << in_c << " filter has more than " << kMaxProducts << " products per output";
  }
  return m.str();
}

namespace {

int8_t Clamp8(int64_t v) { return static_cast<int8_t>(v < -128 ? -128 : (v > 127 ? 127 : v)); }

inline int32_t BiasedSum(int32_t sum, const int32_t* bias, int64_t channel) {
  return WithBias(sum, bias ? bias[channel] : 0);
}

// Input position of output position `o` for kernel tap `k` along one axis.
inline int64_t Tap(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t dilation) {
  return o * stride - pad + k * dilation;
}

void DepthwiseRows(const ConvLayer& layer, const int8_t* weights, const int32_t* bias, const RowsView& in, int64_t in_h,
                   int64_t out_r0, int64_t out_r1, int64_t out_w, int8_t* out) {
  const ConvGeometry& g = layer.geometry;
  const int64_t m = g.multiplier(), c_out = g.out_c;
  const int32_t zp = layer.x_zero_point;
  std::vector<int32_t> acc(static_cast<size_t>(c_out));
  for (int64_t y = out_r0; y < out_r1; ++y) {
    for (int64_t x = 0; x < out_w; ++x) {
      std::fill(acc.begin(), acc.end(), 0);
      for (int64_t kh = 0; kh < g.kh; ++kh) {
        const int64_t iy = Tap(y, g.sh, g.pads[0], kh, g.dh);
        if (iy < 0 || iy >= in_h) continue;  // padding: (zero point - zero point) * w
        for (int64_t kw = 0; kw < g.kw; ++kw) {
          const int64_t ix = Tap(x, g.sw, g.pads[1], kw, g.dw);
          if (ix < 0 || ix >= in.width) continue;
          const int8_t* px = in.Pixel(iy, ix);
          const int8_t* wk = weights + (kh * g.kw + kw) * c_out;
          if (m == 1) {
            for (int64_t c = 0; c < c_out; ++c) acc[c] += (px[c] - zp) * wk[c];
          } else {
            for (int64_t o = 0; o < c_out; ++o) acc[o] += (px[o / m] - zp) * wk[o];
          }
        }
      }
      int8_t* dst = out + ((y - out_r0) * out_w + x) * c_out;
      for (int64_t o = 0; o < c_out; ++o) dst[o] = layer.requantize(BiasedSum(acc[o], bias, o), static_cast<size_t>(o));
    }
  }
}

// A standard convolution as one dot product per output value: the zero-point-shifted input patch
// (zeros where it is padding) against each filter.
void StandardRows(const ConvLayer& layer, const int8_t* weights, const int32_t* bias, const RowsView& in, int64_t in_h,
                  int64_t out_r0, int64_t out_r1, int64_t out_w, int8_t* out) {
  const ConvGeometry& g = layer.geometry;
  const int64_t c_in = g.in_c, patch = g.kh * g.kw * c_in;
  const int32_t zp = layer.x_zero_point;
  std::vector<int16_t> xs(static_cast<size_t>(patch));
  for (int64_t y = out_r0; y < out_r1; ++y) {
    for (int64_t x = 0; x < out_w; ++x) {
      int16_t* p = xs.data();
      for (int64_t kh = 0; kh < g.kh; ++kh) {
        const int64_t iy = Tap(y, g.sh, g.pads[0], kh, g.dh);
        for (int64_t kw = 0; kw < g.kw; ++kw, p += c_in) {
          const int64_t ix = Tap(x, g.sw, g.pads[1], kw, g.dw);
          if (iy < 0 || iy >= in_h || ix < 0 || ix >= in.width) {
            std::fill_n(p, c_in, int16_t{0});
            continue;
          }
          const int8_t* px = in.Pixel(iy, ix);
          for (int64_t c = 0; c < c_in; ++c) p[c] = static_cast<int16_t>(px[c] - zp);
        }
      }
      int8_t* dst = out + ((y - out_r0) * out_w + x) * g.out_c;
      for (int64_t f = 0; f < g.out_c; ++f) {
        const int8_t* wf = weights + f * patch;
        int32_t sum = 0;
        for (int64_t i = 0; i < patch; ++i) sum += xs[i] * wf[i];
        dst[f] = layer.requantize(BiasedSum(sum, bias, f), static_cast<size_t>(f));
      }
    }
  }
}

// Output rows per block: about 256 KB of int8 values in the widest buffer of a block.
int64_t BlockRows(int64_t widest_row_bytes, int64_t out_h) {
  return std::clamp<int64_t>((int64_t{1} << 18) / std::max<int64_t>(widest_row_bytes, 1), 1, std::max<int64_t>(out_h, 1));
}

}  // namespace

void ConvRows(const ConvLayer& layer, const int8_t* weights, const int32_t* bias, const RowsView& in, int64_t in_h,
              int64_t out_r0, int64_t out_r1, int64_t out_w, int8_t* out) {
  if (layer.geometry.depthwise) {
    DepthwiseRows(layer, weights, bias, in, in_h, out_r0, out_r1, out_w, out);
  } else {
    StandardRows(layer, weights, bias, in, in_h, out_r0, out_r1, out_w, out);
  }
}

void RunConv(const ConvLayer& layer, const int8_t* x, const int8_t* weights, const int32_t* bias, int64_t n,
             int64_t h, int64_t w, int8_t* y, const ParallelFor& parallel_for) {
  const ConvGeometry& g = layer.geometry;
  const int64_t out_h = g.OutHeight(h), out_w = g.OutWidth(w);
  const int64_t block_rows = BlockRows(out_w * g.out_c, out_h);
  const int64_t blocks = (out_h + block_rows - 1) / block_rows;
  parallel_for(static_cast<size_t>(n * blocks), [&](size_t item) {
    const int64_t image = static_cast<int64_t>(item) / blocks, block = static_cast<int64_t>(item) % blocks;
    const int64_t r0 = block * block_rows, r1 = std::min(out_h, r0 + block_rows);
    const RowsView in{x + image * h * w * g.in_c, 0, h, w, g.in_c};
    ConvRows(layer, weights, bias, in, h, r0, r1, out_w, y + ((image * out_h) + r0) * out_w * g.out_c);
  });
}

void RunChain(const Chain& chain, const int8_t* x, const std::vector<const int8_t*>& weights,
              const std::vector<const int32_t*>& biases, int64_t n, int64_t h, int64_t w, int8_t* y,
              const ParallelFor& parallel_for) {
  const size_t stages = chain.stages.size();
  std::vector<int64_t> height(stages + 1), width(stages + 1), channels(stages + 1);
  height[0] = h, width[0] = w, channels[0] = chain.stages[0].geometry.in_c;
  int64_t widest = 1;
  for (size_t s = 0; s < stages; ++s) {
    const ConvGeometry& g = chain.stages[s].geometry;
    height[s + 1] = g.OutHeight(height[s]), width[s + 1] = g.OutWidth(width[s]), channels[s + 1] = g.out_c;
    widest = std::max(widest, width[s + 1] * g.out_c);
  }
  const int64_t out_h = height[stages], out_w = width[stages], out_c = channels[stages];
  const int64_t block_rows = BlockRows(widest, out_h);
  const int64_t blocks = (out_h + block_rows - 1) / block_rows;

  parallel_for(static_cast<size_t>(n * blocks), [&](size_t item) {
    const int64_t image = static_cast<int64_t>(item) / blocks, block = static_cast<int64_t>(item) % blocks;
    // rows of each stage's output this block needs, from the last stage backwards; rows outside a
    // feature map are padding and never computed
    std::vector<int64_t> r0(stages + 1), r1(stages + 1);
    r0[stages] = block * block_rows, r1[stages] = std::min(out_h, (block + 1) * block_rows);
    for (size_t s = stages; s-- > 0;) {
      const ConvGeometry& g = chain.stages[s].geometry;
      const int64_t first = r0[s + 1] * g.sh - g.pads[0];
      const int64_t last = (r1[s + 1] - 1) * g.sh - g.pads[0] + g.dh * (g.kh - 1);
      r0[s] = std::max<int64_t>(first, 0), r1[s] = std::max(r0[s], std::min(last + 1, height[s]));
    }
    const int8_t* image_x = x + image * h * w * channels[0];
    std::vector<std::vector<int8_t>> buffers(stages + 1);
    RowsView in{image_x, 0, h, w, channels[0]};
    for (size_t s = 0; s < stages; ++s) {
      int8_t* dst;
      const bool direct = s + 1 == stages && !chain.residual;  // the last stage writes the output itself
      if (direct) {
        dst = y + ((image * out_h) + r0[stages]) * out_w * out_c;
      } else {
        buffers[s + 1].resize(static_cast<size_t>((r1[s + 1] - r0[s + 1]) * width[s + 1] * channels[s + 1]));
        dst = buffers[s + 1].data();
      }
      ConvRows(chain.stages[s], weights[s], biases[s], in, height[s], r0[s + 1], r1[s + 1], width[s + 1], dst);
      in = RowsView{dst, r0[s + 1], r1[s + 1] - r0[s + 1], width[s + 1], channels[s + 1]};
    }
    if (chain.residual) {  // y = ADD(x, last stage), on the same rows
      const int64_t count = (r1[stages] - r0[stages]) * out_w * out_c, offset = r0[stages] * out_w * out_c;
      const int8_t* last = buffers[stages].data();
      int8_t* dst = y + image * out_h * out_w * out_c + offset;
      for (int64_t i = 0; i < count; ++i) dst[i] = chain.add(image_x[offset + i], last[i]);
    }
  });
}

void RunMeanHW(const MeanParams& p, const int8_t* x, int64_t n, int64_t h, int64_t w, int64_t c, int8_t* y) {
  const int64_t count = h * w;
  const float factor = p.x_scale / p.y_scale / static_cast<float>(count);  // float32, as XNNPACK
  std::vector<int64_t> sums(static_cast<size_t>(c));
  for (int64_t image = 0; image < n; ++image) {
    std::fill(sums.begin(), sums.end(), -count * p.x_zero_point);
    const int8_t* src = x + image * count * c;
    for (int64_t i = 0; i < count; ++i)
      for (int64_t ch = 0; ch < c; ++ch) sums[ch] += src[i * c + ch];
    for (int64_t ch = 0; ch < c; ++ch) {
      const float scaled = static_cast<float>(sums[ch]) * factor;
      y[image * c + ch] = Clamp8(static_cast<int64_t>(std::nearbyint(scaled)) + p.y_zero_point);  // ties to even
    }
  }
}

}  // namespace int8
}  // namespace fcm
