#include "cpu_chain.h"

#include <algorithm>
#include <cstring>

namespace fcm {
namespace {

// A block of a feature map: `channels` planes of rows [row0, row0 + rows) and `cols` columns, the
// first column being input column -pad_left. Rows outside the feature map hold zeros (padding).
struct Block {
  int64_t channels = 0, row0 = 0, rows = 0, cols = 0, pad_left = 0;
  std::vector<float> data;

  void Reset(int64_t c, int64_t r0, int64_t r, int64_t cl, int64_t pl) {
    channels = c, row0 = r0, rows = r, cols = cl, pad_left = pl;
    data.assign(static_cast<size_t>(c * r * cl), 0.f);
  }
  float* Row(int64_t c, int64_t row) { return data.data() + (c * rows + (row - row0)) * cols; }
  const float* Row(int64_t c, int64_t row) const { return data.data() + (c * rows + (row - row0)) * cols; }
};

// Rows [r0, r1) of a stage's output, and the geometry of its input.
struct Rows {
  int64_t r0, r1;
};

// ---- the pointwise stage: out[f, p] = epilogue(b[f] + sum_c W[f, c] in[c, p]) over valid rows ----
// Rounds `count` values to the element type in place (nothing for fp32: `round` is null).
void RoundAll(float (*round)(float), float* values, int64_t count) {
  if (round == nullptr) return;
  for (int64_t i = 0; i < count; ++i) values[i] = round(values[i]);
}

void PointwiseStage(const float* weights, const float* bias, const Activation& act, int64_t in_c, int64_t out_c,
                    const Block& in, int64_t height, int64_t width, Rows rows, float (*round)(float), Block* out) {
  const int64_t valid0 = std::max<int64_t>(rows.r0, 0), valid1 = std::min<int64_t>(rows.r1, height);
  if (valid1 <= valid0) return;
  const int64_t pixels = (valid1 - valid0) * width;
  // the input block has no column padding (a pointwise stage reads no halo), so its valid rows of one
  // channel are contiguous: the stage is a [F x C] x [C x pixels] product, four filters at a time
  std::vector<float> acc(static_cast<size_t>(4 * pixels));
  for (int64_t f0 = 0; f0 < out_c; f0 += 4) {
    const int64_t nf = std::min<int64_t>(4, out_c - f0);
    for (int64_t j = 0; j < nf; ++j) std::fill_n(acc.data() + j * pixels, pixels, bias[f0 + j]);
    for (int64_t c = 0; c < in_c; ++c) {
      const float* src = in.Row(c, valid0);
      for (int64_t j = 0; j < nf; ++j) {
        const float wv = weights[(f0 + j) * in_c + c];
        float* dst = acc.data() + j * pixels;
        for (int64_t p = 0; p < pixels; ++p) dst[p] += wv * src[p];
      }
    }
    for (int64_t j = 0; j < nf; ++j) {
      const float* src = acc.data() + j * pixels;
      for (int64_t r = valid0; r < valid1; ++r) {
        float* dst = out->Row(f0 + j, r) + out->pad_left;
        const float* row = src + (r - valid0) * width;
        for (int64_t x = 0; x < width; ++x) dst[x] = act(row[x]);
        RoundAll(round, dst, width);
      }
    }
  }
}

// ---- the depthwise stage: out[c, y, x] = epilogue(b[c] + sum_k W[c, k] in[c, y*s + kh - pt, x*s + kw - pl]) ----
void DepthwiseStage(const float* weights, const float* bias, const Stage& st, const Block& in, int64_t out_h,
                    int64_t out_w, Rows rows, float (*round)(float), Block* out) {
  const int64_t k = st.kernel, s = st.stride, pad_top = st.pads[0];
  const int64_t valid0 = std::max<int64_t>(rows.r0, 0), valid1 = std::min<int64_t>(rows.r1, out_h);
  for (int64_t c = 0; c < st.out_channels; ++c) {
    const float* wc = weights + c * k * k;
    for (int64_t y = valid0; y < valid1; ++y) {
      float* dst = out->Row(c, y) + out->pad_left;
      std::fill_n(dst, out_w, bias[c]);
      for (int64_t kh = 0; kh < k; ++kh) {
        const float* src = in.Row(c, y * s + kh - pad_top);  // column 0 of the block is input column -pad_left
        for (int64_t kw = 0; kw < k; ++kw) {
          const float wv = wc[kh * k + kw];
          const float* base = src + kw;
          if (s == 1) {
            for (int64_t x = 0; x < out_w; ++x) dst[x] += wv * base[x];
          } else {
            for (int64_t x = 0; x < out_w; ++x) dst[x] += wv * base[x * s];
          }
        }
      }
      for (int64_t x = 0; x < out_w; ++x) dst[x] = st.activation(dst[x]);
      RoundAll(round, dst, out_w);
    }
  }
}

}  // namespace

void RunChainCpu(const ChainSpec& spec, const ChainTensors& t, const ParallelFor& parallel_for) {
  const size_t stages = spec.stages.size();
  // spatial size of every stage's input (index s) and of the output (index `stages`)
  std::vector<int64_t> height(stages + 1), width(stages + 1);
  height[0] = t.h, width[0] = t.w;
  for (size_t s = 0; s < stages; ++s) {
    const Stage& st = spec.stages[s];
    if (st.type == StageType::kDepthwise) {
      height[s + 1] = (height[s] + st.pads[0] + st.pads[2] - st.kernel) / st.stride + 1;
      width[s + 1] = (width[s] + st.pads[1] + st.pads[3] - st.kernel) / st.stride + 1;
    } else {
      height[s + 1] = height[s], width[s + 1] = width[s];
    }
  }
  const int64_t out_h = height[stages], out_w = width[stages];
  const int64_t out_c = spec.stages.back().out_channels;

  // Rows per block: keep the widest per-block buffer around 1 MB.
  int64_t widest = 1;
  for (size_t s = 0; s < stages; ++s) widest = std::max(widest, spec.stages[s].out_channels * (width[s] + 8));
  const int64_t block_rows = std::clamp<int64_t>((1 << 18) / widest, 1, std::max<int64_t>(out_h, 1));
  const int64_t blocks_per_image = (out_h + block_rows - 1) / block_rows;

  parallel_for(static_cast<size_t>(t.n * blocks_per_image), [&](size_t item) {
    const int64_t n = static_cast<int64_t>(item) / blocks_per_image;
    const int64_t block = static_cast<int64_t>(item) % blocks_per_image;
    // rows of each stage's output this block needs, from the last stage backwards
    std::vector<Rows> need(stages + 1);
    need[stages] = {block * block_rows, std::min(out_h, (block + 1) * block_rows)};
    for (size_t s = stages; s-- > 0;) {
      const Stage& st = spec.stages[s];
      if (st.type == StageType::kDepthwise) {
        need[s] = {need[s + 1].r0 * st.stride - st.pads[0], (need[s + 1].r1 - 1) * st.stride - st.pads[0] + st.kernel};
      } else {
        need[s] = need[s + 1];
      }
    }
    // buffers[s]: the input of stage s (s = 0: rows of X), laid out for stage s (padded columns for depthwise)
    std::vector<Block> buffers(stages + 1);
    auto layout = [&](size_t s, int64_t channels) {
      const bool dw = s < stages && spec.stages[s].type == StageType::kDepthwise;
      const int64_t pl = dw ? spec.stages[s].pads[1] : 0, pr = dw ? spec.stages[s].pads[3] : 0;
      buffers[s].Reset(channels, need[s].r0, need[s].r1 - need[s].r0, width[s] + pl + pr, pl);
    };
    const int64_t in_c = spec.stages[0].in_channels;
    layout(0, in_c);
    const float* scale = t.scale ? t.scale + (t.scale_batch == 1 ? 0 : n) * in_c : nullptr;
    const int64_t first_row = std::max<int64_t>(need[0].r0, 0), end_row = std::min(need[0].r1, t.h);
    if (t.channels_last) {  // gather [H, W, C] rows into channel planes
      for (int64_t r = first_row; r < end_row; ++r) {
        const float* row = t.x + (n * t.h + r) * t.w * in_c;
        for (int64_t c = 0; c < in_c; ++c) {
          float* dst = buffers[0].Row(c, r) + buffers[0].pad_left;
          for (int64_t x = 0; x < t.w; ++x) dst[x] = row[x * in_c + c];
        }
      }
    } else {
      for (int64_t c = 0; c < in_c; ++c) {
        const float* plane = t.x + (n * in_c + c) * t.h * t.w;
        for (int64_t r = first_row; r < end_row; ++r) {
          std::memcpy(buffers[0].Row(c, r) + buffers[0].pad_left, plane + r * t.w, sizeof(float) * t.w);
        }
      }
    }
    std::vector<float> scaled;  // a squeeze-and-excitation scale folds into the first stage's weights
    for (size_t s = 0; s < stages; ++s) {
      const Stage& st = spec.stages[s];
      layout(s + 1, st.out_channels);
      if (st.type == StageType::kPointwise) {
        const float* w = t.weights[s];
        if (s == 0 && scale != nullptr) {
          scaled.resize(static_cast<size_t>(st.out_channels * st.in_channels));
          for (int64_t f = 0; f < st.out_channels; ++f)
            for (int64_t c = 0; c < st.in_channels; ++c) scaled[f * st.in_channels + c] = w[f * st.in_channels + c] * scale[c];
          w = scaled.data();
        }
        PointwiseStage(w, t.biases[s], st.activation, st.in_channels, st.out_channels, buffers[s], height[s + 1],
                       width[s + 1], need[s + 1], t.round, &buffers[s + 1]);
      } else {
        DepthwiseStage(t.weights[s], t.biases[s], st, buffers[s], height[s + 1], width[s + 1], need[s + 1], t.round,
                       &buffers[s + 1]);
      }
    }
    // the epilogue of the group: residual and its activation, then the store
    const Block& result = buffers[stages];
    if (t.channels_last) {  // channel planes scattered into [Ho, Wo, F] rows (the residual read the same way)
      for (int64_t r = need[stages].r0; r < need[stages].r1; ++r) {
        float* row = t.y + (n * out_h + r) * out_w * out_c;
        const float* skip = spec.residual ? t.x + (n * t.h + r) * t.w * out_c : nullptr;
        for (int64_t f = 0; f < out_c; ++f) {
          const float* src = result.Row(f, r) + result.pad_left;
          if (skip != nullptr) {
            for (int64_t x = 0; x < out_w; ++x) row[x * out_c + f] = spec.residual_activation(src[x] + skip[x * out_c + f]);
          } else {
            for (int64_t x = 0; x < out_w; ++x) row[x * out_c + f] = src[x];
          }
        }
      }
      return;
    }
    for (int64_t f = 0; f < out_c; ++f) {
      for (int64_t r = need[stages].r0; r < need[stages].r1; ++r) {
        const float* src = result.Row(f, r) + result.pad_left;
        float* dst = t.y + ((n * out_c + f) * out_h + r) * out_w;
        if (spec.residual) {
          const float* skip = t.x + ((n * out_c + f) * t.h + r) * t.w;
          for (int64_t x = 0; x < out_w; ++x) dst[x] = spec.residual_activation(src[x] + skip[x]);
        } else {
          std::memcpy(dst, src, sizeof(float) * out_w);
        }
      }
    }
  });
}

}  // namespace fcm
