// Device-only helpers shared by the LSTM and GRU CUDA kernels (csrc/lstm/lstm_cuda.cu,
// csrc/gru/gru_cuda.cu): L2-coherent loads, the block-level recurrent mat-vec of the persistent
// kernels, path selection (FASTRNN_CUDA_PATH) and the cooperative-launch check.
// Light headers only (TOOLCHAIN.md): no ATen/cuda/CUDAContext.h.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace fastrnn {
namespace cuda {

// ---------------------------------------------------------------------------------------------
// Loads that bypass L1. Inside a persistent kernel, a buffer written by another SM before a
// grid sync may share a 128-byte line with data this SM read earlier, so an L1 hit could be
// stale; .cg loads go to L2, which is coherent across SMs.
__device__ __forceinline__ float load_cg(const float* p) { return __ldcg(p); }
__device__ __forceinline__ double load_cg(const double* p) { return __ldcg(p); }
__device__ __forceinline__ float load_cg(const c10::Half* p) {
  return static_cast<float>(
      c10::Half(__ldcg(reinterpret_cast<const unsigned short*>(p)), c10::Half::from_bits()));
}
__device__ __forceinline__ float load_cg(const c10::BFloat16* p) {
  return static_cast<float>(
      c10::BFloat16(__ldcg(reinterpret_cast<const unsigned short*>(p)), c10::BFloat16::from_bits()));
}

// Accumulation type: fp32 for fp32/fp16/bf16 (the persistent kernels and the pointwise steps),
// fp64 for fp64 (standard path only).
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ constexpr size_t align16(size_t n) { return (n + 15) & ~size_t(15); }

// Asks for the line holding p to be brought into L2 (no data returned, no ordering implied).
template <typename T>
__device__ __forceinline__ void prefetch_l2(const T* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// ---------------------------------------------------------------------------------------------
// Which implementation runs a call. FASTRNN_CUDA_PATH = auto (default) | standard | persistent.
// "persistent" raises when the persistent kernel cannot take the call, so tests can be sure
// which path they exercise; "auto" silently falls back to the standard path.
enum class Path { Auto, Standard, Persistent };

inline Path requested_path() {
  const char* s = std::getenv("FASTRNN_CUDA_PATH");
  if (s == nullptr || *s == 0 || std::strcmp(s, "auto") == 0) return Path::Auto;
  if (std::strcmp(s, "standard") == 0) return Path::Standard;
  if (std::strcmp(s, "persistent") == 0) return Path::Persistent;
  TORCH_CHECK_VALUE(false, "fastrnn: FASTRNN_CUDA_PATH must be auto, standard or persistent, got '", s,
                    "'");
  return Path::Auto;
}

// The auto choice between the two paths, from bench/cuda_paths.py on an H100 (bench/results/
// gpu_h100_paths.json, T=128, LSTM/GRU, fp16/fp32, fwd and fwd+bwd): the persistent kernels
// stream each step's mat-vec on FMA units, so their step time grows with B*H; they beat the
// standard path (launch-bound at ~20-30 us a step) up to B*H = 16 * 1024 in every measured case
// and lose from B*H = 32 * 1024 (by 2-8x at B=64, H=1024).
// A single step (T = 1: a decoder's step) goes to the standard path: on an H100 one persistent
// GRU launch for T=1, B=1, H=600 took 41 us of device time (bench/decode_profile.py,
// 2026-11-27), the launch and the weight staging paid for one step, against a few us for the
// standard path's GEMM and pointwise kernel.
constexpr int64_t kAutoPersistentMaxBH = 16 * 1024;

inline bool auto_prefers_persistent(int64_t T, int64_t B, int64_t H) {
  return T > 1 && B * H <= kAutoPersistentMaxBH;
}

// FASTRNN_CUDA_POISON=1: outputs and work buffers start as NaN instead of uninitialised memory,
// so a test sees any element a kernel forgot to write.
inline bool poison() {
  const char* s = std::getenv("FASTRNN_CUDA_POISON");
  return s != nullptr && *s != 0 && std::strcmp(s, "0") != 0;
}

inline at::Tensor alloc(const at::Tensor& like, at::IntArrayRef sizes, at::ScalarType dt) {
  at::Tensor t = like.new_empty(sizes, like.options().dtype(dt));
  if (poison()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

struct DeviceInfo {
  int sms = 0;
  int smem_optin = 0;  // bytes of dynamic shared memory one block may opt into
  bool coop = false;
};

inline DeviceInfo device_info(int dev) {
  DeviceInfo d;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  int coop = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  d.coop = coop != 0;
  return d;
}

// Launch geometry of a persistent kernel: block `blk` owns hidden units [blk*hb, blk*hb+hb).
// A task is one (unit, group of BT batch rows); each warp runs one task per pass.
constexpr int kChunk = 256;     // columns of the mat-vec's vector staged in shared memory at once
constexpr int kMaxWarps = 16;   // 512 threads per block
constexpr int kStageUnroll = 4; // independent loads in flight per thread when staging

struct PersistentPlan {
  bool ok = false;
  const char* why = "";
  int hb = 0, blocks = 0, warps = 0, bt = 0;
  size_t smem = 0;
};

// Plans a persistent launch: W_hh's slice for `rows_per_unit` rows (forward) or its transpose
// (backward) of length `k` per row, in `wbytes`-byte elements, must fit in one block's shared
// memory next to the staged vector chunk, and the grid must be co-resident (checked by the
// caller with the occupancy API once the kernel is known).
inline PersistentPlan plan_persistent(const DeviceInfo& d, int64_t H, int64_t B, int64_t k,
                                      int rows_per_unit, int wbytes, int bt) {
  PersistentPlan p;
  if (!d.coop) { p.why = "the device does not support cooperative launch"; return p; }
  if (H > 1024 || B > 64) { p.why = "H > 1024 or B > 64"; return p; }
  p.bt = bt;
  p.hb = static_cast<int>(cdiv(H, d.sms));
  p.blocks = static_cast<int>(cdiv(H, p.hb));
  const int64_t groups = cdiv(B, bt);
  const int64_t tasks = p.hb * groups;
  p.warps = static_cast<int>(tasks < kMaxWarps ? tasks : kMaxWarps);
  const int64_t chunk = k < kChunk ? k : kChunk;
  p.smem = static_cast<size_t>(rows_per_unit) * p.hb * k * wbytes +
           static_cast<size_t>(groups * bt * chunk) * sizeof(float);
  if (p.smem > static_cast<size_t>(d.smem_optin)) {
    p.why = "W_hh's slice does not fit in shared memory";
    return p;
  }
  p.ok = true;
  return p;
}

// Raises the kernel's dynamic shared-memory limit and checks that `blocks` blocks can all be
// resident at once (the condition for a cooperative launch's grid sync to be safe).
template <typename Kernel>
inline bool co_resident(Kernel kernel, const DeviceInfo& d, int blocks, int threads, size_t smem) {
  C10_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem)));
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &per_sm, reinterpret_cast<const void*>(kernel), threads, smem));
  return per_sm > 0 && blocks <= per_sm * d.sms;
}

