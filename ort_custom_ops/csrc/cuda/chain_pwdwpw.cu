// The fused-chain kernels for PW->DW->PW (chain_device.cuh), compiled in their own file.
#include "chain_device.cuh"

namespace fcm {
namespace chain {

KernelFn PickPwDwPw(const ChainProblem& p, int pixels, int width) {
  return InstanceForKernelSize<true, true, true>(p, pixels, width);
}

}  // namespace chain
}  // namespace fcm
