#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_INSTANCE(160)
FCM_BLOCK_INSTANCE(192)
FCM_BLOCK_EXACT_INSTANCE(192)
FCM_BLOCK_HALVES_INSTANCE(160)
FCM_BLOCK_HALVES_INSTANCE(192)
}  // namespace block
}  // namespace fcm
