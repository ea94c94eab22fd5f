// The compiled fused-block kernels: one per output-channel width (the last stage's N) and arithmetic
// (TF32 tensor cores, or exact FP32). Each block_kernels_*.cu file instantiates some, so that they
// compile in parallel.
#pragma once

#include "block_kernel.cuh"

namespace fcm {
namespace block {

template <int NF, bool kExact>
const void* KernelPointer() {
  return reinterpret_cast<const void*>(&FusedBlockKernel<NF, kExact>);
}

// TF32 kernels for every width; exact FP32 ones (for comparisons) for fewer, the launcher rounds up
#define FCM_BLOCK_INSTANCE(NF) template const void* KernelPointer<NF, false>();
#define FCM_BLOCK_EXACT_INSTANCE(NF) template const void* KernelPointer<NF, true>();

}  // namespace block
}  // namespace fcm
