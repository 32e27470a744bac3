// CUDA kernels for the GRU family (API: gru.h). Same two paths as the LSTM (lstm_cuda.cu):
//
//  persistent  one cooperative launch for all T steps, W_hh's slice (forward) or W_hh^T's slice
//              (backward) of each block in shared memory, fp32 accumulation, one grid sync per
//              step. fp32/fp16/bf16, H <= 1024, B <= 64, when it fits and is co-resident, and
//              (auto) when B*H <= 16384, where it measured faster (cuda_utils.cuh).
//  standard    per-step cuBLAS GEMM (at::matmul) + one fused pointwise kernel; everything else.
//              One step (T=1) of at most 8 rows without gradients: one kernel for the GEMVs
//              and the cell (common/small_rows.h).
//
// Saved for backward (needs_grad): G [T,B,4H] acc holding r|z|n|hn per unit (hn = W_hn h + b_hn,
// which n's gradient needs) and hs [T+1,B,H] (hidden states, hs[0] = h0). acc is fp32, or fp64.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <cooperative_groups.h>

#include <type_traits>

#include "common/cell_math.h"
#include "common/checks.h"
#include "common/cuda_utils.cuh"
#include "common/small_rows.h"
#include "gru/gru.h"

namespace fastrnn {
namespace {

namespace cg = cooperative_groups;
using cuda::load_cg;

template <typename scalar_t, typename acc_t>
struct FwdParams {
  int T, B, H;
  const acc_t* xw;         // [T,B,3H] x W_ih^T + b_ih
  const scalar_t* b_hh;    // [3H] or nullptr
  acc_t* G;                // [T,B,4H] out: r|z|n|hn
  scalar_t* hs;            // [T+1,B,H] hs[0] = h0 in; hs[1..T] out
  scalar_t* y;             // [T,B,H] out
  const int64_t* lengths;  // [B] or nullptr
  const scalar_t* w_hh;    // [3H,H] (persistent path)
};

template <typename scalar_t, typename acc_t>
struct BwdParams {
  int T, B, H;
  const acc_t* G;          // [T,B,4H] from the forward
  const scalar_t* hs;      // [T+1,B,H]
  const scalar_t* dy;      // [T,B,H]
  acc_t* dgx;              // [T,B,3H] out: grads of the x-side pre-activations (r|z|n)
  acc_t* dgh;              // [T,B,3H] out: grads of the h-side pre-activations (r|z|hn)
  acc_t* dh_state;         // [B,H] in: dhT; the part of dL/dh_t not yet reduced; out: dh0
  const int64_t* lengths;  // [B] or nullptr
  const scalar_t* w_hh;    // [3H,H] (persistent path)
};

__device__ __forceinline__ bool live_at(const int64_t* lengths, int t, int b) {
  return lengths == nullptr || t < lengths[b];
}

// One unit (b, j) of forward step t, given rec[3] = (h_{t-1} W_hh^T) for r|z|n without b_hh.
// Masked steps (t >= lengths[b]) keep h and write y = 0.
template <typename scalar_t, typename acc_t, typename R>
__device__ __forceinline__ void fwd_elem(const FwdParams<scalar_t, acc_t>& p, int t, int b, int j,
                                         const R* rec) {
  const int64_t H = p.H;
  const int64_t row = static_cast<int64_t>(t) * p.B + b;
  const int64_t nrow = row + p.B;
  acc_t* g = p.G + row * 4 * H + j;
  const acc_t h_prev = static_cast<acc_t>(load_cg(p.hs + row * H + j));
  if (live_at(p.lengths, t, b)) {
    const acc_t* xw = p.xw + row * 3 * H + j;
    acc_t hr = acc_t(rec[0]), hz = acc_t(rec[1]), hn = acc_t(rec[2]);
    if (p.b_hh != nullptr) {
      hr += static_cast<acc_t>(p.b_hh[j]);
      hz += static_cast<acc_t>(p.b_hh[H + j]);
      hn += static_cast<acc_t>(p.b_hh[2 * H + j]);
    }
    acc_t r, z, n, h;
    gru_cell_fwd<acc_t>(xw[0], xw[H], xw[2 * H], hr, hz, hn, h_prev, r, z, n, h);
    g[0] = r; g[H] = z; g[2 * H] = n; g[3 * H] = hn;
    p.hs[nrow * H + j] = static_cast<scalar_t>(h);
    p.y[row * H + j] = static_cast<scalar_t>(h);
  } else {
    g[0] = g[H] = g[2 * H] = g[3 * H] = acc_t(0);
    p.hs[nrow * H + j] = static_cast<scalar_t>(h_prev);
    p.y[row * H + j] = scalar_t(0);
  }
}

// Backward step t for unit (b, j), given rec = (dgh[t+1] W_hh)[b, j]: dL/dh_t = dh_state + rec.
// Live steps add dy[t], run the cell backward and leave the direct term dh*z in dh_state;
// masked ones write zero grads and carry dL/dh_t over. At t = -1 only dL/dh0 is finished.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void bwd_elem(const BwdParams<scalar_t, acc_t>& p, int t, int b, int j,
                                         acc_t rec) {
  const int64_t H = p.H;
  acc_t* dhs = p.dh_state + static_cast<int64_t>(b) * H + j;
  const acc_t Gh = *dhs + rec;
  if (t < 0) { *dhs = Gh; return; }
  const int64_t row = static_cast<int64_t>(t) * p.B + b;
  acc_t* dgx = p.dgx + row * 3 * H + j;
  acc_t* dgh = p.dgh + row * 3 * H + j;
  if (!live_at(p.lengths, t, b)) {
    dgx[0] = dgx[H] = dgx[2 * H] = acc_t(0);
    dgh[0] = dgh[H] = dgh[2 * H] = acc_t(0);
    *dhs = Gh;
    return;
  }
  const acc_t* g = p.G + row * 4 * H + j;
  const acc_t h_prev = static_cast<acc_t>(p.hs[row * H + j]);
  const acc_t dh = Gh + static_cast<acc_t>(p.dy[row * H + j]);
  acc_t dxr, dxz, dxn, dhn, direct;
  gru_cell_bwd<acc_t>(g[0], g[H], g[2 * H], g[3 * H], h_prev, dh, dxr, dxz, dxn, dhn, direct);
  dgx[0] = dxr; dgx[H] = dxz; dgx[2 * H] = dxn;
  dgh[0] = dxr; dgh[H] = dxz; dgh[2 * H] = dhn;
  *dhs = direct;
}

// ------------------------------------------------------------------------------------------
// Standard path kernels: one thread per unit (b, j) of one step.

// Forward step t: gh = h_{t-1} W_hh^T from cuBLAS ([B,3H], scalar_t).
template <typename scalar_t, typename acc_t>
__global__ void fwd_step_kernel(FwdParams<scalar_t, acc_t> p, int t, const scalar_t* __restrict__ gh) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(p.B) * p.H) return;
  const int b = static_cast<int>(idx / p.H), j = static_cast<int>(idx % p.H);
  const scalar_t* r = gh + static_cast<int64_t>(b) * 3 * p.H + j;
  const acc_t rec[3] = {static_cast<acc_t>(r[0]), static_cast<acc_t>(r[p.H]), static_cast<acc_t>(r[2 * p.H])};
  fwd_elem(p, t, b, j, rec);
}

