// CUDA kernels of block_map (see csrc/block_map.h).
// Kernel 1, one block per (head, image): logits of the [class] query against every key
// (written to the workspace), block-wide max and sum (warp shuffles), then each token's
// softmax weight times <g, v_n>, in place. Kernel 2: sum over heads + ReLU, patch tokens only.
// No N x N matrix; no shared-memory limit on N (the workspace is B * H * N floats).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../block_map.h"
#include "cuda_check.h"


namespace daam {
namespace {

constexpr int kThreads = 256;

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <bool kMax>
__device__ float block_reduce(float x, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  x = kMax ? warp_max(x) : warp_sum(x);
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  const int nw = blockDim.x >> 5;
  float r = threadIdx.x < nw ? scratch[threadIdx.x] : (kMax ? -INFINITY : 0.f);
  if (warp == 0) r = kMax ? warp_max(r) : warp_sum(r);
  if (threadIdx.x == 0) scratch[0] = r;
  __syncthreads();
  r = scratch[0];
  __syncthreads();
  return r;
}

template <typename T>
__global__ void head_contrib_kernel(BlockMapArgs a, float* __restrict__ ws) {
  extern __shared__ float smem[];                    // q (D), g (D), reduction scratch (32)
  const int h = blockIdx.x, b = blockIdx.y;
  const int64_t N = a.N, D = a.D;
  const T* q = static_cast<const T*>(a.q) + b * a.q_sb + h * a.q_sh;
  const T* g = static_cast<const T*>(a.g) + b * a.g_sb + h * a.g_sh;
  const T* k = static_cast<const T*>(a.k) + b * a.k_sb + h * a.k_sh;
  const T* v = static_cast<const T*>(a.v) + b * a.v_sb + h * a.v_sh;
  float* sq = smem;
  float* sg = smem + D;
  float* scratch = smem + 2 * D;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    sq[i] = to_f(q[i]) * static_cast<float>(a.scale);
    sg[i] = to_f(g[i]);
  }
  __syncthreads();
  float* c = ws + (static_cast<int64_t>(b) * a.H + h) * N;
  float mx = -INFINITY;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const T* kn = k + n * a.k_sn;
    float s = 0.f;
    for (int64_t i = 0; i < D; ++i) s += sq[i] * to_f(kn[i]);
    c[n] = s;
    mx = fmaxf(mx, s);
  }
  mx = block_reduce<true>(mx, scratch);
  float sum = 0.f;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const float e = __expf(c[n] - mx);
    c[n] = e;
    sum += e;
  }
  sum = block_reduce<false>(sum, scratch);
  const float inv = 1.f / sum;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const T* vn = v + n * a.v_sn;
    float w = 0.f;
    for (int64_t i = 0; i < D; ++i) w += sg[i] * to_f(vn[i]);
    c[n] = c[n] * inv * w;
  }
}

__global__ void sum_heads_relu_kernel(const float* __restrict__ ws, float* __restrict__ out, int64_t B,
                                      int64_t H, int64_t N, int64_t P) {
  const int64_t M = N - P;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= B * M) return;
  const int64_t b = idx / M, n = idx % M + P;
  float s = 0.f;
  for (int64_t h = 0; h < H; ++h) s += ws[(b * H + h) * N + n];
  out[idx] = fmaxf(s, 0.f);
}

template <typename T>
void launch(const BlockMapArgs& a, float* ws, cudaStream_t stream) {
  const size_t smem = (2 * a.D + 32) * sizeof(float);
  DAAM_CHECK(smem <= 48 * 1024, "head_dim too large for the CUDA kernel");
  dim3 grid(static_cast<unsigned>(a.H), static_cast<unsigned>(a.B));
  head_contrib_kernel<T><<<grid, kThreads, smem, stream>>>(a, ws);
  DAAM_CUDA_CHECK(cudaGetLastError());
  const int64_t total = a.B * (a.N - a.P);
  const unsigned blocks = static_cast<unsigned>((total + kThreads - 1) / kThreads);
  sum_heads_relu_kernel<<<blocks, kThreads, 0, stream>>>(ws, static_cast<float*>(a.out), a.B, a.H, a.N, a.P);
  DAAM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void block_map_cuda(const BlockMapArgs& a, int dtype, float* workspace, std::uintptr_t stream) {
  check_block_map_args(a);
  DAAM_CHECK(workspace != nullptr, "null workspace");
  DAAM_CHECK(a.B <= 65535 && a.H <= 65535, "batch or head count exceeds the CUDA grid limit");
  int device = -1;
  DAAM_CUDA_CHECK(cudaGetDevice(&device));           // fails cleanly without a driver / device
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0: launch<float>(a, workspace, s); break;
    case 1: launch<__half>(a, workspace, s); break;
    case 2: launch<__nv_bfloat16>(a, workspace, s); break;
    default: DAAM_CHECK(false, "unsupported dtype code");
  }
}

int cuda_device_count() {
  int n = 0;
  DAAM_CUDA_CHECK(cudaGetDeviceCount(&n));
  return n;
}

}  // namespace daam
