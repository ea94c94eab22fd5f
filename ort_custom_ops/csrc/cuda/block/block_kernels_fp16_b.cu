#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_HALF_INSTANCE(64, __half)
FCM_BLOCK_HALF_INSTANCE(80, __half)
FCM_BLOCK_HALF_HALVES_INSTANCE(64, __half)
FCM_BLOCK_HALF_HALVES_INSTANCE(80, __half)
}  // namespace block
}  // namespace fcm
