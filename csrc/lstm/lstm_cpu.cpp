// C++ CPU kernels for the LSTM family (API and shapes in lstm.h).
//
// Forward: the input projection X W_ih^T + b_ih + b_hh is ONE GEMM over all T*B rows when the
// backward needs the gates, else one per chunk of steps through a reused buffer
// (input_chunk_steps); each step then adds h_{t-1} W_hh^T and applies the cell. Two per-step paths:
//   - GEMM path (B > kSmallBatch or proj): addmm_ into the step's gate rows, then a parallel
//     pointwise pass;
//   - small-batch path: the recurrent product is a GEMV, so each thread takes a block of hidden
//     units, does the 4 dot products per unit and the cell update in one pass (no BLAS call, no
//     allocation, one parallel region per step).
// Backward through time keeps the per-step work to the pointwise cell backward plus dh_{t-1} =
// dG_t W_hh, writing dG_t into a [T,B,4H] buffer; dW_ih, dW_hh, db and dx are then single big
// GEMMs/reductions over all T. With at least 8 batch rows a thread (batch_groups, no proj),
// each thread runs all the steps of its own rows, forward and backward, with no barrier between
// steps, instead of splitting every step's GEMM and cells over the threads.
//
// saved (only when needs_grad): {gates [T,B,4H] activated i|f|g|o, cs [T,B,H] cell state after
// each step (carried through masked steps), and with proj r [T,B,H] = o*tanh(c)}.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <limits>
#include <type_traits>

#include "common/cell_math.h"
#include "common/checks.h"
#include "common/cpu_kernels.h"
#include "lstm/lstm.h"

namespace fastrnn {
namespace {

using namespace cpu;  // shared helpers (common/cpu_kernels.h)


// Cell forward over units [j0, j1) of one live row: g holds the pre-activations i|f|g|o (row
// stride H per gate) and receives the activated gates; writes c_t and h_t = o * tanh(c_t).
template <typename T>
__attribute__((always_inline)) inline void cell_fwd_row(T* g, const T* cp, T* co, T* h, int64_t j0, int64_t j1,
                                                        int64_t H) {
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    T i, f, gg, o, c, hh;
    lstm_cell_fwd<T, host::FastAct>(g[j], g[H + j], g[2 * H + j], g[3 * H + j], cp[j], i, f, gg, o, c, hh);
    g[j] = i, g[H + j] = f, g[2 * H + j] = gg, g[3 * H + j] = o;
    co[j] = c;
    h[j] = hh;
  }
}
FASTRNN_ISA_CLONES static void fwd_row(float* g, const float* cp, float* co, float* h, int64_t j0,
                                               int64_t j1, int64_t H) {
  cell_fwd_row(g, cp, co, h, j0, j1, H);
}
static void fwd_row(double* g, const double* cp, double* co, double* h, int64_t j0, int64_t j1,
                           int64_t H) {
  cell_fwd_row(g, cp, co, h, j0, j1, H);
}

// Cell backward over units [j0, j1) of one live row, with dL/dh_t = dh1 + dh2 (dh2 may be null):
// writes the pre-activation grads dg (i|f|g|o) and turns dc (dL/dc_t) into dL/dc_{t-1}.
template <typename T>
__attribute__((always_inline)) inline void cell_bwd_row(const T* g, const T* cp, const T* c, const T* dh1,
                                                        const T* dh2, T* dc, T* dg, int64_t j0, int64_t j1,
                                                        int64_t H) {
#pragma omp simd
  for (int64_t j = j0; j < j1; ++j) {
    const T dh = dh2 ? dh1[j] + dh2[j] : dh1[j];
    T dpi, dpf, dpg, dpo, dcp;
    lstm_cell_bwd<T, host::FastAct>(g[j], g[H + j], g[2 * H + j], g[3 * H + j], cp[j], c[j], dh, dc[j], dpi,
                                    dpf, dpg, dpo, dcp);
    dg[j] = dpi, dg[H + j] = dpf, dg[2 * H + j] = dpg, dg[3 * H + j] = dpo;
    dc[j] = dcp;
  }
}
FASTRNN_ISA_CLONES static void bwd_row(const float* g, const float* cp, const float* c, const float* dh1,
                                               const float* dh2, float* dc, float* dg, int64_t j0, int64_t j1,
                                               int64_t H) {
  cell_bwd_row(g, cp, c, dh1, dh2, dc, dg, j0, j1, H);
}
static void bwd_row(const double* g, const double* cp, const double* c, const double* dh1,
                           const double* dh2, double* dc, double* dg, int64_t j0, int64_t j1, int64_t H) {
  cell_bwd_row(g, cp, c, dh1, dh2, dc, dg, j0, j1, H);
}

template <typename scalar_t>
std::vector<at::Tensor> fwd_impl(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                 const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
                                 const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& lengths,
                                 bool needs_grad) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_ih.size(0) / 4;
  const bool proj = defined(w_hr);
  const int64_t P = proj ? w_hr->size(0) : H;
  const auto opts = x.options();

