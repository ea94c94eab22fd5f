// What the launchers of both kernel families ask of the device: its properties (once per device),
// how many CTAs of a kernel an SM holds, how many clusters the GPU runs.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

namespace fcm {

struct DeviceInfo {
  int sms = 0, major = 0, minor = 0, shared_optin = 0, clusters = 0;
};

// The current device's properties, read once per device ordinal (a process may run sessions on
// several GPUs).
inline const DeviceInfo& CurrentDevice() {
  static std::mutex mutex;
  static std::map<int, DeviceInfo> devices;
  int ordinal = 0;
  cudaGetDevice(&ordinal);
  std::lock_guard<std::mutex> lock(mutex);
  auto found = devices.find(ordinal);
  if (found != devices.end()) return found->second;
  DeviceInfo d;
  cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, ordinal);
  cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, ordinal);
  cudaDeviceGetAttribute(&d.minor, cudaDevAttrComputeCapabilityMinor, ordinal);
  cudaDeviceGetAttribute(&d.shared_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, ordinal);
  cudaDeviceGetAttribute(&d.clusters, cudaDevAttrClusterLaunch, ordinal);
  return devices.emplace(ordinal, d).first->second;
}

// CTAs of `kernel` (`threads` each, `bytes` of dynamic shared memory) one SM holds; 0: none. Raises
// the kernel's dynamic shared-memory limit first (once per device, kernel and size: the attribute is
// per device).
inline int CtasPerSm(const void* kernel, int threads, size_t bytes) {
  static std::mutex mutex;
  static std::map<std::pair<int, const void*>, size_t> allowed;
  static std::map<std::tuple<int, const void*, size_t>, int> occupancy;
  int ordinal = 0;
  cudaGetDevice(&ordinal);
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(ordinal, kernel, bytes);
  auto found = occupancy.find(key);
  if (found != occupancy.end()) return found->second;
  size_t& current = allowed[std::make_pair(ordinal, kernel)];
  if (bytes > current) {
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)) != cudaSuccess) {
      cudaGetLastError();  // clear it: the plan is just not possible
      return occupancy[key] = 0;
    }
    current = bytes;
  }
  int ctas = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel, threads, bytes) != cudaSuccess) {
    cudaGetLastError();
    ctas = 0;
  }
  return occupancy[key] = ctas;
}

// How many thread-block clusters of shape `cluster` of `kernel` the device runs at once; 0 when it
// runs none: no cluster launch on this device, a kernel not built for sm_90 (its cluster code is
// compiled out), or a cluster that does not fit a GPC's SMs. Above 8 CTAs, a non-portable size.
inline int ClustersPerGpu(const void* kernel, int threads, size_t bytes, dim3 cluster) {
  static std::mutex mutex;
  static std::map<std::tuple<int, const void*, size_t, unsigned, unsigned, unsigned>, int> capacity;
  int ordinal = 0;
  cudaGetDevice(&ordinal);
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_tuple(ordinal, kernel, bytes, cluster.x, cluster.y, cluster.z);
  auto found = capacity.find(key);
  if (found != capacity.end()) return found->second;
  int& clusters = capacity[key];
  clusters = 0;
  int supported = 0;
  cudaFuncAttributes attributes{};
  if (cudaDeviceGetAttribute(&supported, cudaDevAttrClusterLaunch, ordinal) != cudaSuccess || supported == 0 ||
      cudaFuncGetAttributes(&attributes, kernel) != cudaSuccess || attributes.ptxVersion < 90) {
    cudaGetLastError();
    return clusters;
  }
  const unsigned size = cluster.x * cluster.y * cluster.z;
  if (size > 8 && cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
    cudaGetLastError();
    return clusters;
  }
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeClusterDimension;
  attribute.val.clusterDim.x = cluster.x, attribute.val.clusterDim.y = cluster.y, attribute.val.clusterDim.z = cluster.z;
  cudaLaunchConfig_t config{};
  config.gridDim = cluster;
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = bytes;
  config.attrs = &attribute;
  config.numAttrs = 1;
  if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess) {
    cudaGetLastError();
    clusters = 0;
  }
  return clusters;
}

}  // namespace fcm
