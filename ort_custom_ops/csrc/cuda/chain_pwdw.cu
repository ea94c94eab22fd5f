// The fused-chain kernels for PW->DW (chain_device.cuh), compiled in their own file.
#include "chain_device.cuh"

namespace fcm {
namespace chain {

KernelFn PickPwDw(const ChainProblem& p, int pixels, int width) {
  return InstanceForKernelSize<true, true, false>(p, pixels, width);
}

}  // namespace chain
}  // namespace fcm
