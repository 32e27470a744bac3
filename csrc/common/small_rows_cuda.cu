// Decoding-step kernels for a few rows (API and rationale: small_rows.h). Light headers only.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

#include "common/cell_math.h"
#include "common/checks.h"
#include "common/cuda_utils.cuh"
#include "common/small_rows.h"

namespace fastrnn {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename A>
__device__ __forceinline__ A warp_sum(A x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// 16 bytes (16 / sizeof(T) values) as acc values, through registers only.
__device__ __forceinline__ void load16(const float* p, float (&o)[4]) {
  const float4 v = __ldg(reinterpret_cast<const float4*>(p));
  o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
}
__device__ __forceinline__ void load16(const double* p, double (&o)[2]) {
  const double2 v = __ldg(reinterpret_cast<const double2*>(p));
  o[0] = v.x; o[1] = v.y;
}
template <typename T>  // c10::Half, c10::BFloat16: 8 of them
__device__ __forceinline__ void load16(const T* p, float (&o)[8]) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(p));
  const unsigned int u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    o[2 * q] = static_cast<float>(T(static_cast<unsigned short>(u[q] & 0xffffu), T::from_bits()));
    o[2 * q + 1] = static_cast<float>(T(static_cast<unsigned short>(u[q] >> 16), T::from_bits()));
  }
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// acc[r] += w[0:K] . x[r, 0:K] for the rows r < M of x (row stride ldx), a partial sum per lane of
// this warp. The weights stream once; x (a few rows, shared by every warp) comes from L1/L2.
// 16-byte loads when K and ldx are multiples of the vector width and both pointers are aligned.
template <typename T, typename A, int R>
__device__ __forceinline__ void row_dot(const T* __restrict__ w, const T* __restrict__ x, int64_t ldx, int M,
                                        int K, int lane, A (&acc)[R]) {
  constexpr int VEC = 16 / sizeof(T);
  if (K % VEC == 0 && ldx % VEC == 0 && aligned16(w) && aligned16(x)) {
    const int KV = K / VEC;
    constexpr int kUnroll = R >= 8 ? 1 : R >= 4 ? 2 : 4;  // loads in flight vs registers
#pragma unroll kUnroll
    for (int kv = lane; kv < KV; kv += 32) {
      A wt[VEC];
      load16(w + kv * VEC, wt);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (r < M) {
          A xr[VEC];
          load16(x + r * ldx + kv * VEC, xr);
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[r] += wt[e] * xr[e];
        }
      }
    }
  } else {
    for (int k = lane; k < K; k += 32) {
      const A wk = static_cast<A>(w[k]);
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (r < M) acc[r] += wk * static_cast<A>(x[r * ldx + k]);
    }
  }
}

// y[r, n] = act(x1[r] . w[n, :K1] + x2[r] . w[n, K1:] + b[n]) (x2 optional: K2 = 0; act: tanh or
// nothing): a warp per output n.
template <typename T, int R>
__global__ void __launch_bounds__(kThreads)
linear_small_kernel(const T* __restrict__ x1, int K1, const T* __restrict__ x2, int K2, int M,
                    const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y, int N, bool tanh_out) {
  using A = typename Acc<T>::type;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t K = K1 + K2;
  for (int n = blockIdx.x * kWarps + warp; n < N; n += gridDim.x * kWarps) {
    A acc[R] = {};
    row_dot<T, A, R>(w + n * K, x1, K1, M, K1, lane, acc);
    if (K2 > 0) row_dot<T, A, R>(w + n * K + K1, x2, K2, M, K2, lane, acc);
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
    if (lane == 0) {
      const A bn = b != nullptr ? static_cast<A>(b[n]) : A(0);
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (r < M) y[static_cast<int64_t>(r) * N + n] = static_cast<T>(tanh_out ? tanh_(acc[r] + bn) : acc[r] + bn);
    }
  }
}