// Backward step t: rec = dgh[t+1] W_hh ([B,H], acc), nullptr at t = T-1.
template <typename scalar_t, typename acc_t>
__global__ void bwd_step_kernel(BwdParams<scalar_t, acc_t> p, int t, const acc_t* __restrict__ rec) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(p.B) * p.H) return;
  const int b = static_cast<int>(idx / p.H), j = static_cast<int>(idx % p.H);
  bwd_elem(p, t, b, j, rec ? rec[idx] : acc_t(0));
}

// ------------------------------------------------------------------------------------------
// Persistent kernels. Block k owns units j in [k*hb, k*hb + hb).

// Forward: W_hh rows (gate q, unit j) in shared memory; per step
//   rec[q][b][j] = sum_k W_hh[qH+j][k] h_{t-1}[b][k], then the cell.
template <typename scalar_t, int BT>
__global__ void __launch_bounds__(cuda::kMaxWarps * 32)
    gru_fwd_persistent_kernel(FwdParams<scalar_t, float> p, int hb) {
  extern __shared__ __align__(16) unsigned char smem[];
  scalar_t* Wsm = reinterpret_cast<scalar_t*>(smem);
  float* vsm = reinterpret_cast<float*>(smem + cuda::align16(sizeof(scalar_t) * 3 * hb * p.H));
  const int H = p.H, j0 = blockIdx.x * hb;
  for (int64_t idx = threadIdx.x; idx < static_cast<int64_t>(3) * hb * H; idx += blockDim.x) {
    const int row = static_cast<int>(idx / H), k = static_cast<int>(idx % H);
    const int q = row / hb, j = j0 + row % hb;
    Wsm[idx] = j < H ? p.w_hh[(static_cast<int64_t>(q) * H + j) * H + k] : scalar_t(0);
  }
  cg::grid_group grid = cg::this_grid();
  for (int t = 0; t < p.T; ++t) {
    cuda::block_matvec<3, BT>(Wsm, H, hb * H, hb, p.hs + static_cast<int64_t>(t) * p.B * H, H, p.B, vsm, true,
                              [&](int u, int b) {
                                if (j0 + u >= H) return;
                                const float* xw = p.xw + (static_cast<int64_t>(t) * p.B + b) * 3 * H + j0 + u;
#pragma unroll
                                for (int q = 0; q < 3; ++q) cuda::prefetch_l2(xw + q * H);
                              },
                              [&](int u, int b, const float* rec) {
                                if (j0 + u < H) fwd_elem(p, t, b, j0 + u, rec);
                              });
    grid.sync();
  }
}

