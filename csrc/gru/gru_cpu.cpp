// C++ CPU kernels for the GRU family: placeholder until the CPU kernel work lands.
#include <ATen/ATen.h>

#include "gru/gru.h"

namespace fastrnn {
std::vector<at::Tensor> gru_fwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, const OptTensor&, const OptTensor&,
                                    const OptTensor&, bool) {
  TORCH_CHECK(false, "fastrnn: gru_fwd_cpu not implemented yet");
}
std::vector<at::Tensor> gru_bwd_cpu(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                    const OptTensor&, const OptTensor&, const OptTensor&,
                                    const at::Tensor&, const std::vector<at::Tensor>&) {
  TORCH_CHECK(false, "fastrnn: gru_bwd_cpu not implemented yet");
}
}  // namespace fastrnn
