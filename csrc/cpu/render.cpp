// C++ CPU kernel of render (see csrc/render.h): one call from the maps to the uint8 frames.
// Phase 1 (OpenMP over images): per-frame statistics (min / max of D_b, of y for "nonlinear")
// and of the final frame, with the cumulative sum over blocks done on the fly (double
// accumulation, like torch.cumsum on the CPU). Phase 2 (OpenMP over frames): the frame's
// uint8 levels at map resolution (h * w floats of scratch per thread), then for each output
// pixel row the bilinear resize and rounding into a row of levels, then the overlay through a
// 256-entry table of alpha * JET(level) (exact: the colour depends on the integer level only),
// or for big uint8 calls a (channel, level, picture value) -> uint8 table.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../render.h"

namespace daam {
namespace {

// D_b at map pixel p of frame (b, l): the stored value, or the cumulative sum of L_0..L_l.
inline float frame_value(const RenderArgs& a, int64_t b, int64_t l, int64_t p) {
  const int64_t hw = a.h * a.w;
  const float* m = a.maps + b * a.L * hw + p;
  if (!a.accumulate) return finite_or_zero(m[l * hw]);
  double s = 0.0;
  for (int64_t i = 0; i <= l; ++i) s += m[i * hw];
  return finite_or_zero(static_cast<float>(s));
}

void image_stats(const RenderArgs& a, int64_t b, FrameStats* st, std::vector<float>& frame) {
  const int64_t hw = a.h * a.w, L = a.L;
  // final frame first: G, gmin, gmax
  for (int64_t p = 0; p < hw; ++p) frame[p] = frame_value(a, b, L - 1, p);
  const auto mm = std::minmax_element(frame.begin(), frame.begin() + hw);
  const float gmin = *mm.first, gmax = *mm.second;
  std::vector<double> acc(a.accumulate ? hw : 0, 0.0);
  for (int64_t l = 0; l < L; ++l) {
    FrameStats& s = st[l];
    s.G = gmax; s.gmin = gmin; s.gmax = gmax;
    float fmin = INFINITY, fmax = -INFINITY;
    for (int64_t p = 0; p < hw; ++p) {
      float d;
      if (a.accumulate) {
        acc[p] += a.maps[(b * L + l) * hw + p];
        d = finite_or_zero(static_cast<float>(acc[p]));
      } else {
        d = finite_or_zero(a.maps[(b * L + l) * hw + p]);
      }
      frame[p] = d;
      fmin = std::min(fmin, d);
      fmax = std::max(fmax, d);
    }
    s.fmin = fmin; s.fmax = fmax;
    s.ymin = 0.f; s.ymax = 0.f;
    if (a.mode == kNonlinear) {
      float ymin = INFINITY, ymax = -INFINITY;
      for (int64_t p = 0; p < hw; ++p) {
        const float y = sigmoid_y(frame[p], gmax);
        ymin = std::min(ymin, y);
        ymax = std::max(ymax, y);
      }
      s.ymin = ymin; s.ymax = ymax;
    }
  }
}

struct Axis {
  std::vector<int64_t> i0, i1;
  std::vector<float> l0, l1;
  Axis(int64_t in, int64_t out) : i0(out), i1(out), l0(out), l1(out) {
    for (int64_t d = 0; d < out; ++d) source_index(d, in, out, i0[d], i1[d], l0[d], l1[d]);
  }
};

}  // namespace

void render_cpu(const RenderArgs& a) {
  check_render_args(a);
  const int64_t B = a.B, L = a.L, h = a.h, w = a.w, H = a.H, W = a.W, hw = h * w, HW = H * W;
  const bool resize = (H != h || W != w);
  std::vector<FrameStats> stats(static_cast<size_t>(B * L));
  const bool big = B * L * HW > (1 << 15);

#pragma omp parallel if (big)
  {
    std::vector<float> frame(static_cast<size_t>(hw));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) image_stats(a, b, stats.data() + b * L, frame);
  }

