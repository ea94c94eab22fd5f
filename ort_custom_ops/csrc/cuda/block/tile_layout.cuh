// Operand tiles in shared memory, as TMA writes them and the tensor cores read them.
//
// A tile of R rows (pixels, or output channels for weights) by K channels is stored as ceil(K/32)
// slabs; a slab holds 32 channels of every row, one 128-byte row per row of the tile. Within a row
// the eight 16-byte pieces are permuted by the row's index modulo 8 (the 128-byte swizzle). That is
// the layout a TMA box with a 32-float inner dimension and CU_TENSOR_MAP_SWIZZLE_128B writes, and
// the K-major SW128 layout wgmma reads; it also spreads the 8 rows of an mma.sync fragment load, and
// the 8 pieces of one pixel that the depthwise stage reads, over all 32 banks. Slabs start
// 1024-byte aligned (the swizzle is applied on address bits, and its atom is 8 rows x 128 bytes).
#pragma once

#include <cstdint>

namespace fcm {
namespace block {

constexpr int kSlabFloats = 32;                // channels per slab row
constexpr int kSlabRowBytes = 128;             // bytes per slab row
constexpr int kSlabAlign = 1024;               // swizzle atom: 8 rows of 128 bytes
constexpr int kChunk = kSlabFloats;            // intermediate channels per step of the main loop
constexpr int kTileRows = 64;                  // output pixels per tile: one wgmma M
constexpr int kConsumers = 128;                // threads of a computing warpgroup
constexpr int kMaxGroups = 2;                  // computing warpgroups of a CTA (2: they share each unit's chunks)

// A CTA: one computing warpgroup and one loading warp; or two computing warpgroups and a loading
// warpgroup (one warp of it loads), so that registers can move from the loaders to the computing
// warpgroups (setmaxnreg acts on whole warpgroups).
__host__ __device__ constexpr int BlockThreads(int groups) { return groups == 1 ? kConsumers + 32 : (groups + 1) * kConsumers; }
// Registers per thread after the move, with two computing warpgroups: 384 threads start at 168.
constexpr int kLoaderRegisters = 40, kComputeRegisters = 232;

__host__ __device__ constexpr int RoundUp(int v, int to) { return (v + to - 1) / to * to; }
__host__ __device__ constexpr int CeilDiv(int v, int d) { return (v + d - 1) / d; }

// Byte offset of the 16-byte piece `piece` (channels 4*piece .. 4*piece+3 of the slab) of `row`.
__host__ __device__ __forceinline__ uint32_t SwizzledOffset(int row, int piece) {
  return static_cast<uint32_t>(row) * kSlabRowBytes + ((static_cast<uint32_t>(piece ^ row) & 7u) << 4);
}

// Byte offset of channel `k` (0..31) of `row`.
__host__ __device__ __forceinline__ uint32_t SwizzledFloat(int row, int k) {
  return SwizzledOffset(row, k >> 2) + ((k & 3) << 2);
}

// The wgmma shared-memory descriptor of a K-major SW128 tile whose 8-row groups follow each other
// (1024 bytes apart) from `address` (the tile's first row), `k_step` 8-channel steps (32 bytes each)
// along its rows. Fields as CuTe's make_gmma_desc<Major::K> sets them for this layout. The step is
// added to the address field (16-byte units) rather than to the address, so that a tile's four
// steps share one computation; the field does not carry (shared addresses stay below 2^18 bytes).
__device__ __forceinline__ uint64_t GmmaDescriptor(uint32_t address, int k_step = 0) {
  constexpr uint32_t kLeadingByteOffset = 1;         // unused by swizzled K-major layouts
  constexpr uint32_t kStrideByteOffset = 1024 >> 4;  // next 8-row group
  constexpr uint32_t kSwizzle128 = 1;
  const uint32_t low = (((address >> 4) & 0x3FFF) | (kLeadingByteOffset << 16)) + 2 * k_step;
  const uint32_t high = kStrideByteOffset | (kSwizzle128 << 30);
  return (static_cast<uint64_t>(high) << 32) | low;
}

}  // namespace block
}  // namespace fcm
