// A C entry point to the fused-block kernels without ONNX Runtime, for kernel tests and timings
// (tests/ and benchmarks/ call it through ctypes on device buffers).
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "block_launch.h"

namespace {

fcm::Activation ActivationFrom(const float* v) {
  fcm::Activation a;
  a.kind = static_cast<fcm::Act>(static_cast<int>(v[0]));
  a.lo = v[1], a.hi = v[2];
  return a;
}

// A problem's shapes (no tensors, no activations) from the dims FcmBlockRun takes; scale_batch too
// (a channel scale's rows: the plans that cannot take one are refused).
fcm::ChainProblem ShapesFrom(const int* dims) {
  fcm::ChainProblem p;
  p.n = dims[0], p.h = dims[1], p.w = dims[2], p.c = dims[3], p.m = dims[4], p.f = dims[5];
  p.kernel = dims[6], p.stride = dims[7], p.pad_top = dims[8], p.pad_left = dims[9], p.out_h = dims[10], p.out_w = dims[11];
  p.scale_batch = dims[12];
  p.pw1 = dims[13] != 0, p.dw = dims[14] != 0, p.pwl = dims[15] != 0, p.tf32 = dims[17] != 0;
  return p;
}

int DescribePlans(const std::vector<fcm::block::BlockPlan>& plans, char* out, int size) {
  std::string text;
  for (const auto& plan : plans) text += fcm::block::DescribeBlockPlan(plan) + "\n";
  std::snprintf(out, size, "%s", text.c_str());
  return 0;
}

}  // namespace

extern "C" {

// pointers: x, y, scale, w1, b1, wd, bd, w2, b2 (device; unused ones null)
// dims: n, h, w, c, m, f, kernel, stride, pad_top, pad_left, out_h, out_w, scale_batch,
//       pw1, dw, pwl, residual, tf32
// acts: (kind, lo, hi) for act1, actd, act2, res_act
// plan: "HxW,f_tile,split,stages[,groups]", "gemm", "dw+gemm", "gemm+dw" or "gemm+dw+gemm", or empty for
// the kernels' own. Returns 0 with the plan's description in `message`, or 1 with the reason there.
__attribute__((visibility("default"))) int FcmBlockRun(void* const* pointers, const int* dims, const float* acts, const char* plan,
                                                       void* stream, char* message, int message_size) {
  fcm::ChainProblem p = ShapesFrom(dims);
  p.residual = dims[16] != 0;
  p.x = static_cast<const float*>(pointers[0]);
  p.y = static_cast<float*>(pointers[1]);
  p.scale = static_cast<const float*>(pointers[2]);
  p.w1 = static_cast<const float*>(pointers[3]);
  p.b1 = static_cast<const float*>(pointers[4]);
  p.wd = static_cast<const float*>(pointers[5]);
  p.bd = static_cast<const float*>(pointers[6]);
  p.w2 = static_cast<const float*>(pointers[7]);
  p.b2 = static_cast<const float*>(pointers[8]);
  p.act1 = ActivationFrom(acts), p.actd = ActivationFrom(acts + 3), p.act2 = ActivationFrom(acts + 6), p.res_act = ActivationFrom(acts + 9);
  const fcm::block::BlockPlan chosen =
      plan != nullptr && plan[0] != '\0' ? fcm::block::ParseBlockPlan(p, plan) : fcm::block::PlanBlock(p);
  std::string text = fcm::block::DescribeBlockPlan(chosen);
  if (chosen.error.empty()) {
    // a plan's workspace (separate passes) from the stream's pool, freed in stream order
    const cudaStream_t on = static_cast<cudaStream_t>(stream);
    void* workspace = nullptr;
    cudaError_t err = chosen.workspace_bytes > 0 ? cudaMallocAsync(&workspace, chosen.workspace_bytes, on) : cudaSuccess;
    if (err == cudaSuccess) err = fcm::block::LaunchBlock(p, chosen, on, workspace);
    if (workspace != nullptr) cudaFreeAsync(workspace, on);
    if (err != cudaSuccess) text = std::string("launch failed: ") + cudaGetErrorString(err) + " (" + text + ")";
  }
  if (message != nullptr && message_size > 0) std::snprintf(message, message_size, "%s", text.c_str());
  return chosen.error.empty() && text.rfind("launch failed", 0) != 0 ? 0 : 1;
}

// The plans the kernels would consider, one per line with its estimate (the separate passes among
// them where the shapes allow them). The activations are not given: a plan they refuse fails when it
// is forced on the node.
__attribute__((visibility("default"))) int FcmBlockCandidates(const int* dims, char* out, int size) {
  return DescribePlans(fcm::block::BlockCandidates(ShapesFrom(dims)), out, size);
}

// The plans a tuner times besides (block_launch.h's UnrankedCandidates: separate passes, wide
// regions), one per line as above; dims as above.
__attribute__((visibility("default"))) int FcmUnrankedCandidates(const int* dims, char* out, int size) {
  return DescribePlans(fcm::block::UnrankedCandidates(ShapesFrom(dims)), out, size);
}

// Measurement builds (cmake -DFCM_BLOCK_TRACE=ON, block/trace.h): the fused-block kernels' phase
// records. FcmBlockTraceReset allocates and clears them (before the session's first run);
// FcmBlockTraceCopy copies up to `capacity` 128-byte records to `out` once the device is idle.
// Both return the records' count, -1 in a library built without tracing, -2 where CUDA failed.
__attribute__((visibility("default"))) int FcmBlockTraceReset() { return fcm::block::TraceReset(); }
__attribute__((visibility("default"))) int FcmBlockTraceCopy(void* out, int capacity) { return fcm::block::TraceCopy(out, capacity); }
}
