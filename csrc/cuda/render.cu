// CUDA kernels of render (see csrc/render.h; same formulas as the C++ kernel, shared header).
// Kernel 1, one block per image: statistics of the final frame and of every frame (block-wide
// min / max reductions; the cumulative sum over blocks is formed on the fly), written to a
// B * L * 8 float workspace. Kernel 2, one thread per output pixel of a frame: the frame's
// uint8 levels at the four source pixels, bilinear resize, rounding, JET colour and overlay,
// written straight to the uint8 output. No float intermediate at output resolution.
// Compiled without --use_fast_math (exact expf, division and no FMA contraction) so that it
// agrees with the torch path as the C++ kernel does.
#include <cuda_runtime.h>

#include "../render.h"
#include "cuda_check.h"

namespace daam {
namespace {

constexpr int kThreads = 256;
static_assert(sizeof(FrameStats) <= 8 * sizeof(float), "workspace slot");

__device__ __forceinline__ float frame_value_d(const RenderArgs& a, int64_t b, int64_t l, int64_t p) {
  const int64_t hw = a.h * a.w;
  const float* m = a.maps + b * a.L * hw + p;
  if (!a.accumulate) return finite_or_zero(m[l * hw]);
  double s = 0.0;
  for (int64_t i = 0; i <= l; ++i) s += m[i * hw];
  return finite_or_zero(static_cast<float>(s));
}

template <bool kMax>
__device__ float block_reduce(float x, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    const float y = __shfl_xor_sync(0xffffffffu, x, o);
    x = kMax ? fmaxf(x, y) : fminf(x, y);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  float r = threadIdx.x < (blockDim.x >> 5) ? scratch[threadIdx.x] : (kMax ? -INFINITY : INFINITY);
  if (warp == 0) {
    for (int o = 16; o > 0; o >>= 1) {
      const float y = __shfl_xor_sync(0xffffffffu, r, o);
      r = kMax ? fmaxf(r, y) : fminf(r, y);
    }
    if (lane == 0) scratch[0] = r;
  }
  __syncthreads();
  r = scratch[0];
  __syncthreads();
  return r;
}

__global__ void __launch_bounds__(kThreads) render_stats_kernel(RenderArgs a, FrameStats* __restrict__ st) {
  __shared__ float scratch[32];
  const int64_t b = blockIdx.x, hw = a.h * a.w;
  float gmin = INFINITY, gmax = -INFINITY;
  for (int64_t p = threadIdx.x; p < hw; p += blockDim.x) {
    const float d = frame_value_d(a, b, a.L - 1, p);
    gmin = fminf(gmin, d);
    gmax = fmaxf(gmax, d);
  }
  gmin = block_reduce<false>(gmin, scratch);
  gmax = block_reduce<true>(gmax, scratch);
  for (int64_t l = 0; l < a.L; ++l) {
    float fmin = INFINITY, fmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int64_t p = threadIdx.x; p < hw; p += blockDim.x) {
      const float d = frame_value_d(a, b, l, p);
      fmin = fminf(fmin, d);
      fmax = fmaxf(fmax, d);
      if (a.mode == kNonlinear) {
        const float y = sigmoid_y(d, gmax);
        ymin = fminf(ymin, y);
        ymax = fmaxf(ymax, y);
      }
    }
    fmin = block_reduce<false>(fmin, scratch);
    fmax = block_reduce<true>(fmax, scratch);
    ymin = block_reduce<false>(ymin, scratch);
    ymax = block_reduce<true>(ymax, scratch);
    if (threadIdx.x == 0) {
      FrameStats s;
      s.G = gmax; s.gmin = gmin; s.gmax = gmax; s.fmin = fmin; s.fmax = fmax;
      s.ymin = a.mode == kNonlinear ? ymin : 0.f;
      s.ymax = a.mode == kNonlinear ? ymax : 0.f;
      st[b * a.L + l] = s;
    }
  }
}

__global__ void __launch_bounds__(kThreads) render_pixels_kernel(RenderArgs a, const FrameStats* __restrict__ st) {
  const int64_t HW = a.H * a.W;
  const int64_t pix = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pix >= HW) return;
  // 32-bit index division (the host checks H * W < 2^31 and B * L <= 65535): a 64-bit
  // division is a SASS subroutine that costs a stack frame and spills on sm_80
  const unsigned f32 = blockIdx.y, L32 = static_cast<unsigned>(a.L), W32 = static_cast<unsigned>(a.W);
  const unsigned pix32 = static_cast<unsigned>(pix);
  const int64_t f = f32, b = f32 / L32, l = f32 % L32;
  const int64_t y = pix32 / W32, x = pix32 % W32;
  const FrameStats s = st[f];
  float heat;
  if (a.H != a.h || a.W != a.w) {
    int64_t y0, y1, x0, x1;
    float h0, h1, w0, w1;
    source_index(y, a.h, a.H, y0, y1, h0, h1);
    source_index(x, a.w, a.W, x0, x1, w0, w1);
    const float v00 = level(frame_value_d(a, b, l, y0 * a.w + x0), s, a.mode);
    const float v01 = level(frame_value_d(a, b, l, y0 * a.w + x1), s, a.mode);
    const float v10 = level(frame_value_d(a, b, l, y1 * a.w + x0), s, a.mode);
    const float v11 = level(frame_value_d(a, b, l, y1 * a.w + x1), s, a.mode);
    heat = rint_nonneg(clamp255(bilerp(v00, v01, v10, v11, w0, w1, h0, h1)));
  } else {
    heat = level(frame_value_d(a, b, l, pix), s, a.mode);
  }
  const int64_t o = f * HW + pix;
  if (a.image_dtype == 0) {
    a.out[o] = static_cast<unsigned char>(heat);
    return;
  }
#pragma unroll
  for (int c = 0; c < 3; ++c) {
    const float centre = 3.f - static_cast<float>(c);               // r, g, b: 3, 2, 1
    const int64_t ip = (b * 3 + c) * HW + pix;
    const float im = a.image_dtype == 1 ? static_cast<float>(static_cast<const unsigned char*>(a.images)[ip])
                                        : static_cast<const float*>(a.images)[ip] * 255.f;
    a.out[o * 3 + c] = to_u8(a.alpha * jet255(heat, centre) + a.beta * im);
  }
}

}  // namespace

void render_cuda(const RenderArgs& a, float* workspace, int device, std::uintptr_t stream) {
  // every check before the first CUDA call, so a bad argument gives its own error
  check_render_args(a);
  DAAM_CHECK(workspace != nullptr, "null workspace");
  DAAM_CHECK(a.B <= 2147483647 && a.B * a.L <= 65535, "batch x blocks exceeds the CUDA grid limit (65535)");
  DAAM_CHECK(a.H * a.W < (int64_t{1} << 31), "output frames of 2^31 pixels or more");
  DAAM_CHECK(device >= 0, "device index must be >= 0");
  DeviceGuard guard(device);                           // fails cleanly without a driver / device
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  FrameStats* st = reinterpret_cast<FrameStats*>(workspace);
  render_stats_kernel<<<static_cast<unsigned>(a.B), kThreads, 0, s>>>(a, st);
  DAAM_CUDA_CHECK(cudaGetLastError());
  const int64_t HW = a.H * a.W;
  dim3 grid(static_cast<unsigned>((HW + kThreads - 1) / kThreads), static_cast<unsigned>(a.B * a.L));
  render_pixels_kernel<<<grid, kThreads, 0, s>>>(a, st);
  DAAM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace daam
