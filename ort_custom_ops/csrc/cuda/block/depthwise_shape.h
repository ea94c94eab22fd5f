// The depthwise kernel sizes and strides the ops take (3, 5, 7; 1, 2), as compile-time constants for
// the code that is instantiated per shape: the fused kernels' depthwise stage (depthwise.cuh) and the
// separate depthwise pass (passes.cu).
#pragma once

#include <type_traits>

namespace fcm {
namespace block {

// Calls f(kernel, stride), each a std::integral_constant<int, ...>, for the problem's shape (others
// are refused before any launch; they take the 7 x 7 branch). An if-chain, not a switch: in device
// code a jump table is an indirect branch, which the compiler cannot tell is uniform, and it then
// serializes the tensor-core work in flight across it.
template <class F>
__host__ __device__ __forceinline__ void WithDepthwiseShape(int kernel, int stride, F&& f) {
  using One = std::integral_constant<int, 1>;
  using Two = std::integral_constant<int, 2>;
  if (kernel == 3 && stride == 1) {
    f(std::integral_constant<int, 3>{}, One{});
  } else if (kernel == 3) {
    f(std::integral_constant<int, 3>{}, Two{});
  } else if (kernel == 5 && stride == 1) {
    f(std::integral_constant<int, 5>{}, One{});
  } else if (kernel == 5) {
    f(std::integral_constant<int, 5>{}, Two{});
  } else if (stride == 1) {
    f(std::integral_constant<int, 7>{}, One{});
  } else {
    f(std::integral_constant<int, 7>{}, Two{});
  }
}

}  // namespace block
}  // namespace fcm
