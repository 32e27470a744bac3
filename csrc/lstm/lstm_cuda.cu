// CUDA kernels for the LSTM family (API: lstm.h). Two paths, chosen per call by the host code:
//
//  persistent  one cooperative launch runs all T steps; block k keeps its slice of W_hh (forward)
//              or of W_hh^T (backward) in shared memory, computes its units' gate pre-activations
//              from the previous step's h (resp. dgates) with fp32 accumulation, applies the cell
//              in place, writes its part of the next state and meets the other blocks at one
//              grid sync per step. Taken for fp32/fp16/bf16, no projection, H <= 1024, B <= 64,
//              when the slice fits in shared memory and the grid is co-resident, and (auto) when
//              B*H <= 16384, where it measured faster than the standard path (cuda_utils.cuh).
//  standard    the recurrent GEMM per step through at::matmul (cuBLAS) + one fused pointwise
//              kernel per step; takes everything else (fp64, proj_size, large H or B).
//              One step (T=1) of at most 8 rows without gradients or proj_size: one kernel for
//              the GEMVs and the cell (common/small_rows.h).
//
// Both paths share the input projection (one GEMM over all T), the per-element cell code below,
// the saved tensors and the weight-gradient GEMMs, so a forward on one path pairs with a
// backward on the other. FASTRNN_CUDA_PATH=standard|persistent|auto forces a path (see
// cuda_utils.cuh; docs/cuda_kernels.md).
//
// Saved for backward (needs_grad): gates [T,B,4H] acc (activated i|f|g|o), cs [T+1,B,H] acc
// (cell states, cs[0] = c0), hs [T+1,B,P] (hidden states, hs[0] = h0), and with w_hr
// rs [T,B,H] (o * tanh(c), the projection's input). acc is fp32, or fp64 for fp64 inputs.
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
#include "lstm/lstm.h"

