// PW->PW on one pixel per image (a squeeze-and-excitation branch): two batched matrix-vector
// products on the CUDA cores (pixel_chain.cu says why not the block or chain kernels).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "chain_launch.h"

namespace fcm {

// Whether `p` is PW->PW on one pixel per image, with channel counts whose inputs fit the kernel.
template <class E>
bool PixelChainFits(const ChainProblemOf<E>& p);

// Runs it (E: float, __half or __nv_bfloat16; FP32 arithmetic); `hidden` is device scratch of
// p.n x p.m floats (the first stage's outputs, rounded to E as a stage's output is).
template <class E>
cudaError_t LaunchPixelChain(const ChainProblemOf<E>& p, float* hidden, cudaStream_t stream);

}  // namespace fcm
