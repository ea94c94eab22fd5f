// What the fused-block kernel reads from the host: the problem (NHWC tensors, stages) and how the
// launch divides it. Filled by the launcher (block_launch.cu); passed by value.
#pragma once

#include <cstdint>

#include <cutlass/fast_math.h>

#include "../chain_launch.h"
#include "trace.h"

namespace fcm {
namespace block {

template <class E>
struct BlockArgsOf {
  ChainProblemOf<E> p;  // x [n, h, w, c], y [n, out_h, out_w, f or m], scale [scale_batch, c]
  // tiles of tile_h x tile_w output pixels; a unit is (image, tile, output-channel slice)
  int tile_h, tile_w, tiles_w, tiles_per_image, f_slices, units;
  // the same divisors as multiply-and-shift (a unit's index and a tile's pixel index are divided
  // once per unit, or per value where a stage writes the output: a division is ~20 instructions)
  cutlass::FastDivmod f_slices_div, tiles_per_image_div, tiles_w_div, tile_w_div;
  cutlass::FastDivmod region_w_div;  // (set with region_w)
  int groups;  // computing warpgroups (2: they share each unit's chunks, block_kernel.cuh's ConsumeHalves)
  int region_h, region_w, region_rows;  // the input pixels a tile reads (tile plus halo): at most 128
  int c_slabs, chunks;                  // input-channel slabs (128-byte rows); 32-channel chunks of the intermediate
  int dw_blocks;                        // the depthwise stage's pixel blocks per tile (depthwise.cuh)
  cutlass::FastDivmod dw_blocks_w;      // ... and per row of blocks
  int split;                            // CTAs sharing a unit's chunks (a cluster where they add shares of a last pointwise stage)
  int stages;                           // depth of the operand ring (at least 3: see Consume)
  int resident;                         // 1: every chunk of this CTA has its own stage, loaded once (stages = its chunks)
  int regions;                          // input-region buffers: 2 lets the next unit's region load during this one
  int tma;                              // 1: TMA copies; 0: cp.async copies
  int vec;                              // cp.async in 16-byte pieces (aligned rows of 16-byte multiples)
  // shared memory: byte offsets from the kernel's 1024-aligned base
  uint32_t x_off, x_slab_bytes;  // input regions (first pointwise stage): `regions` buffers of c_slabs slabs
  uint32_t region_bytes;         // one region buffer
  uint32_t ring_off, stage_bytes;
  // in a stage: W1 chunk [32 x c] at 0, W2 chunk [f_tile x 32] (half types: the 128-byte rows hold
  // 64 channels from the chunk's first, of which the step reads 32), depthwise weights [32][k*k],
  // biases b1 [32] and bd [32], the chunk's input region (no first stage: rows of 32 channels)
  uint32_t w2_in_stage, wd_in_stage, b1_in_stage, bd_in_stage, xs_in_stage;
  uint32_t u_off, u_bytes, v_off, v_bytes, red_off, bar_off;  // U and V per computing warpgroup (one warpgroup: two V)
  uint32_t region_tx, stage_tx;  // bytes a region load / a stage load's boxes deliver (TMA)
  // the split's shares: [split][rows each CTA adds][red_ld floats] (two warpgroups: warpgroup 1's sums at red_off)
  int red_ld;
  // 1: with a first stage, the first unit's weight copies are issued before griddepcontrol.wait (they
  // do not depend on the previous kernel, whose end the start of this one may overlap), the region's
  // after it; 0: every copy after it (at batch 1 or FCM_CUDA_WEIGHTS_FIRST=1: block_launch.cu's WeightsFirst)
  int weights_first;
  FCM_TRACE_FIELDS               // measurement builds only (trace.h)
};

using BlockArgs = BlockArgsOf<float>;

// Whether the CTAs of a split run as a thread-block cluster: they do where they add shares of a
// last pointwise stage (distributed shared memory); without one (PW->DW) each writes its own
// chunks' channels, so they are consecutive plain CTAs that never meet. (The launcher and the
// kernel both decide by this.)
template <class E>
__host__ __device__ inline bool ClusteredSplit(const ChainProblemOf<E>& p, int split) {
  return p.pwl && split > 1;
}

}  // namespace block
}  // namespace fcm
