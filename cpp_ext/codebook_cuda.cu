// Fused distance + argmin: a block of kThreads threads owns kThreads rows of x; the codebook
// streams through shared memory in panels of kPanelCodes codes, and each thread keeps its
// row's running minimum in registers.  No n x k matrix is written anywhere.
#include "codebook_cuda.h"

namespace galhpc {
namespace {

constexpr int kThreads = 128;
constexpr int kPanelCodes = kCudaPanelCodes;

template <typename T>
__global__ void nearest_code_kernel(const T* __restrict__ x, int64_t n, int64_t d, const T* __restrict__ codebook,
                                    const T* __restrict__ half_norm, int64_t k, int64_t* __restrict__ index,
                                    T* __restrict__ distance) {
  extern __shared__ unsigned char shared_bytes[];
  T* panel = reinterpret_cast<T*>(shared_bytes);  // kPanelCodes x d
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const T* xr = x + row * d;
  T best_score = T(0);
  int64_t best = -1;
  for (int64_t k0 = 0; k0 < k; k0 += kPanelCodes) {
    const int64_t codes = min(static_cast<int64_t>(kPanelCodes), k - k0);
    __syncthreads();
    for (int64_t e = threadIdx.x; e < codes * d; e += kThreads) panel[e] = codebook[k0 * d + e];
    __syncthreads();
    if (row < n) {
      for (int64_t c = 0; c < codes; ++c) {
        T dot = T(0);
        for (int64_t j = 0; j < d; ++j) dot += xr[j] * panel[c * d + j];
        const T score = half_norm[k0 + c] - dot;
        if (best < 0 || score < best_score) {  // strict: the lowest index keeps a tie
          best_score = score;
          best = k0 + c;
        }
      }
    }
  }
  if (row < n) {
    const T* code = codebook + best * d;
    T sum = T(0);
    for (int64_t j = 0; j < d; ++j) {
      const T diff = xr[j] - code[j];
      sum += diff * diff;
    }
    index[row] = best;
    distance[row] = sum;
  }
}

template <typename T>
cudaError_t launch(const T* x, int64_t n, int64_t d, const T* codebook, const T* half_norm, int64_t k,
                   int64_t* index, T* distance, cudaStream_t stream) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  const size_t shared = static_cast<size_t>(kPanelCodes * d) * sizeof(T);
  if (shared > static_cast<size_t>(kCudaSharedBytes)) return cudaErrorInvalidValue;  // d too large for one panel in shared memory
  nearest_code_kernel<T><<<static_cast<unsigned>(blocks), kThreads, shared, stream>>>(x, n, d, codebook, half_norm,
                                                                                       k, index, distance);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_nearest_code(const float* x, int64_t n, int64_t d, const float* codebook, const float* half_norm,
                                int64_t k, int64_t* index, float* distance, cudaStream_t stream) {
  return launch(x, n, d, codebook, half_norm, k, index, distance, stream);
}

cudaError_t launch_nearest_code(const double* x, int64_t n, int64_t d, const double* codebook,
                                const double* half_norm, int64_t k, int64_t* index, double* distance,
                                cudaStream_t stream) {
  return launch(x, n, d, codebook, half_norm, k, index, distance, stream);
}

}  // namespace galhpc
