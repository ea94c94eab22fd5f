// One kernel launch's configuration for cudaLaunchKernelEx, with the two launch attributes the
// kernels take: thread-block clusters and programmatic dependent launch (sm_90).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace fcm {

// `cluster`: the cluster's shape in CTAs (1 x 1 x 1: no cluster attribute); `dependent`: the kernel
// may start while the previous kernel in the stream finishes, and waits for it (griddepcontrol.wait)
// before reading what it wrote. It holds the attributes its config points to, so it is neither
// copied nor moved.
struct LaunchConfig {
  cudaLaunchAttribute attributes[2]{};
  cudaLaunchConfig_t config{};
  LaunchConfig(dim3 grid, unsigned threads, size_t shared_bytes, dim3 cluster, bool dependent, cudaStream_t stream) {
    config.gridDim = grid;
    config.blockDim = dim3(threads);
    config.dynamicSmemBytes = shared_bytes;
    config.stream = stream;
    config.attrs = attributes;
    if (cluster.x * cluster.y * cluster.z > 1) {
      cudaLaunchAttribute& a = attributes[config.numAttrs++];
      a.id = cudaLaunchAttributeClusterDimension;
      a.val.clusterDim.x = cluster.x, a.val.clusterDim.y = cluster.y, a.val.clusterDim.z = cluster.z;
    }
    if (dependent) {
      cudaLaunchAttribute& a = attributes[config.numAttrs++];
      a.id = cudaLaunchAttributeProgrammaticStreamSerialization;
      a.val.programmaticStreamSerializationAllowed = 1;
    }
  }
  LaunchConfig(const LaunchConfig&) = delete;
  LaunchConfig& operator=(const LaunchConfig&) = delete;
};

}  // namespace fcm
