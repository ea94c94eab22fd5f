#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_INSTANCE(96)
FCM_BLOCK_INSTANCE(112)
FCM_BLOCK_INSTANCE(128)
FCM_BLOCK_EXACT_INSTANCE(128)
}  // namespace block
}  // namespace fcm
