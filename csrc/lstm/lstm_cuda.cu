// CUDA kernels for the LSTM family: placeholder until the CUDA kernel work lands.
// Kept on light headers (TOOLCHAIN.md): no ATen/cuda/CUDAContext.h.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "common/cell_math.h"
#include "lstm/lstm.h"

namespace fastrnn {

std::vector<at::Tensor> lstm_fwd_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const at::Tensor&, const at::Tensor&, const OptTensor&,
                                      const OptTensor&, const OptTensor&, const OptTensor&, bool) {
  TORCH_CHECK(false, "fastrnn: lstm_fwd_cuda not implemented yet");
}
std::vector<at::Tensor> lstm_bwd_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const at::Tensor&, const at::Tensor&, const OptTensor&,
                                      const OptTensor&, const OptTensor&, const OptTensor&,
                                      const at::Tensor&, const std::vector<at::Tensor>&) {
  TORCH_CHECK(false, "fastrnn: lstm_bwd_cuda not implemented yet");
}

}  // namespace fastrnn