namespace fastrnn {
namespace {

namespace cg = cooperative_groups;
using cuda::load_cg;

template <typename scalar_t, typename acc_t>
struct FwdParams {
  int T, B, H;
  acc_t* gates;            // [T,B,4H] in: x W_ih^T + b_ih + b_hh; out: activated i|f|g|o
  acc_t* cs;               // [T+1,B,H] cs[0] = c0 in; cs[1..T] out
  scalar_t* hs;            // [T+1,B,P] hs[0] = h0 in; out (written by proj_mask_kernel with w_hr)
  scalar_t* y;             // [T,B,P] out
  scalar_t* rs;            // [T,B,H] out, o*tanh(c) before the projection; nullptr without w_hr
  const int64_t* lengths;  // [B] or nullptr
  const scalar_t* w_hh;    // [4H,H] (persistent path)
};

template <typename scalar_t, typename acc_t>
struct BwdParams {
  int T, B, H;
  const acc_t* gates;      // [T,B,4H] activated gates from the forward
  const acc_t* cs;         // [T+1,B,H]
  const scalar_t* dy;      // [T,B,H] (no projection)
  acc_t* dg;               // [T,B,4H] out: grads of the gate pre-activations (0 on masked steps)
  acc_t* dh_state;         // [B,P] in: dhT; grad of the state h after the current step; out: dh0
  acc_t* dc_state;         // [B,H] in: dcT; likewise for c; out: dc0
  const int64_t* lengths;  // [B] or nullptr
  const scalar_t* w_hh;    // [4H,H] (persistent path)
};

__device__ __forceinline__ bool live_at(const int64_t* lengths, int t, int b) {
  return lengths == nullptr || t < lengths[b];
}

// One unit (b, j) of forward step t, given its h-side pre-activations rec[4] = (h_{t-1} W_hh^T)
// for i|f|g|o. Masked steps (t >= lengths[b]) carry (h, c) over and write y = 0.
template <typename scalar_t, typename acc_t, typename R>
__device__ __forceinline__ void fwd_elem(const FwdParams<scalar_t, acc_t>& p, int t, int b, int j,
                                         const R* rec) {
  const int64_t H = p.H;
  const int64_t row = static_cast<int64_t>(t) * p.B + b;  // (t, b)
  const int64_t nrow = row + p.B;                         // (t+1, b)
  acc_t* g = p.gates + row * 4 * H + j;
  const acc_t c_prev = load_cg(p.cs + row * H + j);
  if (live_at(p.lengths, t, b)) {
    acc_t i, f, gg, o, c, h;
    lstm_cell_fwd<acc_t>(g[0] + acc_t(rec[0]), g[H] + acc_t(rec[1]), g[2 * H] + acc_t(rec[2]),
                         g[3 * H] + acc_t(rec[3]), c_prev, i, f, gg, o, c, h);
    g[0] = i; g[H] = f; g[2 * H] = gg; g[3 * H] = o;
    p.cs[nrow * H + j] = c;
    if (p.rs != nullptr) {
      p.rs[row * H + j] = static_cast<scalar_t>(h);
    } else {
      p.hs[nrow * H + j] = static_cast<scalar_t>(h);
      p.y[row * H + j] = static_cast<scalar_t>(h);
    }
  } else {
    g[0] = g[H] = g[2 * H] = g[3 * H] = acc_t(0);
    p.cs[nrow * H + j] = c_prev;
    if (p.rs != nullptr) {
      p.rs[row * H + j] = scalar_t(0);
    } else {
      p.hs[nrow * H + j] = static_cast<scalar_t>(load_cg(p.hs + row * H + j));
      p.y[row * H + j] = scalar_t(0);
    }
  }
}

// Backward of the cell at step t for unit (b, j), given dh = dL/d(o*tanh(c_t)) (everything that
// flows into h_t, through the projection when there is one): writes dgates[t] and moves
// dc_state from dL/dc_t to dL/dc_{t-1}. Masked steps have zero dgates and leave dc_state as is.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void bwd_cell_elem(const BwdParams<scalar_t, acc_t>& p, int t, int b, int j,
                                              acc_t dh) {
  const int64_t H = p.H;
  const int64_t row = static_cast<int64_t>(t) * p.B + b;
  acc_t* dg = p.dg + row * 4 * H + j;
  if (!live_at(p.lengths, t, b)) {
    dg[0] = dg[H] = dg[2 * H] = dg[3 * H] = acc_t(0);
    return;
  }
  const acc_t* g = p.gates + row * 4 * H + j;
  const acc_t c_prev = p.cs[row * H + j], c = p.cs[(row + p.B) * H + j];
  acc_t* dcs = p.dc_state + static_cast<int64_t>(b) * H + j;
  acc_t dpi, dpf, dpg, dpo, dc_prev;
  lstm_cell_bwd<acc_t>(g[0], g[H], g[2 * H], g[3 * H], c_prev, c, dh, *dcs, dpi, dpf, dpg, dpo, dc_prev);
  dg[0] = dpi; dg[H] = dpf; dg[2 * H] = dpg; dg[3 * H] = dpo;
  *dcs = dc_prev;
}

// Backward step t without projection for unit (b, j), given rec = (dgates[t+1] W_hh)[b, j]:
// dL/dh_t = dh_state + rec; live steps add dy[t] and run the cell, masked ones carry it over.
// At t = -1 it only finishes dh_state = dL/dh0.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void bwd_elem(const BwdParams<scalar_t, acc_t>& p, int t, int b, int j,
                                         acc_t rec) {
  const int64_t H = p.H;
  acc_t* dhs = p.dh_state + static_cast<int64_t>(b) * H + j;
  const acc_t G = *dhs + rec;
  if (t < 0) { *dhs = G; return; }
  if (live_at(p.lengths, t, b)) {
    const acc_t dh = G + static_cast<acc_t>(p.dy[(static_cast<int64_t>(t) * p.B + b) * H + j]);
    bwd_cell_elem(p, t, b, j, dh);
    *dhs = acc_t(0);
  } else {
    bwd_cell_elem(p, t, b, j, acc_t(0));
    *dhs = G;
  }
}

