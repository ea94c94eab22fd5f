// The fused-chain kernels for DW->PW (chain_device.cuh), compiled in their own file.
#include "chain_device.cuh"

namespace fcm {
namespace chain {

KernelFn PickDwPw(const ChainProblem& p, int pixels, int width) {
  return InstanceForKernelSize<false, true, true>(p, pixels, width);
}

}  // namespace chain
}  // namespace fcm
