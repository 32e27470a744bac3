// Fused attention-score kernel API (scores, masked softmax and the weighted sum in one op).
//
// The linear maps of each kind (W k, V k, U q, W1 k, W2 q) are GEMMs done by the caller
// (fastrnn/ops/attention/__init__.py); the kernel sees only the mapped query and keys:
//   dot-like (dot, general, low_rank; v_score absent):  e[b,i,j] = qp[b,i,:] . kp[b,j,:]
//   additive (v_score given):   e[b,i,j] = sum_h v_score[h] * tanh(qp[b,i,h] + kp[b,j,h])
// then p = masked_softmax_j(e) and ctx[b,i,:] = sum_j p[b,i,j] * v[b,j,:].
// The additive kernels never hold the [B,Tq,Tk,D] tensor: tanh is recomputed in the backward.
//
// attention_fwd_<dev>(qp, kp, v, mask, v_score, needs_grad) -> {ctx, weights, saved...}
//   qp      [B,Tq,D]  in     mapped query
//   kp      [B,Tk,D]  in     mapped keys (same D as qp)
//   v       [B,Tk,Dv] in     values
//   mask    [B,Tk] bool, optional: True = keep. A row with every key masked gets zero weights
//           and zero context (never NaN).
//   v_score [D], optional: present selects the additive score.
//   ctx [B,Tq,Dv], weights [B,Tq,Tk]: outputs, freshly allocated (masked entries are exactly 0).
//   saved: backend-specific tensors for the same backend's backward (none for cpu/cuda: the
//          backward reads `weights`, an output it needs anyway, instead of a log-sum-exp).
//
// attention_bwd_<dev>(dctx, dweights, qp, kp, v, mask, v_score, weights, saved)
//   -> {dqp, dkp, dv, dv_score}   (dv_score undefined when v_score is absent)
//   dctx [B,Tq,Dv], dweights [B,Tq,Tk]: incoming gradients of the two outputs.
//   The softmax gradient is ds = p * (dP - sum_j p dP) with dP = dweights + dctx v^T.
//
// All tensors contiguous, same dtype and device. cpu: float32, float64.
// cuda: float32, float64, float16, bfloat16 (accumulation in float/double).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <vector>

namespace fastrnn {

using OptTensor = c10::optional<at::Tensor>;

std::vector<at::Tensor> attention_fwd_cpu(const at::Tensor& qp, const at::Tensor& kp,
                                          const at::Tensor& v, const OptTensor& mask,
                                          const OptTensor& v_score, bool needs_grad);
std::vector<at::Tensor> attention_bwd_cpu(const at::Tensor& dctx, const at::Tensor& dweights,
                                          const at::Tensor& qp, const at::Tensor& kp,
                                          const at::Tensor& v, const OptTensor& mask,
                                          const OptTensor& v_score, const at::Tensor& weights,
                                          const std::vector<at::Tensor>& saved);

#ifdef FASTRNN_WITH_CUDA
std::vector<at::Tensor> attention_fwd_cuda(const at::Tensor& qp, const at::Tensor& kp,
                                           const at::Tensor& v, const OptTensor& mask,
                                           const OptTensor& v_score, bool needs_grad);
std::vector<at::Tensor> attention_bwd_cuda(const at::Tensor& dctx, const at::Tensor& dweights,
                                           const at::Tensor& qp, const at::Tensor& kp,
                                           const at::Tensor& v, const OptTensor& mask,
                                           const OptTensor& v_score, const at::Tensor& weights,
                                           const std::vector<at::Tensor>& saved);
#endif

}  // namespace fastrnn
