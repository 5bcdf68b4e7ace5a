// The one binding file of daam_fast._C (pybind11, no libtorch link: raw pointers + strides).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "block_map.h"
#include "cls_attention.h"
#include "render.h"

namespace py = pybind11;

namespace {

daam::BlockMapArgs make_args(std::uintptr_t q, int64_t q_sb, int64_t q_sh, std::uintptr_t k, int64_t k_sb,
                             int64_t k_sh, int64_t k_sn, std::uintptr_t v, int64_t v_sb, int64_t v_sh, int64_t v_sn,
                             std::uintptr_t g, int64_t g_sb, int64_t g_sh, std::uintptr_t out, std::uintptr_t heads,
                             int64_t B, int64_t H, int64_t N, int64_t D, int64_t P, double scale) {
  return daam::BlockMapArgs{reinterpret_cast<const void*>(q), q_sb, q_sh,
                            reinterpret_cast<const void*>(k), k_sb, k_sh, k_sn,
                            reinterpret_cast<const void*>(v), v_sb, v_sh, v_sn,
                            reinterpret_cast<const void*>(g), g_sb, g_sh,
                            reinterpret_cast<void*>(out), reinterpret_cast<void*>(heads), B, H, N, D, P, scale};
}

daam::RenderArgs make_render_args(std::uintptr_t maps, std::uintptr_t images, int image_dtype, std::uintptr_t out,
                                  int64_t B, int64_t L, int64_t h, int64_t w, int64_t H, int64_t W, int mode,
                                  bool accumulate, double alpha, double beta) {
  return daam::RenderArgs{reinterpret_cast<const float*>(maps), reinterpret_cast<const void*>(images), image_dtype,
                          reinterpret_cast<unsigned char*>(out), B, L, h, w, H, W, mode, accumulate ? 1 : 0,
                          static_cast<float>(alpha), static_cast<float>(beta)};
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "daam_fast compiled kernels (C++ CPU; CUDA when built with nvcc)";
  m.def(
      "block_map_cpu",
      [](std::uintptr_t q, int64_t q_sb, int64_t q_sh, std::uintptr_t k, int64_t k_sb, int64_t k_sh, int64_t k_sn,
         std::uintptr_t v, int64_t v_sb, int64_t v_sh, int64_t v_sn, std::uintptr_t g, int64_t g_sb, int64_t g_sh,
         std::uintptr_t out, std::uintptr_t heads, int64_t B, int64_t H, int64_t N, int64_t D, int64_t P,
         double scale, int dtype) {
        auto a = make_args(q, q_sb, q_sh, k, k_sb, k_sh, k_sn, v, v_sb, v_sh, v_sn, g, g_sb, g_sh, out, heads, B, H,
                           N, D, P, scale);
        if (dtype == 0) daam::block_map_cpu_f32(a);
        else if (dtype == 1) daam::block_map_cpu_f64(a);
        else throw std::invalid_argument("daam_fast._C: block_map_cpu supports float32 (0) and float64 (1)");
      },
      py::call_guard<py::gil_scoped_release>(),
      "block_map on CPU tensors given as pointers and element strides; heads = 0 or a (B, H, N - P) "
      "output of the per-head terms (see csrc/block_map.h)");
  m.def("block_map_cuda_workspace", &daam::block_map_cuda_workspace,
        "float32 elements of the CUDA block_map workspace for (B, H, N)");
  m.def(
      "render_cpu",
      [](std::uintptr_t maps, std::uintptr_t images, int image_dtype, std::uintptr_t out, int64_t B, int64_t L,
         int64_t h, int64_t w, int64_t H, int64_t W, int mode, bool accumulate, double alpha, double beta) {
        daam::render_cpu(make_render_args(maps, images, image_dtype, out, B, L, h, w, H, W, mode, accumulate, alpha,
                                          beta));
      },
      py::call_guard<py::gil_scoped_release>(),
      "render on CPU: float32 maps (B, L, h, w), images (B, 3, H, W) uint8 / float32 or 0, uint8 out "
      "(see csrc/render.h)");
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
         std::uintptr_t out, std::uintptr_t heads, int64_t B, int64_t H, int64_t N, int64_t D, int64_t P,
         double scale, int dtype, std::uintptr_t workspace, int64_t workspace_numel, int device,
         std::uintptr_t stream) {
        auto a = make_args(q, q_sb, q_sh, k, k_sb, k_sh, k_sn, v, v_sb, v_sh, v_sn, g, g_sb, g_sh, out, heads, B, H,
                           N, D, P, scale);
        daam::block_map_cuda(a, dtype, reinterpret_cast<float*>(workspace), workspace_numel, device, stream);
      },
      py::call_guard<py::gil_scoped_release>(),
      "block_map on CUDA tensors (pointers, element strides, heads output or 0, float32 workspace of "
      "block_map_cuda_workspace(B, H, N) elements, device index, stream)");
  m.def(
      "cls_attention_cuda",
      [](std::uintptr_t q, int64_t q_sb, int64_t q_sh, int64_t q_sm, std::uintptr_t k, int64_t k_sb, int64_t k_sh,
         int64_t k_sn, std::uintptr_t v, int64_t v_sb, int64_t v_sh, int64_t v_sn, std::uintptr_t out,
         std::uintptr_t a_cls, int64_t B, int64_t H, int64_t M, int64_t N, int64_t D, double scale, int dtype,
         int device, std::uintptr_t stream) {
        daam::ClsAttentionArgs a{reinterpret_cast<const void*>(q), q_sb, q_sh, q_sm,
                                 reinterpret_cast<const void*>(k), k_sb, k_sh, k_sn,
                                 reinterpret_cast<const void*>(v), v_sb, v_sh, v_sn,
                                 reinterpret_cast<void*>(out), reinterpret_cast<float*>(a_cls), B, H, M, N, D, scale};
        daam::cls_attention_cuda(a, dtype, device, stream);
      },
      py::call_guard<py::gil_scoped_release>(),
      "cls_attention on CUDA tensors (pointers, element strides, out (B,H,M,D), a_cls (B,H,N) float32, device index, "
      "stream)");
  m.def(
      "render_cuda",
      [](std::uintptr_t maps, std::uintptr_t images, int image_dtype, std::uintptr_t out, int64_t B, int64_t L,
         int64_t h, int64_t w, int64_t H, int64_t W, int mode, bool accumulate, double alpha, double beta,
         std::uintptr_t workspace, int device, std::uintptr_t stream) {
        daam::render_cuda(make_render_args(maps, images, image_dtype, out, B, L, h, w, H, W, mode, accumulate, alpha,
                                           beta),
                          reinterpret_cast<float*>(workspace), device, stream);
      },
      py::call_guard<py::gil_scoped_release>(),
      "render on CUDA tensors (as render_cpu, plus a float32 workspace of B*L*8, a device index and a stream)");
  m.def("cuda_device_count", &daam::cuda_device_count, "CUDA device count; raises with the CUDA error");
  m.def("cuda_archs", &daam::cuda_archs, "archs the CUDA kernels were compiled for, e.g. [800, 900]");
  m.def("cuda_probe", &daam::cuda_probe, py::call_guard<py::gil_scoped_release>(),
        "(SASS arch, PTX arch) of the kernel image that runs on a device, after one empty launch; raises with "
        "the CUDA error (no kernel image for the device, driver older than the runtime, ...)");
#endif
}
