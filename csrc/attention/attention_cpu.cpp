// C++ CPU kernels for the fused attention family (API and math in attention.h).
//
// Dot-like scores and the two weighted sums are batched GEMMs (BLAS is the fastest way to do a
// dot product on a CPU, and [B,Tq,Tk] is an output anyway); the masked softmax runs in place on
// the output buffer. The additive score is the part that matters: it is computed row by row
// with a vectorized tanh and never stores [B,Tq,Tk,D]; the backward recomputes tanh.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "attention/attention.h"

#define FASTRNN_INLINE inline __attribute__((always_inline))

namespace fastrnn {
namespace {

// Rational minimax tanh for float (odd degree-13 over even degree-6 polynomial in x, clamped
// where tanh rounds to +-1): branch-free, so it vectorizes. Max abs error ~3.5e-7.
FASTRNN_INLINE float tanh_fast(float x) {
  const float c = std::fmin(std::fmax(x, -7.90531110763549805f), 7.90531110763549805f);
  const float x2 = c * c;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return (c * p) / q;
}
// fp64 is the gradcheck/reference dtype: exact libm tanh.
FASTRNN_INLINE double tanh_fast(double x) { return std::tanh(x); }

// Additive scores of rows [r0, r1) of the flattened (b, i) grid:
// e[b,i,j] = sum_h vs[h] * tanh(qp[b,i,h] + kp[b,j,h]); masked keys get 0 (softmax drops them).
template <typename T>
FASTRNN_INLINE void additive_scores_impl(const T* qp, const T* kp, const T* vs, const bool* mask,
                                         T* e, int64_t Tq, int64_t Tk, int64_t D, int64_t r0,
                                         int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / Tq;
    const T* q = qp + r * D;
    T* er = e + r * Tk;
    for (int64_t j = 0; j < Tk; ++j) {
      if (mask && !mask[b * Tk + j]) {
        er[j] = T(0);
        continue;
      }
      const T* k = kp + (b * Tk + j) * D;
      T acc = T(0);
#pragma omp simd reduction(+ : acc)
      for (int64_t h = 0; h < D; ++h) acc += vs[h] * tanh_fast(q[h] + k[h]);
      er[j] = acc;
    }
  }
}

// Additive backward for batch entries [b0, b1): with ds = dL/de and t = tanh(qp_i + kp_j),
// dqp_i += ds*vs*(1-t^2), dkp_j += ds*vs*(1-t^2), dvs_b += ds*t (per-b partial, summed later).
template <typename T>
FASTRNN_INLINE void additive_bwd_impl(const T* qp, const T* kp, const T* vs, const T* ds, T* dqp,
                                      T* dkp, T* dvs_part, int64_t Tq, int64_t Tk, int64_t D,
                                      int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    T* dkb = dkp + b * Tk * D;
    T* dvb = dvs_part + b * D;
    for (int64_t x = 0; x < Tk * D; ++x) dkb[x] = T(0);
    for (int64_t h = 0; h < D; ++h) dvb[h] = T(0);
    for (int64_t i = 0; i < Tq; ++i) {
      const T* q = qp + (b * Tq + i) * D;
      T* dq = dqp + (b * Tq + i) * D;
      for (int64_t h = 0; h < D; ++h) dq[h] = T(0);
      const T* dsr = ds + (b * Tq + i) * Tk;
      for (int64_t j = 0; j < Tk; ++j) {
        const T g = dsr[j];
        if (g == T(0)) continue;  // masked keys and fully masked rows contribute nothing
        const T* k = kp + (b * Tk + j) * D;
        T* dk = dkb + j * D;
#pragma omp simd
        for (int64_t h = 0; h < D; ++h) {
          const T t = tanh_fast(q[h] + k[h]);
          const T gh = g * vs[h] * (T(1) - t * t);
          dq[h] += gh;
          dk[h] += gh;
          dvb[h] += g * t;
        }
      }
    }
  }
}

