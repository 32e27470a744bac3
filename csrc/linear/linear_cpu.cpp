// Small-batch linear layer on the CPU: y[M, N] = x[M, K] W[N, K]^T (+ b), for the few rows of a
// decoding step (the attentional layer, the output projection over the vocabulary).
//
// At M = 1 this is a matrix-vector product bound by reading W once: ATen's CPU GEMV (MKL's sgemv)
// runs it on one thread at about 11 GB/s on the 2-core dev machine (V=20000 x 600: 4.2 ms), where
// two threads can stream 47 GB/s. Here the N outputs are split over threads (about 128K MACs a
// task) and each task takes 4 rows of W at a time, 4 independent accumulators per x row, so the
// loads of W overlap and each row block is read from memory once for all M rows of x.
// Inference only: fastrnn.ops.linear sends calls that need gradients to F.linear.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include "common/cell_math.h"
#include "common/checks.h"
#include "common/cpu_kernels.h"
#ifdef FASTRNN_WITH_CUDA
#include "common/small_rows.h"
#endif

namespace fastrnn {
namespace {

using OptTensor = c10::optional<at::Tensor>;

at::Tensor linear_small(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias) {
  check_shape(x, "x", {-1, -1});
  const int64_t M = x.size(0), K = x.size(1);
  check_same(weight, "weight", x, "x");
  check_shape(weight, "weight", {-1, K});
  const int64_t N = weight.size(0);
  check_opt(bias, "bias", x, "x", {N});
  if (x.is_cuda()) {
#ifdef FASTRNN_WITH_CUDA
    TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()), "fastrnn: linear_small takes floating point, got ",
                     x.scalar_type());
    py::gil_scoped_release no_gil;
    return cuda::linear_small_cuda(x, c10::nullopt, weight, bias, false);
#else
    TORCH_CHECK(false, "fastrnn._C was built without CUDA");
#endif
  }
  TORCH_CHECK(x.is_cpu(), "fastrnn: linear_small takes CPU or CUDA tensors, got ", x.device());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                   "fastrnn: linear_small takes float32 or float64, got ", x.scalar_type());
  py::gil_scoped_release no_gil;
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  TORCH_CHECK_VALUE(M <= cpu::kSmallRows, "fastrnn: linear_small takes up to ", cpu::kSmallRows, " rows, got ", M);
  if (defined(bias)) y.copy_(bias->unsqueeze(0).expand({M, N}));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_small", [&] {
    cpu::small_gemm_nt<scalar_t>(M, N, K, xc.data_ptr<scalar_t>(), wc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                 defined(bias));
  });
  return y;
}

#ifdef FASTRNN_WITH_CUDA
// act([x1, x2] W^T + b) for a few rows on CUDA, the concatenation and the activation (tanh or
// none) inside the kernel: a decoder's attentional layer tanh(W_c [ctx; h]) in one launch.
at::Tensor linear_small_cat(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor& weight,
                            const OptTensor& bias, bool tanh_out) {
  check_shape(x1, "x1", {-1, -1});
  const int64_t M = x1.size(0), K1 = x1.size(1);
  check_same(x2, "x2", x1, "x1");
  check_shape(x2, "x2", {M, -1});
  check_same(weight, "weight", x1, "x1");
  check_shape(weight, "weight", {-1, K1 + x2.size(1)});
  check_opt(bias, "bias", x1, "x1", {weight.size(0)});
  TORCH_CHECK(x1.is_cuda(), "fastrnn: linear_small_cat takes CUDA tensors, got ", x1.device());
  TORCH_CHECK_TYPE(at::isFloatingType(x1.scalar_type()), "fastrnn: linear_small_cat takes floating point, got ",
                   x1.scalar_type());
  py::gil_scoped_release no_gil;
  return cuda::linear_small_cuda(x1, x2, weight, bias, tanh_out);
}
#endif

}  // namespace

void linear_init(py::module& m) {
  m.def("linear_small", &linear_small,
        "x [M, K] W[N, K]^T + b for small M (decoding steps): on the CPU a parallel, memory-streaming GEMV; "
        "on CUDA a warp per output with 16-byte weight loads (common/small_rows.h)",
        py::arg("x"), py::arg("weight"), py::arg("bias"));
  m.attr("SMALL_ROWS") = cpu::kSmallRows;  // fastrnn/ops/linear.py routes by the same bound
#ifdef FASTRNN_WITH_CUDA
  m.attr("CUDA_SMALL_ROWS") = cuda::kCudaSmallRows;
  m.def("linear_small_cat", &linear_small_cat,
        "act([x1, x2] W^T + b) for a few rows on CUDA (act: tanh when tanh=True), one kernel",
        py::arg("x1"), py::arg("x2"), py::arg("weight"), py::arg("bias"), py::arg("tanh"));
  m.def("linear_small_cuda_fits",
        [](int64_t M, int64_t K, bool fp64) { return cuda::small_rows_fit(M, K, fp64 ? at::kDouble : at::kFloat); },
        "Whether the CUDA small-rows kernel takes M rows of K inputs",
        py::arg("M"), py::arg("K"), py::arg("fp64"));
#endif
}

}  // namespace fastrnn
