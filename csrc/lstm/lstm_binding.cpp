// Thin binding: check device/dtype/shapes, guard the device, dispatch to the cpu or cuda host
// function (lstm.h), with the GIL released around the kernels.
#include <torch/extension.h>

#include "common/checks.h"
#include "lstm/lstm.h"

namespace fastrnn {
namespace {

void check_lstm_args(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                     const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
                     const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& lengths) {
  check_shape(x, "x", {-1, -1, -1});
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2);
  TORCH_CHECK_VALUE(T > 0 && B > 0, "fastrnn: x must have T > 0 and B > 0, got ", shape_str(x.sizes()));
  TORCH_CHECK_VALUE(w_ih.dim() == 2 && w_ih.size(0) % 4 == 0, "fastrnn: w_ih must have shape [4H, I], got ",
                    shape_str(w_ih.sizes()));
  const int64_t H = w_ih.size(0) / 4;
  const int64_t P = defined(w_hr) ? w_hr->size(0) : H;
  check_same(w_ih, "w_ih", x, "x");
  check_shape(w_ih, "w_ih", {4 * H, I});
  check_same(w_hh, "w_hh", x, "x");
  check_shape(w_hh, "w_hh", {4 * H, P});
  check_same(h0, "h0", x, "x");
  check_shape(h0, "h0", {B, P});
  check_same(c0, "c0", x, "x");
  check_shape(c0, "c0", {B, H});
  check_opt(b_ih, "b_ih", x, "x", {4 * H});
  check_opt(b_hh, "b_hh", x, "x", {4 * H});
  check_opt(w_hr, "w_hr", x, "x", {P, H});
  if (defined(lengths)) {
    TORCH_CHECK_TYPE(lengths->scalar_type() == at::kLong, "fastrnn: lengths must be int64, got ",
                     lengths->scalar_type());
    TORCH_CHECK(lengths->device() == x.device(), "fastrnn: lengths must be on ", x.device());
    check_shape(*lengths, "lengths", {B});
  }
}

std::vector<at::Tensor> lstm_fwd(const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                 const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
                                 const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& lengths,
                                 bool needs_grad) {
  check_lstm_args(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths);
  py::gil_scoped_release no_gil;
  if (x.is_cuda()) {
#ifdef FASTRNN_WITH_CUDA
    return lstm_fwd_cuda(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, needs_grad);
#else
    TORCH_CHECK(false, "fastrnn._C was built without CUDA");
#endif
  }
  TORCH_CHECK(x.is_cpu(), "fastrnn: lstm_fwd takes CPU or CUDA tensors, got ", x.device());
  return lstm_fwd_cpu(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, needs_grad);
}

std::vector<at::Tensor> lstm_bwd(const at::Tensor& dy, const at::Tensor& dhT, const at::Tensor& dcT,
                                 const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0,
                                 const at::Tensor& w_ih, const at::Tensor& w_hh, const OptTensor& b_ih,
                                 const OptTensor& b_hh, const OptTensor& w_hr, const OptTensor& lengths,
                                 const at::Tensor& y, const std::vector<at::Tensor>& saved) {
  check_lstm_args(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths);
  check_same(dy, "dy", y, "y");
  check_shape(dy, "dy", y.sizes().vec());
  check_shape(dhT, "dhT", h0.sizes().vec());
  check_shape(dcT, "dcT", c0.sizes().vec());
  py::gil_scoped_release no_gil;
  if (x.is_cuda()) {
#ifdef FASTRNN_WITH_CUDA
    return lstm_bwd_cuda(dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, y, saved);
#else
    TORCH_CHECK(false, "fastrnn._C was built without CUDA");
#endif
  }
  return lstm_bwd_cpu(dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, y, saved);
}

}  // namespace

void lstm_init(py::module& m) {
  m.def("lstm_fwd", &lstm_fwd, "LSTM forward over a sequence (see csrc/lstm/lstm.h)", py::arg("x"),
        py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"),
        py::arg("w_hr"), py::arg("lengths"), py::arg("needs_grad"));
  m.def("lstm_bwd", &lstm_bwd, "LSTM backward through time (see csrc/lstm/lstm.h)");
}

}  // namespace fastrnn
