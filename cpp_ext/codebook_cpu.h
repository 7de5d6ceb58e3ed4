// Nearest-codebook search on the CPU (OpenMP), free of torch headers so it compiles fast.
#pragma once
#include <cstdint>

namespace galhpc {

// index[i] = argmin_k ||x_i - c_k||^2 for x (n, d) and codebook (k, d), both row-major and
// contiguous, and distance[i] = ||x_i - c_index[i]||^2 summed exactly (not from the
// expansion used to search).  Ties go to the lowest k, like torch.argmin.  Memory: O(k * d) for a
// transposed copy of the codebook; the n x k distance matrix is never formed.  Runs on
// `threads` OpenMP threads.
void nearest_code_cpu(const float* x, int64_t n, int64_t d, const float* codebook, int64_t k, int64_t* index,
                      float* distance, int threads);
void nearest_code_cpu(const double* x, int64_t n, int64_t d, const double* codebook, int64_t k, int64_t* index,
                      double* distance, int threads);

}  // namespace galhpc
