// Cell math shared by host (C++ CPU kernels) and device (CUDA kernels), so the CPU tests exercise
// the same formulas the GPU runs. Gate order as torch.nn: LSTM i|f|g|o, GRU r|z|n.
#pragma once
#include <cmath>
#include <cstdint>

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

// LSTM: given pre-activations (x W_ih^T + b_ih + h W_hh^T + b_hh) of one unit, the previous
// cell c, computes activated gates and the new c, h. Returns through references.
template <typename T>
FASTRNN_HD void lstm_cell_fwd(T pi, T pf, T pg, T po, T c_prev, T& i, T& f, T& g, T& o, T& c,
                              T& h) {
  i = sigmoid(pi);
  f = sigmoid(pf);
  g = tanh_(pg);
  o = sigmoid(po);
  c = f * c_prev + i * g;
  h = o * tanh_(c);
}

// LSTM backward of one unit: from activated gates, c_prev, c (new), and the incoming grads dh
// (of h = o*tanh(c)) and dc (into c from the future), gives the pre-activation grads and dc_prev.
template <typename T>
FASTRNN_HD void lstm_cell_bwd(T i, T f, T g, T o, T c_prev, T c, T dh, T dc, T& dpi, T& dpf,
                              T& dpg, T& dpo, T& dc_prev) {
  const T tc = tanh_(c);
  const T dct = dc + dh * o * (T(1) - tc * tc);
  dpo = dh * tc * o * (T(1) - o);
  dpi = dct * g * i * (T(1) - i);
  dpf = dct * c_prev * f * (T(1) - f);
  dpg = dct * i * (T(1) - g * g);
  dc_prev = dct * f;
}

// GRU (torch's formula): r = s(xr + hr), z = s(xz + hz), n = tanh(xn + r * hn),
// h = (1 - z) * n + z * h_prev, where x* include b_ih and h* include b_hh.
template <typename T>
FASTRNN_HD void gru_cell_fwd(T xr, T xz, T xn, T hr, T hz, T hn, T h_prev, T& r, T& z, T& n,
                             T& h) {
  r = sigmoid(xr + hr);
  z = sigmoid(xz + hz);
  n = tanh_(xn + r * hn);
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
