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

// A workspace of `bytes` from ONNX Runtime's device arena for this call, and the allocator to free
// it with; an error status (naming `what`) when there is none. The buffer is tied to the call's
// stream: the arena hands it to another stream (another thread's run) only once this one has moved
// past it. KernelContext_GetScratchBuffer lets an allocation failure escape its C API, which aborts
// the process, so a request the device cannot hold is refused before it is made (not checked while
// `stream` is being captured into a CUDA graph: the memory was taken on the runs before the capture).
Ort::Status GetScratch(Ort::KernelContext& ctx, int device, cudaStream_t stream, size_t bytes, const std::string& what,
                       void** buffer, OrtAllocator** allocator);

}  // namespace fcm
