#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_INSTANCE(40)
FCM_BLOCK_INSTANCE(48)
FCM_BLOCK_INSTANCE(64)
FCM_BLOCK_INSTANCE(80)
FCM_BLOCK_EXACT_INSTANCE(64)
FCM_BLOCK_HALVES_INSTANCE(64)
FCM_BLOCK_HALVES_INSTANCE(80)
}  // namespace block
}  // namespace fcm
