// Helpers shared by the C++ CPU recurrent kernels (lstm_cpu.cpp, gru_cpu.cpp): parallel loops
// over the B x H grid of units, task grains, and the packed AVX-512 GEMM front end.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <type_traits>

#include "common/cell_math.h"
#include "common/cpu_gemm.h"

namespace fastrnn {
namespace cpu {

// Up to this batch the recurrent product runs as hand-written GEMVs (see the header comment).
constexpr int64_t kSmallBatch = 4;
// Up to this many rows a product with a weight matrix runs as streaming GEMVs (small_gemm_nt).
constexpr int64_t kSmallRows = 16;

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

// FASTRNN_CPU_POISON=1: the outputs the kernels write in full start as NaN instead of
// uninitialised memory, so a test sees any element a kernel forgot to write (the CUDA kernels'
// FASTRNN_CUDA_POISON). Read on every call: the tests set it per test.
inline bool poison_buffers() {
  const char* s = std::getenv("FASTRNN_CPU_POISON");
  return s != nullptr && *s != 0 && std::strcmp(s, "0") != 0;
}

// An output or work buffer the kernel writes in full: at::empty, NaN under FASTRNN_CPU_POISON.
inline at::Tensor out_empty(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  at::Tensor t = at::empty(sizes, opts);
  if (poison_buffers()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// Below this many rows of A (summed over the GEMMs one packing serves) packing B costs more than
// the packed kernel saves: a GRU/LSTM cell's step at B=32 (I=556, H=256) ran 1.7x slower than
// torch.nn's on ATen's GEMM when it packed W_ih and W_hh on every call.
constexpr int64_t kPackRows = 256;

// Steps per chunk of a forward's input projection. With gradients the pre-activations of all T
// steps are kept (the backward reads the activated gates), so one chunk. Without, Tc steps at a
// time go through one reused buffer of about kChunkBytes: the gates of all T at T=128, B=64,
// H=512 are 64 MB, which glibc maps fresh (and the kernel faults in page by page) on every call,
// and inference memory no longer grows with T beyond y. A chunk keeps at least kPackRows rows,
// so that its GEMM stays on the packed kernel. FASTRNN_CPU_CHUNK_STEPS=n overrides (tests:
// chunked and whole runs give the same bits on the packed GEMM's path).
constexpr int64_t kChunkBytes = int64_t(4) << 20;
inline int64_t input_chunk_steps(int64_t T, int64_t B, int64_t step_bytes, bool needs_grad) {
  if (needs_grad) return T;
  const char* s = std::getenv("FASTRNN_CPU_CHUNK_STEPS");
  const int64_t want = (s != nullptr && *s != 0)
                           ? std::atoll(s)
                           : std::max(kChunkBytes / std::max<int64_t>(1, step_bytes), (kPackRows + B - 1) / B);
  return std::min(T, std::max<int64_t>(1, want));
}

// B [K, N] (any strides) packed into the column strips of host::gemm_f32_avx512 for GEMMs with
// `rows` rows of A in all, or an undefined tensor where that kernel does not apply or does not
// pay (fp64, N not a multiple of 32, no AVX-512, rows < kPackRows): fast_gemm then returns false
// and the caller uses ATen's GEMM.
// pack_rows_for_gemm: the same for the rows of `top` [K1, N] followed by those of `bottom`
// [K2, N] (undefined: none), without concatenating them first (the backward's
// H_prev = [h0; y_0 .. y_{T-2}]). With `right_top` (and `right_bottom`), the columns of
// [right_top; right_bottom] [K, N2] follow those of [top; bottom]: B = [X | H_prev], the
// K x (N + N2) operand of an LSTM's two weight gradients computed in one pass.
template <typename scalar_t>
at::Tensor pack_rows_for_gemm(const at::Tensor& top, const at::Tensor& bottom, int64_t rows,
                              const at::Tensor& right_top = at::Tensor(), const at::Tensor& right_bottom = at::Tensor()) {
#if defined(FASTRNN_HAS_AVX512_GEMM)
  if constexpr (std::is_same_v<scalar_t, float>) {
    const int64_t K1 = top.size(0), K2 = bottom.defined() ? bottom.size(0) : 0, K = K1 + K2, N = top.size(1);
    const int64_t N2 = right_top.defined() ? right_top.size(1) : 0;
    if (rows >= kPackRows && N % 32 == 0 && N2 % 32 == 0 && K > 0 && host::cpu_has_avx512()) {
      TORCH_CHECK(!right_top.defined() ||
                      right_top.size(0) + (right_bottom.defined() ? right_bottom.size(0) : 0) == K,
                  "fastrnn: pack_rows_for_gemm: the two operands' row counts differ");
      at::Tensor out = at::empty({K * (N + N2)}, top.options());
      float* dst = out.data_ptr<float>();
      // Strips [s0, s1) of [t; b] into dst (its first row's strips at dst, K rows a strip).
      auto pack = [&](const at::Tensor& t, const at::Tensor& b, int64_t s0, int64_t s1, float* d) {
        const int64_t kt = t.size(0);
        host::pack_strips(t.data_ptr<float>(), t.stride(0), t.stride(1), kt, s0 * 32, s1 * 32, d, K);
        if (b.defined() && b.size(0) > 0)
          host::pack_strips(b.data_ptr<float>(), b.stride(0), b.stride(1), b.size(0), s0 * 32, s1 * 32, d + kt * 32, K);
      };
      // in parallel over the strips (the backward packs x and h_{t-1}: 2 MB each for an LSTM
      // at T*B = 2048, H = 256)
      at::parallel_for(0, (N + N2) / 32, std::max<int64_t>(1, 16384 / K), [&](int64_t s0, int64_t s1) {
        const int64_t l1 = std::min(s1, N / 32);
        if (s0 < l1) pack(top, bottom, s0, l1, dst);
        const int64_t r0 = std::max(s0, N / 32);
        if (r0 < s1) pack(right_top, right_bottom, r0 - N / 32, s1 - N / 32, dst + N * K);
      });
      return out;
    }
  }
#endif
  return at::Tensor();
}

template <typename scalar_t>
at::Tensor pack_for_gemm(const at::Tensor& B, int64_t rows) {
  return pack_rows_for_gemm<scalar_t>(B, at::Tensor(), rows);
}

// C[M,N] = (accumulate ? C : bias or 0) + A[M,K] B[K,N] with B packed by pack_for_gemm; A
// row-major with leading dimension lda; bias (nullable) a length-N row added to every row.
// A tall product (at least kGemmRowBlock rows a thread, and N too narrow to give each thread
// several strips: a backward's dx = dG W_ih) is split over blocks of rows, so that each thread
// reads only its own rows of A; any other over column strips, so that each thread packs or reads
// only its own strips of B (the per-step products of a few batch rows). The split changes no
// result: each element's k are summed in order either way. dx at T*B = 2048, I = 256, 4H = 1024
// on 2 threads of the Intel dev host, standalone, 5 alternating runs: 3.34-3.53 ms by rows
// (one 5.11), 3.71-3.86 by strips.
template <typename scalar_t>
bool fast_gemm(int64_t M, int64_t N, int64_t K, const scalar_t* A, int64_t lda, const at::Tensor& Bp, scalar_t* C,
               int64_t ldc, bool accumulate, const scalar_t* bias = nullptr) {
#if defined(FASTRNN_HAS_AVX512_GEMM)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (!Bp.defined()) return false;
    const float* b = Bp.data_ptr<float>();
    const int64_t threads = at::get_num_threads();
    if (threads > 1 && M >= threads * host::kGemmRowBlock && N / 32 < 8 * threads) {
      const int64_t blocks = (M + host::kGemmRowBlock - 1) / host::kGemmRowBlock;
      at::parallel_for(0, blocks, 1, [&](int64_t r0, int64_t r1) {
        const int64_t m0 = r0 * host::kGemmRowBlock, m1 = std::min(M, r1 * host::kGemmRowBlock);
        host::gemm_f32_avx512(m1 - m0, K, A + m0 * lda, lda, b, C + m0 * ldc, ldc, accumulate, 0, N, bias);
      });
      return true;
    }
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, M * K));
    at::parallel_for(0, N / 32, grain, [&](int64_t s0, int64_t s1) {
      host::gemm_f32_avx512(M, K, A, lda, b, C, ldc, accumulate, s0 * 32, s1 * 32, bias);
    });
    return true;
  }
#endif
  return false;
}

// fast_gemm's product on the calling thread alone, for callers that split the work themselves
// (batch_groups). Only called with a packed Bp, which exists for fp32 alone.
template <typename scalar_t>
void gemm_on_this_thread(int64_t M, int64_t N, int64_t K, const scalar_t* A, int64_t lda, const at::Tensor& Bp,
                         scalar_t* C, int64_t ldc, bool accumulate, const scalar_t* bias = nullptr) {
#if defined(FASTRNN_HAS_AVX512_GEMM)
  if constexpr (std::is_same_v<scalar_t, float>) {
    host::gemm_f32_avx512(M, K, A, lda, Bp.data_ptr<float>(), C, ldc, accumulate, 0, N, bias);
    return;
  }
#endif
  TORCH_CHECK(false, "fastrnn: gemm_on_this_thread needs the fp32 AVX-512 GEMM");
}

// How many groups of batch rows run their recurrences side by side, one thread each (1: the
// per-step work is split over the threads instead). The rows of a batch are independent
// sequences, so a thread can run all T steps of its own rows with no barrier between steps: its
// GEMMs read the whole packed W_hh (from its L2 or L3) and its cells read only the gate rows it
// just wrote. Splitting each step instead costs two fork/joins a step and moves every gate row
// between cores. Used when the packed GEMM applies and every thread gets at least 8 rows (a
// full tile). LSTM at B=32, T=64, H=256, 2 threads, the recurrent GEMMs and cells of the
// forward: 5.9 against 7.0-7.5 ms (harness, idle dev machine).
inline int64_t batch_groups(int64_t B, const at::Tensor& packed_whh) {
  const int64_t n = at::get_num_threads();
  return packed_whh.defined() && n >= 2 && B >= 8 * n ? n : 1;
}

// Runs fn(b0, b1) for each of `groups` groups of batch rows [b0, b1), one thread each.
template <typename F>
void for_batch_groups(int64_t B, int64_t groups, const F& fn) {
  at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) fn(B * g / groups, B * (g + 1) / groups);
  });
}