// AVX2+FMA versions of the two hot loops, eight floats at a time with GCC vector types (the
// wheel's baseline is SSE2, and gcc will not if-convert the clamp inside an omp simd loop).
// Chosen at run time when the CPU has AVX2 and FMA; the scalar tail uses tanh_fast.
typedef float v8f __attribute__((vector_size(32)));

__attribute__((target("avx2,fma"), always_inline)) inline v8f load8(const float* p) {
  v8f r;
  std::memcpy(&r, p, sizeof(r));
  return r;
}
__attribute__((target("avx2,fma"), always_inline)) inline void store8(float* p, v8f x) {
  std::memcpy(p, &x, sizeof(x));
}

// Same rational approximation as tanh_fast, on eight lanes.
__attribute__((target("avx2,fma"), always_inline)) inline v8f tanh8(v8f x) {
  const float lim = 7.90531110763549805f;
  v8f c = x < -lim ? v8f{} - lim : x;
  c = c > lim ? v8f{} + lim : c;
  const v8f x2 = c * c;
  v8f p = v8f{} + -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  v8f q = v8f{} + 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return (c * p) / q;
}

__attribute__((target("avx2,fma"))) void additive_scores_avx2(const float* qp, const float* kp,
                                                              const float* vs, const bool* mask,
                                                              float* e, int64_t Tq, int64_t Tk,
                                                              int64_t D, int64_t r0, int64_t r1) {
  const int64_t D8 = D - D % 8;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t b = r / Tq;
    const float* q = qp + r * D;
    float* er = e + r * Tk;
    for (int64_t j = 0; j < Tk; ++j) {
      if (mask && !mask[b * Tk + j]) {
        er[j] = 0.f;
        continue;
      }
      const float* k = kp + (b * Tk + j) * D;
      v8f acc8 = v8f{};
      for (int64_t h = 0; h < D8; h += 8)
        acc8 += load8(vs + h) * tanh8(load8(q + h) + load8(k + h));
      float acc = 0.f;
      for (int l = 0; l < 8; ++l) acc += acc8[l];
      for (int64_t h = D8; h < D; ++h) acc += vs[h] * tanh_fast(q[h] + k[h]);
      er[j] = acc;
    }
  }
}

__attribute__((target("avx2,fma"))) void additive_bwd_avx2(const float* qp, const float* kp,
                                                           const float* vs, const float* ds,
                                                           float* dqp, float* dkp, float* dvs_part,
                                                           int64_t Tq, int64_t Tk, int64_t D,
                                                           int64_t b0, int64_t b1) {
  const int64_t D8 = D - D % 8;
  for (int64_t b = b0; b < b1; ++b) {
    float* dkb = dkp + b * Tk * D;
    float* dvb = dvs_part + b * D;
    std::fill(dkb, dkb + Tk * D, 0.f);
    std::fill(dvb, dvb + D, 0.f);
    for (int64_t i = 0; i < Tq; ++i) {
      const float* q = qp + (b * Tq + i) * D;
      float* dq = dqp + (b * Tq + i) * D;
      std::fill(dq, dq + D, 0.f);
      const float* dsr = ds + (b * Tq + i) * Tk;
      for (int64_t j = 0; j < Tk; ++j) {
        const float g = dsr[j];
        if (g == 0.f) continue;  // masked keys and fully masked rows contribute nothing
        const float* k = kp + (b * Tk + j) * D;
        float* dk = dkb + j * D;
        for (int64_t h = 0; h < D8; h += 8) {
          const v8f t = tanh8(load8(q + h) + load8(k + h));
          const v8f gh = g * load8(vs + h) * (1.f - t * t);
          store8(dq + h, load8(dq + h) + gh);
          store8(dk + h, load8(dk + h) + gh);
          store8(dvb + h, load8(dvb + h) + g * t);
        }
        for (int64_t h = D8; h < D; ++h) {
          const float t = tanh_fast(q[h] + k[h]);
          const float gh = g * vs[h] * (1.f - t * t);
          dq[h] += gh;
          dk[h] += gh;
          dvb[h] += g * t;
        }
      }
    }
  }
}

