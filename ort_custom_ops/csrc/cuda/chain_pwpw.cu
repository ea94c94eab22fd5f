// The fused-chain kernels for PW->PW (chain_device.cuh), compiled in their own file.
#include "chain_device.cuh"

namespace fcm {
namespace chain {

KernelFn PickPwPw(const ChainProblem& p, int pixels, int width) {
  return Instance<1, true, false, true>(p, pixels, width);
}

}  // namespace chain
}  // namespace fcm
