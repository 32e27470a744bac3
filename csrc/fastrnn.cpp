// The only PYBIND11_MODULE: each kernel family registers its functions.
#include <torch/extension.h>

namespace fastrnn {
void lstm_init(py::module& m);
void gru_init(py::module& m);
void attention_init(py::module& m);
void linear_init(py::module& m);
void decode_init(py::module& m);
}  // namespace fastrnn

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastrnn kernels: fused LSTM/GRU, attention, small-batch linear, greedy decoding's step (C++ CPU, CUDA)";
#ifdef FASTRNN_WITH_CUDA
  m.def("with_cuda", []() { return true; }, "True when the CUDA kernels were compiled and linked");
#else
  m.def("with_cuda", []() { return false; }, "True when the CUDA kernels were compiled and linked");
#endif
  fastrnn::lstm_init(m);
  fastrnn::gru_init(m);
  fastrnn::attention_init(m);
  fastrnn::linear_init(m);
  fastrnn::decode_init(m);
}