// ------------------------------------------------------------------------------------------
// Standard path kernels: one thread per unit (b, j) of one step.

// Forward step t: rec = h_{t-1} W_hh^T computed by cuBLAS ([B,4H], scalar_t).
template <typename scalar_t, typename acc_t>
__global__ void fwd_step_kernel(FwdParams<scalar_t, acc_t> p, int t, const scalar_t* __restrict__ gh) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(p.B) * p.H) return;
  const int b = static_cast<int>(idx / p.H), j = static_cast<int>(idx % p.H);
  const scalar_t* r = gh + static_cast<int64_t>(b) * 4 * p.H + j;
  const acc_t rec[4] = {acc_t(r[0]), acc_t(r[p.H]), acc_t(r[2 * p.H]), acc_t(r[3 * p.H])};
  fwd_elem(p, t, b, j, rec);
}

// Forward step t with projection: hnew = rs[t] W_hr^T ([B,P]); masked rows keep h, write y = 0.
template <typename scalar_t, typename acc_t>
__global__ void proj_mask_kernel(FwdParams<scalar_t, acc_t> p, int P, int t, const scalar_t* __restrict__ hnew) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = static_cast<int64_t>(p.B) * P;
  if (idx >= n) return;
  const int b = static_cast<int>(idx / P);
  const int64_t off = static_cast<int64_t>(t) * n + idx;
  const bool live = live_at(p.lengths, t, b);
  p.hs[off + n] = live ? hnew[idx] : p.hs[off];
  p.y[off] = live ? hnew[idx] : scalar_t(0);
}

// Backward step t without projection: rec = dgates[t+1] W_hh ([B,H], acc), nullptr at t = T-1.
template <typename scalar_t, typename acc_t>
__global__ void bwd_step_kernel(BwdParams<scalar_t, acc_t> p, int t, const acc_t* __restrict__ rec) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(p.B) * p.H) return;
  const int b = static_cast<int>(idx / p.H), j = static_cast<int>(idx % p.H);
  bwd_elem(p, t, b, j, rec ? rec[idx] : acc_t(0));
}

// Backward step t with projection, part 1 over [B,P]: dL/dh_t = dh_state + rec; dhtot[t] is
// what flows into the projection (that plus dy[t]; 0 on masked steps, whose dL/dh_t carries over).
template <typename scalar_t, typename acc_t>
__global__ void proj_bwd_prep_kernel(BwdParams<scalar_t, acc_t> p, int P, int t, const acc_t* __restrict__ rec,
                                     const scalar_t* __restrict__ dy, acc_t* __restrict__ dhtot) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t n = static_cast<int64_t>(p.B) * P;
  if (idx >= n) return;
  const int b = static_cast<int>(idx / P);
  const acc_t G = p.dh_state[idx] + (rec ? rec[idx] : acc_t(0));
  const int64_t off = static_cast<int64_t>(t) * n + idx;
  if (live_at(p.lengths, t, b)) {
    dhtot[off] = G + static_cast<acc_t>(dy[off]);
    p.dh_state[idx] = acc_t(0);
  } else {
    dhtot[off] = acc_t(0);
    p.dh_state[idx] = G;
  }
}

// Part 2 over [B,H]: the cell backward with dh = (dhtot[t] W_hr)[b, j].
template <typename scalar_t, typename acc_t>
__global__ void proj_bwd_cell_kernel(BwdParams<scalar_t, acc_t> p, int t, const acc_t* __restrict__ dr) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(p.B) * p.H) return;
  const int b = static_cast<int>(idx / p.H), j = static_cast<int>(idx % p.H);
  bwd_cell_elem(p, t, b, j, dr[idx]);
}

// ------------------------------------------------------------------------------------------
// Persistent kernels. Block k owns units j in [k*hb, k*hb + hb).