  // Input projection, Tc steps at a time (all T when the backward needs them, input_chunk_steps):
  // G = X W_ih^T + (b_ih + b_hh)  [Tc,B,4H], one GEMM per chunk.
  at::Tensor x2 = x.reshape({T * B, I});
  const bool has_bias = defined(b_ih) || defined(b_hh);
  at::Tensor bias = has_bias ? (defined(b_ih) ? (defined(b_hh) ? *b_ih + *b_hh : *b_ih) : *b_hh) : at::Tensor();
  const int64_t Tc = input_chunk_steps(T, B, B * 4 * H * int64_t(sizeof(scalar_t)), needs_grad);
  at::Tensor G = out_empty({Tc * B, 4 * H}, opts);
  const bool few_rows = T * B <= kSmallRows;  // a decoder's single step: streaming GEMVs, no packing
  at::Tensor wihT = few_rows ? at::Tensor() : pack_for_gemm<scalar_t>(w_ih.t(), Tc * B);
  // W_hh^T packed once per call for the per-step GEMMs.
  // (a short call, such as a decoder's step with a beam, streams W_hh instead of packing it)
  at::Tensor whhT = ((!proj && B <= kSmallBatch) || few_rows) ? at::Tensor() : pack_for_gemm<scalar_t>(w_hh.t(), T * B);

  at::Tensor y = out_empty({T, B, P}, opts);  // every element written below
  // Cell states: all T kept for the backward, else two buffers used in turn.
  at::Tensor cs = out_empty({needs_grad ? T : 2, B, H}, opts);
  at::Tensor R = proj ? at::empty({needs_grad ? T : 1, B, H}, opts) : at::Tensor();
  // With lengths the state h is not y (y is 0 on masked steps): two buffers used in turn.
  const bool masked = defined(lengths);
  at::Tensor hs = masked ? at::empty({2, B, P}, opts) : at::Tensor();
  const int64_t* len = masked ? lengths->data_ptr<int64_t>() : nullptr;

  scalar_t* g_all = G.data_ptr<scalar_t>();
  scalar_t* y_all = y.data_ptr<scalar_t>();
  scalar_t* c_all = cs.data_ptr<scalar_t>();
  scalar_t* hs_all = masked ? hs.data_ptr<scalar_t>() : nullptr;
  scalar_t* r_all = proj ? R.data_ptr<scalar_t>() : nullptr;
  const scalar_t* h0p = h0.data_ptr<scalar_t>();
  const scalar_t* c0p = c0.data_ptr<scalar_t>();
  const scalar_t* whh = w_hh.data_ptr<scalar_t>();
  const bool small = !proj && B <= kSmallBatch;
  const int64_t grain = pointwise_grain(B, H);

