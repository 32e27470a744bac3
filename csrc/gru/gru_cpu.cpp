// C++ CPU kernels for the GRU family (API and shapes in gru.h), torch's formula
//   r = s(xr + hr), z = s(xz + hz), n = tanh(xn + r * hn), h = (1 - z) n + z h_prev
// where x* = x W_i*^T + b_i* and h* = h_prev W_h*^T + b_h*: hn stays separate from xn.
//
// Forward: the input projection is ONE GEMM over all T*B rows into Gx [T,B,3H] (without grads,
// one per chunk of steps through a reused buffer: input_chunk_steps); per step the
// recurrent product Gh = h_{t-1} W_hh^T + b_hh goes into a [B,3H] buffer (addmm_out; for small
// batches hand-written GEMVs fused with the cell), then the cell. Backward through time writes
// the x-side and h-side pre-activation grads dGx, dGh [T,B,3H] (they differ only in the n block:
// dhn = dxn * r) and carries dh_{t-1} = dh z + dGh_t W_hh; the weight grads and dx are big
// GEMMs after the loop. With at least 8 batch rows a thread (batch_groups), each thread runs
// all the steps of its own rows, forward and backward, instead of splitting every step.
//
// saved (only when needs_grad): {gates [T,B,3H] activated r|z|n, hn [T,B,H] = W_hn h + b_hn}.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <limits>
#include <type_traits>

#include "common/cell_math.h"
#include "common/checks.h"
#include "common/cpu_kernels.h"
#include "gru/gru.h"

namespace fastrnn {
namespace {

using namespace cpu;  // shared helpers (common/cpu_kernels.h)


// Cell forward over units [j0, j1) of one live row: g holds the x-side pre-activations r|z|n and
// receives the activated r|z|n; a holds the h-side ones (with b_hh); keeps hn, writes h_t.
template <typename T>
__attribute__((always_inline)) inline void cell_fwd_row(T* g, const T* a, const T* hp, T* hn, T* h, int64_t j0,
                                                        int64_t j1, int64_t H) {
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    T r, z, n, hh;
    gru_cell_fwd<T, host::FastAct>(g[j], g[H + j], g[2 * H + j], a[j], a[H + j], a[2 * H + j], hp[j], r, z, n, hh);
    g[j] = r, g[H + j] = z, g[2 * H + j] = n;
    hn[j] = a[2 * H + j];
    h[j] = hh;
  }
}
FASTRNN_ISA_CLONES static void fwd_row(float* g, const float* a, const float* hp, float* hn, float* h, int64_t j0,
                                        int64_t j1, int64_t H) {
  cell_fwd_row(g, a, hp, hn, h, j0, j1, H);
}
static void fwd_row(double* g, const double* a, const double* hp, double* hn, double* h, int64_t j0, int64_t j1,
                    int64_t H) {
  cell_fwd_row(g, a, hp, hn, h, j0, j1, H);
}

// Cell backward over units [j0, j1) of one live row, dL/dh_t = dy + dh: writes the x-side and
// h-side pre-activation grads (row stride H per gate) and the direct part dh z of dh_{t-1}.
template <typename T>
__attribute__((always_inline)) inline void cell_bwd_row(const T* g, const T* hn, const T* hp, const T* dy,
                                                        const T* dh, T* ax, T* ah, T* dhp, int64_t j0, int64_t j1,
                                                        int64_t H) {
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    T dxr, dxz, dxn, dhn, direct;
    gru_cell_bwd(g[j], g[H + j], g[2 * H + j], hn[j], hp[j], dy[j] + dh[j], dxr, dxz, dxn, dhn, direct);
    ax[j] = ah[j] = dxr;
    ax[H + j] = ah[H + j] = dxz;
    ax[2 * H + j] = dxn;
    ah[2 * H + j] = dhn;
    dhp[j] = direct;
  }
}
FASTRNN_ISA_CLONES static void bwd_row(const float* g, const float* hn, const float* hp, const float* dy,
                                        const float* dh, float* ax, float* ah, float* dhp, int64_t j0, int64_t j1,
                                        int64_t H) {
  cell_bwd_row(g, hn, hp, dy, dh, ax, ah, dhp, j0, j1, H);
}
static void bwd_row(const double* g, const double* hn, const double* hp, const double* dy, const double* dh,
                    double* ax, double* ah, double* dhp, int64_t j0, int64_t j1, int64_t H) {
  cell_bwd_row(g, hn, hp, dy, dh, ax, ah, dhp, j0, j1, H);
}

