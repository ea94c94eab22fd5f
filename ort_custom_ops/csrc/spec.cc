#include "spec.h"

#include <cstdio>
#include <sstream>

#include "plan_text.h"
#include "vocabulary.h"

namespace fcm {

std::string ParseCudaPlans(const std::string& text, bool channels_last, std::vector<std::pair<int64_t, std::string>>* out) {
  out->clear();
  std::stringstream entries(text);
  std::string entry;
  while (std::getline(entries, entry, ';')) {
    if (entry.empty()) continue;
    const size_t colon = entry.find(':');
    long long batch = 0;
    int used = -1;
    const std::string plan = colon == std::string::npos ? "" : entry.substr(colon + 1);
    const bool batch_ok = colon != std::string::npos && std::sscanf(entry.substr(0, colon).c_str(), "%lld%n", &batch, &used) == 1 &&
                          used == static_cast<int>(colon) && batch > 0;
    PlanText chain;
    BlockPlanFields block;
    const bool plan_ok = batch_ok && (channels_last ? ParseBlockPlanText(plan, &block) : ParsePlanText(plan, &chain));
    if (!plan_ok)
      return "cuda_plans entry '" + entry +
             (channels_last ? "' must read BATCH:HxW,f_tile,split,stages[,groups] (e.g. 32:8x8,24,1,3), BATCH:gemm, BATCH:dw+gemm, "
                              "BATCH:gemm+dw or BATCH:gemm+dw+gemm on a channels_last node"
                            : "' must read BATCH:pixels,HxW,f_tile,split,buffers,w1_direct[,cluster] (e.g. 1:64,8x8,32,4,2,0)");
    for (const auto& known : *out)
      if (known.first == batch) return "cuda_plans lists batch " + std::to_string(batch) + " twice";
    out->emplace_back(batch, plan);
  }
  return "";
}

std::vector<StageType> StageTypesOf(const std::string& op_name) {
  for (const auto* table : {&kFp32Kinds, &kFp16Kinds, &kBf16Kinds}) {
    for (const FusedKind& kind : *table) {
      if (op_name != kind.name) continue;
      std::vector<StageType> types;
      for (size_t s = 0; s < kind.stages; ++s) types.push_back(kind.depthwise[s] ? StageType::kDepthwise : StageType::kPointwise);
      return types;
    }
  }
  return {};
}

void ChainSpec::OutputSize(int64_t h, int64_t w, int64_t* out_h, int64_t* out_w) const {
  for (const Stage& s : stages) {
    if (s.type != StageType::kDepthwise) continue;
    const int64_t ph = h + s.pads[0] + s.pads[2] - s.kernel;
    const int64_t pw = w + s.pads[1] + s.pads[3] - s.kernel;
    h = ph < 0 ? 0 : ph / s.stride + 1;
    w = pw < 0 ? 0 : pw / s.stride + 1;
  }
  *out_h = h;
  *out_w = w;
}

int64_t ChainSpec::InputExtent(size_t s, int64_t rows) const {
  const Stage& st = stages[s];
  return st.type == StageType::kDepthwise ? (rows - 1) * st.stride + st.kernel : rows;
}

std::string Validate(const ChainSpec& spec) {
  std::ostringstream err;
  const auto& st = spec.stages;
  for (size_t i = 0; i < st.size(); ++i) {
    const Stage& s = st[i];
    if (s.in_channels <= 0 || s.out_channels <= 0) {
      err << "stage " << i + 1 << " has no channels (weights of unknown shape?)";
      return err.str();
    }
    if (s.type == StageType::kDepthwise) {
      if (s.in_channels != s.out_channels) {
        err << "depthwise stage " << i + 1 << " maps " << s.in_channels << " to " << s.out_channels << " channels";
        return err.str();
      }
      if (!vocabulary::OneOf(s.kernel, vocabulary::kDwKernels)) {
        err << "dw_kernel must be " << vocabulary::kDwKernelList << ", not " << s.kernel;
        return err.str();
      }
      if (!vocabulary::OneOf(s.stride, vocabulary::kDwStrides)) {
        err << "dw_stride must be " << vocabulary::kDwStrideList << ", not " << s.stride;
        return err.str();
      }
      for (int64_t p : s.pads) {
        if (p < 0 || p >= s.kernel) {
          err << "dw_pads must be in [0, " << s.kernel << "), got " << p;
          return err.str();
        }
      }
    }
    if (i > 0 && st[i - 1].out_channels != s.in_channels) {
      err << "stage " << i << " produces " << st[i - 1].out_channels << " channels but stage " << i + 1 << " reads "
          << s.in_channels;
      return err.str();
    }
  }
  if (spec.residual) {
    if (st.front().in_channels != st.back().out_channels) {
      err << "residual needs as many output channels as input channels (" << st.back().out_channels << " vs "
          << st.front().in_channels << ")";
      return err.str();
    }
    for (const Stage& s : st) {
      const bool same_size = s.type == StageType::kPointwise ||
                             (s.stride == 1 && s.pads[0] + s.pads[2] == s.kernel - 1 && s.pads[1] + s.pads[3] == s.kernel - 1);
      if (!same_size) return "residual needs an output of the input's size (stride 1, 'same' padding)";
    }
  }
  const Tiling& t = spec.tiling;
  if (t.tile_h < 0 || t.tile_w < 0 || t.tile_f < 0 || t.chunk < 0 || t.split < 1) {
    return "tiling attributes must be non-negative (split at least 1)";
  }
  return {};
}

}  // namespace fcm
