#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_HALF_INSTANCE(160, __nv_bfloat16)
FCM_BLOCK_HALF_INSTANCE(192, __nv_bfloat16)
FCM_BLOCK_HALF_HALVES_INSTANCE(160, __nv_bfloat16)
FCM_BLOCK_HALF_HALVES_INSTANCE(192, __nv_bfloat16)
}  // namespace block
}  // namespace fcm