template <typename scalar_t>
std::vector<at::Tensor> fwd_impl(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                 const OptTensor& lengths, bool needs_grad) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_ih.size(0) / 3;
  const auto opts = x.options();

  // Input projection, Tc steps at a time (all T when the backward needs them, input_chunk_steps):
  // Gx = X W_ih^T + b_ih  [Tc,B,3H], one GEMM per chunk.
  at::Tensor x2 = x.reshape({T * B, I});
  const int64_t Tc = input_chunk_steps(T, B, B * 3 * H * int64_t(sizeof(scalar_t)), needs_grad);
  at::Tensor Gx = out_empty({Tc * B, 3 * H}, opts);
  const bool few_rows = T * B <= kSmallRows;  // a decoder's single step: streaming GEMVs, no packing
  at::Tensor wihT = few_rows ? at::Tensor() : pack_for_gemm<scalar_t>(w_ih.t(), Tc * B);
  const at::Tensor bih = defined(b_ih) ? *b_ih : at::Tensor();
  // W_hh^T packed once per call for the per-step GEMMs; a short call (a decoder's step with a
  // beam) streams W_hh instead of packing it.
  at::Tensor whhT = (B <= kSmallBatch || few_rows) ? at::Tensor() : pack_for_gemm<scalar_t>(w_hh.t(), T * B);
  at::Tensor y = out_empty({T, B, H}, opts);  // every element written below
  at::Tensor HN = out_empty({needs_grad ? T : 1, B, H}, opts);
  at::Tensor Gh = at::empty({B, 3 * H}, opts);
  const bool masked = defined(lengths);
  at::Tensor hs = masked ? at::empty({2, B, H}, opts) : at::Tensor();
  const int64_t* len = masked ? lengths->data_ptr<int64_t>() : nullptr;

  scalar_t* gx_all = Gx.data_ptr<scalar_t>();
  scalar_t* y_all = y.data_ptr<scalar_t>();
  scalar_t* gh = Gh.data_ptr<scalar_t>();
  const scalar_t* whh = w_hh.data_ptr<scalar_t>();
  const scalar_t* bhh = defined(b_hh) ? b_hh->data_ptr<scalar_t>() : nullptr;
  const bool small = B <= kSmallBatch;
  const int64_t grain = pointwise_grain(B, H);

  scalar_t* hs_all = masked ? hs.data_ptr<scalar_t>() : nullptr;
  scalar_t* hn_all = HN.data_ptr<scalar_t>();
  const scalar_t* h0p = h0.data_ptr<scalar_t>();
  // Step t's buffers as raw pointers (a Tensor view per buffer and step would be serial time).
  struct Step {
    const scalar_t* hp;  // h_{t-1}
    scalar_t *hnew, *gt, *yt, *hn;
  };
  int64_t t_base = 0;  // the first step of the chunk in Gx
  auto step_at = [&](int64_t t) {
    Step s;
    s.hp = t == 0 ? h0p : (masked ? hs_all + ((t - 1) % 2) * B * H : y_all + (t - 1) * B * H);
    s.hnew = masked ? hs_all + (t % 2) * B * H : nullptr;
    s.gt = gx_all + (t - t_base) * B * 3 * H;
    s.yt = y_all + t * B * H;
    s.hn = hn_all + (needs_grad ? t : 0) * B * H;
    return s;
  };
  // Cell of units [j0, j1) of row b at step t from Gx_t and Gh; Gx_t's rows become the
  // activated r|z|n.
  auto cell = [&](const Step& s, int64_t t, int64_t b, int64_t j0, int64_t j1) {
    if (!masked || t < len[b]) {
      fwd_row(s.gt + b * 3 * H, gh + b * 3 * H, s.hp + b * H, s.hn + b * H, s.yt + b * H, j0, j1, H);
      if (masked) std::copy(s.yt + b * H + j0, s.yt + b * H + j1, s.hnew + b * H + j0);
      return;
    }
    // Masked step: h carries over, y is 0 (the backward reads nothing of this step).
    std::fill(s.yt + b * H + j0, s.yt + b * H + j1, scalar_t(0));
    std::copy(s.hp + b * H + j0, s.hp + b * H + j1, s.hnew + b * H + j0);
  };

  const int64_t groups = batch_groups(B, whhT);
  for (int64_t t0 = 0; t0 < T; t0 += Tc) {
    const int64_t t1 = std::min(T, t0 + Tc);
    t_base = t0;
    project_inputs<scalar_t>(x2, t0 * B, t1 * B, w_ih, wihT, few_rows, bih, Gx);
    if (groups > 1) {
      // Each thread runs the whole recurrence of its own rows (batch_groups), with its rows of Gh.
      for_batch_groups(B, groups, [&](int64_t b0, int64_t b1) {
        for (int64_t t = t0; t < t1; ++t) {
          const Step s = step_at(t);
          gemm_on_this_thread<scalar_t>(b1 - b0, 3 * H, H, s.hp + b0 * H, H, whhT, gh + b0 * 3 * H, 3 * H, false, bhh);
          for (int64_t b = b0; b < b1; ++b) cell(s, t, b, 0, H);
        }
      });
    }
    for (int64_t t = t0; t < t1 && groups == 1; ++t) {
      const Step s = step_at(t);
      if (small) {
        // Fused GEMV + cell: each thread owns hidden units [j0, j1) of the 3 gates for all rows.
        at::parallel_for(0, H, gemv_grain(3 * H * B), [&](int64_t j0, int64_t j1) {
          for (int64_t b = 0; b < B; ++b) {
            const scalar_t* hb = s.hp + b * H;
            scalar_t* a = gh + b * 3 * H;
            for (int64_t k = 0; k < 3; ++k)
              for (int64_t j = j0; j < j1; ++j)
                a[k * H + j] = (bhh ? bhh[k * H + j] : scalar_t(0)) + host::dot(whh + (k * H + j) * H, hb, H);
            cell(s, t, b, j0, j1);
          }
        });
      } else {
        // Gh = h_{t-1} W_hh^T + b_hh (the packed GEMM starts its tiles from the bias row; the
        // other paths accumulate onto copies of it), then the cell over all B x H units.
        if (bhh && !whhT.defined()) {
          for (int64_t b = 0; b < B; ++b) std::copy(bhh, bhh + 3 * H, gh + b * 3 * H);
        }
        if (few_rows) {
          small_gemm_nt<scalar_t>(B, 3 * H, H, s.hp, whh, gh, bhh != nullptr);
        } else if (!fast_gemm<scalar_t>(B, 3 * H, H, s.hp, H, whhT, gh, 3 * H, false, bhh)) {
          const at::Tensor h_prev = t == 0 ? h0 : (masked ? hs[(t - 1) % 2] : y[t - 1]);
          if (bhh) at::addmm_out(Gh, *b_hh, h_prev, w_hh.t());
          else at::mm_out(Gh, h_prev, w_hh.t());
        }
        for_units(B, H, grain, [&](int64_t b, int64_t j0, int64_t j1) { cell(s, t, b, j0, j1); });
      }
    }
  }

  at::Tensor hT = (masked ? hs[(T - 1) % 2] : y[T - 1]).clone();
  std::vector<at::Tensor> out{y, hT};
  if (needs_grad) {
    out.push_back(Gx.view({T, B, 3 * H}));
    out.push_back(HN);
  }
  return out;
}

