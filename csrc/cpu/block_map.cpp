// C++ CPU kernel of block_map (see csrc/block_map.h). One pass over k and v per (image, head):
// logits and <g, v_n> are formed together, then a max-subtracted softmax; each head's term is
// written to `heads` when asked (same pass), heads are summed per image and the ReLU applied.
// OpenMP over (image, head), then over images.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../block_map.h"

namespace daam {
namespace {

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <typename T>
void block_map_impl(const BlockMapArgs& a) {
  check_block_map_args(a);
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const T* g = static_cast<const T*>(a.g);
  T* out = static_cast<T*>(a.out);
  const int64_t B = a.B, H = a.H, N = a.N, D = a.D, P = a.P;
  const T scale = static_cast<T>(a.scale);
  std::vector<T> contrib(static_cast<size_t>(B * H * N));
  const bool big = B * H * N * D > (1 << 14);

#pragma omp parallel for schedule(static) if (big)
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    const T* qh = q + b * a.q_sb + h * a.q_sh;
    const T* gh = g + b * a.g_sb + h * a.g_sh;
    const T* kh = k + b * a.k_sb + h * a.k_sh;
    const T* vh = v + b * a.v_sb + h * a.v_sh;
    T* c = contrib.data() + bh * N;
    std::vector<T> w(static_cast<size_t>(N));
    T mx = -std::numeric_limits<T>::infinity();
    for (int64_t n = 0; n < N; ++n) {                 // k and v read once, side by side
      const T s = dot(qh, kh + n * a.k_sn, D) * scale;
      c[n] = s;
      mx = std::max(mx, s);
      w[n] = dot(gh, vh + n * a.v_sn, D);
    }
    T sum = 0;
    for (int64_t n = 0; n < N; ++n) {
      const T e = std::exp(c[n] - mx);
      c[n] = e;
      sum += e;
    }
    const T inv = T(1) / sum;
    for (int64_t n = 0; n < N; ++n) c[n] = c[n] * inv * w[n];
    if (a.heads != nullptr) {
      T* ht = static_cast<T*>(a.heads) + bh * (N - P);
      for (int64_t n = P; n < N; ++n) ht[n - P] = c[n];
    }
  }

#pragma omp parallel for schedule(static) if (big)
  for (int64_t b = 0; b < B; ++b) {
    T* o = out + b * (N - P);
    const T* c0 = contrib.data() + b * H * N;
    for (int64_t n = P; n < N; ++n) {
      T s = 0;
      for (int64_t h = 0; h < H; ++h) s += c0[h * N + n];
      o[n - P] = s > T(0) ? s : T(0);
    }
  }
}

}  // namespace

void block_map_cpu_f32(const BlockMapArgs& a) { block_map_impl<float>(a); }
void block_map_cpu_f64(const BlockMapArgs& a) { block_map_impl<double>(a); }

}  // namespace daam
