// cls_attention: softmax attention forward that also writes the normalised [class] row.
//   out[b,h,m,:] = sum_n softmax_n(scale <q[b,h,m], k[b,h,n]>) v[b,h,n,:]     (B, H, M, D)
//   a[b,h,n]     = softmax_n(scale <q[b,h,0], k[b,h,n]>)                     (B, H, N) float32
// q, k, v by raw pointer and element strides (unit last stride); out and a contiguous.
#pragma once
#include "common.h"

namespace daam {

struct ClsAttentionArgs {
  const void* q; int64_t q_sb, q_sh, q_sm;           // (B, H, M, D)
  const void* k; int64_t k_sb, k_sh, k_sn;           // (B, H, N, D)
  const void* v; int64_t v_sb, v_sh, v_sn;           // (B, H, N, D)
  void* out;                                         // (B, H, M, D), q's dtype, contiguous
  float* a;                                          // (B, H, N) float32, contiguous
  int64_t B, H, M, N, D;
  double scale;
};

inline void check_cls_attention_args(const ClsAttentionArgs& a) {
  DAAM_CHECK(a.q && a.k && a.v && a.out && a.a, "null pointer");
  DAAM_CHECK(a.B > 0 && a.H > 0 && a.M > 0 && a.N > 0 && a.D > 0, "sizes must be positive");
  DAAM_CHECK(a.M <= a.N, "q must have at most N rows");
}

#ifdef DAAM_WITH_CUDA
// dtype: 0 float32, 1 float16, 2 bfloat16 (float32 accumulation). stream: cudaStream_t as an
// integer. Arguments are checked before the first CUDA call; the launch runs on `device`.
void cls_attention_cuda(const ClsAttentionArgs& a, int dtype, int device, std::uintptr_t stream);
#endif

}  // namespace daam