// A weight gradient C[M,N] = A^T B with A = dG [K, M] (row-major, leading dimension lda: the
// gate gradients of all T*B rows) read transposed in place, B packed by pack_for_gemm. Split
// over 8-row groups of C, so that each thread packs only its own rows of A^T into panels; split
// over the strips, every thread packed all of A. LSTM dW_ih at T*B = 2048, 4H = 1024, I = 256
// on the idle dev machine, 2 threads: 5.49 -> 5.2 ms (the same FLOPs with A row-major, dx:
// 5.0). With C2: the columns of B from n_split on are a second product's, written to C2
// (leading dimension ldc2) at column n - n_split (host::gemm_f32_avx512).
template <typename scalar_t>
bool fast_weight_grad(int64_t M, int64_t N, int64_t K, const scalar_t* A, int64_t lda, const at::Tensor& Bp,
                      scalar_t* C, int64_t ldc, scalar_t* C2 = nullptr, int64_t ldc2 = 0, int64_t n_split = -1) {
#if defined(FASTRNN_HAS_AVX512_GEMM)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (!Bp.defined()) return false;
    const float* b = Bp.data_ptr<float>();
    at::parallel_for(0, (M + 7) / 8, 1, [&](int64_t g0, int64_t g1) {
      const int64_t m0 = g0 * 8, m1 = std::min(M, g1 * 8);
      host::gemm_f32_avx512(m1 - m0, K, A + m0, lda, b, C + m0 * ldc, ldc, false, 0, N, nullptr, true,
                            C2 ? C2 + m0 * ldc2 : nullptr, ldc2, n_split);
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

#if defined(FASTRNN_HAS_AVX512_GEMM)
// The sum of v's 16 lanes. GCC 12's unmasked shuffles (and _mm512_reduce_add_ps built on them)
// pass _mm512_undefined_ps() as the merge source and warn -Wmaybe-uninitialized inside its own
// header; the masked forms with an all-ones mask and an explicit source are the same
// instructions without the undefined operand.
__attribute__((target("avx512f"), always_inline)) inline float hsum_avx512(__m512 v) {
  constexpr __mmask16 all = 0xFFFF;
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_mask_shuffle_f32x4(v, all, v, v, _MM_SHUFFLE(2, 3, 0, 1)));
  v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, all, v, _MM_SHUFFLE(1, 0, 3, 2)));
  v = _mm512_add_ps(v, _mm512_mask_permute_ps(v, all, v, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm512_cvtss_f32(v);
}

// y[m0 + r, n:n+4] = x[m0 + r] . W[n:n+4] for r < R: one pass over the 4 rows of W for R rows
// of x, 4R accumulators. With `prefetch`, also fetches the next 4-row block (contiguous after
// this one), a line per row-line read here, so it is in flight before it is needed: one core's
// plain streams reach only ~12 GB/s on the dev machine, with the prefetch ~22 GB/s.
template <int R>
__attribute__((target("avx512f,fma"), always_inline)) inline void gemv_block(const float* x, const float* w,
                                                                              int64_t K, float* y, int64_t N,
                                                                              bool prefetch, bool acc) {
  const int64_t Kv = K & ~int64_t(15);
  const __mmask16 tail = static_cast<__mmask16>((1u << (K - Kv)) - 1u);
  __m512 a[R][4];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) a[r][i] = _mm512_setzero_ps();
  const char* next = reinterpret_cast<const char*>(w + 4 * K);
  for (int64_t k = 0; k < Kv; k += 16) {
    if (prefetch) {
      const char* p = next + 4 * 4 * k;
      _mm_prefetch(p, _MM_HINT_T0), _mm_prefetch(p + 64, _MM_HINT_T0);
      _mm_prefetch(p + 128, _MM_HINT_T0), _mm_prefetch(p + 192, _MM_HINT_T0);
    }
    __m512 wv[4];
    for (int i = 0; i < 4; ++i) wv[i] = _mm512_loadu_ps(w + i * K + k);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_loadu_ps(x + r * K + k);
      for (int i = 0; i < 4; ++i) a[r][i] = _mm512_fmadd_ps(xv, wv[i], a[r][i]);
    }
  }
  if (tail) {
    __m512 wv[4];
    for (int i = 0; i < 4; ++i) wv[i] = _mm512_maskz_loadu_ps(tail, w + i * K + Kv);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_maskz_loadu_ps(tail, x + r * K + Kv);
      for (int i = 0; i < 4; ++i) a[r][i] = _mm512_fmadd_ps(xv, wv[i], a[r][i]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < 4; ++i) y[r * N + i] = (acc ? y[r * N + i] : 0.f) + hsum_avx512(a[r][i]);
}

// y[m, n0:n1] (+)= x[m] . W[n] for all m < M (fp32, AVX-512).
__attribute__((target("avx512f,fma"))) inline void gemv_rows_avx512(const float* x, int64_t M, const float* w, int64_t K,
                                                              float* y, int64_t N, int64_t n0, int64_t n1, bool acc) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    const float* wn = w + n * K;
    const bool pf = n + 8 <= n1;  // the next block is this task's
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) gemv_block<4>(x + m * K, wn, K, y + m * N + n, N, pf && m == 0, acc);
    switch (M - m) {
      case 3: gemv_block<3>(x + m * K, wn, K, y + m * N + n, N, pf && m == 0, acc); break;
      case 2: gemv_block<2>(x + m * K, wn, K, y + m * N + n, N, pf && m == 0, acc); break;
      case 1: gemv_block<1>(x + m * K, wn, K, y + m * N + n, N, pf && m == 0, acc); break;
      default: break;
    }
  }
  for (; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) y[m * N + n] = (acc ? y[m * N + n] : 0.f) + host::dot(w + n * K, x + m * K, K);
}
#endif