// One LSTM (G = 4, gates i|f|g|o) or GRU (G = 3, r|z|n) step for B <= R rows. A block of 2G warps
// per hidden unit j: warp p takes gate p % G of W_ih (p < G) or of W_hh (p >= G), so each row of
// the weights has its own warp (many loads in flight); the B rows' cells are then computed from
// the 2G sums in shared memory.
template <typename T, int R, int G>
__global__ void __launch_bounds__(64 * G)
cell_step_kernel(const T* __restrict__ x, const T* __restrict__ h0, const T* __restrict__ c0,
                 const T* __restrict__ w_ih, const T* __restrict__ w_hh, const T* __restrict__ b_ih,
                 const T* __restrict__ b_hh, T* __restrict__ y, T* __restrict__ hT, T* __restrict__ cT, int B,
                 int I, int H) {
  using A = typename Acc<T>::type;
  __shared__ A part[2 * G][R];
  const int lane = threadIdx.x & 31, p = threadIdx.x >> 5, g = p % G;
  const bool hidden_side = p >= G;
  for (int j = blockIdx.x; j < H; j += gridDim.x) {
    A acc[R] = {};
    if (hidden_side)
      row_dot<T, A, R>(w_hh + static_cast<int64_t>(g * H + j) * H, h0, H, B, H, lane, acc);
    else
      row_dot<T, A, R>(w_ih + static_cast<int64_t>(g * H + j) * I, x, I, B, I, lane, acc);
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
    if (lane == 0) {
      const T* bias = hidden_side ? b_hh : b_ih;
      const A bj = bias != nullptr ? static_cast<A>(bias[g * H + j]) : A(0);
#pragma unroll
      for (int r = 0; r < R; ++r) part[p][r] = acc[r] + bj;
    }
    __syncthreads();
    const int r = threadIdx.x;
    if (r < B) {
      const int64_t o = static_cast<int64_t>(r) * H + j;
      A h;
      if constexpr (G == 4) {
        A i, f, gg, og, c;
        lstm_cell_fwd<A>(part[0][r] + part[4][r], part[1][r] + part[5][r], part[2][r] + part[6][r],
                         part[3][r] + part[7][r], static_cast<A>(c0[o]), i, f, gg, og, c, h);
        cT[o] = static_cast<T>(c);
      } else {
        A rr, z, n;
        gru_cell_fwd<A>(part[0][r], part[1][r], part[2][r], part[3][r], part[4][r], part[5][r],
                        static_cast<A>(h0[o]), rr, z, n, h);
      }
      y[o] = static_cast<T>(h);
      hT[o] = static_cast<T>(h);
    }
    __syncthreads();  // part is rewritten for the next unit
  }
}

// Calls f(std::integral_constant<int, R>) with the smallest R in {1, 2, 4, 8} >= M.
template <typename F>
void with_rows(int64_t M, F&& f) {
  if (M <= 1) f(std::integral_constant<int, 1>{});
  else if (M <= 2) f(std::integral_constant<int, 2>{});
  else if (M <= 4) f(std::integral_constant<int, 4>{});
  else f(std::integral_constant<int, 8>{});
}

int grid_for(int64_t n) { return static_cast<int>(std::min<int64_t>(n, 65535)); }

}  // namespace

bool small_rows_fit(int64_t M, int64_t K, at::ScalarType dt) {
  (void)dt;
  return M >= 1 && M <= kCudaSmallRows && K >= 1 && K <= INT32_MAX;
}

