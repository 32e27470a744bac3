// Helpers shared by the C++ CPU recurrent kernels (lstm_cpu.cpp, gru_cpu.cpp): parallel loops
// over the B x H grid of units, task grains, and the packed AVX-512 GEMM front end.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>

#include "common/cell_math.h"

namespace fastrnn {
namespace cpu {

// Up to this batch the recurrent product runs as hand-written GEMVs (see the header comment).
constexpr int64_t kSmallBatch = 4;

// Runs fn(b, j0, j1) over the B x H grid of units in parallel, in row segments.
template <typename F>
void for_units(int64_t B, int64_t H, int64_t grain, const F& fn) {
  at::parallel_for(0, B * H, grain, [&](int64_t begin, int64_t end) {
    while (begin < end) {
      const int64_t b = begin / H, j0 = begin % H;
      const int64_t j1 = std::min(H, j0 + (end - begin));
      fn(b, j0, j1);
      begin += j1 - j0;
    }
  });
}

// B [K, N] (any strides) packed into the column strips of host::gemm_f32_avx512, or an
// undefined tensor where that kernel does not apply (fp64, N not a multiple of 32, no AVX-512):
// fast_gemm then returns false and the caller uses ATen's GEMM.
template <typename scalar_t>
at::Tensor pack_for_gemm(const at::Tensor& B) {
#if defined(FASTRNN_HAS_AVX512_GEMM)
  if constexpr (std::is_same_v<scalar_t, float>) {
    const int64_t K = B.size(0), N = B.size(1);
    if (N % 32 == 0 && K > 0 && host::cpu_has_avx512()) {
      at::Tensor out = at::empty({K * N}, B.options());
      host::pack_strips(B.data_ptr<float>(), B.stride(0), B.stride(1), K, N, out.data_ptr<float>());
      return out;
    }
  }
#endif
  return at::Tensor();
}

// C[M,N] (+)= A[M,K] B[K,N] with B packed by pack_for_gemm, split over column strips.
template <typename scalar_t>
bool fast_gemm(int64_t M, int64_t N, int64_t K, const scalar_t* A, int64_t lda, const at::Tensor& Bp, scalar_t* C,
               int64_t ldc, bool accumulate) {
#if defined(FASTRNN_HAS_AVX512_GEMM)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (!Bp.defined()) return false;
    const float* b = Bp.data_ptr<float>();
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, M * K));
    at::parallel_for(0, N / 32, grain, [&](int64_t s0, int64_t s1) {
      host::gemm_f32_avx512(M, K, A, lda, b, C, ldc, accumulate, s0 * 32, s1 * 32);
    });
    return true;
  }
#endif
  return false;
}

// Units (or outputs) per task of a small-batch GEMV costing `macs` per item: enough work per
// task (~128K MACs) that the fork/join is cheap. At H=256, B=1 this splits a step's 256K MACs
// over two threads: LSTM forward 1.80 -> 1.15 ms, GRU 1.52 -> 0.87 ms (T=64, 2 threads, the
// 2-core dev machine); 256K MACs a task left the second core idle there.
inline int64_t gemv_grain(int64_t macs) {
  return std::max<int64_t>(16, (int64_t(1) << 17) / std::max<int64_t>(1, macs));
}

inline int64_t pointwise_grain(int64_t B, int64_t H) {
  // Enough units per task to amortize the fork, few enough to split across the threads.
  return std::max<int64_t>(4096, B * H / (4 * at::get_num_threads()));
}

}  // namespace cpu
}  // namespace fastrnn
