// GRU kernel API (one layer, one direction, forward in time).
// Shapes: T time, B batch, I input size, H hidden size. Gates [.., 3H] in order r|z|n as
// torch.nn.GRU, with torch's formula n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
//
// gru_fwd_<dev>(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, needs_grad) -> {y, hT, saved...}
//   x [T,B,I] in; h0 [B,H] in; w_ih [3H,I] in; w_hh [3H,H] in; b_ih, b_hh [3H] in, optional;
//   lengths [B] int64 on x's device, optional (steps t >= lengths[b] keep h, write y = 0).
//   y [T,B,H], hT [B,H]: outputs. saved: backend-specific, only when needs_grad.
//
// gru_bwd_<dev>(dy, dhT, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, y, saved)
//   -> {dx, dh0, dw_ih, dw_hh, db_ih, db_hh}   (undefined where the input was absent)
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <vector>

namespace fastrnn {

using OptTensor = c10::optional<at::Tensor>;

std::vector<at::Tensor> gru_fwd_cpu(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                                    const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                    const OptTensor& lengths, bool needs_grad);
std::vector<at::Tensor> gru_bwd_cpu(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& x,
                                    const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                    const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& lengths,
                                    const at::Tensor& y, const std::vector<at::Tensor>& saved);
#ifdef FASTRNN_WITH_CUDA
std::vector<at::Tensor> gru_fwd_cuda(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                                     const at::Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                     const OptTensor& lengths, bool needs_grad);
std::vector<at::Tensor> gru_bwd_cuda(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& x,
                                     const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& lengths,
                                     const at::Tensor& y, const std::vector<at::Tensor>& saved);
#endif

}  // namespace fastrnn
