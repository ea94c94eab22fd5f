#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_HALF_INSTANCE(0, __half)
FCM_BLOCK_HALF_INSTANCE(16, __half)
FCM_BLOCK_HALF_INSTANCE(24, __half)
FCM_BLOCK_HALF_INSTANCE(32, __half)
FCM_BLOCK_HALF_INSTANCE(40, __half)
FCM_BLOCK_HALF_INSTANCE(48, __half)
FCM_BLOCK_HALF_HALVES_INSTANCE(0, __half)
}  // namespace block
}  // namespace fcm
