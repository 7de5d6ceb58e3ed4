// galhpc._ext: torch bindings of the compiled kernels.  CPU (OpenMP) kernels always; CUDA
// kernels when setup.py built with GALHPC_WITH_CUDA.
#include <torch/extension.h>

#include "codebook_cpu.h"

#ifdef GALHPC_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "codebook_cuda.h"
#endif

namespace {

void check_codebook_inputs(const torch::Tensor& x, const torch::Tensor& codebook) {
  TORCH_CHECK(x.dim() == 2 && codebook.dim() == 2, "nearest_code: x and codebook must be 2-D");
  TORCH_CHECK(x.size(1) == codebook.size(1), "nearest_code: x has ", x.size(1), " features, the codebook ",
              codebook.size(1));
  TORCH_CHECK(codebook.size(0) > 0 && codebook.size(0) < (int64_t{1} << 31),
              "nearest_code: the codebook needs 1 to 2^31 - 1 codes, got ", codebook.size(0));
  TORCH_CHECK(x.scalar_type() == codebook.scalar_type(), "nearest_code: x and codebook dtypes differ");
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kFloat64,
              "nearest_code: float32 or float64 tensors expected, got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous() && codebook.is_contiguous(), "nearest_code: contiguous tensors expected");
}

std::tuple<torch::Tensor, torch::Tensor> nearest_code_cpu(const torch::Tensor& x, const torch::Tensor& codebook,
                                                          int64_t threads) {
  check_codebook_inputs(x, codebook);
  TORCH_CHECK(x.is_cpu() && codebook.is_cpu(), "nearest_code_cpu: CPU tensors expected");
  auto index = torch::empty({x.size(0)}, x.options().dtype(torch::kInt64));
  auto distance = torch::empty({x.size(0)}, x.options());
  if (x.scalar_type() == torch::kFloat32) {
    galhpc::nearest_code_cpu(x.data_ptr<float>(), x.size(0), x.size(1), codebook.data_ptr<float>(),
                             codebook.size(0), index.data_ptr<int64_t>(), distance.data_ptr<float>(),
                             static_cast<int>(threads));
  } else {
    galhpc::nearest_code_cpu(x.data_ptr<double>(), x.size(0), x.size(1), codebook.data_ptr<double>(),
                             codebook.size(0), index.data_ptr<int64_t>(), distance.data_ptr<double>(),
                             static_cast<int>(threads));
  }
  return {index, distance};
}

#ifdef GALHPC_WITH_CUDA
std::tuple<torch::Tensor, torch::Tensor> nearest_code_cuda(const torch::Tensor& x, const torch::Tensor& codebook) {
  check_codebook_inputs(x, codebook);
  TORCH_CHECK(x.is_cuda() && codebook.device() == x.device(), "nearest_code_cuda: cuda tensors on one device expected");
  TORCH_CHECK(x.size(1) * x.element_size() * galhpc::kCudaPanelCodes <= galhpc::kCudaSharedBytes,
              "nearest_code_cuda: at most ", galhpc::kCudaSharedBytes / (x.element_size() * galhpc::kCudaPanelCodes),
              " features fit the kernel's shared memory, got ", x.size(1));
  const c10::cuda::CUDAGuard guard(x.device());
  auto half_norm = codebook.pow(2).sum(1).mul_(0.5).contiguous();
  auto index = torch::empty({x.size(0)}, x.options().dtype(torch::kInt64));
  auto distance = torch::empty({x.size(0)}, x.options());
  if (x.size(0) == 0) return {index, distance};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  cudaError_t status;
  if (x.scalar_type() == torch::kFloat32) {
    status = galhpc::launch_nearest_code(x.data_ptr<float>(), x.size(0), x.size(1), codebook.data_ptr<float>(),
                                         half_norm.data_ptr<float>(), codebook.size(0), index.data_ptr<int64_t>(),
                                         distance.data_ptr<float>(), stream);
  } else {
    status = galhpc::launch_nearest_code(x.data_ptr<double>(), x.size(0), x.size(1), codebook.data_ptr<double>(),
                                         half_norm.data_ptr<double>(), codebook.size(0),
                                         index.data_ptr<int64_t>(), distance.data_ptr<double>(), stream);
  }
  TORCH_CHECK(status == cudaSuccess, "nearest_code_cuda: kernel launch failed: ", cudaGetErrorString(status));
  return {index, distance};
}
#endif

bool with_cuda() {
#ifdef GALHPC_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "galhpc compiled kernels (cpp_ext/)";
  m.def("with_cuda", &with_cuda, "whether the CUDA kernels were built");
  m.def("nearest_code_cpu", &nearest_code_cpu, "nearest codebook row per row of x (OpenMP)", py::arg("x"),
        py::arg("codebook"), py::arg("threads"), py::call_guard<py::gil_scoped_release>());
#ifdef GALHPC_WITH_CUDA
  m.def("nearest_code_cuda", &nearest_code_cuda, "nearest codebook row per row of x (fused CUDA kernel)",
        py::arg("x"), py::arg("codebook"), py::call_guard<py::gil_scoped_release>());
#endif
}
