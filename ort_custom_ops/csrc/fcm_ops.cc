// The library's entry point: ONNX Runtime calls RegisterCustomOps when a session registers it.
// The int8 ops (int8_ops.h) are registered for the CPU execution provider, and for the CUDA execution provider
// when the library is built with CUDA. The float ops (every fused op type of the vocabulary, vocabulary.h, in
// fp32, fp16 and bf16, the float convolution layers Conv, Fp16Conv, Bf16Conv: conv_layer.h, and the spatial-mean
// layers Mean, Fp16Mean, Bf16Mean: mean_layer.h) depend on the session config entry "fcm.fp32_kernels", read when
// the library is registered:
//   "auto" (or no entry): where this process can run the CUDA kernels (the library is built with CUDA and
//       ONNX Runtime has the CUDA execution provider), the CUDA kernels of every precision, with the CPU reference
//       kernels for fused nodes no GPU takes; elsewhere (a CPU-only host) none;
//   "reference": the CPU reference kernels of every precision (what the tests and the verification check), and the
//       CUDA kernels;
//   "none": none.
// Where a float op is not registered, ONNX Runtime runs each fused node's function body (the original
// subgraph) on its own kernels: on a CPU-only host a fused model is as fast with the library as without it. (An
// op that is registered at all, for any provider, has a schema, and ONNX Runtime then runs no function body for
// it: registering the CUDA kernels alone would leave a CPU session without a kernel.) The int8 ops have no
// function body: they are always registered.
#include "conv_layer.h"
#include "fused_op.h"
#include "int8_ops.h"
#include "mean_layer.h"

#include <algorithm>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#if defined(FCM_WITH_CUDA)
#include "cuda/conv_layer_cuda.h"
#include "cuda/cuda_ops.h"
#include "cuda/int8_cuda.h"
#include "cuda/mean_layer_cuda.h"
#endif

namespace {

constexpr const char* kFp32KernelsEntry = "fcm.fp32_kernels";

// Two domains of the same name over one set of ops: every op; the int8 ops only.
struct OpSet {
  std::vector<std::unique_ptr<OrtCustomOp>> ops;
  Ort::CustomOpDomain every_op{fcm::kDomain};
  Ort::CustomOpDomain int8_only{fcm::kDomain};

  OpSet() {
    for (const fcm::FusedKind& kind : fcm::kFp32Kinds) {
      ops.push_back(std::make_unique<fcm::FusedOp<fcm::CpuChainKernel>>(kind.name, "CPUExecutionProvider", kind.stages));
#if defined(FCM_WITH_CUDA)
      ops.push_back(fcm::MakeCudaOp(kind.name, kind.stages));
#endif
    }
    for (const fcm::FusedKind& kind : fcm::kFp16Kinds) {
      using Kernel = fcm::CpuChainKernelT<Ort::Float16_t>;
      ops.push_back(std::make_unique<fcm::FusedOp<Kernel, Ort::Float16_t>>(kind.name, "CPUExecutionProvider", kind.stages));
#if defined(FCM_WITH_CUDA)
      ops.push_back(fcm::MakeCudaOp(kind.name, kind.stages, fcm::Precision::kFp16));
#endif
    }
    for (const fcm::FusedKind& kind : fcm::kBf16Kinds) {
      using Kernel = fcm::CpuChainKernelT<Ort::BFloat16_t>;
      ops.push_back(std::make_unique<fcm::FusedOp<Kernel, Ort::BFloat16_t>>(kind.name, "CPUExecutionProvider", kind.stages));
#if defined(FCM_WITH_CUDA)
      ops.push_back(fcm::MakeCudaOp(kind.name, kind.stages, fcm::Precision::kBf16));
#endif
    }
    // the float convolution layers (conv_layer.h): Conv, Fp16Conv, Bf16Conv
    ops.push_back(std::make_unique<fcm::ConvLayerOp<fcm::CpuConvLayerKernelT<float>, float>>(fcm::kConvLayerOps[0], "CPUExecutionProvider"));
    ops.push_back(std::make_unique<fcm::ConvLayerOp<fcm::CpuConvLayerKernelT<Ort::Float16_t>, Ort::Float16_t>>(
        fcm::kConvLayerOps[1], "CPUExecutionProvider"));
    ops.push_back(std::make_unique<fcm::ConvLayerOp<fcm::CpuConvLayerKernelT<Ort::BFloat16_t>, Ort::BFloat16_t>>(
        fcm::kConvLayerOps[2], "CPUExecutionProvider"));
    // the spatial-mean layers (mean_layer.h): Mean, Fp16Mean, Bf16Mean
    ops.push_back(std::make_unique<fcm::MeanLayerOp<fcm::CpuMeanLayerKernel, float>>(fcm::kMeanLayerOps[0], "CPUExecutionProvider"));
    ops.push_back(std::make_unique<fcm::MeanLayerOp<fcm::CpuMeanLayerKernel, Ort::Float16_t>>(fcm::kMeanLayerOps[1], "CPUExecutionProvider"));
    ops.push_back(std::make_unique<fcm::MeanLayerOp<fcm::CpuMeanLayerKernel, Ort::BFloat16_t>>(fcm::kMeanLayerOps[2], "CPUExecutionProvider"));
#if defined(FCM_WITH_CUDA)
    const fcm::Precision layer_precisions[] = {fcm::Precision::kFp32, fcm::Precision::kFp16, fcm::Precision::kBf16};
    for (size_t i = 0; i < std::size(fcm::kConvLayerOps); ++i) {
      ops.push_back(fcm::MakeCudaConvLayerOp(fcm::kConvLayerOps[i], layer_precisions[i]));
      ops.push_back(fcm::MakeCudaMeanLayerOp(fcm::kMeanLayerOps[i], layer_precisions[i]));
    }
#endif
    const size_t float_ops = ops.size();
    fcm::int8::AddInt8Ops(&ops);
#if defined(FCM_WITH_CUDA)
    fcm::int8::AddInt8CudaOps(&ops);
#endif
    for (size_t i = 0; i < ops.size(); ++i) {
      every_op.Add(ops[i].get());
      if (i >= float_ops) int8_only.Add(ops[i].get());
    }
  }
};

// Whether the CUDA kernels can run in this process: built with them, and an onnxruntime with the CUDA provider.
bool CudaKernelsCanRun() {
#if defined(FCM_WITH_CUDA)
  const std::vector<std::string> providers = Ort::GetAvailableProviders();
  return std::find(providers.begin(), providers.end(), "CUDAExecutionProvider") != providers.end();
#else
  return false;
#endif
}

}  // namespace

