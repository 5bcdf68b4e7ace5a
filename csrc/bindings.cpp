// The one binding file of daam_fast._C (pybind11, no libtorch link: raw pointers + strides).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "block_map.h"

namespace py = pybind11;

namespace {

daam::BlockMapArgs make_args(std::uintptr_t q, int64_t q_sb, int64_t q_sh, std::uintptr_t k, int64_t k_sb,
                             int64_t k_sh, int64_t k_sn, std::uintptr_t v, int64_t v_sb, int64_t v_sh, int64_t v_sn,
                             std::uintptr_t g, int64_t g_sb, int64_t g_sh, std::uintptr_t out, int64_t B, int64_t H,
                             int64_t N, int64_t D, int64_t P, double scale) {
  return daam::BlockMapArgs{reinterpret_cast<const void*>(q), q_sb, q_sh,
                            reinterpret_cast<const void*>(k), k_sb, k_sh, k_sn,
                            reinterpret_cast<const void*>(v), v_sb, v_sh, v_sn,
                            reinterpret_cast<const void*>(g), g_sb, g_sh,
                            reinterpret_cast<void*>(out), B, H, N, D, P, scale};
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "daam_fast compiled kernels (C++ CPU; CUDA when built with nvcc)";
  m.def(
      "block_map_cpu",
      [](std::uintptr_t q, int64_t q_sb, int64_t q_sh, std::uintptr_t k, int64_t k_sb, int64_t k_sh, int64_t k_sn,
         std::uintptr_t v, int64_t v_sb, int64_t v_sh, int64_t v_sn, std::uintptr_t g, int64_t g_sb, int64_t g_sh,
         std::uintptr_t out, int64_t B, int64_t H, int64_t N, int64_t D, int64_t P, double scale, int dtype) {
        auto a = make_args(q, q_sb, q_sh, k, k_sb, k_sh, k_sn, v, v_sb, v_sh, v_sn, g, g_sb, g_sh, out, B, H, N, D,
                           P, scale);
        if (dtype == 0) daam::block_map_cpu_f32(a);
        else if (dtype == 1) daam::block_map_cpu_f64(a);
        else throw std::invalid_argument("daam_fast._C: block_map_cpu supports float32 (0) and float64 (1)");
      },
      py::call_guard<py::gil_scoped_release>(),
      "block_map on CPU tensors given as pointers and element strides (see csrc/block_map.h)");
  m.def("has_cuda", []() {
#ifdef DAAM_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
#ifdef DAAM_WITH_CUDA
  m.def(
      "block_map_cuda",
      [](std::uintptr_t q, int64_t q_sb, int64_t q_sh, std::uintptr_t k, int64_t k_sb, int64_t k_sh, int64_t k_sn,
         std::uintptr_t v, int64_t v_sb, int64_t v_sh, int64_t v_sn, std::uintptr_t g, int64_t g_sb, int64_t g_sh,
         std::uintptr_t out, int64_t B, int64_t H, int64_t N, int64_t D, int64_t P, double scale, int dtype,
         std::uintptr_t workspace, std::uintptr_t stream) {
        auto a = make_args(q, q_sb, q_sh, k, k_sb, k_sh, k_sn, v, v_sb, v_sh, v_sn, g, g_sb, g_sh, out, B, H, N, D,
                           P, scale);
        daam::block_map_cuda(a, dtype, reinterpret_cast<float*>(workspace), stream);
      },
      py::call_guard<py::gil_scoped_release>(),
      "block_map on CUDA tensors (pointers, element strides, float32 workspace of B*H*N, stream)");
  m.def("cuda_device_count", &daam::cuda_device_count, "CUDA device count; raises with the CUDA error");
#endif
}
