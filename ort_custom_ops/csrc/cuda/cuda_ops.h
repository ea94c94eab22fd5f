// The FCM ops for ONNX Runtime's CUDA execution provider.
#pragma once

#include <cstddef>
#include <memory>

struct OrtCustomOp;
typedef struct CUstream_st* cudaStream_t;

namespace fcm {

// The CUDA op of type `name` (FusedDwPw, FusedPwDw, FusedPwPw, FusedPwDwPw) with `stages` stages.
std::unique_ptr<OrtCustomOp> MakeCudaOp(const char* name, size_t stages);

// Whether a scratch buffer of `bytes` may be asked of ONNX Runtime: KernelContext_GetScratchBuffer
// lets an allocation failure escape its C API, which aborts the process, so a request the device
// cannot hold is refused here and the call fails with an error instead. Not checked while `stream`
// is being captured into a CUDA graph (the memory was taken on the runs before the capture).
bool ScratchFits(cudaStream_t stream, size_t bytes);

}  // namespace fcm
