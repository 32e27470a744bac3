// Thin binding for the fused attention kernels: check device/dtype/shapes, dispatch to the cpu
// or cuda host function (attention.h), with the GIL released around the kernels.
#include <torch/extension.h>

#include "attention/attention.h"
#include "common/checks.h"

namespace fastrnn {
namespace {

void check_attention_args(const at::Tensor& qp, const at::Tensor& kp, const at::Tensor& v,
                          const OptTensor& mask, const OptTensor& v_score) {
  check_shape(qp, "qp", {-1, -1, -1});
  const int64_t B = qp.size(0), Tq = qp.size(1), D = qp.size(2);
  check_same(kp, "kp", qp, "qp");
  check_shape(kp, "kp", {B, -1, D});
  const int64_t Tk = kp.size(1);
  check_same(v, "v", qp, "qp");
  check_shape(v, "v", {B, Tk, -1});
  TORCH_CHECK_VALUE(B > 0 && Tq > 0 && Tk > 0 && D > 0 && v.size(2) > 0,
                    "fastrnn: attention kernels need non-empty tensors, got qp ",
                    shape_str(qp.sizes()), ", kp ", shape_str(kp.sizes()), ", v ",
                    shape_str(v.sizes()));
  TORCH_CHECK_TYPE(at::isFloatingType(qp.scalar_type()), "fastrnn: qp must be floating point, got ",
                   qp.scalar_type());
  TORCH_CHECK(qp.is_contiguous() && kp.is_contiguous() && v.is_contiguous(),
              "fastrnn: qp, kp and v must be contiguous");
  if (defined(mask)) {
    TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, "fastrnn: mask must be bool, got ",
                     mask->scalar_type());
    TORCH_CHECK(mask->device() == qp.device(), "fastrnn: mask must be on ", qp.device());
    check_shape(*mask, "mask", {B, Tk});
    TORCH_CHECK(mask->is_contiguous(), "fastrnn: mask must be contiguous");
  }
  check_opt(v_score, "v_score", qp, "qp", {D});
}

std::vector<at::Tensor> attention_fwd(const at::Tensor& qp, const at::Tensor& kp,
                                      const at::Tensor& v, const OptTensor& mask,
                                      const OptTensor& v_score, bool needs_grad) {
  check_attention_args(qp, kp, v, mask, v_score);
  py::gil_scoped_release no_gil;
  if (qp.is_cuda()) {
#ifdef FASTRNN_WITH_CUDA
    return attention_fwd_cuda(qp, kp, v, mask, v_score, needs_grad);
#else
    TORCH_CHECK(false, "fastrnn._C was built without CUDA");
#endif
  }
  TORCH_CHECK(qp.is_cpu(), "fastrnn: attention_fwd takes CPU or CUDA tensors, got ", qp.device());
  return attention_fwd_cpu(qp, kp, v, mask, v_score, needs_grad);
}

std::vector<at::Tensor> attention_bwd(const at::Tensor& dctx, const at::Tensor& dweights,
                                      const at::Tensor& qp, const at::Tensor& kp,
                                      const at::Tensor& v, const OptTensor& mask,
                                      const OptTensor& v_score, const at::Tensor& weights,
                                      const std::vector<at::Tensor>& saved) {
  check_attention_args(qp, kp, v, mask, v_score);
  const int64_t B = qp.size(0), Tq = qp.size(1), Tk = kp.size(1), Dv = v.size(2);
  check_same(dctx, "dctx", qp, "qp");
  check_shape(dctx, "dctx", {B, Tq, Dv});
  check_same(dweights, "dweights", qp, "qp");
  check_shape(dweights, "dweights", {B, Tq, Tk});
  check_same(weights, "weights", qp, "qp");
  check_shape(weights, "weights", {B, Tq, Tk});
  TORCH_CHECK(dctx.is_contiguous() && dweights.is_contiguous() && weights.is_contiguous(),
              "fastrnn: dctx, dweights and weights must be contiguous");
  py::gil_scoped_release no_gil;
  if (qp.is_cuda()) {
#ifdef FASTRNN_WITH_CUDA
    return attention_bwd_cuda(dctx, dweights, qp, kp, v, mask, v_score, weights, saved);
#else
    TORCH_CHECK(false, "fastrnn._C was built without CUDA");
#endif
  }
  return attention_bwd_cpu(dctx, dweights, qp, kp, v, mask, v_score, weights, saved);
}

}  // namespace

void attention_init(py::module& m) {
  m.def("attention_fwd", &attention_fwd,
        "Fused attention forward: scores, masked softmax, weighted sum (see csrc/attention/attention.h)",
        py::arg("qp"), py::arg("kp"), py::arg("v"), py::arg("mask"), py::arg("v_score"),
        py::arg("needs_grad"));
  m.def("attention_bwd", &attention_bwd,
        "Fused attention backward (see csrc/attention/attention.h)", py::arg("dctx"),
        py::arg("dweights"), py::arg("qp"), py::arg("kp"), py::arg("v"), py::arg("mask"),
        py::arg("v_score"), py::arg("weights"), py::arg("saved"));
}

}  // namespace fastrnn