// The library is built with hidden visibility; these are its exported symbols.
#define FCM_EXPORT __attribute__((visibility("default")))

extern "C" {

// The ops and their domain live as long as the process: sessions keep pointers to them.
FCM_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {  // an onnxruntime older than the headers this library was built with
    return api_base->GetApi(1)->CreateStatus(ORT_FAIL, "FCM ops: this onnxruntime is older than the API the library needs");
  }
  Ort::InitApi(api);
  static std::once_flag once;
  static std::unique_ptr<OpSet> op_set;
  try {
    std::call_once(once, [] { op_set = std::make_unique<OpSet>(); });
    Ort::UnownedSessionOptions session_options(options);
    const std::string fp32 = session_options.GetConfigEntryOrDefault(kFp32KernelsEntry, "auto");
    Ort::CustomOpDomain* domain;
    if (fp32 == "auto") {
      domain = CudaKernelsCanRun() ? &op_set->every_op : &op_set->int8_only;
    } else if (fp32 == "reference" || fp32 == "none") {
      domain = fp32 == "reference" ? &op_set->every_op : &op_set->int8_only;
    } else {
      return Ort::Status(fcm::Printable("FCM ops: the session config entry fcm.fp32_kernels must be auto, reference or none, not '" +
                                        fp32 + "'").c_str(), ORT_INVALID_ARGUMENT).release();
    }
    session_options.Add(*domain);
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  }
  return nullptr;
}

// The op vocabulary this build was made with (vocabulary.h), for the test that compares it with
// fcm_core/vocabulary.py.
FCM_EXPORT const char* FcmLibraryVocabulary() { return fcm::vocabulary::kText; }

// The float op types (fused kinds and layers) this build runs on the CUDA provider, comma-separated ("" without CUDA), for tools that must
// know whether a model's fused nodes run on the GPU.
FCM_EXPORT const char* FcmLibraryCudaFloatOps() {
#if defined(FCM_WITH_CUDA)
  static const std::string names = [] {
    std::string out;
    static_assert(std::size(fcm::kFp16Kinds) == std::size(fcm::kFp32Kinds) && std::size(fcm::kBf16Kinds) == std::size(fcm::kFp32Kinds));
    for (const fcm::FusedKind* kinds : {fcm::kFp32Kinds, fcm::kFp16Kinds, fcm::kBf16Kinds})
      for (size_t i = 0; i < std::size(fcm::kFp32Kinds); ++i) out += (out.empty() ? "" : ",") + std::string(kinds[i].name);
    for (const char* layer : fcm::kConvLayerOps) out += "," + std::string(layer);
    for (const char* layer : fcm::kMeanLayerOps) out += "," + std::string(layer);
    return out;
  }();
  return names.c_str();
#else
  return "";
#endif
}

// What this build holds, for tools and tests: "cpu" or "cpu,cuda".
FCM_EXPORT const char* FcmLibraryKernels() {
#if defined(FCM_WITH_CUDA)
  return "cpu,cuda";
#else
  return "cpu";
#endif
}

}  // extern "C"
