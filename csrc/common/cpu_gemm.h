// The packed fp32 AVX-512 GEMM of the CPU recurrent kernels (host code only; the front end that
// packs, splits over threads and falls back to ATen is in cpu_kernels.h).
//
// C[M, n0:n1] = (C or bias or 0) + A[M, K] B[K, n0:n1]: B packed once into 32-column strips
// (pack_strips), C row-major, A row-major or stored transposed (a gradient's dG^T read in place).
// Register-blocked for the RNN GEMMs: 8 x 32 tiles of C in 16 accumulators, about 100 GFLOP/s a
// core on the dev machine's Zen 4 (MKL's at::mm 76-95); K in blocks of 256 so that a strip's
// block (32 KB) stays in L1 while 96-row blocks of A, in L2, pass. Each k is summed in order, so
// the result does not depend on the blocking or on the thread split.
#pragma once
#include <cstdint>
#include <vector>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define FASTRNN_HAS_AVX512_GEMM 1
#endif

namespace fastrnn {
namespace host {

#if defined(FASTRNN_HAS_AVX512_GEMM)
// One R x 32 tile of C: (C or bias or 0) + A[R rows, K] B[K, 32-column strip], 2R accumulators;
// per k, two strip loads and R broadcasts of A feed 2R FMAs. A[r, k] is A[r * lda + k], or with
// TransA A[k * lda + r] (the R values of a k adjacent: the packed panels of a transposed A).
template <int R, bool TransA>
__attribute__((target("avx512f,fma"), always_inline)) inline void gemm_tile_f32(int64_t K, const float* A,
                                                                                 int64_t lda, const float* b,
                                                                                 float* c, int64_t ldc, bool acc,
                                                                                 const float* bias) {
  __m512 c0[R], c1[R];
  const __m512 i0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  const __m512 i1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
  for (int r = 0; r < R; ++r) {
    c0[r] = acc ? _mm512_loadu_ps(c + r * ldc) : i0;
    c1[r] = acc ? _mm512_loadu_ps(c + r * ldc + 16) : i1;
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_loadu_ps(b + k * 32), b1 = _mm512_loadu_ps(b + k * 32 + 16);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 x = _mm512_set1_ps(TransA ? A[k * lda + r] : A[r * lda + k]);
      c0[r] = _mm512_fmadd_ps(x, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(x, b1, c1[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(c + r * ldc, c0[r]);
    _mm512_storeu_ps(c + r * ldc + 16, c1[r]);
  }
}

constexpr int64_t kGemmRowBlock = 96, kGemmDepth = 256;
// Rows of C per block when A is read transposed (a weight gradient): the block's panels are
// packed once (pack_trans_panels) and serve every strip of B. 512 rows x 256 k is 512 KB of
// panels, in L2; the tiles stream them at about 4 bytes a cycle. With 96-row blocks the packing
// read each k-row of dG in 384-byte pieces. LSTM dW = dG^T X (M = 4H = 1024, K = T*B = 2048,
// N = 256) on one thread of the Intel dev host, same run: 10.4 -> 8.9 ms (7.4 with no packing
// at all).
constexpr int64_t kGemmRowBlockT = 512;

// A transposed block (A[m, k] at src[k * lda + m], m in [0, rows), k in [0, kc)) copied into
// panels of 8 rows, each k-major: panel g holds rows [8g, 8g + w) as dst[g * 8 * kc + k * w + r]
// with w = min(8, rows - 8g). The GEMM's tiles then read 32 contiguous bytes per k where they
// read one line per k of the source, lda * 4 bytes apart (4 KB for an LSTM's dG at H=256, where
// 4H = 1024: a page, and a TLB miss, per k). Measured on the idle dev machine, an LSTM's
// dW = dG^T X at T*B = 2048, 4H = 1024, I = 256: 11.96 -> 10.59 ms on one thread (dx = dG W_ih,
// the same FLOPs with A row-major: 10.65), 6.52 -> 5.68 ms on two.
// The source is read a k-row at a time, all `rows` of it (a contiguous run of rows * 4 bytes),
// so that the hardware prefetcher follows it; with a panel at a time, each k-row was visited
// rows / 8 times in 32-byte pieces 4 KB apart (same L1 set, new page), and the packing took 30%
// of the weight gradient's time (see kGemmRowBlockT).
inline void pack_trans_panels(const float* src, int64_t lda, int64_t rows, int64_t kc, float* dst) {
  const int64_t full = rows / 8, w_last = rows - 8 * full;
  for (int64_t k = 0; k < kc; ++k) {
    const float* s = src + k * lda;
    for (int64_t g = 0; g < full; ++g) {
      float* d = dst + g * 8 * kc + k * 8;
      for (int r = 0; r < 8; ++r) d[r] = s[8 * g + r];
    }
    float* d = dst + full * 8 * kc + k * w_last;
    for (int64_t r = 0; r < w_last; ++r) d[r] = s[8 * full + r];
  }
}

template <bool TransA>
__attribute__((target("avx512f,fma"))) inline void gemm_f32_avx512_impl(int64_t M, int64_t K, const float* A,
                                                                         int64_t lda, const float* B, float* C,
                                                                         int64_t ldc, bool accumulate, int64_t n0,
                                                                         int64_t n1, const float* bias, float* C2,
                                                                         int64_t ldc2, int64_t n_split) {
  // The transposed A's panels, one block at a time, per thread (each thread packs the rows of
  // C it was given: fast_weight_grad splits a weight gradient's rows over the threads).
  constexpr int64_t RB = TransA ? kGemmRowBlockT : kGemmRowBlock;
  thread_local std::vector<float> panels;
  if (TransA && panels.size() < size_t(RB * kGemmDepth)) panels.resize(RB * kGemmDepth);
  // Column n of row m of the output: C's, or from n_split on C2's column n - n_split.
  auto c_at = [&](int64_t m, int64_t n) { return n < n_split ? C + m * ldc + n : C2 + m * ldc2 + (n - n_split); };
  for (int64_t k0 = 0; k0 < K; k0 += kGemmDepth) {
    const int64_t kc = K - k0 < kGemmDepth ? K - k0 : kGemmDepth;
    const bool acc = accumulate || k0 > 0;
    for (int64_t mb = 0; mb < M; mb += RB) {
      const int64_t me = mb + RB < M ? mb + RB : M;
      if (TransA) pack_trans_panels(A + k0 * lda + mb, lda, me - mb, kc, panels.data());
      // Row m's A (its tile starts there) and the stride to its next k (TransA: in panel
      // (m - mb) / 8, of width 8 or the last panel's) or to its next row.
      const float* p = panels.data();
      auto a = [&](int64_t m) -> const float* {
        if (!TransA) return A + m * lda + k0;
        const int64_t g = (m - mb) / 8;
        return p + g * 8 * kc + (m - mb - 8 * g);
      };
      auto stride = [&](int64_t m) -> int64_t {
        if (!TransA) return lda;
        const int64_t left = me - mb - 8 * ((m - mb) / 8);
        return left < 8 ? left : 8;
      };
      for (int64_t n = n0; n < n1; n += 32) {
        const float* b = B + n * K + k0 * 32;  // strip n / 32, from row k0
        const float* bn = bias && !acc ? bias + n : nullptr;
        const int64_t ld = n < n_split ? ldc : ldc2;
        int64_t m = mb;
        for (; m + 8 <= me; m += 8) gemm_tile_f32<8, TransA>(kc, a(m), stride(m), b, c_at(m, n), ld, acc, bn);
        for (; m + 4 <= me; m += 4) gemm_tile_f32<4, TransA>(kc, a(m), stride(m), b, c_at(m, n), ld, acc, bn);
        for (; m < me; ++m) gemm_tile_f32<1, TransA>(kc, a(m), stride(m), b, c_at(m, n), ld, acc, bn);
      }
    }
  }
}

// C[M, n0:n1] = (accumulate ? C : bias or 0) + A[M, K] B[K, n0:n1] in fp32: C row-major, A
// row-major (A[m, k] at A[m * lda + k]) or, with trans_a, stored transposed (A[k * lda + m]),
// B packed by pack_strips (n0, n1 multiples of 32), bias (nullable) a row added to every row.
// With C2, the columns from n_split on (a multiple of 32) go to C2 [M, *] (leading dimension
// ldc2) at column n - n_split: two products that share A in one pass (an LSTM's dW_ih and dW_hh,
// both dG^T times something, with one packing of dG^T).
__attribute__((target("avx512f,fma"))) inline void gemm_f32_avx512(int64_t M, int64_t K, const float* A,
                                                                    int64_t lda, const float* B, float* C,
                                                                    int64_t ldc, bool accumulate, int64_t n0,
                                                                    int64_t n1, const float* bias = nullptr,
                                                                    bool trans_a = false, float* C2 = nullptr,
                                                                    int64_t ldc2 = 0, int64_t n_split = -1) {
  if (C2 == nullptr) n_split = n1;
  if (trans_a)
    gemm_f32_avx512_impl<true>(M, K, A, lda, B, C, ldc, accumulate, n0, n1, bias, C2, ldc2, n_split);
  else
    gemm_f32_avx512_impl<false>(M, K, A, lda, B, C, ldc, accumulate, n0, n1, bias, C2, ldc2, n_split);
}

// Packs columns [n0, n1) of B[k, n] = src[k * rs + n * cs] (k < K; n0, n1 multiples of 32) into
// their 32-column strips: strip s at out + s * 32 * K, row-major within the strip. With
// strip_rows (>= K), strips of that many rows, of which these are the first K (the rows of
// another block of B then go at out + K * 32).
inline void pack_strips(const float* src, int64_t rs, int64_t cs, int64_t K, int64_t n0, int64_t n1, float* out,
                        int64_t strip_rows = 0) {
  if (strip_rows == 0) strip_rows = K;
  for (int64_t s = n0; s < n1; s += 32) {
    float* o = out + s * strip_rows;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < 32; ++c) *o++ = src[k * rs + (s + c) * cs];
  }
}

inline bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  return has;
}
#endif

}  // namespace host
}  // namespace fastrnn
