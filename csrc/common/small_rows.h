// CUDA kernels for the few rows of a decoding step (B <= kCudaSmallRows), where every matrix
// product is a matrix-vector product bound by reading the weights (csrc/common/small_rows_cuda.cu):
//
//   linear_small_cuda(x [M,K1], x2 [M,K2]?, W [N,K1+K2], b [N]?, tanh) -> act([x, x2] W^T + b)
//     (fastrnn.ops.linear and linear_cat on CUDA; act = tanh or nothing)
//   cell_step_small_cuda(x [B,I], h0 [B,H], c0 [B,H]?, W_ih [G*H,I], W_hh [G*H,H], b_ih?, b_hh?)
//     -> {y [1,B,H], hT [B,H] (, cT [B,H])}: one LSTM (c0 given, G=4) or GRU (G=3) step, inference
//     only, in ONE kernel: x W_ih^T + b_ih, h W_hh^T + b_hh and the cell's pointwise math.
//
// linear: a warp per output. cell: a block of 2G warps per hidden unit, a warp per row of W_ih
// and W_hh (many loads in flight), the cell math from the 2G sums in shared memory. The weights
// stream once with 16-byte loads; the few rows of x and h are read from L1/L2 by every warp.
// Accumulation in float (double for fp64). Against cuBLAS at B=1 on an H100 (bench/decode_profile.py, 2026-11-27): six
// GEMVs of a GRU decoder step took 35 us for 24 MB of weights (0.7 TB/s), and the GRU's step on
// the standard path was 6 kernels (GEMV, bias add, copy of h0, GEMV, pointwise, copy of hT).
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <vector>

namespace fastrnn {
namespace cuda {

constexpr int64_t kCudaSmallRows = 8;

// Whether the kernels take M rows of K inputs of this dtype: 1 <= M <= kCudaSmallRows.
bool small_rows_fit(int64_t M, int64_t K, at::ScalarType dt);

at::Tensor linear_small_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& x2, const at::Tensor& w,
                             const c10::optional<at::Tensor>& b, bool tanh_out);

std::vector<at::Tensor> cell_step_small_cuda(const at::Tensor& x, const at::Tensor& h0,
                                             const c10::optional<at::Tensor>& c0, const at::Tensor& w_ih,
                                             const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
                                             const c10::optional<at::Tensor>& b_hh);

}  // namespace cuda
}  // namespace fastrnn