bool has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

template <typename T>
void additive_scores(const T* qp, const T* kp, const T* vs, const bool* mask, T* e, int64_t Tq,
                     int64_t Tk, int64_t D, int64_t r0, int64_t r1) {
  if constexpr (std::is_same_v<T, float>) {
    if (has_avx2()) return additive_scores_avx2(qp, kp, vs, mask, e, Tq, Tk, D, r0, r1);
  }
  additive_scores_impl<T>(qp, kp, vs, mask, e, Tq, Tk, D, r0, r1);
}

template <typename T>
void additive_bwd(const T* qp, const T* kp, const T* vs, const T* ds, T* dqp, T* dkp, T* dvs,
                  int64_t Tq, int64_t Tk, int64_t D, int64_t b0, int64_t b1) {
  if constexpr (std::is_same_v<T, float>) {
    if (has_avx2()) return additive_bwd_avx2(qp, kp, vs, ds, dqp, dkp, dvs, Tq, Tk, D, b0, b1);
  }
  additive_bwd_impl<T>(qp, kp, vs, ds, dqp, dkp, dvs, Tq, Tk, D, b0, b1);
}

// Masked softmax in place over each row of e [rows, Tk]; a row with no kept key becomes zeros.
template <typename T>
void masked_softmax_rows(T* e, const bool* mask, int64_t Tq, int64_t Tk, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    T* er = e + r * Tk;
    const bool* m = mask ? mask + (r / Tq) * Tk : nullptr;
    T mx = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < Tk; ++j)
      if (!m || m[j]) mx = std::max(mx, er[j]);
    if (mx == -std::numeric_limits<T>::infinity()) {  // every key masked
      for (int64_t j = 0; j < Tk; ++j) er[j] = T(0);
      continue;
    }
    T sum = T(0);
    for (int64_t j = 0; j < Tk; ++j) {
      const T p = (!m || m[j]) ? std::exp(er[j] - mx) : T(0);
      er[j] = p;
      sum += p;
    }
    const T inv = T(1) / sum;
    for (int64_t j = 0; j < Tk; ++j) er[j] *= inv;
  }
}

// Softmax backward in place: dP <- p * (dP - sum_j p dP), row by row.
template <typename T>
void softmax_bwd_rows(const T* p, T* dp, int64_t Tk, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* pr = p + r * Tk;
    T* dr = dp + r * Tk;
    T delta = T(0);
    for (int64_t j = 0; j < Tk; ++j) delta += pr[j] * dr[j];
    for (int64_t j = 0; j < Tk; ++j) dr[j] = pr[j] * (dr[j] - delta);
  }
}

int64_t grain(int64_t work_per_item) {
  // Aim for >= ~32k inner iterations per task so small calls stay on one thread.
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item));
}

}  // namespace