at::Tensor linear_small_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& x2, const at::Tensor& w,
                             const c10::optional<at::Tensor>& b, bool tanh_out) {
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0), K1 = x.size(1), K2 = defined(x2) ? x2->size(1) : 0, N = w.size(0);
  TORCH_CHECK_VALUE(small_rows_fit(M, K1 + K2, x.scalar_type()), "fastrnn: linear_small_cuda takes 1 to ",
                    kCudaSmallRows, " rows, got x ", shape_str(x.sizes()));
  TORCH_CHECK(N <= INT32_MAX && K1 + K2 <= INT32_MAX, "fastrnn: linear_small_cuda: N and K must fit in int32");
  const at::Tensor xc = x.contiguous(), wc = w.contiguous();
  const at::Tensor x2c = defined(x2) ? x2->contiguous() : at::Tensor();
  const at::Tensor bc = defined(b) ? b->contiguous() : at::Tensor();
  at::Tensor y = alloc(x, {M, N}, x.scalar_type());
  if (N == 0) return y;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "linear_small_cuda", [&] {
    with_rows(M, [&](auto rows) {
      linear_small_kernel<scalar_t, decltype(rows)::value><<<grid_for(cdiv(N, kWarps)), kThreads, 0, stream>>>(
          xc.data_ptr<scalar_t>(), static_cast<int>(K1), x2c.defined() ? x2c.data_ptr<scalar_t>() : nullptr,
          static_cast<int>(K2), static_cast<int>(M), wc.data_ptr<scalar_t>(),
          bc.defined() ? bc.data_ptr<scalar_t>() : nullptr, y.data_ptr<scalar_t>(), static_cast<int>(N), tanh_out);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::vector<at::Tensor> cell_step_small_cuda(const at::Tensor& x, const at::Tensor& h0,
                                             const c10::optional<at::Tensor>& c0, const at::Tensor& w_ih,
                                             const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
                                             const c10::optional<at::Tensor>& b_hh) {
  c10::cuda::CUDAGuard guard(x.device());
  const bool lstm = defined(c0);
  const int64_t B = x.size(0), I = x.size(1), H = h0.size(1);
  TORCH_CHECK_VALUE(small_rows_fit(B, I + H, x.scalar_type()), "fastrnn: cell_step_small_cuda takes 1 to ",
                    kCudaSmallRows, " rows, got x ", shape_str(x.sizes()));
  const at::Tensor xc = x.contiguous(), hc = h0.contiguous(), wi = w_ih.contiguous(), wh = w_hh.contiguous();
  const at::Tensor cc = lstm ? c0->contiguous() : at::Tensor();
  const at::Tensor bi = defined(b_ih) ? b_ih->contiguous() : at::Tensor();
  const at::Tensor bh = defined(b_hh) ? b_hh->contiguous() : at::Tensor();
  at::Tensor y = alloc(x, {1, B, H}, x.scalar_type());
  at::Tensor hT = alloc(x, {B, H}, x.scalar_type());
  at::Tensor cT = lstm ? alloc(x, {B, H}, x.scalar_type()) : at::Tensor();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "cell_step_small_cuda", [&] {
    const scalar_t* bip = bi.defined() ? bi.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bhp = bh.defined() ? bh.data_ptr<scalar_t>() : nullptr;
    with_rows(B, [&](auto rows) {
      constexpr int R = decltype(rows)::value;
      if (lstm) {
        cell_step_kernel<scalar_t, R, 4><<<grid_for(H), 64 * 4, 0, stream>>>(
            xc.data_ptr<scalar_t>(), hc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(), wi.data_ptr<scalar_t>(),
            wh.data_ptr<scalar_t>(), bip, bhp, y.data_ptr<scalar_t>(), hT.data_ptr<scalar_t>(),
            cT.data_ptr<scalar_t>(), static_cast<int>(B), static_cast<int>(I), static_cast<int>(H));
      } else {
        cell_step_kernel<scalar_t, R, 3><<<grid_for(H), 64 * 3, 0, stream>>>(
            xc.data_ptr<scalar_t>(), hc.data_ptr<scalar_t>(), nullptr, wi.data_ptr<scalar_t>(),
            wh.data_ptr<scalar_t>(), bip, bhp, y.data_ptr<scalar_t>(), hT.data_ptr<scalar_t>(), nullptr,
            static_cast<int>(B), static_cast<int>(I), static_cast<int>(H));
      }
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (lstm) return {y, hT, cT};
  return {y, hT};
}

}  // namespace cuda
}  // namespace fastrnn
