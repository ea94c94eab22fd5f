#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_INSTANCE(0)
FCM_BLOCK_INSTANCE(16)
FCM_BLOCK_INSTANCE(24)
FCM_BLOCK_INSTANCE(32)
FCM_BLOCK_EXACT_INSTANCE(0)
FCM_BLOCK_EXACT_INSTANCE(32)
FCM_BLOCK_HALVES_INSTANCE(0)
}  // namespace block
}  // namespace fcm
