// block_map: per-block DAAM map from the [class] query, keys, values and channel coefficients.
//   t[b, h, n - P] = softmax_n(scale * <q[b,h], k[b,h,n]>) * <g[b,h], v[b,h,n]>   (head terms)
//   out[b, n - P]  = max(0, sum_h t[b, h, n - P])
// Tensors are passed as raw pointers with element strides (last dimension contiguous), so the
// explainer hands over views of timm's qkv output without a copy.
#pragma once
#include "common.h"

#include <utility>
#include <vector>

namespace daam {

struct BlockMapArgs {
  const void* q; int64_t q_sb, q_sh;                 // (B, H, D)
  const void* k; int64_t k_sb, k_sh, k_sn;           // (B, H, N, D)
  const void* v; int64_t v_sb, v_sh, v_sn;           // (B, H, N, D)
  const void* g; int64_t g_sb, g_sh;                 // (B, H, D)
  void* out;                                         // (B, N - P), contiguous
  void* heads;                                       // nullptr, or (B, H, N - P) head terms, contiguous
  int64_t B, H, N, D, P;
  double scale;
};

inline void check_block_map_args(const BlockMapArgs& a) {
  DAAM_CHECK(a.q && a.k && a.v && a.g && a.out, "null pointer");
  DAAM_CHECK(a.B > 0 && a.H > 0 && a.N > 0 && a.D > 0, "sizes must be positive");
  DAAM_CHECK(a.P >= 0 && a.P < a.N, "prefix must be in [0, N)");
}

void block_map_cpu_f32(const BlockMapArgs& a);
void block_map_cpu_f64(const BlockMapArgs& a);

// Float32 workspace of the CUDA kernels, in elements: logits and <g, v_n> per (image, head,
// token), and a running max / sum per (image, head, tile of kTokensPerBlock tokens).
constexpr int64_t kBlockMapTokensPerBlock = 16;
inline int64_t block_map_cuda_workspace(int64_t B, int64_t H, int64_t N) {
  const int64_t tiles = (N + kBlockMapTokensPerBlock - 1) / kBlockMapTokensPerBlock;
  return B * H * (2 * N + 2 * tiles);
}

#ifdef DAAM_WITH_CUDA
// dtype: 0 float32, 1 float16, 2 bfloat16 (accumulation in float32, outputs float32).
// workspace: block_map_cuda_workspace(B, H, N) floats on `device`. stream: a cudaStream_t
// as an integer. Every argument is checked before the first CUDA call; the launch runs on
// `device` (set and restored around it).
void block_map_cuda(const BlockMapArgs& a, int dtype, float* workspace, int64_t workspace_numel, int device,
                    std::uintptr_t stream);
int cuda_device_count();
// The archs the CUDA kernels were compiled for (nvcc's __CUDA_ARCH_LIST__, e.g. {800, 900}).
std::vector<int> cuda_archs();
// Whether this extension's kernels run on `device`: the attributes of the image the runtime
// picks for it (cudaFuncGetAttributes), then one launch of an empty kernel on a private stream,
// synchronised. Returns (SASS arch, PTX arch) of that image, e.g. (90, 90); raises with the CUDA
// error otherwise (no kernel image for the device, a driver older than the runtime, ...).
std::pair<int, int> cuda_probe(int device);
#endif

}  // namespace daam