  // Step t's buffers as raw pointers: a Tensor view per buffer and step (select) would be serial
  // time in every step.
  struct Step {
    const scalar_t* hp;  // h_{t-1}
    const scalar_t* cp;  // c_{t-1}
    scalar_t *co, *hn, *gt, *yt, *rt;
  };
  int64_t t_base = 0;  // the first step of the chunk in G
  auto step_at = [&](int64_t t) {
    Step s;
    s.hp = t == 0 ? h0p : (masked ? hs_all + ((t - 1) % 2) * B * P : y_all + (t - 1) * B * P);
    s.cp = t == 0 ? c0p : c_all + (needs_grad ? t - 1 : (t - 1) % 2) * B * H;
    s.co = c_all + (needs_grad ? t : t % 2) * B * H;
    s.hn = masked ? hs_all + (t % 2) * B * P : nullptr;
    s.gt = g_all + (t - t_base) * B * 4 * H;
    s.yt = y_all + t * B * P;
    s.rt = proj ? r_all + (needs_grad ? t : 0) * B * H : nullptr;
    return s;
  };
  // Cell update of units [j0, j1) of row b at step t, from pre-activations already in gt (the
  // gate rows are overwritten with the activated gates the backward reads).
  auto cell = [&](const Step& s, int64_t t, int64_t b, int64_t j0, int64_t j1) {
    if (!masked || t < len[b]) {
      scalar_t* h = proj ? s.rt + b * H : s.yt + b * P;
      fwd_row(s.gt + b * 4 * H, s.cp + b * H, s.co + b * H, h, j0, j1, H);
      if (masked && !proj) std::copy(h + j0, h + j1, s.hn + b * P + j0);
      return;
    }
    // Masked step: the state carries over and y is 0 (r = 0 keeps dW_hr = DH^T R finite).
    std::copy(s.cp + b * H + j0, s.cp + b * H + j1, s.co + b * H + j0);
    if (proj) {
      std::fill(s.rt + b * H + j0, s.rt + b * H + j1, scalar_t(0));
    } else {
      std::fill(s.yt + b * P + j0, s.yt + b * P + j1, scalar_t(0));
      std::copy(s.hp + b * P + j0, s.hp + b * P + j1, s.hn + b * P + j0);
    }
  };

  const int64_t groups = proj ? 1 : batch_groups(B, whhT);
  for (int64_t t0 = 0; t0 < T; t0 += Tc) {
    const int64_t t1 = std::min(T, t0 + Tc);
    t_base = t0;
    project_inputs<scalar_t>(x2, t0 * B, t1 * B, w_ih, wihT, few_rows, bias, G);
    if (groups > 1) {
      // Each thread runs the whole recurrence (of the chunk) of its own rows (batch_groups).
      for_batch_groups(B, groups, [&](int64_t b0, int64_t b1) {
        for (int64_t t = t0; t < t1; ++t) {
          const Step s = step_at(t);
          gemm_on_this_thread<scalar_t>(b1 - b0, 4 * H, P, s.hp + b0 * P, P, whhT, s.gt + b0 * 4 * H, 4 * H, true);
          for (int64_t b = b0; b < b1; ++b) cell(s, t, b, 0, H);
        }
      });
    }
    for (int64_t t = t0; t < t1 && groups == 1; ++t) {
      const Step s = step_at(t);
      if (small) {
        // Fused GEMV + cell: each thread owns hidden units [j0, j1) of every gate for all rows.
        at::parallel_for(0, H, gemv_grain(4 * P * B), [&](int64_t j0, int64_t j1) {
          for (int64_t b = 0; b < B; ++b) {
            scalar_t* g = s.gt + b * 4 * H;
            const scalar_t* hb = s.hp + b * P;
            for (int64_t k = 0; k < 4; ++k)
              for (int64_t j = j0; j < j1; ++j) g[k * H + j] += host::dot(whh + (k * H + j) * P, hb, P);
            cell(s, t, b, j0, j1);
          }
        });
      } else {
        // G_t += h_{t-1} W_hh^T, then the cell over all B x H units.
        if (few_rows)
          small_gemm_nt<scalar_t>(B, 4 * H, P, s.hp, whh, s.gt, true);
        else if (!fast_gemm<scalar_t>(B, 4 * H, P, s.hp, P, whhT, s.gt, 4 * H, true))
          G.narrow(0, (t - t0) * B, B).addmm_(t == 0 ? h0 : (masked ? hs[(t - 1) % 2] : y[t - 1]), w_hh.t());
        for_units(B, H, grain, [&](int64_t b, int64_t j0, int64_t j1) { cell(s, t, b, j0, j1); });
      }

      if (proj) {
        // h_t = r_t W_hr^T; masked rows keep the old state and output 0.
        at::Tensor yv = y[t];
        at::mm_out(yv, R[needs_grad ? t : 0], w_hr->t());
        if (masked) {
          for (int64_t b = 0; b < B; ++b) {
            if (t < len[b]) {
              std::copy(s.yt + b * P, s.yt + (b + 1) * P, s.hn + b * P);
            } else {
              std::copy(s.hp + b * P, s.hp + (b + 1) * P, s.hn + b * P);
              std::fill(s.yt + b * P, s.yt + (b + 1) * P, scalar_t(0));
            }
          }
        }
      }
    }
  }