std::vector<at::Tensor> attention_fwd_cpu(const at::Tensor& qp, const at::Tensor& kp,
                                          const at::Tensor& v, const OptTensor& mask,
                                          const OptTensor& v_score, bool needs_grad) {
  (void)needs_grad;
  const int64_t B = qp.size(0), Tq = qp.size(1), D = qp.size(2), Tk = kp.size(1), Dv = v.size(2);
  const bool additive = v_score.has_value() && v_score->defined();
  const bool* m = (mask.has_value() && mask->defined()) ? mask->data_ptr<bool>() : nullptr;
  // Buffers our own loops write start as NaN so an unwritten element shows; those BLAS fills
  // completely (bmm_out) skip the extra pass over memory.
  auto nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor weights = additive ? at::full({B, Tq, Tk}, nan, qp.options())
                                : at::empty({B, Tq, Tk}, qp.options());
  at::Tensor ctx = at::empty({B, Tq, Dv}, qp.options());
  if (!additive) at::bmm_out(weights, qp, kp.transpose(1, 2));
  AT_DISPATCH_FLOATING_TYPES(qp.scalar_type(), "attention_fwd_cpu", [&] {
    scalar_t* e = weights.data_ptr<scalar_t>();
    if (additive) {
      const scalar_t* q = qp.data_ptr<scalar_t>();
      const scalar_t* k = kp.data_ptr<scalar_t>();
      const scalar_t* vs = v_score->data_ptr<scalar_t>();
      at::parallel_for(0, B * Tq, grain(Tk * D), [&](int64_t r0, int64_t r1) {
        additive_scores<scalar_t>(q, k, vs, m, e, Tq, Tk, D, r0, r1);
      });
    }
    at::parallel_for(0, B * Tq, grain(Tk * 4), [&](int64_t r0, int64_t r1) {
      masked_softmax_rows<scalar_t>(e, m, Tq, Tk, r0, r1);
    });
  });
  at::bmm_out(ctx, weights, v);
  return {ctx, weights};
}

std::vector<at::Tensor> attention_bwd_cpu(const at::Tensor& dctx, const at::Tensor& dweights,
                                          const at::Tensor& qp, const at::Tensor& kp,
                                          const at::Tensor& v, const OptTensor& mask,
                                          const OptTensor& v_score, const at::Tensor& weights,
                                          const std::vector<at::Tensor>& saved) {
  (void)mask;  // masked entries have p == 0, hence ds == 0: the mask is already in `weights`
  (void)saved;
  const int64_t B = qp.size(0), Tq = qp.size(1), D = qp.size(2), Tk = kp.size(1);
  const bool additive = v_score.has_value() && v_score->defined();
  auto nan = std::numeric_limits<double>::quiet_NaN();
  // dP = dweights + dctx v^T, then ds = p * (dP - rowsum(p dP)) in place.
  at::Tensor ds = at::baddbmm(dweights, dctx, v.transpose(1, 2));
  at::Tensor dv = at::empty(v.sizes(), v.options());
  at::bmm_out(dv, weights.transpose(1, 2), dctx);
  at::Tensor dqp = additive ? at::full(qp.sizes(), nan, qp.options()) : at::empty(qp.sizes(), qp.options());
  at::Tensor dkp = additive ? at::full(kp.sizes(), nan, kp.options()) : at::empty(kp.sizes(), kp.options());
  at::Tensor dvs;
  AT_DISPATCH_FLOATING_TYPES(qp.scalar_type(), "attention_bwd_cpu", [&] {
    const scalar_t* p = weights.data_ptr<scalar_t>();
    scalar_t* d = ds.data_ptr<scalar_t>();
    at::parallel_for(0, B * Tq, grain(Tk * 2), [&](int64_t r0, int64_t r1) {
      softmax_bwd_rows<scalar_t>(p, d, Tk, r0, r1);
    });
    if (additive) {
      at::Tensor dvs_part = at::full({B, D}, nan, qp.options());
      const scalar_t* q = qp.data_ptr<scalar_t>();
      const scalar_t* k = kp.data_ptr<scalar_t>();
      const scalar_t* vs = v_score->data_ptr<scalar_t>();
      scalar_t* dq = dqp.data_ptr<scalar_t>();
      scalar_t* dk = dkp.data_ptr<scalar_t>();
      scalar_t* dvp = dvs_part.data_ptr<scalar_t>();
      at::parallel_for(0, B, grain(Tq * Tk * D), [&](int64_t b0, int64_t b1) {
        additive_bwd<scalar_t>(q, k, vs, d, dq, dk, dvp, Tq, Tk, D, b0, b1);
      });
      dvs = dvs_part.sum(0);
    }
  });
  if (!additive) {
    at::bmm_out(dqp, ds, kp);
    at::bmm_out(dkp, ds.transpose(1, 2), qp);
  }
  return {dqp, dkp, dv, dvs};
}

}  // namespace fastrnn
