// PW->PW on one pixel per image (a squeeze-and-excitation branch): two batched matrix-vector
// products on the CUDA cores (pixel_chain.cu says why not the block or chain kernels).
#pragma once

#include <cuda_runtime.h>

#include "chain_launch.h"

namespace fcm {

// Whether `p` is PW->PW on one pixel per image, with channel counts whose inputs fit the kernel.
bool PixelChainFits(const ChainProblem& p);

// Runs it; `hidden` is device scratch of p.n x p.m floats (the first stage's outputs).
cudaError_t LaunchPixelChain(const ChainProblem& p, float* hidden, cudaStream_t stream);

}  // namespace fcm
