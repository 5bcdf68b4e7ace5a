// CUDA kernel of cls_attention (see csrc/cls_attention.h): a flash-style forward whose
// epilogue writes the normalised [class] row.
// One block of 4 warps per (tile of 16 query rows, image x head); each warp owns 4 rows.
// Key / value tiles of 32 tokens are staged in shared memory (float32); lane j scores key j
// of the tile against each of its warp's rows, the row's running max / sum are updated with
// warp shuffles (online softmax), and each lane accumulates channels lane, lane + 32, ... of
// the output. The warp that owns query row 0 stores that row's raw logits into `a` as the
// tiles pass (lane j writes token tile + j) and, once the row's final max and sum are known,
// the same lanes rewrite them as exp(s - m) / l. No N x N matrix; k and v are read once per
// query tile. Head dim up to 128 (shared memory: 2 * 32 * (D + 1) + 16 * D floats).
// Written without a GPU to test on: simple and checked, not tuned (no tensor cores).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "../cls_attention.h"
#include "cuda_check.h"

namespace daam {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kBlockM = kWarps * kRowsPerWarp;   // 16 query rows per block
constexpr int kBlockN = 32;                      // keys per tile = warp size
constexpr int kMaxChan = 4;                      // D <= 128: channels per lane

template <typename T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <typename T>
__global__ void __launch_bounds__(kWarps * 32) cls_attention_kernel(ClsAttentionArgs a) {
  extern __shared__ float smem[];
  const int D = static_cast<int>(a.D), Dp = D + 1;             // padded rows: no bank conflicts
  float* sk = smem;                                            // [kBlockN][Dp]
  float* sv = sk + kBlockN * Dp;                               // [kBlockN][Dp]
  float* sq = sv + kBlockN * Dp;                               // [kBlockM][D], pre-scaled
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t bh = blockIdx.y, b = bh / a.H, h = bh % a.H;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBlockM;
  const int64_t N = a.N, M = a.M;
  const T* q = static_cast<const T*>(a.q) + b * a.q_sb + h * a.q_sh;
  const T* k = static_cast<const T*>(a.k) + b * a.k_sb + h * a.k_sh;
  const T* v = static_cast<const T*>(a.v) + b * a.v_sb + h * a.v_sh;
  const float scale = static_cast<float>(a.scale);

  for (int i = threadIdx.x; i < kBlockM * D; i += blockDim.x) {
    const int r = i / D, c = i % D;
    const int64_t m = m0 + r;
    sq[i] = m < M ? to_f(q[m * a.q_sm + c]) * scale : 0.f;
  }
  float row_max[kRowsPerWarp], row_sum[kRowsPerWarp], acc[kRowsPerWarp][kMaxChan];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.f;
#pragma unroll
    for (int c = 0; c < kMaxChan; ++c) acc[r][c] = 0.f;
  }
  float* arow = a.a + bh * N;
  const bool owns_cls = (m0 == 0 && warp == 0);                // row 0 is this warp's row r = 0

  for (int64_t n0 = 0; n0 < N; n0 += kBlockN) {
    __syncthreads();                                           // previous tile fully consumed
    for (int i = threadIdx.x; i < kBlockN * D; i += blockDim.x) {
      const int j = i / D, c = i % D;
      const int64_t n = n0 + j;
      sk[j * Dp + c] = n < N ? to_f(k[n * a.k_sn + c]) : 0.f;
      sv[j * Dp + c] = n < N ? to_f(v[n * a.v_sn + c]) : 0.f;
    }
    __syncthreads();
    const bool valid = n0 + lane < N;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int rr = warp * kRowsPerWarp + r;
      if (m0 + rr >= M) break;                                 // warp-uniform
      const float* qr = sq + rr * D;
      const float* kj = sk + lane * Dp;
      float s = 0.f;
      for (int c = 0; c < D; ++c) s += qr[c] * kj[c];
      s = valid ? s : -INFINITY;
      if (owns_cls && r == 0 && valid) arow[n0 + lane] = s;    // raw logit of the [class] row
      const float m_new = fmaxf(row_max[r], warp_max(s));
      const float p = valid ? __expf(s - m_new) : 0.f;
      const float alpha = __expf(row_max[r] - m_new);          // 0 on the first tile
      row_sum[r] = row_sum[r] * alpha + warp_sum(p);
      row_max[r] = m_new;
#pragma unroll
      for (int c = 0; c < kMaxChan; ++c) acc[r][c] *= alpha;
      for (int j = 0; j < kBlockN; ++j) {
        const float pj = __shfl_sync(0xffffffffu, p, j);
        const float* vj = sv + j * Dp;
#pragma unroll
        for (int c = 0; c < kMaxChan; ++c) {
          const int ch = lane + 32 * c;
          if (ch < D) acc[r][c] += pj * vj[ch];
        }
      }
    }
  }

  T* out = static_cast<T*>(a.out) + bh * M * D;
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t m = m0 + warp * kRowsPerWarp + r;
    if (m >= M) break;
    const float inv = 1.f / row_sum[r];
#pragma unroll
    for (int c = 0; c < kMaxChan; ++c) {
      const int ch = lane + 32 * c;
      if (ch < D) out[m * D + ch] = from_f<T>(acc[r][c] * inv);
    }
  }
  if (owns_cls) {                                              // epilogue: normalise the row
    __syncwarp();
    const float mx = row_max[0], inv = 1.f / row_sum[0];
    for (int64_t n = lane; n < N; n += 32) arow[n] = __expf(arow[n] - mx) * inv;  // same lane wrote n
  }
}

template <typename T>
void launch(const ClsAttentionArgs& a, cudaStream_t stream) {
  const size_t smem = (2 * kBlockN * (a.D + 1) + kBlockM * a.D) * sizeof(float);
  auto kernel = cls_attention_kernel<T>;
  if (smem > 48 * 1024) DAAM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                             static_cast<int>(smem)));
  dim3 grid(static_cast<unsigned>((a.M + kBlockM - 1) / kBlockM), static_cast<unsigned>(a.B * a.H));
  kernel<<<grid, kWarps * 32, smem, stream>>>(a);
  DAAM_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void cls_attention_cuda(const ClsAttentionArgs& a, int dtype, int device, std::uintptr_t stream) {
  // every check before the first CUDA call, so a bad argument gives its own error
  check_cls_attention_args(a);
  DAAM_CHECK(dtype >= 0 && dtype <= 2, "unsupported dtype code (0 float32, 1 float16, 2 bfloat16)");
  DAAM_CHECK(a.D <= 32 * kMaxChan, "head_dim > 128 is not supported by the CUDA cls_attention kernel");
  DAAM_CHECK(a.B * a.H <= 65535, "batch x heads exceeds the CUDA grid limit (65535)");
  DAAM_CHECK(device >= 0, "device index must be >= 0");
  DeviceGuard guard(device);                                   // fails cleanly without a driver / device
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (dtype) {
    case 0: launch<float>(a, s); break;
    case 1: launch<__half>(a, s); break;
    default: launch<__nv_bfloat16>(a, s); break;
  }
}

}  // namespace daam
