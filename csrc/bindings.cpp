// The one binding file of daam_fast._C (pybind11, no libtorch link: raw pointers + strides).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>

#include "block_map.h"
#include "cls_attention.h"
#include "gif.h"
#include "png.h"
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
  m.def(
      "gif_cpu",
      [](std::uintptr_t frames, int64_t L, int64_t H, int64_t W, std::uintptr_t palette, int K, int delay_cs,
         int loop, std::uintptr_t cells) {
        daam::GifArgs a{reinterpret_cast<const unsigned char*>(frames), L, H, W,
                        reinterpret_cast<const unsigned char*>(palette), K, delay_cs, loop,
                        reinterpret_cast<const int16_t*>(cells)};
        std::string s;
        {
          py::gil_scoped_release release;
          s = daam::gif_encode_cpu(a);
        }
        return py::bytes(s);
      },
      py::arg("frames"), py::arg("L"), py::arg("H"), py::arg("W"), py::arg("palette"), py::arg("K"),
      py::arg("delay_cs"), py::arg("loop"), py::arg("cells") = 0,
      "animated GIF file bytes of (L, H, W, 3) uint8 frames with a (K, 3) uint8 palette, a frame delay in "
      "hundredths of a second and a loop count; cells: 0 (each pixel to the entry nearest its 5-bit cell) or "
      "a (32768,) int16 table of each cell's entry (palette_cpu's cells_out) (see csrc/gif.h)");
  m.def(
      "palette_cpu",
      [](std::uintptr_t rgb, int64_t n, int K, int64_t max_samples, std::uintptr_t out, std::uintptr_t cells) {
        return daam::palette_cpu(reinterpret_cast<const unsigned char*>(rgb), n, K, max_samples,
                                 reinterpret_cast<unsigned char*>(out), reinterpret_cast<int16_t*>(cells));
      },
      py::call_guard<py::gil_scoped_release>(), py::arg("rgb"), py::arg("n"), py::arg("K"), py::arg("max_samples"),
      py::arg("out"), py::arg("cells") = 0,
      "a palette of at most K colours (K x 3 uint8 written at out) for n RGB uint8 pixels, sampling at most "
      "max_samples of them; returns the number of colours; cells: 0 or a (32768,) int16 array that receives "
      "each 5-bit cell's palette entry (see csrc/gif.h)");
  m.def(
      "png_idat_cpu",
      [](std::uintptr_t image, int64_t H, int64_t W, int C) {
        daam::PngArgs a{reinterpret_cast<const unsigned char*>(image), H, W, C};
        std::string s;
        {
          py::gil_scoped_release release;
          s = daam::png_idat_cpu(a);
        }
        return py::bytes(s);
      },
      "zlib stream of a PNG's IDAT chunk for an (H, W, C) uint8 picture, C = 1, 3 or 4: Sub filter on "
      "every row, one dynamic-Huffman block of literals and runs (see csrc/png.h)");
  m.def(
      "palette_index_cpu",
      [](std::uintptr_t rgb, int64_t n, std::uintptr_t palette, int K, std::uintptr_t out) {
        daam::palette_index_cpu(reinterpret_cast<const unsigned char*>(rgb), n,
                                reinterpret_cast<const unsigned char*>(palette), K, reinterpret_cast<unsigned char*>(out));
      },
      py::call_guard<py::gil_scoped_release>(),
      "palette indices (n,) uint8 of n RGB uint8 pixels: nearest entry to each pixel's 5-bit cell centre");
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