template <typename scalar_t>
void gemv_rows(const scalar_t* x, int64_t M, const scalar_t* w, int64_t K, scalar_t* y, int64_t N, int64_t n0,
               int64_t n1, bool acc) {
#if defined(FASTRNN_HAS_AVX512_GEMM)
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (host::cpu_has_avx512()) return gemv_rows_avx512(x, M, w, K, y, N, n0, n1, acc);
  }
#endif
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) y[m * N + n] = (acc ? y[m * N + n] : scalar_t(0)) + host::dot(w + n * K, x + m * K, K);
}

// y[M, N] (+)= x[M, K] W[N, K]^T for a few rows M (up to kSmallRows): the outputs split over the
// threads in blocks of 4 (about 128K MACs a task), W streamed once. For the small-batch linear
// op and the input projection of single-step RNN calls (a decoder's cells), where ATen's GEMV
// runs on one thread at a quarter of the memory bandwidth.
template <typename scalar_t>
void small_gemm_nt(int64_t M, int64_t N, int64_t K, const scalar_t* x, const scalar_t* w, scalar_t* y, bool acc) {
  if (M <= 0 || N <= 0) return;
  if (K == 0) {
    if (!acc) std::fill(y, y + M * N, scalar_t(0));
    return;
  }
  const int64_t grain = (gemv_grain(M * K) + 3) / 4;
  at::parallel_for(0, (N + 3) / 4, grain, [&](int64_t b0, int64_t b1) {
    gemv_rows<scalar_t>(x, M, w, K, y, N, b0 * 4, std::min(N, b1 * 4), acc);
  });
}

