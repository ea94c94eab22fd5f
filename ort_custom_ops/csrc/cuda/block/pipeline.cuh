// The synchronization the fused-block kernel's pipeline needs, on sm_80 and sm_90 alike: mbarriers
// in shared memory (full / empty stages), cp.async copies that arrive on them, the computing
// warpgroup's named barrier, and on sm_90 the transaction counts of TMA copies and the proxy fence
// that lets the tensor cores read what threads wrote. (CUTLASS's barrier wrappers need sm_90.)
#pragma once

#include <cstdint>

namespace fcm {
namespace block {

__device__ __forceinline__ uint32_t SharedAddress(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void BarrierInit(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"(SharedAddress(bar)), "r"(arrivals) : "memory");
}

// Makes the initialized barriers visible to the other threads (and, on sm_90, the cluster).
__device__ __forceinline__ void BarrierInitFence() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void BarrierArrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared.b64 _, [%0];\n" ::"r"(SharedAddress(bar)) : "memory");
}

// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void BarrierWait(uint64_t* bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.try_wait.parity.shared.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(SharedAddress(bar)),
      "r"(parity)
      : "memory");
#else
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT:\n"
      "mbarrier.test_wait.parity.shared.b64 done, [%0], %1;\n"
      "@!done bra WAIT;\n"
      "}\n" ::"r"(SharedAddress(bar)),
      "r"(parity)
      : "memory");
#endif
}

// sm_90: an arrival that also expects `bytes` from copies completing on this barrier (TMA).
__device__ __forceinline__ void BarrierArriveExpect(uint64_t* bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;\n" ::"r"(SharedAddress(bar)), "r"(bytes) : "memory");
#endif
}

// An arrival once this thread's cp.async copies so far have landed (counted in the barrier's arrivals).
__device__ __forceinline__ void BarrierArriveAfterCopies(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];\n" ::"r"(SharedAddress(bar)) : "memory");
}

__device__ __forceinline__ void CopyAsync16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void CopyAsync4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 4 : 0) : "memory");
}

// Shared memory written by threads, read next by the tensor cores (wgmma) or the copy engine.
__device__ __forceinline__ void FenceForAsyncProxy() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Named barrier `id` among the first `threads` threads (a multiple of 32) of the block.
__device__ __forceinline__ void NamedSync(uint32_t id, uint32_t threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ---- clusters (sm_90) ---------------------------------------------------------------------------

// The address `local` has in this CTA's shared memory, in CTA `peer`'s.
__device__ __forceinline__ uint32_t PeerAddress(uint32_t local, int peer) {
  uint32_t remote = local;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(local), "r"(peer));
#endif
  return remote;
}

// Two floats into a peer's shared memory (`remote`, a PeerAddress), asynchronously: the store counts
// its 8 bytes on the peer's mbarrier `remote_bar` once they have landed, and the sender does not wait.
__device__ __forceinline__ void StoreAsyncPeer2(uint32_t remote, uint32_t remote_bar, float v0, float v1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.f32 [%0], {%1, %2}, [%3];\n" ::"r"(remote), "f"(v0), "f"(v1),
               "r"(remote_bar)
               : "memory");
#endif
}

// The cluster barrier, in its two halves: every thread of every CTA of the cluster arrives before any
// passes the wait; a thread alternates them. The arrival is relaxed (it orders none of the thread's
// memory operations): the kernel's waits guard only against a peer not yet running (the mbarriers'
// initialization is fenced on its own, BarrierInitFence) or against overwriting what the arriving
// threads have finished reading (the loaded values already used).
__device__ __forceinline__ void ClusterArriveRelaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void ClusterWait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#endif
}

__device__ __forceinline__ int RankInCluster() {
  int rank = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
#endif
  return rank;
}

// Programmatic dependent launch (sm_90): wait for the previous kernel's results; let the next
// kernel start its prologue.
__device__ __forceinline__ void WaitPreviousGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void LaunchNextGrid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

}  // namespace block
}  // namespace fcm
