#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_HALF_INSTANCE(96, __half)
FCM_BLOCK_HALF_INSTANCE(112, __half)
FCM_BLOCK_HALF_INSTANCE(128, __half)
FCM_BLOCK_HALF_HALVES_INSTANCE(96, __half)
FCM_BLOCK_HALF_HALVES_INSTANCE(112, __half)
FCM_BLOCK_HALF_HALVES_INSTANCE(128, __half)
}  // namespace block
}  // namespace fcm
