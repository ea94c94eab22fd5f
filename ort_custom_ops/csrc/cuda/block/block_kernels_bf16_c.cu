#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_HALF_INSTANCE(96, __nv_bfloat16)
FCM_BLOCK_HALF_INSTANCE(112, __nv_bfloat16)
FCM_BLOCK_HALF_INSTANCE(128, __nv_bfloat16)
FCM_BLOCK_HALF_HALVES_INSTANCE(96, __nv_bfloat16)
FCM_BLOCK_HALF_HALVES_INSTANCE(112, __nv_bfloat16)
FCM_BLOCK_HALF_HALVES_INSTANCE(128, __nv_bfloat16)
}  // namespace block
}  // namespace fcm
