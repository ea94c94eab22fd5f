// The fused-chain kernels for PW->DW (chain_device.cuh), compiled in their own file.
#include "chain_device.cuh"

namespace fcm {
namespace chain {

KernelFn PickPwDw(const ChainProblem& p, int pixels) { return InstanceForKernelSize<true, true, false>(p, pixels); }

}  // namespace chain
}  // namespace fcm