// Backward: W_hh's columns for the owned units in shared memory; per step
//   rec[b][j] = sum_k dgh[t+1][b][k] W_hh[k][j]  (k over 3H), then the cell backward.
template <typename scalar_t, int BT>
__global__ void __launch_bounds__(cuda::kMaxWarps * 32)
    gru_bwd_persistent_kernel(BwdParams<scalar_t, float> p, int hb) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int H = p.H, K = 3 * p.H, j0 = blockIdx.x * hb;
  scalar_t* Wsm = reinterpret_cast<scalar_t*>(smem);
  float* vsm = reinterpret_cast<float*>(smem + cuda::align16(sizeof(scalar_t) * hb * K));
  for (int64_t idx = threadIdx.x; idx < static_cast<int64_t>(hb) * K; idx += blockDim.x) {
    const int u = static_cast<int>(idx / K), k = static_cast<int>(idx % K);
    Wsm[idx] = j0 + u < H ? p.w_hh[static_cast<int64_t>(k) * H + j0 + u] : scalar_t(0);
  }
  cg::grid_group grid = cg::this_grid();
  for (int t = p.T - 1; t >= -1; --t) {
    cuda::block_matvec<1, BT>(Wsm, K, 0, hb, p.dgh + static_cast<int64_t>(t + 1) * p.B * K, K, p.B, vsm,
                              t + 1 < p.T,
                              [&](int u, int b) {
                                if (j0 + u >= H || t < 0) return;
                                const int64_t row = static_cast<int64_t>(t) * p.B + b;
                                const float* g = p.G + row * 4 * H + j0 + u;
#pragma unroll
                                for (int q = 0; q < 4; ++q) cuda::prefetch_l2(g + q * H);
                                cuda::prefetch_l2(p.hs + row * H + j0 + u);
                                cuda::prefetch_l2(p.dy + row * H + j0 + u);
                              },
                              [&](int u, int b, const float* rec) {
                                if (j0 + u < H) bwd_elem(p, t, b, j0 + u, rec[0]);
                              });
    if (t >= 0) grid.sync();
  }
}

template <typename F>
void with_bt(int64_t B, F&& f) {
  if (B == 1) f(std::integral_constant<int, 1>{});
  else if (B <= 4) f(std::integral_constant<int, 4>{});
  else f(std::integral_constant<int, 8>{});
}

template <typename Kernel, typename Params>
bool launch_persistent(Kernel kernel, const Params& p, int64_t H, int64_t B, int64_t K, int rows_per_unit,
                       int wbytes, int bt, int dev, cudaStream_t stream, const char** why) {
  const cuda::DeviceInfo info = cuda::device_info(dev);
  cuda::PersistentPlan plan = cuda::plan_persistent(info, H, B, K, rows_per_unit, wbytes, bt);
  if (plan.ok) plan.smem += 16;  // alignment of the vector staging area
  if (plan.ok && plan.smem > static_cast<size_t>(info.smem_optin)) {
    plan.ok = false;
    plan.why = "W_hh's slice does not fit in shared memory";
  }
  if (!plan.ok) { *why = plan.why; return false; }
  const int threads = plan.warps * 32;
  if (!cuda::co_resident(kernel, info, plan.blocks, threads, plan.smem)) {
    *why = "the grid cannot be co-resident";
    return false;
  }
  Params pc = p;
  int hb = plan.hb;
  void* args[] = {&pc, &hb};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(plan.blocks),
                                             dim3(threads), args, plan.smem, stream));
  return true;
}