  at::Tensor hT = (masked ? hs[(T - 1) % 2] : y[T - 1]).clone();
  at::Tensor cT = cs[needs_grad ? T - 1 : (T - 1) % 2].clone();
  std::vector<at::Tensor> out{y, hT, cT};
  if (needs_grad) {
    out.push_back(G.view({T, B, 4 * H}));
    out.push_back(cs);
    if (proj) out.push_back(R);
  }
  return out;
}

template <typename scalar_t>
std::vector<at::Tensor> bwd_impl(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& dcT,
                                 const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                 const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
                                 const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& lengths,
                                 const at::Tensor& y, const std::vector<at::Tensor>& saved) {
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_ih.size(0) / 4;
  const bool proj = defined(w_hr);
  const int64_t P = proj ? w_hr->size(0) : H;
  TORCH_CHECK(saved.size() == (proj ? 3u : 2u),
              "fastrnn: lstm_bwd_cpu needs the saved tensors of lstm_fwd_cpu (run it with needs_grad=True)");
  const at::Tensor& G = saved[0];
  const at::Tensor& cs = saved[1];
  TORCH_CHECK(G.sizes() == at::IntArrayRef({T, B, 4 * H}) && cs.sizes() == at::IntArrayRef({T, B, H}),
              "fastrnn: lstm_bwd_cpu got saved tensors of the wrong shape");
  const auto opts = x.options();
  const bool masked = defined(lengths);
  const int64_t* len = masked ? lengths->data_ptr<int64_t>() : nullptr;

  at::Tensor dG = out_empty({T, B, 4 * H}, opts);
  at::Tensor dh_buf = at::empty({2, B, P}, opts);   // dh_t and dh_{t-1}, used in turn
  dh_buf[0].copy_(dhT);
  at::Tensor dc = dcT.clone();                      // updated in place: dc_t -> dc_{t-1}
  at::Tensor DH = proj ? at::empty({T, B, P}, opts) : at::Tensor();  // dL/dh_t, for dW_hr
  at::Tensor dR = proj ? at::empty({B, H}, opts) : at::Tensor();
  // W_hh^T packed once so the small-batch GEMV dh_{t-1} = dG_t W_hh reads contiguous rows.
  const bool small = !proj && B <= kSmallBatch;
  at::Tensor whhT = small ? w_hh.t().contiguous() : at::Tensor();
  at::Tensor whh_p = small ? at::Tensor() : pack_for_gemm<scalar_t>(w_hh, T * B);  // for dh_{t-1} = dG_t W_hh

  const scalar_t* g_all = G.data_ptr<scalar_t>();
  const scalar_t* c_all = cs.data_ptr<scalar_t>();
  const scalar_t* dy_all = dy.data_ptr<scalar_t>();
  scalar_t* dg_all = dG.data_ptr<scalar_t>();
  scalar_t* dc_p = dc.data_ptr<scalar_t>();
  const int64_t grain = pointwise_grain(B, H);

  scalar_t* dh_all = dh_buf.data_ptr<scalar_t>();
  const scalar_t* c0p = c0.data_ptr<scalar_t>();
  // Step t's buffers as raw pointers.
  struct Step {
    const scalar_t *dhn, *gt, *ct, *cp, *dyt;  // dL/dh_t, gates, c_t, c_{t-1}, dy_t
    scalar_t *dhp, *dgt;                       // dL/dh_{t-1}, dG_t
    const scalar_t* dcell;                     // with proj: dL/d(o*tanh c) per unit, row stride H
  };
  auto step_at = [&](int64_t t) {
    Step s;
    s.dhn = dh_all + ((T - 1 - t) % 2) * B * P;
    s.dhp = dh_all + ((T - t) % 2) * B * P;
    s.gt = g_all + t * B * 4 * H;
    s.ct = c_all + t * B * H;
    s.cp = t == 0 ? c0p : c_all + (t - 1) * B * H;
    s.dyt = dy_all + t * B * P;
    s.dgt = dg_all + t * B * 4 * H;
    s.dcell = nullptr;
    return s;
  };
  // Cell backward of units [j0, j1) of row b at step t: dG_t (pre-activation grads) and
  // dc_{t-1}; masked rows pass dc on.
  auto cell = [&](const Step& s, int64_t t, int64_t b, int64_t j0, int64_t j1) {
    scalar_t* dg = s.dgt + b * 4 * H;
    if (masked && t >= len[b]) {
      for (int64_t k = 0; k < 4; ++k) std::fill(dg + k * H + j0, dg + k * H + j1, scalar_t(0));
      return;
    }
    const scalar_t* dh1 = proj ? s.dcell + b * H : s.dyt + b * P;
    const scalar_t* dh2 = proj ? nullptr : s.dhn + b * P;
    bwd_row(s.gt + b * 4 * H, s.cp + b * H, s.ct + b * H, dh1, dh2, dc_p + b * H, dg, j0, j1, H);
  };
  // dh_{t-1} of rows [b0, b1) that ended before step t: dh_t passes through.
  auto pass_masked = [&](const Step& s, int64_t t, int64_t b0, int64_t b1) {
    if (!masked) return;
    for (int64_t b = b0; b < b1; ++b)
      if (t >= len[b]) std::copy(s.dhn + b * P, s.dhn + (b + 1) * P, s.dhp + b * P);
  };

  const int64_t groups = proj ? 1 : batch_groups(B, whh_p);
  if (groups > 1) {
    // Each thread runs the whole recurrence of its own rows (batch_groups).
    for_batch_groups(B, groups, [&](int64_t b0, int64_t b1) {
      for (int64_t t = T - 1; t >= 0; --t) {
        const Step s = step_at(t);
        for (int64_t b = b0; b < b1; ++b) cell(s, t, b, 0, H);
        gemm_on_this_thread<scalar_t>(b1 - b0, P, 4 * H, s.dgt + b0 * 4 * H, 4 * H, whh_p, s.dhp + b0 * P, P, false);
        pass_masked(s, t, b0, b1);
      }
    });
  }
  for (int64_t t = T - 1; t >= 0 && groups == 1; --t) {
    Step s = step_at(t);
    // With proj the cell sees dL/dr_t = (dy_t + dh_t) W_hr.
    if (proj) {
      scalar_t* dht = DH[t].data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b) {
        const bool live = !masked || t < len[b];
        for (int64_t p = 0; p < P; ++p) dht[b * P + p] = live ? s.dyt[b * P + p] + s.dhn[b * P + p] : scalar_t(0);
      }
      at::mm_out(dR, DH[t], *w_hr);
      s.dcell = dR.data_ptr<scalar_t>();
    }
    auto cell_t = [&](int64_t b, int64_t j0, int64_t j1) { cell(s, t, b, j0, j1); };

    if (small) {
      for_units(B, H, 4096, cell_t);
      // dh_{t-1}[b,p] = sum_k dG_t[b,k] W_hh[k,p] as dot products over packed W_hh^T rows.
      const scalar_t* wt = whhT.data_ptr<scalar_t>();
      at::parallel_for(0, P, gemv_grain(4 * H * B), [&](int64_t p0, int64_t p1) {
        for (int64_t b = 0; b < B; ++b) {
          const bool live = !masked || t < len[b];
          for (int64_t p = p0; p < p1; ++p)
            s.dhp[b * P + p] = live ? host::dot(wt + p * 4 * H, s.dgt + b * 4 * H, 4 * H) : s.dhn[b * P + p];
        }
      });
    } else {
      for_units(B, H, grain, cell_t);
      if (!fast_gemm<scalar_t>(B, P, 4 * H, s.dgt, 4 * H, whh_p, s.dhp, P, false)) {
        at::Tensor dh_prev = dh_buf[(T - t) % 2];
        at::mm_out(dh_prev, dG[t], w_hh);
      }
      pass_masked(s, t, 0, B);
    }
  }

  // Weight and input gradients over all steps at once. The h_{t-1} of a live step is y_{t-1}
  // (masking only starts after a sequence's end) and masked steps have dG = 0, so y works.
  at::Tensor dG2 = dG.view({T * B, 4 * H});
  at::Tensor x2 = x.reshape({T * B, I});
  at::Tensor dx = out_empty({T, B, I}, opts);
  if (!fast_gemm<scalar_t>(T * B, I, 4 * H, dG2.data_ptr<scalar_t>(), 4 * H, pack_for_gemm<scalar_t>(w_ih, T * B),
                           dx.data_ptr<scalar_t>(), I, false))
    dx = at::mm(dG2, w_ih).view({T, B, I});
  // dW_ih = dG^T X and dW_hh = dG^T H_prev with H_prev = [h0; y_0..y_{T-2}], on the AVX-512 GEMM
  // where it applies, else ATen: one pass over B = [X | H_prev], which reads dG as the transposed
  // A in place and packs it once for both (fast_weight_grad's two outputs).
  at::Tensor dw_ih = at::empty({4 * H, I}, opts), dw_hh = at::empty({4 * H, P}, opts);
  const scalar_t* dg = dG2.data_ptr<scalar_t>();
  at::Tensor xh_p = pack_rows_for_gemm<scalar_t>(x2, at::Tensor(), 4 * H, h0,
                                                 y.narrow(0, 0, T - 1).view({(T - 1) * B, P}));
  if (!xh_p.defined()) {
    at::mm_out(dw_ih, dG2.t(), x2);
    at::mm_out(dw_hh, dG2.t(), at::cat({h0.unsqueeze(0), y.narrow(0, 0, T - 1)}).view({T * B, P}));
  } else {
    fast_weight_grad<scalar_t>(4 * H, I + P, T * B, dg, 4 * H, xh_p, dw_ih.data_ptr<scalar_t>(), I,
                               dw_hh.data_ptr<scalar_t>(), P, I);
  }
  at::Tensor db = (defined(b_ih) || defined(b_hh)) ? dG2.sum(0) : at::Tensor();
  at::Tensor db_ih = defined(b_ih) ? db : at::Tensor();
  at::Tensor db_hh = defined(b_hh) ? (defined(b_ih) ? db.clone() : db) : at::Tensor();
  at::Tensor dw_hr = proj ? at::mm(DH.view({T * B, P}).t(), saved[2].reshape({T * B, H})) : at::Tensor();
  at::Tensor dh0 = dh_buf[T % 2].clone();
  return {dx, dh0, dc, dw_ih, dw_hh, db_ih, db_hh, dw_hr};
}

}  // namespace

