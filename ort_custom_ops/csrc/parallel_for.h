// How the CPU kernels run independent pieces of work: `work(i)` for i in [0, count), possibly in
// parallel (ONNX Runtime's thread pool, op.h's OrtParallelFor). Plain C++, shared by fp32 and int8.
#pragma once

#include <cstddef>
#include <functional>

namespace fcm {

using ParallelFor = std::function<void(size_t count, const std::function<void(size_t)>& work)>;

}  // namespace fcm
