// The library's entry point: ONNX Runtime calls RegisterCustomOps when a session registers it.
// Every fused op type of the vocabulary (vocabulary.h) is registered for the CPU execution provider (the
// reference kernels), and, when the library is built with CUDA, the fp32 ones for the CUDA execution provider
// too (the half-precision ones have no CUDA kernels yet); the int8 ops (int8_ops.h) likewise.
#include "fused_op.h"
#include "int8_ops.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#if defined(FCM_WITH_CUDA)
#include "cuda/cuda_ops.h"
#include "cuda/int8_cuda.h"
#endif

namespace {

struct OpSet {
  std::vector<std::unique_ptr<OrtCustomOp>> ops;
  Ort::CustomOpDomain domain{fcm::kDomain};

  OpSet() {
    for (const fcm::FusedKind& kind : fcm::kFp32Kinds) {
      ops.push_back(std::make_unique<fcm::FusedOp<fcm::CpuChainKernel>>(kind.name, "CPUExecutionProvider", kind.stages));
#if defined(FCM_WITH_CUDA)
      ops.push_back(fcm::MakeCudaOp(kind.name, kind.stages));
#endif
    }
    // The half-precision ops have CPU kernels only so far: in a session with the CUDA provider ONNX Runtime
    // places their nodes on the CPU (copying their inputs and outputs across).
    for (const fcm::FusedKind& kind : fcm::kFp16Kinds) {
      using Kernel = fcm::CpuChainKernelT<Ort::Float16_t>;
      ops.push_back(std::make_unique<fcm::FusedOp<Kernel, Ort::Float16_t>>(kind.name, "CPUExecutionProvider", kind.stages));
    }
    for (const fcm::FusedKind& kind : fcm::kBf16Kinds) {
      using Kernel = fcm::CpuChainKernelT<Ort::BFloat16_t>;
      ops.push_back(std::make_unique<fcm::FusedOp<Kernel, Ort::BFloat16_t>>(kind.name, "CPUExecutionProvider", kind.stages));
    }
    fcm::int8::AddInt8Ops(&ops);
#if defined(FCM_WITH_CUDA)
    fcm::int8::AddInt8CudaOps(&ops);
#endif
    for (auto& op : ops) domain.Add(op.get());
  }
};

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
    Ort::UnownedSessionOptions(options).Add(op_set->domain);
  } catch (const Ort::Exception& e) {
    return Ort::Status(e).release();
  }
  return nullptr;
}

// The op vocabulary this build was made with (vocabulary.h), for the test that compares it with
// fcm_core/vocabulary.py.
FCM_EXPORT const char* FcmLibraryVocabulary() { return fcm::vocabulary::kText; }

// The float fused op types this build runs on the CUDA provider, comma-separated ("" without CUDA), for tools that must
// know whether a model's fused nodes run on the GPU (the half-precision ops have CPU kernels only so far).
FCM_EXPORT const char* FcmLibraryCudaFloatOps() {
#if defined(FCM_WITH_CUDA)
  static const std::string names = [] {
    std::string out;
    for (const fcm::FusedKind& kind : fcm::kFp32Kinds) out += (out.empty() ? "" : ",") + std::string(kind.name);
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