std::vector<at::Tensor> lstm_fwd_cpu(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const OptTensor& b_ih, const OptTensor& b_hh,
                                     const OptTensor& w_hr, const OptTensor& lengths,
                                     bool needs_grad) {
  auto c = [](const OptTensor& t) -> OptTensor { return defined(t) ? OptTensor(t->contiguous()) : OptTensor(); };
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_fwd_cpu", [&] {
    out = fwd_impl<scalar_t>(x.contiguous(), h0.contiguous(), c0.contiguous(), w_ih.contiguous(),
                             w_hh.contiguous(), c(b_ih), c(b_hh), c(w_hr), c(lengths), needs_grad);
  });
  return out;
}

std::vector<at::Tensor> lstm_bwd_cpu(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& dcT,
                                     const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const OptTensor& b_ih, const OptTensor& b_hh,
                                     const OptTensor& w_hr, const OptTensor& lengths,
                                     const at::Tensor& y, const std::vector<at::Tensor>& saved) {
  auto c = [](const OptTensor& t) -> OptTensor { return defined(t) ? OptTensor(t->contiguous()) : OptTensor(); };
  std::vector<at::Tensor> saved_c;
  for (const auto& s : saved) saved_c.push_back(s.contiguous());
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_bwd_cpu", [&] {
    out = bwd_impl<scalar_t>(dy.contiguous(), dhT.contiguous(), dcT.contiguous(), x.contiguous(),
                             h0.contiguous(), c0.contiguous(), w_ih.contiguous(), w_hh.contiguous(),
                             c(b_ih), c(b_hh), c(w_hr), c(lengths), y.contiguous(), saved_c);
  });
  return out;
}

}  // namespace fastrnn
