// The FCM ops for ONNX Runtime's CUDA execution provider.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <onnxruntime_cxx_api.h>

typedef struct CUstream_st* cudaStream_t;

namespace fcm {

// The element type of a float op's tensors.
enum class Precision { kFp32, kFp16, kBf16 };

// The CUDA op of type `name` (FusedDwPw, ..., Fp16FusedDwPw, ..., Bf16FusedPwDwPw) with `stages`
// stages, taking and returning tensors of `precision`.
std::unique_ptr<OrtCustomOp> MakeCudaOp(const char* name, size_t stages, Precision precision = Precision::kFp32);

// A workspace from ONNX Runtime's device arena for one call, given back to the arena when it goes
// out of scope (after the launches that use it are queued: the buffer is tied to the call's stream,
// and the arena hands it to another stream, another thread's run, only once this one has moved
// past it).
class DeviceScratch {
 public:
  DeviceScratch() = default;
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch();

  // Takes `bytes`; an error status naming `what` where the arena cannot give them (past the
  // provider's gpu_mem_limit, or the device out of memory), the process and the arena unharmed.
  Ort::Status Take(Ort::KernelContext& ctx, int device, cudaStream_t stream, size_t bytes, const std::string& what);
  void* data() const { return data_; }

 private:
  OrtAllocator* allocator_ = nullptr;  // ONNX Runtime's wrapper of the arena, released with the buffer
  void* data_ = nullptr;
};

}  // namespace fcm