// A forward's input projection for rows [r0, r1) of X [*, I]: G[0 : r1 - r0] = X[r0 : r1] W_ih^T
// + bias (undefined: none), N = W_ih's rows. Streaming GEMVs for a call of a few rows
// (few_rows), the packed GEMM where W_ih^T is packed (wihT; its tiles start from the bias row),
// else ATen's. G is a fresh buffer: at one row, bias.expand(...).contiguous() could be b_ih
// itself, which the GEMV would accumulate into.
template <typename scalar_t>
void project_inputs(const at::Tensor& x2, int64_t r0, int64_t r1, const at::Tensor& w_ih, const at::Tensor& wihT,
                    bool few_rows, const at::Tensor& bias, at::Tensor& G) {
  const int64_t M = r1 - r0, N = w_ih.size(0), I = w_ih.size(1);
  const scalar_t* xs = x2.data_ptr<scalar_t>() + r0 * I;
  const bool has_bias = bias.defined();
  if (few_rows) {
    if (has_bias) G.narrow(0, 0, M).copy_(bias.expand({M, N}));
    small_gemm_nt<scalar_t>(M, N, I, xs, w_ih.data_ptr<scalar_t>(), G.data_ptr<scalar_t>(), has_bias);
  } else if (!fast_gemm<scalar_t>(M, N, I, xs, I, wihT, G.data_ptr<scalar_t>(), N, false,
                                  has_bias ? bias.data_ptr<scalar_t>() : nullptr)) {
    at::Tensor out = G.narrow(0, 0, M);
    if (has_bias) at::addmm_out(out, bias, x2.narrow(0, r0, M), w_ih.t());
    else at::mm_out(out, x2.narrow(0, r0, M), w_ih.t());
  }
}


inline int64_t pointwise_grain(int64_t B, int64_t H) {
  // Enough units per task to amortize the fork, few enough to split across the threads.
  return std::max<int64_t>(4096, B * H / (4 * at::get_num_threads()));
}

}  // namespace cpu
}  // namespace fastrnn
