// One greedy-decoding step's bookkeeping in one kernel (fastrnn/nn/decoding.py, greedy_decode).
//
// greedy_update_<dev>(logits, weights, t, t_next, pad, eos, maxlen, alive, tokens, scores, out_len, prev, attn)
//   logits  [B,V]   in   the step's logits (float32/64, cuda also float16/bfloat16)
//   weights [B,S]   in, optional: the step's attention weights (attn's dtype)
//   t       [1]     in   long, the step's index (the column of tokens/attn it writes)
//   t_next  [1]     out, optional: t + 1 (the next step's index: two buffers taking turns spare a
//                   CUDA graph the kernel that would advance t in place)
//   maxlen  [B]     in   long, the most tokens row b may emit
//   alive   [B]     in/out bool: row b is still decoding
//   tokens  [B,L]   out  long, column t: the chosen token, or pad where the row emits nothing
//   scores  [B]     in/out float32: += log_softmax(logits)[tok] while alive
//   out_len [B]     in/out long: += 1 where the row emits a token
//   prev    [B]     out  long: the chosen token (the next step's input)
//   attn    [B,L,S] out, optional: column t = weights where the row emits, else 0
// Per row, as log_softmax then max outside pad: tok = the first argmax over v != pad of
// lp = logits - logsumexp(logits) (every v, pad included, in the normalisation), where a NaN of lp
// comes first (all of them when a logit is NaN, so the first token that is not pad); best = lp[tok];
// emit = alive && tok != eos; alive = emit && t + 1 < maxlen. A column t >= L is not written.
// Without t_next, the caller advances t (t += 1) after the call.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace fastrnn {

using OptTensor = c10::optional<at::Tensor>;

void greedy_update_cuda(const at::Tensor& logits, const OptTensor& weights, const at::Tensor& t,
                        const OptTensor& t_next, int64_t pad, int64_t eos, const at::Tensor& maxlen, const at::Tensor& alive,
                        const at::Tensor& tokens, const at::Tensor& scores, const at::Tensor& out_len,
                        const at::Tensor& prev, const OptTensor& attn);

}  // namespace fastrnn