// Forward: W_hh rows (gate q, unit j) in shared memory; per step, gates for the owned units
//   pre[q][b][j] = xw[t][b][qH+j] + sum_k W_hh[qH+j][k] h_{t-1}[b][k], then the cell.
template <typename scalar_t, int BT>
__global__ void __launch_bounds__(cuda::kMaxWarps * 32)
    lstm_fwd_persistent_kernel(FwdParams<scalar_t, float> p, int hb) {
  extern __shared__ __align__(16) unsigned char smem[];
  scalar_t* Wsm = reinterpret_cast<scalar_t*>(smem);
  float* vsm = reinterpret_cast<float*>(smem + cuda::align16(sizeof(scalar_t) * 4 * hb * p.H));
  const int H = p.H, j0 = blockIdx.x * hb;
  for (int64_t idx = threadIdx.x; idx < static_cast<int64_t>(4) * hb * H; idx += blockDim.x) {
    const int row = static_cast<int>(idx / H), k = static_cast<int>(idx % H);
    const int q = row / hb, j = j0 + row % hb;
    Wsm[idx] = j < H ? p.w_hh[(static_cast<int64_t>(q) * H + j) * H + k] : scalar_t(0);
  }
  cg::grid_group grid = cg::this_grid();
  for (int t = 0; t < p.T; ++t) {
    cuda::block_matvec<4, BT>(Wsm, H, hb * H, hb, p.hs + static_cast<int64_t>(t) * p.B * H, H, p.B, vsm, true,
                              [&](int u, int b) {
                                if (j0 + u >= H) return;
                                const float* g = p.gates + (static_cast<int64_t>(t) * p.B + b) * 4 * H + j0 + u;
#pragma unroll
                                for (int q = 0; q < 4; ++q) cuda::prefetch_l2(g + q * H);
                              },
                              [&](int u, int b, const float* rec) {
                                if (j0 + u < H) fwd_elem(p, t, b, j0 + u, rec);
                              });
    grid.sync();
  }
}

// Backward: columns of W_hh for the owned units (W_hh^T's rows) in shared memory; per step
//   rec[b][j] = sum_k dgates[t+1][b][k] W_hh[k][j]  (k over 4H), then the cell backward.
template <typename scalar_t, int BT>
__global__ void __launch_bounds__(cuda::kMaxWarps * 32)
    lstm_bwd_persistent_kernel(BwdParams<scalar_t, float> p, int hb) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int H = p.H, K = 4 * p.H, j0 = blockIdx.x * hb;
  scalar_t* Wsm = reinterpret_cast<scalar_t*>(smem);
  float* vsm = reinterpret_cast<float*>(smem + cuda::align16(sizeof(scalar_t) * hb * K));
  for (int64_t idx = threadIdx.x; idx < static_cast<int64_t>(hb) * K; idx += blockDim.x) {
    const int u = static_cast<int>(idx / K), k = static_cast<int>(idx % K);
    Wsm[idx] = j0 + u < H ? p.w_hh[static_cast<int64_t>(k) * H + j0 + u] : scalar_t(0);
  }
  cg::grid_group grid = cg::this_grid();
  for (int t = p.T - 1; t >= -1; --t) {
    cuda::block_matvec<1, BT>(Wsm, K, 0, hb, p.dg + static_cast<int64_t>(t + 1) * p.B * K, K, p.B, vsm,
                              t + 1 < p.T,
                              [&](int u, int b) {
                                if (j0 + u >= H || t < 0) return;
                                const int64_t row = static_cast<int64_t>(t) * p.B + b;
                                const float* g = p.gates + row * 4 * H + j0 + u;
#pragma unroll
                                for (int q = 0; q < 4; ++q) cuda::prefetch_l2(g + q * H);
                                cuda::prefetch_l2(p.cs + row * H + j0 + u);
                                cuda::prefetch_l2(p.cs + (row + p.B) * H + j0 + u);
                                cuda::prefetch_l2(p.dy + row * H + j0 + u);
                              },
                              [&](int u, int b, const float* rec) {
                                if (j0 + u < H) bwd_elem(p, t, b, j0 + u, rec[0]);
                              });
    if (t >= 0) grid.sync();
  }
}

