// Cell math shared by host (C++ CPU kernels) and device (CUDA kernels), so the CPU tests exercise
// the same formulas the GPU runs. Gate order as torch.nn: LSTM i|f|g|o, GRU r|z|n.
#pragma once
#include <cmath>
#include <cstdint>
#if !defined(__CUDACC__)
#include <cstring>
#endif

#if defined(__CUDACC__)
#define FASTRNN_HD __host__ __device__ __forceinline__
#else
#define FASTRNN_HD inline
#endif

namespace fastrnn {

#if !defined(__CUDACC__)
// Host code: the float overloads, so fp32 cells do not round-trip through double.
using std::exp;
using std::tanh;
#endif

template <typename T> FASTRNN_HD T sigmoid(T x) { return T(1) / (T(1) + exp(-x)); }
template <typename T> FASTRNN_HD T tanh_(T x) { return tanh(x); }

// The activations the cell formulas use. StdAct is the library math (host and device); a kernel
// may pass its own policy (the CPU kernels pass host::FastAct, whose fp32 exp vectorizes).
struct StdAct {
  template <typename T> static FASTRNN_HD T sigmoid(T x) { return fastrnn::sigmoid(x); }
  template <typename T> static FASTRNN_HD T tanh(T x) { return tanh_(x); }
};

// LSTM: given pre-activations (x W_ih^T + b_ih + h W_hh^T + b_hh) of one unit, the previous
// cell c, computes activated gates and the new c, h. Returns through references.
template <typename T, typename Act = StdAct>
FASTRNN_HD void lstm_cell_fwd(T pi, T pf, T pg, T po, T c_prev, T& i, T& f, T& g, T& o, T& c,
                              T& h) {
  i = Act::sigmoid(pi);
  f = Act::sigmoid(pf);
  g = Act::tanh(pg);
  o = Act::sigmoid(po);
  c = f * c_prev + i * g;
  h = o * Act::tanh(c);
}

// LSTM backward of one unit: from activated gates, c_prev, c (new), and the incoming grads dh
// (of h = o*tanh(c)) and dc (into c from the future), gives the pre-activation grads and dc_prev.
template <typename T, typename Act = StdAct>
FASTRNN_HD void lstm_cell_bwd(T i, T f, T g, T o, T c_prev, T c, T dh, T dc, T& dpi, T& dpf,
                              T& dpg, T& dpo, T& dc_prev) {
  const T tc = Act::tanh(c);
  const T dct = dc + dh * o * (T(1) - tc * tc);
  dpo = dh * tc * o * (T(1) - o);
  dpi = dct * g * i * (T(1) - i);
  dpf = dct * c_prev * f * (T(1) - f);
  dpg = dct * i * (T(1) - g * g);
  dc_prev = dct * f;
}

// GRU (torch's formula): r = s(xr + hr), z = s(xz + hz), n = tanh(xn + r * hn),
// h = (1 - z) * n + z * h_prev, where x* include b_ih and h* include b_hh.
template <typename T, typename Act = StdAct>
FASTRNN_HD void gru_cell_fwd(T xr, T xz, T xn, T hr, T hz, T hn, T h_prev, T& r, T& z, T& n,
                             T& h) {
  r = Act::sigmoid(xr + hr);
  z = Act::sigmoid(xz + hz);
  n = Act::tanh(xn + r * hn);
  h = (T(1) - z) * n + z * h_prev;
}

// GRU backward of one unit: grads of the x-side pre-activations (dxr, dxz, dxn), of the h-side
// ones (dhr = dxr, dhz = dxz, dhn = dxn * r) and the direct part of dh_prev (dh * z).
template <typename T>
FASTRNN_HD void gru_cell_bwd(T r, T z, T n, T hn, T h_prev, T dh, T& dxr, T& dxz, T& dxn,
                             T& dhn, T& dh_prev_direct) {
  const T dn = dh * (T(1) - z);
  const T dz = dh * (h_prev - n);
  dxn = dn * (T(1) - n * n);
  const T dr = dxn * hn;
  dhn = dxn * r;
  dxz = dz * z * (T(1) - z);
  dxr = dr * r * (T(1) - r);
  dh_prev_direct = dh * z;
}

// ---------------------------------------------------------------------------------------------
// Host-only primitives for the CPU kernels' small-batch path, where the per-step GEMM is a GEMV
// (4H x P weights against a handful of rows) and a BLAS call costs more than the arithmetic.
// Cloned per ISA so a build without -march flags still runs AVX2/AVX-512 code where the CPU has it.
#if !defined(__CUDACC__)
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FASTRNN_ISA_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTRNN_ISA_CLONES
#endif

namespace host {

// std::bit_cast without C++20 (torch 2.11 builds extensions as C++17, 2.14 as C++20): the same
// builtin that std::bit_cast is made of, so the loops that call it still vectorize.
inline float bits_to_float(int32_t b) {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_bit_cast(float, b);
#else
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
#endif
}

// exp for fp32 without a libm call, so loops over units vectorize: 2^n * p(r) with
// n = round(x / ln 2), |r| <= ln2 / 2 and a degree-6 polynomial (Cephes expf, ~1 ulp).
inline float exp_f32(float x) {
  x = x < -87.0f ? -87.0f : x;  // ternaries, not fminf/fmaxf: those are libm calls here
  x = x > 88.0f ? 88.0f : x;    // (and NaN still propagates)
  // Round to nearest by adding and removing 1.5 * 2^23 (std::floor is a libm call here, which
  // would stop the loops from vectorizing).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * bits_to_float((static_cast<int32_t>(n) + 127) << 23);
}

// Activations for the CPU kernels: fp32 through exp_f32 (tanh of small |x| by the Cephes
// polynomial, which avoids the cancellation in 1 - 2/(e^2x + 1)); fp64 through libm.
struct FastAct {
  static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_f32(-x)); }
  static inline float tanh(float x) {
    const float a = std::fabs(x);
    const float z = x * x;
    const float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                          1.33314422036e-1f) * z - 3.33332819422e-1f) * z * x + x;
    const float large = std::copysign(1.0f - 2.0f / (exp_f32(2.0f * a) + 1.0f), x);
    return a < 0.625f ? small : large;
  }
  static inline double sigmoid(double x) { return fastrnn::sigmoid(x); }
  static inline double tanh(double x) { return std::tanh(x); }
};

// sum_k a[k] * b[k]
FASTRNN_ISA_CLONES static inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < n; ++k) s += a[k] * b[k];
  return s;
}
FASTRNN_ISA_CLONES static inline double dot(const double* a, const double* b, int64_t n) {
  double s = 0.;
#pragma omp simd reduction(+ : s)
  for (int64_t k = 0; k < n; ++k) s += a[k] * b[k];
  return s;
}

}  // namespace host
#endif  // !__CUDACC__

}  // namespace fastrnn