template <typename scalar_t>
std::vector<at::Tensor> bwd_impl(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& x,
                                 const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                 const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& lengths,
                                 const at::Tensor& y, const std::vector<at::Tensor>& saved) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_ih.size(0) / 3;
  TORCH_CHECK(saved.size() == 2u,
              "fastrnn: gru_bwd_cpu needs the saved tensors of gru_fwd_cpu (run it with needs_grad=True)");
  const at::Tensor& G = saved[0];
  const at::Tensor& HN = saved[1];
  TORCH_CHECK(G.sizes() == at::IntArrayRef({T, B, 3 * H}) && HN.sizes() == at::IntArrayRef({T, B, H}),
              "fastrnn: gru_bwd_cpu got saved tensors of the wrong shape");
  const auto opts = x.options();
  const bool masked = defined(lengths);
  const int64_t* len = masked ? lengths->data_ptr<int64_t>() : nullptr;

  at::Tensor dGx = out_empty({T, B, 3 * H}, opts);
  at::Tensor dGh = out_empty({T, B, 3 * H}, opts);
  at::Tensor dh_buf = at::empty({2, B, H}, opts);  // dh_t and dh_{t-1}, used in turn
  dh_buf[0].copy_(dhT);
  const bool small = B <= kSmallBatch;
  at::Tensor whhT = small ? w_hh.t().contiguous() : at::Tensor();  // [H,3H] for the GEMV
  at::Tensor whh_p = small ? at::Tensor() : pack_for_gemm<scalar_t>(w_hh, T * B);  // for dGh_t W_hh

  const scalar_t* g_all = G.data_ptr<scalar_t>();
  const scalar_t* hn_all = HN.data_ptr<scalar_t>();
  const scalar_t* dy_all = dy.data_ptr<scalar_t>();
  const scalar_t* y_all = y.data_ptr<scalar_t>();
  const scalar_t* h0p = h0.data_ptr<scalar_t>();
  scalar_t* dgx_all = dGx.data_ptr<scalar_t>();
  scalar_t* dgh_all = dGh.data_ptr<scalar_t>();
  const int64_t grain = pointwise_grain(B, H);

  scalar_t* dh_all = dh_buf.data_ptr<scalar_t>();
  // Step t's buffers as raw pointers.
  struct Step {
    const scalar_t *dhn, *gt, *hnt, *hp, *dyt;  // dL/dh_t, gates, W_hn h + b_hn, h_{t-1}, dy_t
    scalar_t *dhp, *dgx, *dgh;                  // dL/dh_{t-1}, dGx_t, dGh_t
  };
  auto step_at = [&](int64_t t) {
    Step s;
    s.dhn = dh_all + ((T - 1 - t) % 2) * B * H;
    s.dhp = dh_all + ((T - t) % 2) * B * H;
    s.gt = g_all + t * B * 3 * H;
    s.hnt = hn_all + t * B * H;
    // h_{t-1} of a live step is y_{t-1}: masking only starts after a sequence's end.
    s.hp = t == 0 ? h0p : y_all + (t - 1) * B * H;
    s.dyt = dy_all + t * B * H;
    s.dgx = dgx_all + t * B * 3 * H;
    s.dgh = dgh_all + t * B * 3 * H;
    return s;
  };
  // Cell backward of units [j0, j1) of row b at step t: dGx_t, dGh_t and the direct part dh z
  // of dh_{t-1}; masked rows pass dh on.
  auto cell = [&](const Step& s, int64_t t, int64_t b, int64_t j0, int64_t j1) {
    scalar_t* ax = s.dgx + b * 3 * H;
    scalar_t* ah = s.dgh + b * 3 * H;
    if (masked && t >= len[b]) {
      for (int64_t k = 0; k < 3; ++k) {
        std::fill(ax + k * H + j0, ax + k * H + j1, scalar_t(0));
        std::fill(ah + k * H + j0, ah + k * H + j1, scalar_t(0));
      }
      std::copy(s.dhn + b * H + j0, s.dhn + b * H + j1, s.dhp + b * H + j0);
      return;
    }
    bwd_row(s.gt + b * 3 * H, s.hnt + b * H, s.hp + b * H, s.dyt + b * H, s.dhn + b * H, ax, ah, s.dhp + b * H, j0,
            j1, H);
  };

  const int64_t groups = batch_groups(B, whh_p);
  if (groups > 1) {
    // Each thread runs the whole recurrence of its own rows (batch_groups).
    for_batch_groups(B, groups, [&](int64_t b0, int64_t b1) {
      for (int64_t t = T - 1; t >= 0; --t) {
        const Step s = step_at(t);
        for (int64_t b = b0; b < b1; ++b) cell(s, t, b, 0, H);
        gemm_on_this_thread<scalar_t>(b1 - b0, H, 3 * H, s.dgh + b0 * 3 * H, 3 * H, whh_p, s.dhp + b0 * H, H, true);
      }
    });
  }
  for (int64_t t = T - 1; t >= 0 && groups == 1; --t) {
    const Step s = step_at(t);
    auto cell_t = [&](int64_t b, int64_t j0, int64_t j1) { cell(s, t, b, j0, j1); };
    if (small) {
      for_units(B, H, 4096, cell_t);
      // dh_{t-1}[b,p] += sum_k dGh_t[b,k] W_hh[k,p], as dot products over packed W_hh^T rows.
      const scalar_t* wt = whhT.data_ptr<scalar_t>();
      at::parallel_for(0, H, gemv_grain(3 * H * B), [&](int64_t p0, int64_t p1) {
        for (int64_t b = 0; b < B; ++b) {
          if (masked && t >= len[b]) continue;
          for (int64_t p = p0; p < p1; ++p) s.dhp[b * H + p] += host::dot(wt + p * 3 * H, s.dgh + b * 3 * H, 3 * H);
        }
      });
    } else {
      for_units(B, H, grain, cell_t);
      if (!fast_gemm<scalar_t>(B, H, 3 * H, s.dgh, 3 * H, whh_p, s.dhp, H, true))
        dh_buf[(T - t) % 2].addmm_(dGh[t], w_hh);
    }
  }

  // Weight and input gradients over all steps at once (masked steps have zero grads).
  at::Tensor dGx2 = dGx.view({T * B, 3 * H});
  at::Tensor dGh2 = dGh.view({T * B, 3 * H});
  at::Tensor dx = out_empty({T, B, I}, opts);
  if (!fast_gemm<scalar_t>(T * B, I, 3 * H, dGx2.data_ptr<scalar_t>(), 3 * H, pack_for_gemm<scalar_t>(w_ih, T * B),
                           dx.data_ptr<scalar_t>(), I, false))
    dx = at::mm(dGx2, w_ih).view({T, B, I});
  // dW_ih = dGx^T X and dW_hh = dGh^T H_prev with H_prev = [h0; y_0..y_{T-2}], on the AVX-512
  // GEMM (reading the grads as the transposed A, in place) where it applies, else ATen.
  at::Tensor x2 = x.reshape({T * B, I});
  at::Tensor dw_ih = at::empty({3 * H, I}, opts), dw_hh = at::empty({3 * H, H}, opts);
  at::Tensor x_p = pack_for_gemm<scalar_t>(x2, 3 * H);
  at::Tensor h_p = x_p.defined()
                       ? pack_rows_for_gemm<scalar_t>(h0, y.narrow(0, 0, T - 1).view({(T - 1) * B, H}), 3 * H)
                       : at::Tensor();
  if (!x_p.defined() || !h_p.defined()) {
    at::mm_out(dw_ih, dGx2.t(), x2);
    at::mm_out(dw_hh, dGh2.t(), at::cat({h0.unsqueeze(0), y.narrow(0, 0, T - 1)}).view({T * B, H}));
  } else {
    fast_weight_grad<scalar_t>(3 * H, I, T * B, dGx2.data_ptr<scalar_t>(), 3 * H, x_p, dw_ih.data_ptr<scalar_t>(), I);
    fast_weight_grad<scalar_t>(3 * H, H, T * B, dGh2.data_ptr<scalar_t>(), 3 * H, h_p, dw_hh.data_ptr<scalar_t>(), H);
  }
  at::Tensor db_ih = defined(b_ih) ? dGx2.sum(0) : at::Tensor();
  at::Tensor db_hh = defined(b_hh) ? dGh2.sum(0) : at::Tensor();
  at::Tensor dh0 = dh_buf[T % 2].clone();
  return {dx, dh0, dw_ih, dw_hh, db_ih, db_hh};
}

}  // namespace