// Runs `f(std::integral_constant<int, BT>{})` with the batch tile for B: small batches waste
// fewer FMAs on padding rows.
template <typename F>
void with_bt(int64_t B, F&& f) {
  if (B == 1) f(std::integral_constant<int, 1>{});
  else if (B <= 4) f(std::integral_constant<int, 4>{});
  else f(std::integral_constant<int, 8>{});
}

// Plans and launches a persistent kernel; false (nothing launched) when it cannot run here.
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
              "fastrnn: FASTRNN_CUDA_PATH=persistent but the persistent LSTM kernel cannot take this call: ",
              why_not);
  return eligible;
}

void check_persistent_launched(bool launched, const char* why) {
  TORCH_CHECK(launched || cuda::requested_path() != cuda::Path::Persistent,
              "fastrnn: FASTRNN_CUDA_PATH=persistent but the persistent LSTM kernel cannot take this call: ", why);
}

constexpr int kThreads = 256;

}  // namespace

std::vector<at::Tensor> lstm_fwd_cuda(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                      const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
                                      const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& lengths,
                                      bool needs_grad) {
  TORCH_CHECK(x.is_cuda(), "fastrnn: lstm_fwd_cuda needs CUDA tensors, got x on ", x.device());
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_ih.size(0) / 4;
  const bool proj = defined(w_hr);
  const int64_t P = proj ? w_hr->size(0) : H;
  TORCH_CHECK(T * B <= INT32_MAX && 4 * H <= INT32_MAX, "fastrnn: lstm_fwd_cuda: T*B and 4H must fit in int32");
  const at::ScalarType dt = x.scalar_type();
  const at::ScalarType acc_dt = dt == at::kDouble ? at::kDouble : at::kFloat;
  // One inference step of a few rows (a decoder's cell): one fused kernel (common/small_rows.h).
  if (T == 1 && !needs_grad && !proj && !defined(lengths) && cuda::requested_path() != cuda::Path::Persistent &&
      cuda::small_rows_fit(B, I + H, dt))
    return cuda::cell_step_small_cuda(x.select(0, 0), h0, c0, w_ih, w_hh, b_ih, b_hh);

  // Input projection for all steps in one GEMM (x's dtype, fp32 accumulation in cuBLAS), both
  // biases folded in, kept in acc precision: the kernels overwrite it with the activated gates.
  at::Tensor gates = x.reshape({T * B, I}).matmul(w_ih.t()).to(acc_dt);
  if (defined(b_ih)) gates.add_(b_ih->to(acc_dt));
  if (defined(b_hh)) gates.add_(b_hh->to(acc_dt));
  gates = gates.view({T, B, 4 * H});
  at::Tensor cs = cuda::alloc(x, {T + 1, B, H}, acc_dt);
  cs.select(0, 0).copy_(c0);
  at::Tensor hs = cuda::alloc(x, {T + 1, B, P}, dt);
  hs.select(0, 0).copy_(h0);
  at::Tensor y = cuda::alloc(x, {T, B, P}, dt);
  at::Tensor rs = proj ? cuda::alloc(x, {T, B, H}, dt) : at::Tensor();
  const at::Tensor len = defined(lengths) ? lengths->contiguous() : at::Tensor();
  const at::Tensor whh = w_hh.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dt, "lstm_fwd_cuda", [&] {
    using acc_t = typename cuda::Acc<scalar_t>::type;
    FwdParams<scalar_t, acc_t> p{static_cast<int>(T), static_cast<int>(B), static_cast<int>(H),
                                 gates.data_ptr<acc_t>(), cs.data_ptr<acc_t>(), hs.data_ptr<scalar_t>(),
                                 y.data_ptr<scalar_t>(), proj ? rs.data_ptr<scalar_t>() : nullptr,
                                 len.defined() ? len.data_ptr<int64_t>() : nullptr, whh.data_ptr<scalar_t>()};
    bool done = false;
    if constexpr (!std::is_same_v<scalar_t, double>) {
      const char* why = proj ? "proj_size (w_hr) runs on the standard path" : "";
      if (want_persistent(!proj, why, T, B, H)) {
        with_bt(B, [&](auto bt) {
          done = launch_persistent(lstm_fwd_persistent_kernel<scalar_t, decltype(bt)::value>, p, H, B, H, 4,
                                   sizeof(scalar_t), decltype(bt)::value, x.get_device(), stream, &why);
        });
        check_persistent_launched(done, why);
      }
    } else {
      want_persistent(false, "fp64 runs on the standard path", T, B, H);
    }
    if (!done) {
      const at::Tensor whh_t = whh.t();
      const at::Tensor whr_t = proj ? w_hr->t() : at::Tensor();
      const int blocks_h = static_cast<int>(cuda::cdiv(B * H, kThreads));
      const int blocks_p = static_cast<int>(cuda::cdiv(B * P, kThreads));
      for (int t = 0; t < T; ++t) {
        const at::Tensor gh = hs.select(0, t).matmul(whh_t);
        fwd_step_kernel<scalar_t, acc_t><<<blocks_h, kThreads, 0, stream>>>(p, t, gh.data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        if (proj) {
          const at::Tensor hnew = rs.select(0, t).matmul(whr_t);
          proj_mask_kernel<scalar_t, acc_t><<<blocks_p, kThreads, 0, stream>>>(p, static_cast<int>(P), t,
                                                                              hnew.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
    } else {
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });

  at::Tensor hT = hs.select(0, T).clone();
  at::Tensor cT = cs.select(0, T).to(dt, /*non_blocking=*/false, /*copy=*/true);
  if (!needs_grad) return {y, hT, cT};
  std::vector<at::Tensor> out{y, hT, cT, gates, cs, hs};
  if (proj) out.push_back(rs);
  return out;
}

std::vector<at::Tensor> lstm_bwd_cuda(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& dcT,
                                      const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                      const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
                                      const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& lengths,
                                      const at::Tensor& y, const std::vector<at::Tensor>& saved) {
  TORCH_CHECK(x.is_cuda(), "fastrnn: lstm_bwd_cuda needs CUDA tensors, got x on ", x.device());
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_ih.size(0) / 4;
  const bool proj = defined(w_hr);
  const int64_t P = proj ? w_hr->size(0) : H;
  const at::ScalarType dt = x.scalar_type();
  const at::ScalarType acc_dt = dt == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(saved.size() == (proj ? 4u : 3u),
              "fastrnn: lstm_bwd_cuda needs the saved tensors of lstm_fwd_cuda (needs_grad=True), got ",
              saved.size());
  const at::Tensor& gates = saved[0];
  const at::Tensor& cs = saved[1];
  const at::Tensor& hs = saved[2];
  check_shape(gates, "saved gates", {T, B, 4 * H});
  check_shape(cs, "saved cell states", {T + 1, B, H});
  check_shape(hs, "saved hidden states", {T + 1, B, P});
  TORCH_CHECK(gates.scalar_type() == acc_dt && cs.scalar_type() == acc_dt && hs.scalar_type() == dt,
              "fastrnn: lstm_bwd_cuda: saved tensors do not come from lstm_fwd_cuda");

  at::Tensor dg = cuda::alloc(x, {T, B, 4 * H}, acc_dt);
  at::Tensor dh_state = dhT.to(acc_dt, false, true).contiguous();
  at::Tensor dc_state = dcT.to(acc_dt, false, true).contiguous();
  at::Tensor dhtot = proj ? cuda::alloc(x, {T, B, P}, acc_dt) : at::Tensor();
  const at::Tensor len = defined(lengths) ? lengths->contiguous() : at::Tensor();
  const at::Tensor whh = w_hh.contiguous();
  const at::Tensor dyc = dy.contiguous();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dt, "lstm_bwd_cuda", [&] {
    using acc_t = typename cuda::Acc<scalar_t>::type;
    BwdParams<scalar_t, acc_t> p{static_cast<int>(T), static_cast<int>(B), static_cast<int>(H),
                                 gates.data_ptr<acc_t>(), cs.data_ptr<acc_t>(), dyc.data_ptr<scalar_t>(),
                                 dg.data_ptr<acc_t>(), dh_state.data_ptr<acc_t>(), dc_state.data_ptr<acc_t>(),
                                 len.defined() ? len.data_ptr<int64_t>() : nullptr, whh.data_ptr<scalar_t>()};
    bool done = false;
    if constexpr (!std::is_same_v<scalar_t, double>) {
      const char* why = proj ? "proj_size (w_hr) runs on the standard path" : "";
      if (want_persistent(!proj, why, T, B, H)) {
        with_bt(B, [&](auto bt) {
          done = launch_persistent(lstm_bwd_persistent_kernel<scalar_t, decltype(bt)::value>, p, H, B, 4 * H, 1,
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
    // Standard path: dL/dh_{t-1} picks up dgates[t] W_hh through cuBLAS (in acc precision).
    const at::Tensor w_acc = whh.to(acc_dt);
    const at::Tensor whr_acc = proj ? w_hr->to(acc_dt) : at::Tensor();
    const int blocks_h = static_cast<int>(cuda::cdiv(B * H, kThreads));
    const int blocks_p = static_cast<int>(cuda::cdiv(B * P, kThreads));
    for (int t = static_cast<int>(T) - 1; t >= 0; --t) {
      at::Tensor rec = t + 1 < T ? dg.select(0, t + 1).matmul(w_acc) : at::Tensor();
      const acc_t* recp = rec.defined() ? rec.data_ptr<acc_t>() : nullptr;
      if (!proj) {
        bwd_step_kernel<scalar_t, acc_t><<<blocks_h, kThreads, 0, stream>>>(p, t, recp);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      } else {
        proj_bwd_prep_kernel<scalar_t, acc_t><<<blocks_p, kThreads, 0, stream>>>(
            p, static_cast<int>(P), t, recp, dyc.data_ptr<scalar_t>(), dhtot.data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        const at::Tensor dr = dhtot.select(0, t).matmul(whr_acc);
        proj_bwd_cell_kernel<scalar_t, acc_t><<<blocks_h, kThreads, 0, stream>>>(p, t, dr.data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
    dh_state.add_(dg.select(0, 0).matmul(w_acc));  // dL/dh0 = carried part + dgates[0] W_hh
  });

  // Weight and input gradients: one GEMM each over all T*B rows, in the input dtype.
  const at::Tensor dg2 = dg.view({T * B, 4 * H});
  const at::Tensor dgl = dg2.to(dt);
  at::Tensor dx = dgl.matmul(w_ih).view({T, B, I});
  at::Tensor dw_ih = dgl.t().matmul(x.reshape({T * B, I}));
  at::Tensor dw_hh = dgl.t().matmul(hs.narrow(0, 0, T).reshape({T * B, P}));
  at::Tensor db_ih, db_hh;
  if (defined(b_ih) || defined(b_hh)) {
    const at::Tensor db = dg2.sum(at::IntArrayRef{0}).to(dt);
    if (defined(b_ih)) db_ih = db;
    if (defined(b_hh)) db_hh = defined(b_ih) ? db.clone() : db;
  }
  at::Tensor dw_hr;
  if (proj) dw_hr = dhtot.view({T * B, P}).t().to(dt).matmul(saved[3].reshape({T * B, H}));
  return {dx, dh_state.to(dt), dc_state.to(dt), dw_ih, dw_hh, db_ih, db_hh, dw_hr};
}

}  // namespace fastrnn
