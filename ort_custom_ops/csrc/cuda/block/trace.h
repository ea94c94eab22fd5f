// Phase times of the fused-block kernels, in measurement builds only (cmake -DFCM_BLOCK_TRACE=ON):
// at each phase boundary of its first unit, one thread of each CTA writes the GPU's global timer
// into that CTA's record of a device buffer; FcmBlockTraceCopy (block_entry.cu) copies the records out,
// benchmarks/block_trace.py reads them. Where a batch-1 block's 9-22 us go (launch, barriers, the
// first loads, the chunks, the split's reduction, the stores) cannot be read from a kernel's total
// time. Other builds compile the marks to nothing and the arguments carry no trace fields.
#pragma once

#include <cstdint>

namespace fcm {
namespace block {

// The phases in the order a CTA passes them; a mark not reached stays 0.
enum TracePhase : int {
  kTraceEntry,       // the kernel's first instruction
  kTraceBarriers,    // the CTA's barriers initialized (and, in a cluster, every peer's)
  kTraceInputs,      // griddepcontrol.wait returned: the previous kernel's writes are visible
  kTraceIssued,      // the loading warp has issued the first unit's first copies
  kTraceOperands,    // the first unit's input region and first chunk's weights have arrived
  kTraceFirstChunk,  // the first chunk's first stage is done (its U or V written)
  kTraceChunks,      // every chunk of the first unit done (the last stage's sums in registers)
  kTraceShares,      // a split: every peer's shares of this CTA's rows landed
  kTraceStored,      // the first unit's outputs stored
  kTraceExit,        // leaving the kernel
  kTracePhases
};

// One CTA of one launch. `launch` counts the library's traced launches (host side): a CUDA graph
// replays its launches with the numbers and slots they had when captured.
struct TraceRecord {
  uint64_t output;    // the node's output tensor: which node
  uint32_t launch;
  int32_t cta, sm;    // blockIdx.x, %smid
  int32_t shape[7];   // n, c, m, f, out_h, out_w, split
  uint64_t t[kTracePhases];  // %globaltimer, ns
};
static_assert(sizeof(TraceRecord) == 128, "benchmarks/block_trace.py reads this layout");

constexpr unsigned kTraceCapacity = 1u << 16;  // records (8 MB)

#if defined(FCM_BLOCK_TRACE)
#define FCM_TRACE_FIELDS       \
  TraceRecord* trace = nullptr; \
  uint32_t trace_base = 0, trace_launch = 0;
#else
#define FCM_TRACE_FIELDS
#endif

#if defined(__CUDACC__)
// This CTA's record (a launch's CTAs take consecutive slots from trace_base, wrapping).
template <class Args>
__device__ __forceinline__ TraceRecord* TraceSlot(const Args& a) {
#if defined(FCM_BLOCK_TRACE)
  return a.trace == nullptr ? nullptr : a.trace + (a.trace_base + blockIdx.x) % kTraceCapacity;
#else
  return nullptr;
#endif
}

// The phase's time into this CTA's record; called by one thread (the CTA's first, or the loading warp's leader).
template <class Args>
__device__ __forceinline__ void TraceMark(const Args& a, TracePhase phase) {
#if defined(FCM_BLOCK_TRACE)
  if (TraceRecord* r = TraceSlot(a)) {
    uint64_t now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    r->t[phase] = now;
  }
#endif
}

// The record's header and entry time, its other phases cleared (the slot may hold an earlier launch's).
template <class Args>
__device__ __forceinline__ void TraceOpen(const Args& a) {
#if defined(FCM_BLOCK_TRACE)
  if (TraceRecord* r = TraceSlot(a)) {
    int sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    r->output = reinterpret_cast<uint64_t>(a.p.y);
    r->launch = a.trace_launch;
    r->cta = static_cast<int32_t>(blockIdx.x), r->sm = sm;
    const int32_t shape[7] = {a.p.n, a.p.c, a.p.m, a.p.f, a.p.out_h, a.p.out_w, a.split};
    for (int i = 0; i < 7; ++i) r->shape[i] = shape[i];
    for (int i = 1; i < kTracePhases; ++i) r->t[i] = 0;
    TraceMark(a, kTraceEntry);
  }
#endif
}
#endif

}  // namespace block
}  // namespace fcm