std::vector<at::Tensor> gru_fwd_cpu(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                                    const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                    const OptTensor& lengths, bool needs_grad) {
  auto c = [](const OptTensor& t) -> OptTensor { return defined(t) ? OptTensor(t->contiguous()) : OptTensor(); };
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_fwd_cpu", [&] {
    out = fwd_impl<scalar_t>(x.contiguous(), h0.contiguous(), w_ih.contiguous(), w_hh.contiguous(), c(b_ih),
                             c(b_hh), c(lengths), needs_grad);
  });
  return out;
}

std::vector<at::Tensor> gru_bwd_cpu(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& x,
                                    const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                    const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& lengths,
                                    const at::Tensor& y, const std::vector<at::Tensor>& saved) {
  auto c = [](const OptTensor& t) -> OptTensor { return defined(t) ? OptTensor(t->contiguous()) : OptTensor(); };
  std::vector<at::Tensor> saved_c;
  for (const auto& s : saved) saved_c.push_back(s.contiguous());
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_bwd_cpu", [&] {
    out = bwd_impl<scalar_t>(dy.contiguous(), dhT.contiguous(), x.contiguous(), h0.contiguous(),
                             w_ih.contiguous(), w_hh.contiguous(), c(b_ih), c(b_hh), c(lengths), y.contiguous(),
                             saved_c);
  });
  return out;
}

}  // namespace fastrnn
