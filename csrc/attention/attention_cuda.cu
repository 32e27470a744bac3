// CUDA kernels for the fused attention family (API and math in attention.h).
// Kept on light headers (TOOLCHAIN.md): no ATen/cuda/CUDAContext.h.
//
// One thread block per query row (b, i). Scores are reduced warp by warp over D (lanes stride
// over D, one key per warp at a time), kept in shared memory, softmaxed in place, then the
// weighted sum runs with threads over Dv. The additive score computes tanh on the fly: the
// [B,Tq,Tk,D] tensor never exists; the backward recomputes tanh. Accumulation is in float
// (double for fp64); gradients that several rows share (dkp, dv, dv_score) go through float
// atomics into fp32/fp64 buffers and are cast at the end.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <limits>

#include "attention/attention.h"
#include "common/cuda_utils.cuh"

namespace fastrnn {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Forward launches with at most this many rows (B * Tq) use 1024-thread blocks; measured on an
// H100 (bench/decode_profile.py): B=1, Tk=30, D=600 additive, 25 us with 256 threads.
constexpr int64_t kFewRows = 32;

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float tanh_acc(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_acc(double x) { return tanh(x); }
__device__ __forceinline__ float exp_acc(float x) { return __expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }

template <typename A>
__device__ __forceinline__ A warp_sum(A x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
template <typename A>
__device__ __forceinline__ A warp_max(A x) {
  for (int o = 16; o > 0; o >>= 1) x = max(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// Block-wide sum/max through an NW-entry scratch (NW warps); every thread gets the result.
template <typename A, bool kMax, int NW = kWarps>
__device__ A block_reduce(A x, A* scratch) {
  x = kMax ? warp_max(x) : warp_sum(x);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  A r = scratch[0];
  for (int w = 1; w < NW; ++w) r = kMax ? max(r, scratch[w]) : r + scratch[w];
  return r;
}

// Score of key j for the row whose mapped query sits in shared memory q_s (whole warp calls,
// lane 0's return is the full sum after warp_sum; all lanes get it).
template <typename T, typename A>
__device__ __forceinline__ A row_score(const A* q_s, const T* k, const T* vs, int64_t D,
                                       bool additive) {
  A acc = A(0);
  const int lane = threadIdx.x & 31;
  if (additive) {
    for (int64_t h = lane; h < D; h += 32)
      acc += static_cast<A>(vs[h]) * tanh_acc(q_s[h] + static_cast<A>(k[h]));
  } else {
    for (int64_t h = lane; h < D; h += 32) acc += q_s[h] * static_cast<A>(k[h]);
  }
  return warp_sum(acc);
}

// Forward: one block of NT threads per row r = b*Tq + i. Shared memory: q row [D] and p row [Tk]
// (acc type). With few rows (a decoder's step at small B) the kernel is bound by the latency of
// each warp's chain of loads, so those launches use 1024 threads: a warp per key.
template <typename T, int NT>
__global__ void __launch_bounds__(NT) attention_fwd_kernel(const T* __restrict__ qp, const T* __restrict__ kp,
                                     const T* __restrict__ v, const bool* __restrict__ mask,
                                     const T* __restrict__ vs, T* __restrict__ ctx,
                                     T* __restrict__ weights, int64_t Tq, int64_t Tk, int64_t D,
                                     int64_t Dv) {
  using A = typename Acc<T>::type;
  extern __shared__ unsigned char smem_raw[];
  A* q_s = reinterpret_cast<A*>(smem_raw);
  A* p_s = q_s + D;
  constexpr int NW = NT / 32;
  __shared__ A scratch[NW];
  const int64_t r = blockIdx.x, b = r / Tq;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t h = threadIdx.x; h < D; h += NT) q_s[h] = static_cast<A>(qp[r * D + h]);
  __syncthreads();
  const bool additive = vs != nullptr;
  const A ninf = -std::numeric_limits<A>::infinity();
  for (int64_t j = warp; j < Tk; j += NW) {
    const bool keep = !mask || mask[b * Tk + j];
    A e = keep ? row_score<T, A>(q_s, kp + (b * Tk + j) * D, vs, D, additive) : ninf;
    if (lane == 0) p_s[j] = e;
  }
  __syncthreads();
  A mx = ninf;
  for (int64_t j = threadIdx.x; j < Tk; j += NT) mx = max(mx, p_s[j]);
  mx = block_reduce<A, true, NW>(mx, scratch);
  const bool empty = mx == ninf;  // every key masked: zero weights, zero context
  A sum = A(0);
  for (int64_t j = threadIdx.x; j < Tk; j += NT) {
    const A p = empty || p_s[j] == ninf ? A(0) : exp_acc(p_s[j] - mx);
    p_s[j] = p;
    sum += p;
  }
  sum = block_reduce<A, false, NW>(sum, scratch);
  const A inv = empty ? A(0) : A(1) / sum;
  for (int64_t j = threadIdx.x; j < Tk; j += NT) {
    p_s[j] *= inv;
    weights[r * Tk + j] = static_cast<T>(p_s[j]);
  }
  __syncthreads();
  for (int64_t d = threadIdx.x; d < Dv; d += NT) {
    A acc = A(0);
    for (int64_t j = 0; j < Tk; ++j) acc += p_s[j] * static_cast<A>(v[(b * Tk + j) * Dv + d]);
    ctx[r * Dv + d] = static_cast<T>(acc);
  }
}

// Backward: one block per row. ds_j = p_j (dP_j - sum_k p_k dP_k), dP_j = dw_j + dctx_i . v_j;
// dqp_i written directly; dkp_j, dv_j and dv_score go through atomics (rows of a batch entry
// share them). Shared memory: q row [D], dctx row [Dv], ds row [Tk].
template <typename T>
__global__ void attention_bwd_kernel(const T* __restrict__ dctx, const T* __restrict__ dw,
                                     const T* __restrict__ qp, const T* __restrict__ kp,
                                     const T* __restrict__ v, const T* __restrict__ vs,
                                     const T* __restrict__ weights, T* __restrict__ dqp,
                                     typename Acc<T>::type* __restrict__ dkp_acc,
                                     typename Acc<T>::type* __restrict__ dv_acc,
                                     typename Acc<T>::type* __restrict__ dvs_acc, int64_t Tq,
                                     int64_t Tk, int64_t D, int64_t Dv) {
  using A = typename Acc<T>::type;
  extern __shared__ unsigned char smem_raw[];
  A* q_s = reinterpret_cast<A*>(smem_raw);
  A* g_s = q_s + D;
  A* ds_s = g_s + Dv;
  __shared__ A scratch[kWarps];
  const int64_t r = blockIdx.x, b = r / Tq;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t h = threadIdx.x; h < D; h += kThreads) q_s[h] = static_cast<A>(qp[r * D + h]);
  for (int64_t d = threadIdx.x; d < Dv; d += kThreads) g_s[d] = static_cast<A>(dctx[r * Dv + d]);
  __syncthreads();
  // dP_j (warp per key) into ds_s.
  for (int64_t j = warp; j < Tk; j += kWarps) {
    const T* vj = v + (b * Tk + j) * Dv;
    A acc = A(0);
    for (int64_t d = lane; d < Dv; d += 32) acc += g_s[d] * static_cast<A>(vj[d]);
    acc = warp_sum(acc);
    if (lane == 0) ds_s[j] = acc + static_cast<A>(dw[r * Tk + j]);
  }
  __syncthreads();
  A delta = A(0);
  for (int64_t j = threadIdx.x; j < Tk; j += kThreads)
    delta += static_cast<A>(weights[r * Tk + j]) * ds_s[j];
  delta = block_reduce<A, false>(delta, scratch);
  for (int64_t j = threadIdx.x; j < Tk; j += kThreads)
    ds_s[j] = static_cast<A>(weights[r * Tk + j]) * (ds_s[j] - delta);
  __syncthreads();
  // dv_j += p_j dctx_i.
  for (int64_t j = 0; j < Tk; ++j) {
    const A p = static_cast<A>(weights[r * Tk + j]);
    if (p == A(0)) continue;
    for (int64_t d = threadIdx.x; d < Dv; d += kThreads)
      atomicAdd(dv_acc + (b * Tk + j) * Dv + d, p * g_s[d]);
  }
  // dqp_i, dkp_j, dv_score: threads over h, loop over keys (tanh recomputed).
  const bool additive = vs != nullptr;
  for (int64_t h = threadIdx.x; h < D; h += kThreads) {
    const A qh = q_s[h];
    const A vh = additive ? static_cast<A>(vs[h]) : A(0);
    A dq = A(0), dvsh = A(0);
    for (int64_t j = 0; j < Tk; ++j) {
      const A s = ds_s[j];
      if (s == A(0)) continue;
      const A kh = static_cast<A>(kp[(b * Tk + j) * D + h]);
      A g;
      if (additive) {
        const A t = tanh_acc(qh + kh);
        g = s * vh * (A(1) - t * t);
        dvsh += s * t;
        dq += g;
      } else {
        g = s * qh;
        dq += s * kh;
      }
      atomicAdd(dkp_acc + (b * Tk + j) * D + h, g);
    }
    dqp[r * D + h] = static_cast<T>(dq);
    if (additive) atomicAdd(dvs_acc + b * D + h, dvsh);
  }
}

template <typename T>
__global__ void cast_kernel(const typename Acc<T>::type* __restrict__ src, T* __restrict__ dst,
                            int64_t n) {
  for (int64_t x = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; x < n;
       x += int64_t(gridDim.x) * blockDim.x)
    dst[x] = static_cast<T>(src[x]);
}

// Sums the per-batch dv_score partials [B, D] into [D].
template <typename T>
__global__ void sum_rows_kernel(const typename Acc<T>::type* __restrict__ src, T* __restrict__ dst,
                                int64_t B, int64_t D) {
  using A = typename Acc<T>::type;
  for (int64_t h = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; h < D;
       h += int64_t(gridDim.x) * blockDim.x) {
    A acc = A(0);
    for (int64_t b = 0; b < B; ++b) acc += src[b * D + h];
    dst[h] = static_cast<T>(acc);
  }
}

at::ScalarType acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

size_t elem_acc(at::ScalarType t) { return t == at::kDouble ? 8 : 4; }

int cast_blocks(int64_t n) { return static_cast<int>(std::min<int64_t>((n + 255) / 256, 4096)); }

}  // namespace

std::vector<at::Tensor> attention_fwd_cuda(const at::Tensor& qp, const at::Tensor& kp,
                                           const at::Tensor& v, const OptTensor& mask,
                                           const OptTensor& v_score, bool needs_grad) {
  (void)needs_grad;
  c10::cuda::CUDAGuard guard(qp.device());
  const int64_t B = qp.size(0), Tq = qp.size(1), D = qp.size(2), Tk = kp.size(1), Dv = v.size(2);
  const size_t smem = (D + Tk) * elem_acc(qp.scalar_type());
  TORCH_CHECK(smem <= 48 * 1024, "fastrnn: attention_fwd_cuda needs (D + Tk) * ", elem_acc(qp.scalar_type()),
              " bytes of shared memory <= 48 KiB, got D=", D, ", Tk=", Tk);
  // Written in full by the kernel: NaN only under FASTRNN_CUDA_POISON (the tests), since the two
  // fills cost a decoding step two kernels.
  at::Tensor weights = cuda::alloc(qp, {B, Tq, Tk}, qp.scalar_type());
  at::Tensor ctx = cuda::alloc(qp, {B, Tq, Dv}, qp.scalar_type());
  const bool* m = (mask.has_value() && mask->defined()) ? mask->data_ptr<bool>() : nullptr;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, qp.scalar_type(), "attention_fwd_cuda", [&] {
    const scalar_t* vs = (v_score.has_value() && v_score->defined()) ? v_score->data_ptr<scalar_t>() : nullptr;
    auto launch = [&](auto kernel, int threads) {
      kernel<<<B * Tq, threads, smem, stream>>>(qp.data_ptr<scalar_t>(), kp.data_ptr<scalar_t>(),
                                               v.data_ptr<scalar_t>(), m, vs, ctx.data_ptr<scalar_t>(),
                                               weights.data_ptr<scalar_t>(), Tq, Tk, D, Dv);
    };
    if (B * Tq <= kFewRows) {
      launch(attention_fwd_kernel<scalar_t, 1024>, 1024);
    } else {
      launch(attention_fwd_kernel<scalar_t, kThreads>, kThreads);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {ctx, weights};
}

std::vector<at::Tensor> attention_bwd_cuda(const at::Tensor& dctx, const at::Tensor& dweights,
                                           const at::Tensor& qp, const at::Tensor& kp,
                                           const at::Tensor& v, const OptTensor& mask,
                                           const OptTensor& v_score, const at::Tensor& weights,
                                           const std::vector<at::Tensor>& saved) {
  (void)mask;  // masked entries have p == 0, hence ds == 0
  (void)saved;
  c10::cuda::CUDAGuard guard(qp.device());
  const int64_t B = qp.size(0), Tq = qp.size(1), D = qp.size(2), Tk = kp.size(1), Dv = v.size(2);
  const size_t smem = (D + Dv + Tk) * elem_acc(qp.scalar_type());
  TORCH_CHECK(smem <= 48 * 1024, "fastrnn: attention_bwd_cuda needs (D + Dv + Tk) * ",
              elem_acc(qp.scalar_type()), " bytes of shared memory <= 48 KiB");
  const bool additive = v_score.has_value() && v_score->defined();
  auto acc_opts = qp.options().dtype(acc_type(qp.scalar_type()));
  at::Tensor dqp = cuda::alloc(qp, qp.sizes(), qp.scalar_type());
  at::Tensor dkp = cuda::alloc(kp, kp.sizes(), kp.scalar_type());
  at::Tensor dv = cuda::alloc(v, v.sizes(), v.scalar_type());
  at::Tensor dkp_acc = at::zeros(kp.sizes(), acc_opts);
  at::Tensor dv_acc = at::zeros(v.sizes(), acc_opts);
  at::Tensor dvs_acc, dvs;
  if (additive) {
    dvs_acc = at::zeros({B, D}, acc_opts);
    dvs = cuda::alloc(qp, {D}, qp.scalar_type());
  }
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, qp.scalar_type(), "attention_bwd_cuda", [&] {
    using A = typename Acc<scalar_t>::type;
    const scalar_t* vs = additive ? v_score->data_ptr<scalar_t>() : nullptr;
    attention_bwd_kernel<scalar_t><<<B * Tq, kThreads, smem, stream>>>(
        dctx.data_ptr<scalar_t>(), dweights.data_ptr<scalar_t>(), qp.data_ptr<scalar_t>(),
        kp.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(), vs, weights.data_ptr<scalar_t>(),
        dqp.data_ptr<scalar_t>(), dkp_acc.data_ptr<A>(), dv_acc.data_ptr<A>(),
        additive ? dvs_acc.data_ptr<A>() : nullptr, Tq, Tk, D, Dv);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    cast_kernel<scalar_t><<<cast_blocks(dkp.numel()), 256, 0, stream>>>(
        dkp_acc.data_ptr<A>(), dkp.data_ptr<scalar_t>(), dkp.numel());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    cast_kernel<scalar_t><<<cast_blocks(dv.numel()), 256, 0, stream>>>(
        dv_acc.data_ptr<A>(), dv.data_ptr<scalar_t>(), dv.numel());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (additive) {
      sum_rows_kernel<scalar_t><<<cast_blocks(D), 256, 0, stream>>>(
          dvs_acc.data_ptr<A>(), dvs.data_ptr<scalar_t>(), B, D);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {dqp, dkp, dv, dvs};
}

}  // namespace fastrnn
