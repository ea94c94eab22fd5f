#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_WIDE_INSTANCE(24, false, __half)
FCM_BLOCK_WIDE_INSTANCE(32, false, __half)
FCM_BLOCK_WIDE_INSTANCE(64, false, __half)
FCM_BLOCK_WIDE_INSTANCE(160, false, __half)
FCM_BLOCK_WIDE_INSTANCE(24, false, __nv_bfloat16)
FCM_BLOCK_WIDE_INSTANCE(32, false, __nv_bfloat16)
FCM_BLOCK_WIDE_INSTANCE(64, false, __nv_bfloat16)
FCM_BLOCK_WIDE_INSTANCE(160, false, __nv_bfloat16)
}  // namespace block
}  // namespace fcm
