#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_HALF_INSTANCE(160, __half)
FCM_BLOCK_HALF_INSTANCE(192, __half)
FCM_BLOCK_HALF_HALVES_INSTANCE(160, __half)
FCM_BLOCK_HALF_HALVES_INSTANCE(192, __half)
}  // namespace block
}  // namespace fcm