bool want_persistent(bool eligible, const char* why_not, int64_t T, int64_t B, int64_t H) {
  const cuda::Path path = cuda::requested_path();
  if (path == cuda::Path::Standard) return false;
  if (path == cuda::Path::Auto && !cuda::auto_prefers_persistent(T, B, H)) return false;
  TORCH_CHECK(eligible || path != cuda::Path::Persistent,
              "fastrnn: FASTRNN_CUDA_PATH=persistent but the persistent GRU kernel cannot take this call: ",
              why_not);
  return eligible;
}

void check_persistent_launched(bool launched, const char* why) {
  TORCH_CHECK(launched || cuda::requested_path() != cuda::Path::Persistent,
              "fastrnn: FASTRNN_CUDA_PATH=persistent but the persistent GRU kernel cannot take this call: ", why);
}

constexpr int kThreads = 256;

}  // namespace

std::vector<at::Tensor> gru_fwd_cuda(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                                     const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                     const OptTensor& lengths, bool needs_grad) {
  TORCH_CHECK(x.is_cuda(), "fastrnn: gru_fwd_cuda needs CUDA tensors, got x on ", x.device());
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_ih.size(0) / 3;
  TORCH_CHECK(T * B <= INT32_MAX && 4 * H <= INT32_MAX, "fastrnn: gru_fwd_cuda: T*B and 4H must fit in int32");
  const at::ScalarType dt = x.scalar_type();
  const at::ScalarType acc_dt = dt == at::kDouble ? at::kDouble : at::kFloat;
  // One inference step of a few rows (a decoder's cell): one fused kernel (common/small_rows.h).
  if (T == 1 && !needs_grad && !defined(lengths) && cuda::requested_path() != cuda::Path::Persistent &&
      cuda::small_rows_fit(B, I + H, dt))
    return cuda::cell_step_small_cuda(x.select(0, 0), h0, c10::nullopt, w_ih, w_hh, b_ih, b_hh);

  // Input projection for all steps in one GEMM, b_ih folded in, kept in acc precision.
  at::Tensor xw = x.reshape({T * B, I}).matmul(w_ih.t()).to(acc_dt);
  if (defined(b_ih)) xw.add_(b_ih->to(acc_dt));
  xw = xw.contiguous();
  at::Tensor G = cuda::alloc(x, {T, B, 4 * H}, acc_dt);
  at::Tensor hs = cuda::alloc(x, {T + 1, B, H}, dt);
  hs.select(0, 0).copy_(h0);
  at::Tensor y = cuda::alloc(x, {T, B, H}, dt);
  const at::Tensor len = defined(lengths) ? lengths->contiguous() : at::Tensor();
  const at::Tensor bhh = defined(b_hh) ? b_hh->contiguous() : at::Tensor();
  const at::Tensor whh = w_hh.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dt, "gru_fwd_cuda", [&] {
    using acc_t = typename cuda::Acc<scalar_t>::type;
    FwdParams<scalar_t, acc_t> p{static_cast<int>(T), static_cast<int>(B), static_cast<int>(H),
                                 xw.data_ptr<acc_t>(), bhh.defined() ? bhh.data_ptr<scalar_t>() : nullptr,
                                 G.data_ptr<acc_t>(), hs.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                 len.defined() ? len.data_ptr<int64_t>() : nullptr, whh.data_ptr<scalar_t>()};
    bool done = false;
    if constexpr (!std::is_same_v<scalar_t, double>) {
      const char* why = "";
      if (want_persistent(true, why, T, B, H)) {
        with_bt(B, [&](auto bt) {
          done = launch_persistent(gru_fwd_persistent_kernel<scalar_t, decltype(bt)::value>, p, H, B, H, 3,
                                   sizeof(scalar_t), decltype(bt)::value, x.get_device(), stream, &why);
        });
        check_persistent_launched(done, why);
      }
    } else {
      want_persistent(false, "fp64 runs on the standard path", T, B, H);
    }
    if (done) {
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    const at::Tensor whh_t = whh.t();
    const int blocks = static_cast<int>(cuda::cdiv(B * H, kThreads));
    for (int t = 0; t < T; ++t) {
      const at::Tensor gh = hs.select(0, t).matmul(whh_t);
      fwd_step_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(p, t, gh.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });

  at::Tensor hT = hs.select(0, T).clone();
  if (!needs_grad) return {y, hT};
  return {y, hT, G, hs};
}

std::vector<at::Tensor> gru_bwd_cuda(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& x,
                                     const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& lengths,
                                     const at::Tensor& y, const std::vector<at::Tensor>& saved) {
  TORCH_CHECK(x.is_cuda(), "fastrnn: gru_bwd_cuda needs CUDA tensors, got x on ", x.device());
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_ih.size(0) / 3;
  const at::ScalarType dt = x.scalar_type();
  const at::ScalarType acc_dt = dt == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(saved.size() == 2u,
              "fastrnn: gru_bwd_cuda needs the saved tensors of gru_fwd_cuda (needs_grad=True), got ", saved.size());
  const at::Tensor& G = saved[0];
  const at::Tensor& hs = saved[1];
  check_shape(G, "saved gates", {T, B, 4 * H});
  check_shape(hs, "saved hidden states", {T + 1, B, H});
  TORCH_CHECK(G.scalar_type() == acc_dt && hs.scalar_type() == dt,
              "fastrnn: gru_bwd_cuda: saved tensors do not come from gru_fwd_cuda");

  at::Tensor dgx = cuda::alloc(x, {T, B, 3 * H}, acc_dt);
  at::Tensor dgh = cuda::alloc(x, {T, B, 3 * H}, acc_dt);
  at::Tensor dh_state = dhT.to(acc_dt, false, true).contiguous();
  const at::Tensor len = defined(lengths) ? lengths->contiguous() : at::Tensor();
  const at::Tensor whh = w_hh.contiguous();
  const at::Tensor dyc = dy.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dt, "gru_bwd_cuda", [&] {
    using acc_t = typename cuda::Acc<scalar_t>::type;
    BwdParams<scalar_t, acc_t> p{static_cast<int>(T), static_cast<int>(B), static_cast<int>(H),
                                 G.data_ptr<acc_t>(), hs.data_ptr<scalar_t>(), dyc.data_ptr<scalar_t>(),
                                 dgx.data_ptr<acc_t>(), dgh.data_ptr<acc_t>(), dh_state.data_ptr<acc_t>(),
                                 len.defined() ? len.data_ptr<int64_t>() : nullptr, whh.data_ptr<scalar_t>()};
    bool done = false;
    if constexpr (!std::is_same_v<scalar_t, double>) {
      const char* why = "";
      if (want_persistent(true, why, T, B, H)) {
        with_bt(B, [&](auto bt) {
          done = launch_persistent(gru_bwd_persistent_kernel<scalar_t, decltype(bt)::value>, p, H, B, 3 * H, 1,
                                   sizeof(scalar_t), decltype(bt)::value, x.get_device(), stream, &why);
        });
        check_persistent_launched(done, why);
      }
    } else {
      want_persistent(false, "fp64 runs on the standard path", T, B, H);
    }
    if (done) {
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    // Standard path: dL/dh_{t-1} picks up dgh[t] W_hh through cuBLAS (in acc precision).
    const at::Tensor w_acc = whh.to(acc_dt);
    const int blocks = static_cast<int>(cuda::cdiv(B * H, kThreads));
    for (int t = static_cast<int>(T) - 1; t >= 0; --t) {
      at::Tensor rec = t + 1 < T ? dgh.select(0, t + 1).matmul(w_acc) : at::Tensor();
      bwd_step_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(p, t,
                                                                       rec.defined() ? rec.data_ptr<acc_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    dh_state.add_(dgh.select(0, 0).matmul(w_acc));  // dL/dh0 = direct part + dgh[0] W_hh
  });

  // Weight and input gradients: one GEMM each over all T*B rows, in the input dtype.
  const at::Tensor dgx2 = dgx.view({T * B, 3 * H});
  const at::Tensor dgh2 = dgh.view({T * B, 3 * H});
  const at::Tensor dgxl = dgx2.to(dt);
  at::Tensor dx = dgxl.matmul(w_ih).view({T, B, I});
  at::Tensor dw_ih = dgxl.t().matmul(x.reshape({T * B, I}));
  at::Tensor dw_hh = dgh2.to(dt).t().matmul(hs.narrow(0, 0, T).reshape({T * B, H}));
  at::Tensor db_ih = defined(b_ih) ? dgx2.sum(at::IntArrayRef{0}).to(dt) : at::Tensor();
  at::Tensor db_hh = defined(b_hh) ? dgh2.sum(at::IntArrayRef{0}).to(dt) : at::Tensor();
  return {dx, dh_state.to(dt), dw_ih, dw_hh, db_ih, db_hh};
}

}  // namespace fastrnn
