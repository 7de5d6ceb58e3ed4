// Nearest-codebook search on the GPU: one fused distance + argmin kernel.  Plain CUDA (no
// torch headers), so nvcc can compile it standalone.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace galhpc {

// Codes staged in shared memory at a time; d * kCudaPanelCodes elements must fit in 48 KiB.
constexpr int kCudaPanelCodes = 32;
constexpr int64_t kCudaSharedBytes = 48 * 1024;

// index[i] = argmin_k (half_norm[k] - x_i . c_k), half_norm[k] = ||c_k||^2 / 2, ties to the
// lowest k; distance[i] = ||x_i - c_index[i]||^2 summed exactly.  All pointers are device
// pointers to contiguous row-major arrays.
cudaError_t launch_nearest_code(const float* x, int64_t n, int64_t d, const float* codebook, const float* half_norm,
                                int64_t k, int64_t* index, float* distance, cudaStream_t stream);
cudaError_t launch_nearest_code(const double* x, int64_t n, int64_t d, const double* codebook,
                                const double* half_norm, int64_t k, int64_t* index, double* distance,
                                cudaStream_t stream);

}  // namespace galhpc
