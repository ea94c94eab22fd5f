#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_HALF_INSTANCE(0, __nv_bfloat16)
FCM_BLOCK_HALF_INSTANCE(16, __nv_bfloat16)
FCM_BLOCK_HALF_INSTANCE(24, __nv_bfloat16)
FCM_BLOCK_HALF_INSTANCE(32, __nv_bfloat16)
FCM_BLOCK_HALF_INSTANCE(40, __nv_bfloat16)
FCM_BLOCK_HALF_INSTANCE(48, __nv_bfloat16)
FCM_BLOCK_HALF_HALVES_INSTANCE(0, __nv_bfloat16)
}  // namespace block
}  // namespace fcm
