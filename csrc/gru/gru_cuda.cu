// CUDA kernels for the GRU family: placeholder until the CUDA kernel work lands.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/cell_math.h"
#include "gru/gru.h"

namespace fastrnn {

std::vector<at::Tensor> gru_fwd_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const OptTensor&, const OptTensor&,
                                     const OptTensor&, bool) {
  TORCH_CHECK(false, "fastrnn: gru_fwd_cuda not implemented yet");
}
std::vector<at::Tensor> gru_bwd_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const OptTensor&, const OptTensor&, const OptTensor&,
                                     const at::Tensor&, const std::vector<at::Tensor>&) {
  TORCH_CHECK(false, "fastrnn: gru_bwd_cuda not implemented yet");
}

}  // namespace fastrnn
