// The compiled fused-block kernels: one per output-channel width (the last stage's N), element type
// and arithmetic (FP32 on TF32 tensor cores or exact FP32; FP16 and BF16 on their tensor cores) and
// count of computing warpgroups. Each block_kernels_*.cu file instantiates some, so that they
// compile in parallel.
#pragma once

#include "block_kernel.cuh"

namespace fcm {
namespace block {

template <int NF, bool kExact, int kGroups, class E, bool kWide = false>
const void* KernelPointer() {
  return reinterpret_cast<const void*>(&FusedBlockKernel<NF, kExact, kGroups, E, kWide>);
}

// TF32 kernels for every width; exact FP32 ones (for comparisons) for fewer, the launcher rounds up;
// two-warpgroup TF32 kernels from 64 wide and for PW->DW. The half types (E) have the TF32 set.
// Wide-region kernels for the widths of MobileNetV2's stride-2 blocks (block_launch.cu's WideWidths).
#define FCM_BLOCK_INSTANCE(NF) template const void* KernelPointer<NF, false, 1, float>();
#define FCM_BLOCK_EXACT_INSTANCE(NF) template const void* KernelPointer<NF, true, 1, float>();
#define FCM_BLOCK_HALVES_INSTANCE(NF) template const void* KernelPointer<NF, false, 2, float>();
#define FCM_BLOCK_HALF_INSTANCE(NF, E) template const void* KernelPointer<NF, false, 1, E>();
#define FCM_BLOCK_HALF_HALVES_INSTANCE(NF, E) template const void* KernelPointer<NF, false, 2, E>();
// wide regions (more than 128 pixels, PW->DW->PW): a few widths, each element type and arithmetic
#define FCM_BLOCK_WIDE_INSTANCE(NF, EXACT, E) template const void* KernelPointer<NF, EXACT, 1, E, true>();

}  // namespace block
}  // namespace fcm