// ---------------------------------------------------------------------------------------------
// Block mat-vec of the persistent kernels, for every task of this block:
//   acc[r][bb] = sum_k Wsm[row(r, u)][k] * vec[b][k],   b = group*BT + bb,
// with Wsm the block's slice of W_hh (or of W_hh^T) in shared memory, row(r, u) = r*row_stride
// + u*K, and vec a [B, K] fp32 or low-precision matrix in global memory (row stride ldv),
// written by other blocks before the last grid sync. Lanes split k; a butterfly reduction then
// gives every lane all sums, and lane bb calls epi(u, b, acc[.][bb]) for its batch row.
// With do_mv false the sums are zero (the first step of a backward pass has no incoming dgates)
// and only the epilogues run. pre(u, b) runs before the mat-vec on the lane that will run
// epi(u, b, ..), for prefetches. Every thread of the block must call this (it has __syncthreads).
template <int RT, int BT, typename W, typename V, typename Pre, typename Epi>
__device__ __forceinline__ void block_matvec(const W* __restrict__ Wsm, int K, int row_stride, int hb,
                                             const V* vec, int64_t ldv, int B, float* vsm,
                                             bool do_mv, Pre&& pre, Epi&& epi) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  const int groups = (B + BT - 1) / BT;
  const int tasks = hb * groups;
  const int chunk = K < kChunk ? K : kChunk;
  const int vrows = groups * BT;
  for (int pass0 = 0; pass0 < tasks; pass0 += nwarps) {
    const int task = pass0 + warp;
    const bool valid = task < tasks;
    const int u = valid ? task / groups : 0;
    const int g = valid ? task % groups : 0;
    // Start the epilogue's global reads (x-side gates, saved states) on their way to L2 now, so
    // their latency hides behind the mat-vec instead of following it.
    if (valid && lane < BT && g * BT + lane < B) pre(u, g * BT + lane);
    float acc[RT][BT];
#pragma unroll
    for (int r = 0; r < RT; ++r)
#pragma unroll
      for (int bb = 0; bb < BT; ++bb) acc[r][bb] = 0.f;
    if (do_mv) {
      for (int k0 = 0; k0 < K; k0 += chunk) {
        const int kc = (K - k0) < chunk ? (K - k0) : chunk;
        // Stage vec[:, k0:k0+kc] (zero rows past B) so every warp reads it from shared memory.
        // Loads are issued kStageUnroll at a time before their stores so that several L2
        // round trips overlap (this staging sits on the step's critical path).
        __syncthreads();
        const int n = vrows * kc;
        for (int base = threadIdx.x; base < n; base += kStageUnroll * blockDim.x) {
          float v[kStageUnroll];
#pragma unroll
          for (int i = 0; i < kStageUnroll; ++i) {
            const int idx = base + i * blockDim.x;
            const int row = idx / kc, kk = idx - row * kc;
            v[i] = (idx < n && row < B) ? static_cast<float>(load_cg(vec + row * ldv + k0 + kk)) : 0.f;
          }
#pragma unroll
          for (int i = 0; i < kStageUnroll; ++i) {
            const int idx = base + i * blockDim.x;
            const int row = idx / kc, kk = idx - row * kc;
            if (idx < n) vsm[row * chunk + kk] = v[i];
          }
        }
        __syncthreads();
        if (valid) {
          const W* wrow = Wsm + static_cast<int64_t>(u) * K + k0;
          const float* vg = vsm + g * BT * chunk;
          for (int kk = lane; kk < kc; kk += 32) {
            float w[RT];
#pragma unroll
            for (int r = 0; r < RT; ++r) w[r] = static_cast<float>(wrow[static_cast<int64_t>(r) * row_stride + kk]);
#pragma unroll
            for (int bb = 0; bb < BT; ++bb) {
              const float v = vg[bb * chunk + kk];
#pragma unroll
              for (int r = 0; r < RT; ++r) acc[r][bb] = fmaf(w[r], v, acc[r][bb]);
            }
          }
        }
      }
#pragma unroll
      for (int r = 0; r < RT; ++r)
#pragma unroll
        for (int bb = 0; bb < BT; ++bb)
#pragma unroll
          for (int off = 16; off > 0; off >>= 1) acc[r][bb] += __shfl_xor_sync(0xffffffffu, acc[r][bb], off);
    }
    if (valid) {
      // Pick this lane's batch column with compile-time indices only (no local memory).
      float mine[RT];
#pragma unroll
      for (int r = 0; r < RT; ++r) {
        mine[r] = 0.f;
#pragma unroll
        for (int bb = 0; bb < BT; ++bb)
          if (lane == bb) mine[r] = acc[r][bb];
      }
      const int b = g * BT + lane;
      if (lane < BT && b < B) epi(u, b, mine);
    }
  }
}

}  // namespace cuda
}  // namespace fastrnn
