// CUDA kernel for greedy decoding's per-step bookkeeping (decode.h). One block per row: each
// thread keeps a running (max, sum of exp) over its strided part of the V logits and its best
// (value, index) outside pad; the block merges them, then thread 0 updates the row's counters and
// every thread writes the row's attention column. Replaces about twenty ATen kernels a step
// (log_softmax, the pad mask, max, masked updates, scatters). Light headers (TOOLCHAIN.md).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <limits>

#include "common/cuda_utils.cuh"
#include "decode/decode.h"

namespace fastrnn {
namespace {

constexpr int kThreads = 1024;
// Logits each thread loads before it folds them in: the loads of a batch are in flight together
// (folded one at a time, each load's latency was paid in turn: 17 us for B=1, V=20000 on an H100).
constexpr int kBatch = 8;

__device__ __forceinline__ float exp_acc(float x) { return __expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float log_acc(float x) { return logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }

// Running log-sum-exp: the sum is s * exp(m). Merging keeps NaN (a NaN logit gives a NaN sum).
template <typename A>
__device__ __forceinline__ void lse_merge(A& m, A& s, A m2, A s2) {
  const A inf = std::numeric_limits<A>::infinity();
  if (m2 == -inf) return;  // adds nothing (s2 is 0)
  if (m == -inf) {
    m = m2;
    s = s2;
  } else if (m2 > m) {
    s = s * exp_acc(m - m2) + s2;
    m = m2;
  } else {
    s += s2 * exp_acc(m2 - m);
  }
}

// Whether (a, ia) comes before (b, ib) in torch.max's order: the larger value, then the smaller
// index (NaN log-probabilities are handled apart).
template <typename A>
__device__ __forceinline__ bool before(A a, int64_t ia, A b, int64_t ib) {
  return a > b || (a == b && ia < ib);
}

// Merges the (log-sum-exp, argmax) partials of a warp's lanes; every lane gets the result.
template <typename A>
__device__ __forceinline__ void warp_merge(A& m, A& s, A& best, int64_t& bi) {
  for (int o = 16; o > 0; o >>= 1) {
    const A m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
    const A b2 = __shfl_xor_sync(0xffffffffu, best, o);
    const int64_t i2 = __shfl_xor_sync(0xffffffffu, bi, o);
    lse_merge(m, s, m2, s2);
    if (before(b2, i2, best, bi)) {
      best = b2;
      bi = i2;
    }
  }
}

template <typename scalar_t, typename attn_t>
__global__ void __launch_bounds__(kThreads)
greedy_update_kernel(const scalar_t* __restrict__ logits, int64_t V, int64_t pad, int64_t eos,
                     const int64_t* __restrict__ t, int64_t* __restrict__ t_next, const int64_t* __restrict__ maxlen,
                     bool* __restrict__ alive,
                     int64_t* __restrict__ tokens, int64_t L, float* __restrict__ scores,
                     int64_t* __restrict__ out_len, int64_t* __restrict__ prev,
                     const attn_t* __restrict__ weights, attn_t* __restrict__ attn, int64_t S) {
  using A = typename cuda::Acc<scalar_t>::type;
  constexpr int kWarps = kThreads / 32;
  const A inf = std::numeric_limits<A>::infinity();
  const int64_t b = blockIdx.x;
  const scalar_t* x = logits + b * V;
  // What the bookkeeping reads, loaded now so that its latency hides behind the pass over V.
  const int64_t step = *t;
  bool live = false;
  int64_t ml = 0;
  if (threadIdx.x == 0) {
    live = alive[b];
    ml = maxlen[b];
  }
  const bool has_attn = attn != nullptr && step >= 0 && step < L;
  const attn_t w0 = has_attn && threadIdx.x < S ? weights[b * S + threadIdx.x] : attn_t(0);
  A m = -inf, s = 0, best = -inf;
  int64_t bi = INT64_MAX;
  for (int64_t v0 = threadIdx.x; v0 < V; v0 += int64_t(kThreads) * kBatch) {
    A xv[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int64_t v = v0 + int64_t(u) * kThreads;
      xv[u] = v < V ? static_cast<A>(x[v]) : -inf;
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int64_t v = v0 + int64_t(u) * kThreads;
      if (v >= V) break;
      lse_merge(m, s, xv[u], A(1));
      if (v != pad && before(xv[u], v, best, bi)) {
        best = xv[u];
        bi = v;
      }
    }
  }
  warp_merge(m, s, best, bi);
  __shared__ A sm[kWarps], ss[kWarps], sb[kWarps];
  __shared__ int64_t si[kWarps];
  __shared__ bool s_emit;
  __shared__ A s_lse, s_best;
  __shared__ int64_t s_tok;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
    sb[warp] = best;
    si[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {  // the warps' partials merged by shuffles in warp 0 (kWarps <= 32)
    m = lane < kWarps ? sm[lane] : -inf;
    s = lane < kWarps ? ss[lane] : A(0);
    best = lane < kWarps ? sb[lane] : -inf;
    bi = lane < kWarps ? si[lane] : INT64_MAX;
    warp_merge(m, s, best, bi);
    if (lane == 0) {
      s_lse = m + log_acc(s);
      s_tok = bi == INT64_MAX ? 0 : bi;  // V = 1: only pad
      s_best = bi == INT64_MAX ? static_cast<A>(x[0]) : best;
    }
  }
  __syncthreads();
  const A lse = s_lse;
  if (lse != lse || lse == inf) {
    // log_softmax has NaN entries (all where lse is NaN, the +inf logits where it is +inf):
    // torch.max returns the first of them that is not pad. Rare, so a second pass.
    int64_t first = INT64_MAX;
    for (int64_t v = threadIdx.x; v < V && first == INT64_MAX; v += kThreads) {
      const A d = static_cast<A>(x[v]) - lse;
      if (v != pad && d != d) first = v;
    }
    for (int o = 16; o > 0; o >>= 1) first = min(first, (int64_t)__shfl_xor_sync(0xffffffffu, first, o));
    if (lane == 0) si[warp] = first;
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 0; w < kWarps; ++w) first = min(first, si[w]);
      if (first != INT64_MAX) {
        s_tok = first;
        s_best = static_cast<A>(x[first]);
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const int64_t tok = s_tok;
    const A lp = s_best - lse;
    if (live) scores[b] += static_cast<float>(lp);
    const bool emit = live && tok != eos;
    if (step >= 0 && step < L) tokens[b * L + step] = emit ? tok : pad;
    out_len[b] += emit;
    alive[b] = emit && step + 1 < ml;
    prev[b] = tok;
    s_emit = emit;
    if (b == 0 && t_next != nullptr) *t_next = step + 1;
  }
  if (!has_attn) return;
  __syncthreads();
  const bool emit = s_emit;
  attn_t* col = attn + (b * L + step) * S;
  if (threadIdx.x < S) col[threadIdx.x] = emit ? w0 : attn_t(0);
  for (int64_t j = threadIdx.x + kThreads; j < S; j += kThreads) col[j] = emit ? weights[b * S + j] : attn_t(0);
}

}  // namespace

void greedy_update_cuda(const at::Tensor& logits, const OptTensor& weights, const at::Tensor& t,
                        const OptTensor& t_next, int64_t pad, int64_t eos, const at::Tensor& maxlen, const at::Tensor& alive,
                        const at::Tensor& tokens, const at::Tensor& scores, const at::Tensor& out_len,
                        const at::Tensor& prev, const OptTensor& attn) {
  c10::cuda::CUDAGuard guard(logits.device());
  const int64_t B = logits.size(0), V = logits.size(1), L = tokens.size(1);
  if (B == 0) return;
  TORCH_CHECK(B <= INT32_MAX, "fastrnn: greedy_update_cuda takes at most 2^31 - 1 rows");
  const bool has_attn = attn.has_value() && attn->defined();
  const int64_t S = has_attn ? attn->size(2) : 0;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "greedy_update_cuda", [&] {
    using logit_t = scalar_t;
    const at::ScalarType adt = has_attn ? attn->scalar_type() : logits.scalar_type();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, adt, "greedy_update_cuda_attn", [&] {
      greedy_update_kernel<logit_t, scalar_t><<<static_cast<int>(B), kThreads, 0, stream>>>(
          logits.data_ptr<logit_t>(), V, pad, eos, t.data_ptr<int64_t>(),
          t_next.has_value() && t_next->defined() ? t_next->data_ptr<int64_t>() : nullptr, maxlen.data_ptr<int64_t>(),
          alive.data_ptr<bool>(), tokens.data_ptr<int64_t>(), L, scores.data_ptr<float>(),
          out_len.data_ptr<int64_t>(), prev.data_ptr<int64_t>(),
          has_attn ? weights->data_ptr<scalar_t>() : nullptr, has_attn ? attn->data_ptr<scalar_t>() : nullptr, S);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace fastrnn
