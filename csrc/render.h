// render: accumulated DAAM maps -> uint8 frames in one kernel (docs/method.md §5):
// optional cumulative sum over blocks, per-frame normalisation ("nonlinear" / "linear" / "raw"),
// truncation to uint8 levels, bilinear resize (torch's F.interpolate, align_corners=False),
// and, with pictures, the JET colour map blended as round(alpha * jet + beta * image).
// The formulas below are shared by the C++ and the CUDA kernels and follow
// daam_fast/render.py's torch ops operation by operation, in float32, so the results agree
// with it to the last bit except where a libm exp differs by an ulp (tolerance: 1 level).
#pragma once
#include <cmath>

#include "common.h"

#if defined(__CUDACC__)
#define DAAM_HD __host__ __device__ __forceinline__
#else
#define DAAM_HD inline
#endif

namespace daam {

enum RenderMode : int { kNonlinear = 0, kLinear = 1, kRaw = 2 };

struct RenderArgs {
  const float* maps;        // (B, L, h, w) float32 contiguous: D_b, or L_b when accumulate
  const void* images;       // nullptr, or (B, 3, H, W) contiguous: uint8 or float32 in [0, 1]
  int image_dtype;          // 0 none, 1 uint8, 2 float32
  unsigned char* out;       // (B, L, H, W) heat, or (B, L, H, W, 3) RGB overlay; contiguous
  int64_t B, L, h, w, H, W;
  int mode;                 // RenderMode
  int accumulate;           // 1: maps are per-block L_b, frames are their cumulative sums
  float alpha, beta;        // weights of the colour map and of the picture
};

inline void check_render_args(const RenderArgs& a) {
  DAAM_CHECK(a.maps && a.out, "null pointer");
  DAAM_CHECK(a.B > 0 && a.L > 0 && a.h > 0 && a.w > 0 && a.H > 0 && a.W > 0, "sizes must be positive");
  DAAM_CHECK(a.mode >= 0 && a.mode <= 2, "mode must be 0 (nonlinear), 1 (linear) or 2 (raw)");
  DAAM_CHECK(a.image_dtype >= 0 && a.image_dtype <= 2, "image dtype code must be 0, 1 (uint8) or 2 (float32)");
  DAAM_CHECK((a.image_dtype == 0) == (a.images == nullptr), "images pointer and dtype code disagree");
}

// Per-image statistics of the final frame D_L and per-frame statistics of D_b.
struct FrameStats {
  float G, gmin, gmax;      // max / min / max of D_L (G == gmax)
  float fmin, fmax;         // min / max of D_b
  float ymin, ymax;         // min / max of y = sigmoid(5 D_b / G) - 0.5 ("nonlinear")
};

DAAM_HD float finite_or_zero(float x) { return (x == x && x != INFINITY && x != -INFINITY) ? x : 0.f; }  // nan_to_num
DAAM_HD float safe_div(float num, float den) { return den > 0.f ? num / den : 0.f; }
DAAM_HD float clamp01(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }

// floor / round-half-to-even for values in [0, 2^23) without a libm call (x86-64 without
// SSE4.1 has no rounding instruction): a cast truncates (= floor for x >= 0), and adding and
// subtracting 2^23 rounds to an integer in the current (nearest-even) rounding mode. Exact
// IEEE float arithmetic; the build forbids fast-math and FMA contraction for this file.
DAAM_HD float floor_nonneg(float x) { return x >= 0.f ? static_cast<float>(static_cast<int32_t>(x)) : 0.f; }
DAAM_HD float rint_nonneg(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return (x + 8388608.f) - 8388608.f;   // not folded: no -ffast-math / -fassociative-math
#endif
}

DAAM_HD float sigmoid_y(float d, float G) {             // torch: where(G > 0, sigmoid(5 * safe_div(D, G)) - 0.5, 0)
  if (!(G > 0.f)) return 0.f;
  const float x = 5.f * safe_div(d, G);
  return 1.f / (1.f + expf(-x)) - 0.5f;
}

// z in [0, 1] for one value of D_b (render.py's normalize_frames), then uint8 truncation.
DAAM_HD float level(float d, const FrameStats& s, int mode) {
  float z;
  if (mode == kRaw) {
    z = clamp01(safe_div(d - s.fmin, s.fmax - s.fmin));
  } else if (mode == kNonlinear) {
    const float y = sigmoid_y(d, s.G);
    z = clamp01(safe_div(y - s.ymin, s.ymax - s.ymin));
  } else {
    float z0 = (d - s.gmin) / ((s.fmax - s.gmin) + 1e-10f);
    z0 = z0 < 0.f ? 0.f : z0;
    z = clamp01(z0 * safe_div(s.fmax - s.fmin, s.gmax - s.gmin));
  }
  return floor_nonneg(z * 255.f);
}

// torch's area_pixel_compute_source_index + guard_index_and_lambda (align_corners=False).
DAAM_HD void source_index(int64_t dst, int64_t in_size, int64_t out_size, int64_t& i0, int64_t& i1, float& l0,
                          float& l1) {
  const float ratio = static_cast<float>(in_size) / static_cast<float>(out_size);
  float r = ratio * (static_cast<float>(dst) + 0.5f) - 0.5f;
  r = r < 0.f ? 0.f : r;
  i0 = static_cast<int64_t>(floorf(r));
  if (i0 > in_size - 1) i0 = in_size - 1;
  float lam = r - static_cast<float>(i0);
  l1 = lam < 0.f ? 0.f : (lam > 1.f ? 1.f : lam);
  l0 = 1.f - l1;
  i1 = i0 + (i0 < in_size - 1 ? 1 : 0);
}

// torch's separable bilinear: (x00 w0 + x01 w1) h0 + (x10 w0 + x11 w1) h1, no FMA.
DAAM_HD float bilerp(float x00, float x01, float x10, float x11, float w0, float w1, float h0, float h1) {
  const float t0 = x00 * w0 + x01 * w1;
  const float t1 = x10 * w0 + x11 * w1;
  return t0 * h0 + t1 * h1;
}

DAAM_HD float clamp255(float x) { return x < 0.f ? 0.f : (x > 255.f ? 255.f : x); }

// Round half to even (torch.round) and clamp to [0, 255] (clamping first is the same: the
// bounds are integers).
DAAM_HD unsigned char to_u8(float x) { return static_cast<unsigned char>(rint_nonneg(clamp255(x))); }

// JET channel c (centre 3, 2, 1 for r, g, b) of a heat level, times 255: render.py's colormap_jet(heat / 255) * 255.
DAAM_HD float jet255(float heat, float centre) {
  const float t = clamp01(heat / 255.f);
  float c = 1.5f - fabsf(4.f * t - centre);
  c = c < 0.f ? 0.f : (c > 1.f ? 1.f : c);
  return c * 255.f;
}

void render_cpu(const RenderArgs& a);
#ifdef DAAM_WITH_CUDA
// workspace: B * L * 8 floats on the device (FrameStats per frame). stream: cudaStream_t as an
// integer. Arguments are checked before the first CUDA call; the launch runs on `device`.
void render_cuda(const RenderArgs& a, float* workspace, int device, std::uintptr_t stream);
#endif

}  // namespace daam
