// C++ CPU kernels for the LSTM family: placeholder until the CPU kernel work lands.
#include <ATen/ATen.h>

#include "lstm/lstm.h"

namespace fastrnn {
std::vector<at::Tensor> lstm_fwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, const OptTensor&,
                                     const OptTensor&, const OptTensor&, const OptTensor&, bool) {
  TORCH_CHECK(false, "fastrnn: lstm_fwd_cpu not implemented yet");
}
std::vector<at::Tensor> lstm_bwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, const OptTensor&,
                                     const OptTensor&, const OptTensor&, const OptTensor&,
                                     const at::Tensor&, const std::vector<at::Tensor>&) {
  TORCH_CHECK(false, "fastrnn: lstm_bwd_cpu not implemented yet");
}
}  // namespace fastrnn
