#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_HALF_INSTANCE(64, __nv_bfloat16)
FCM_BLOCK_HALF_INSTANCE(80, __nv_bfloat16)
FCM_BLOCK_HALF_HALVES_INSTANCE(64, __nv_bfloat16)
FCM_BLOCK_HALF_HALVES_INSTANCE(80, __nv_bfloat16)
}  // namespace block
}  // namespace fcm