  const Axis ay(h, H), ax(w, W);
  float lut[256][3];                                   // alpha * JET(level) * 255, as render.py computes it
  for (int lv = 0; lv < 256; ++lv) {
    lut[lv][0] = a.alpha * jet255(static_cast<float>(lv), 3.f);
    lut[lv][1] = a.alpha * jet255(static_cast<float>(lv), 2.f);
    lut[lv][2] = a.alpha * jet255(static_cast<float>(lv), 1.f);
  }
  const unsigned char* img8 = a.image_dtype == 1 ? static_cast<const unsigned char*>(a.images) : nullptr;
  const float* imgf = a.image_dtype == 2 ? static_cast<const float*>(a.images) : nullptr;

  // Blending uint8 pictures: out = to_u8(lut[level][c] + beta * im) depends on (c, level, im)
  // only, so big calls look it up in a 3 x 256 x 256 table (the same float arithmetic, done
  // once per entry): 1080p frames 18 -> ~7 ms (benchmarks/NOTES.md, 2026-11-30).
  std::vector<unsigned char> blend;
  if (img8 && B * L * HW >= (int64_t{1} << 18)) {
    blend.resize(3 * 256 * 256);
    for (int c = 0; c < 3; ++c)
      for (int lv = 0; lv < 256; ++lv)
        for (int im = 0; im < 256; ++im)
          blend[(c * 256 + lv) * 256 + im] = to_u8(lut[lv][c] + a.beta * static_cast<float>(im));
  }
  const unsigned char* tab = blend.empty() ? nullptr : blend.data();

#pragma omp parallel if (big)
  {
    std::vector<float> z8(static_cast<size_t>(hw));
    std::vector<unsigned char> heat(static_cast<size_t>(W));
#pragma omp for schedule(static)
    for (int64_t f = 0; f < B * L; ++f) {
      const int64_t b = f / L, l = f % L;
      const FrameStats& s = stats[f];
      for (int64_t p = 0; p < hw; ++p) z8[p] = level(frame_value(a, b, l, p), s, a.mode);
      for (int64_t y = 0; y < H; ++y) {
        const float* r0 = z8.data() + ay.i0[y] * w;
        const float* r1 = z8.data() + ay.i1[y] * w;
        const float h0 = ay.l0[y], h1 = ay.l1[y];
        for (int64_t x = 0; x < W; ++x) {                 // the row's heat levels
          const float v = resize ? rint_nonneg(clamp255(bilerp(r0[ax.i0[x]], r0[ax.i1[x]], r1[ax.i0[x]],
                                                                 r1[ax.i1[x]], ax.l0[x], ax.l1[x], h0, h1)))
                                 : z8[y * w + x];
          heat[x] = static_cast<unsigned char>(v);
        }
        const int64_t o = f * HW + y * W;
        if (a.image_dtype == 0) {
          std::copy(heat.begin(), heat.end(), a.out + o);
          continue;
        }
        unsigned char* dst = a.out + o * 3;
        if (tab) {
          const unsigned char* im[3] = {img8 + (b * 3 + 0) * HW + y * W, img8 + (b * 3 + 1) * HW + y * W,
                                        img8 + (b * 3 + 2) * HW + y * W};
          for (int64_t x = 0; x < W; ++x) {
            const int lv = heat[x];
            dst[3 * x + 0] = tab[(0 * 256 + lv) * 256 + im[0][x]];
            dst[3 * x + 1] = tab[(1 * 256 + lv) * 256 + im[1][x]];
            dst[3 * x + 2] = tab[(2 * 256 + lv) * 256 + im[2][x]];
          }
          continue;
        }
        for (int64_t x = 0; x < W; ++x) {
          const int lv = heat[x];
          for (int c = 0; c < 3; ++c) {
            const int64_t ip = (b * 3 + c) * HW + y * W + x;
            const float im = img8 ? static_cast<float>(img8[ip]) : imgf[ip] * 255.f;
            dst[3 * x + c] = to_u8(lut[lv][c] + a.beta * im);
          }
        }
      }
    }
  }
}

}  // namespace daam
