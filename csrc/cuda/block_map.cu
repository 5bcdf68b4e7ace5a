// CUDA kernels of block_map (see csrc/block_map.h), parallel across tokens and channels.
// Kernel 1, grid (token tiles, H, B), 8 warps per block, a warp per token: the lanes split the
// head dim (channels lane, lane + 32, ...), so each k / v row is one coalesced read; warp sums
// give the token's logit scale <q, k_n> and <g, v_n>, written to the workspace, and each block
// leaves its tile's running max and sum of exp(logit - max) (online softmax). Kernel 2, grid
// (token tiles of 256, B): each block merges the tile partials of every head into the row's max
// and 1 / sum (shared memory), then one thread per token sums softmax weight * <g, v_n> over the
// heads, writing each head's term when asked and the ReLU of the sum. k and v are read once;
// B = 1 ViT-B/16 (H 12, N 197) runs 13 x 12 blocks of 256 threads, not 12 blocks.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../block_map.h"
#include "cuda_check.h"

namespace daam {
namespace {

constexpr int kWarps = 8;
constexpr int kTok = static_cast<int>(kBlockMapTokensPerBlock);   // tokens per block of kernel 1
constexpr int kTokPerWarp = kTok / kWarps;
constexpr int kMaxChan = 4;                                        // head dim <= 128
constexpr int kThreads2 = 256;
static_assert(kTok % kWarps == 0, "tokens per block");

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) token_terms_kernel(BlockMapArgs a, float* __restrict__ s_ws,
                                                                  float* __restrict__ w_ws, float* __restrict__ pm,
                                                                  float* __restrict__ pl, int64_t tiles) {
  __shared__ float red_m[kWarps], red_l[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t tile = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int64_t N = a.N, D = a.D, bh = b * a.H + h;
  const T* q = static_cast<const T*>(a.q) + b * a.q_sb + h * a.q_sh;
  const T* g = static_cast<const T*>(a.g) + b * a.g_sb + h * a.g_sh;
  const T* k = static_cast<const T*>(a.k) + b * a.k_sb + h * a.k_sh;
  const T* v = static_cast<const T*>(a.v) + b * a.v_sb + h * a.v_sh;
  const float scale = static_cast<float>(a.scale);
  float qr[kMaxChan], gr[kMaxChan];
#pragma unroll
  for (int c = 0; c < kMaxChan; ++c) {
    const int64_t ch = lane + 32 * c;
    qr[c] = ch < D ? to_f(q[ch]) * scale : 0.f;
    gr[c] = ch < D ? to_f(g[ch]) : 0.f;
  }
  float m = -INFINITY, l = 0.f;                      // this warp's running max / sum
#pragma unroll
  for (int i = 0; i < kTokPerWarp; ++i) {
    const int64_t n = tile * kTok + i * kWarps + warp;
    if (n >= N) break;                               // warp-uniform
    const T* kn = k + n * a.k_sn;
    const T* vn = v + n * a.v_sn;
    float s = 0.f, w = 0.f;
#pragma unroll
    for (int c = 0; c < kMaxChan; ++c) {
      const int64_t ch = lane + 32 * c;
      if (ch < D) {
        s += qr[c] * to_f(kn[ch]);
        w += gr[c] * to_f(vn[ch]);
      }
    }
    s = warp_sum(s);
    w = warp_sum(w);
    if (lane == 0) {
      s_ws[bh * N + n] = s;
      w_ws[bh * N + n] = w;
    }
    const float m_new = fmaxf(m, s);
    l = l * __expf(m - m_new) + __expf(s - m_new);   // m == -inf on the first token: 0 * 0 + 1
    m = m_new;
  }
  if (lane == 0) {
    red_m[warp] = m;
    red_l[warp] = l;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float mt = -INFINITY;
    for (int i = 0; i < kWarps; ++i) mt = fmaxf(mt, red_m[i]);
    float lt = 0.f;
    for (int i = 0; i < kWarps; ++i) lt += red_l[i] > 0.f ? red_l[i] * __expf(red_m[i] - mt) : 0.f;
    pm[bh * tiles + tile] = mt;
    pl[bh * tiles + tile] = lt;
  }
}

__global__ void __launch_bounds__(kThreads2) combine_heads_kernel(BlockMapArgs a, const float* __restrict__ s_ws,
                                                                  const float* __restrict__ w_ws,
                                                                  const float* __restrict__ pm,
                                                                  const float* __restrict__ pl, int64_t tiles) {
  extern __shared__ float sh[];                      // row max (H), then 1 / row sum (H)
  const int64_t H = a.H, N = a.N, P = a.P, M = N - P, b = blockIdx.y;
  float* smax = sh;
  float* sinv = sh + H;
  for (int64_t h = threadIdx.x; h < H; h += blockDim.x) {
    const float* m = pm + (b * H + h) * tiles;
    const float* l = pl + (b * H + h) * tiles;
    float mx = -INFINITY;
    for (int64_t t = 0; t < tiles; ++t) mx = fmaxf(mx, m[t]);
    float sum = 0.f;
    for (int64_t t = 0; t < tiles; ++t) sum += l[t] * __expf(m[t] - mx);
    smax[h] = mx;
    sinv[h] = 1.f / sum;
  }
  __syncthreads();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= M) return;
  const int64_t n = i + P;
  float* heads = static_cast<float*>(a.heads);
  float acc = 0.f;
  for (int64_t h = 0; h < H; ++h) {
    const int64_t o = (b * H + h) * N + n;
    const float t = __expf(s_ws[o] - smax[h]) * sinv[h] * w_ws[o];
    if (heads != nullptr) heads[(b * H + h) * M + i] = t;
    acc += t;
  }
  static_cast<float*>(a.out)[b * M + i] = fmaxf(acc, 0.f);
}

template <typename T>
void launch(const BlockMapArgs& a, float* ws, cudaStream_t stream) {
  const int64_t tiles = (a.N + kTok - 1) / kTok;
  float* s_ws = ws;
  float* w_ws = s_ws + a.B * a.H * a.N;
  float* pm = w_ws + a.B * a.H * a.N;
  float* pl = pm + a.B * a.H * tiles;
  token_terms_kernel<T><<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(a.H), static_cast<unsigned>(a.B)),
                          kWarps * 32, 0, stream>>>(a, s_ws, w_ws, pm, pl, tiles);
  DAAM_CUDA_CHECK(cudaGetLastError());
  const int64_t M = a.N - a.P;
  const size_t smem = 2 * a.H * sizeof(float);
  combine_heads_kernel<<<dim3(static_cast<unsigned>((M + kThreads2 - 1) / kThreads2), static_cast<unsigned>(a.B)),
                         kThreads2, smem, stream>>>(a, s_ws, w_ws, pm, pl, tiles);
  DAAM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void block_map_cuda(const BlockMapArgs& a, int dtype, float* workspace, int64_t workspace_numel, int device,
                    std::uintptr_t stream) {
  // every check before the first CUDA call, so a bad argument gives its own error
  check_block_map_args(a);
  DAAM_CHECK(dtype >= 0 && dtype <= 2, "unsupported dtype code (0 float32, 1 float16, 2 bfloat16)");
  DAAM_CHECK(workspace != nullptr, "null workspace");
  DAAM_CHECK(workspace_numel >= block_map_cuda_workspace(a.B, a.H, a.N), "workspace too small");
  DAAM_CHECK(a.D <= 32 * kMaxChan, "head_dim > 128 is not supported by the CUDA block_map kernel");
  DAAM_CHECK(a.B <= 65535 && a.H <= 65535, "batch or head count exceeds the CUDA grid limit (65535)");
  DAAM_CHECK(a.H <= 4096, "more than 4096 heads (shared memory of the combine kernel)");
  DAAM_CHECK(device >= 0, "device index must be >= 0");
  DeviceGuard guard(device);                          // fails cleanly without a driver / device
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0: launch<float>(a, workspace, s); break;
    case 1: launch<__half>(a, workspace, s); break;
    default: launch<__nv_bfloat16>(a, workspace, s); break;
  }
}

namespace {
__global__ void probe_kernel() {}
}  // namespace

std::vector<int> cuda_archs() {
#ifdef __CUDA_ARCH_LIST__
  return {__CUDA_ARCH_LIST__};
#else
  return {};
#endif
}

std::pair<int, int> cuda_probe(int device) {
  DAAM_CHECK(device >= 0, "device index must be >= 0");
  DeviceGuard guard(device);
  cudaFuncAttributes attr{};
  DAAM_CUDA_CHECK(cudaFuncGetAttributes(&attr, probe_kernel));   // no image for this device: fails here
  cudaStream_t s = nullptr;
  DAAM_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  probe_kernel<<<1, 1, 0, s>>>();
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) err = cudaStreamSynchronize(s);
  cudaStreamDestroy(s);
  DAAM_CUDA_CHECK(err);
  return {attr.binaryVersion, attr.ptxVersion};
}

int cuda_device_count() {
  int n = 0;
  DAAM_CUDA_CHECK(cudaGetDeviceCount(&n));
  return n;
}

}  // namespace daam
