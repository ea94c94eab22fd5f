#include "block_instances.cuh"
namespace fcm {
namespace block {
FCM_BLOCK_WIDE_INSTANCE(24, false, float)
FCM_BLOCK_WIDE_INSTANCE(32, false, float)
FCM_BLOCK_WIDE_INSTANCE(64, false, float)
FCM_BLOCK_WIDE_INSTANCE(160, false, float)
FCM_BLOCK_WIDE_INSTANCE(32, true, float)
FCM_BLOCK_WIDE_INSTANCE(64, true, float)
}  // namespace block
}  // namespace fcm
