// LSTM kernel API (one layer, one direction, forward in time).
// Shapes: T time, B batch, I input size, H hidden size, P output size (P = H, or proj_size when
// w_hr is given). Gates [.., 4H] in order i|f|g|o as torch.nn.LSTM.
//
// lstm_fwd_<dev>(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, needs_grad) -> {y, hT, cT, saved...}
//   x       [T,B,I]  in
//   h0      [B,P]    in       c0 [B,H] in
//   w_ih    [4H,I]   in       w_hh [4H,P] in
//   b_ih, b_hh [4H]  in, optional (bias=False)
//   w_hr    [P,H]    in, optional (proj_size: h = w_hr @ (o * tanh(c)))
//   lengths [B] int64 on x's device, optional: steps t >= lengths[b] leave (h, c) unchanged
//           and write y[t,b] = 0; hT/cT are then each sequence's state at its own length.
//   y [T,B,P], hT [B,P], cT [B,H]: outputs, freshly allocated.
//   saved: backend-specific tensors the backward of the same backend needs (only when needs_grad).
//
// lstm_bwd_<dev>(dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, y, saved)
//   -> {dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr}   (undefined tensors where the input was absent)
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <vector>

namespace fastrnn {

using OptTensor = c10::optional<at::Tensor>;

std::vector<at::Tensor> lstm_fwd_cpu(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const OptTensor& b_ih, const OptTensor& b_hh,
                                     const OptTensor& w_hr, const OptTensor& lengths,
                                     bool needs_grad);
std::vector<at::Tensor> lstm_bwd_cpu(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& dcT,
                                     const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                                     const OptTensor& b_ih, const OptTensor& b_hh,
                                     const OptTensor& w_hr, const OptTensor& lengths,
                                     const at::Tensor& y, const std::vector<at::Tensor>& saved);

#ifdef FASTRNN_WITH_CUDA
std::vector<at::Tensor> lstm_fwd_cuda(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                      const at::Tensor& w_ih, const at::Tensor& w_hh,
                                      const OptTensor& b_ih, const OptTensor& b_hh,
                                      const OptTensor& w_hr, const OptTensor& lengths,
                                      bool needs_grad);
std::vector<at::Tensor> lstm_bwd_cuda(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& dcT,
                                      const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                      const at::Tensor& w_ih, const at::Tensor& w_hh,
                                      const OptTensor& b_ih, const OptTensor& b_hh,
                                      const OptTensor& w_hr, const OptTensor& lengths,
                                      const at::Tensor& y, const std::vector<at::Tensor>& saved);
#endif

}  // namespace fastrnn
