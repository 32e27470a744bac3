// Greedy decoding's per-step bookkeeping (decode.h): the CPU kernel and the binding for both.
//
// ATen runs the step's bookkeeping as about twenty small ops (log_softmax over V, the pad mask,
// max, the masked score and token updates, the attention column); on a GPU each is a kernel of
// a few microseconds plus its launch gap, together more than the decoder's GEMVs at B=1. Here it
// is one pass per row: max and the sum of exp over V (fp32 exp vectorized, exp_f32), the first
// argmax outside pad, then the row's counters.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>

#include "common/cell_math.h"
#include "common/checks.h"
#include "decode/decode.h"

namespace fastrnn {
namespace {

template <typename T> inline T exp_cpu(T x) { return std::exp(x); }
template <> inline float exp_cpu<float>(float x) { return host::exp_f32(x); }

// Row b's (token, log-probability): the first argmax over v != pad of log_softmax(logits) (NaN
// entries first, as torch.max), and its value logits[tok] - logsumexp(logits).
template <typename T>
std::pair<int64_t, double> pick_row(const T* x, int64_t V, int64_t pad) {
  T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t v = 0; v < V; ++v) m = x[v] > m ? x[v] : m;
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t v = 0; v < V; ++v) s += exp_cpu<T>(x[v] - m);
  const double lse = static_cast<double>(m) + std::log(static_cast<double>(s));
  int64_t tok = -1;
  if (std::isnan(lse) || lse == std::numeric_limits<double>::infinity()) {
    // log_softmax has NaN entries (every one where lse is NaN; the +inf logits where it is +inf):
    // torch.max returns the first of them
    for (int64_t v = 0; v < V && tok < 0; ++v)
      if (v != pad && std::isnan(static_cast<double>(x[v]) - lse)) tok = v;
  }
  if (tok < 0) {
    T best = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : best)
    for (int64_t v = 0; v < V; ++v) best = (v != pad && x[v] > best) ? x[v] : best;
    for (int64_t v = 0; v < V && tok < 0; ++v)
      if (v != pad && x[v] == best) tok = v;
  }
  if (tok < 0) tok = 0;  // V = 1: only pad
  return {tok, static_cast<double>(x[tok]) - lse};
}

void greedy_update_cpu(const at::Tensor& logits, const OptTensor& weights, const at::Tensor& t,
                       const OptTensor& t_next, int64_t pad, int64_t eos, const at::Tensor& maxlen, const at::Tensor& alive,
                       const at::Tensor& tokens, const at::Tensor& scores, const at::Tensor& out_len,
                       const at::Tensor& prev, const OptTensor& attn) {
  const int64_t B = logits.size(0), V = logits.size(1), L = tokens.size(1);
  const int64_t step = t.item<int64_t>();
  TORCH_CHECK_VALUE(step >= 0, "fastrnn: t must be >= 0, got ", step);
  const int64_t* ml = maxlen.data_ptr<int64_t>();
  bool* al = alive.data_ptr<bool>();
  int64_t* tk = tokens.data_ptr<int64_t>();
  float* sc = scores.data_ptr<float>();
  int64_t* ol = out_len.data_ptr<int64_t>();
  int64_t* pv = prev.data_ptr<int64_t>();
  at::Tensor emit_t = at::empty({B}, alive.options());
  bool* em = emit_t.data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "greedy_update_cpu", [&] {
    const scalar_t* x = logits.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const auto [tok, best] = pick_row(x + b * V, V, pad);
        const bool live = al[b];
        if (live) sc[b] += static_cast<float>(best);
        const bool emit = live && tok != eos;
        if (step < L) tk[b * L + step] = emit ? tok : pad;
        ol[b] += emit;
        al[b] = emit && step + 1 < ml[b];
        pv[b] = tok;
        em[b] = emit;
      }
    });
  });
  if (defined(attn) && step < L)
    attn->select(1, step).copy_(weights->masked_fill(emit_t.logical_not().unsqueeze(1), 0));
  if (defined(t_next)) t_next->fill_(step + 1);
}

void check_greedy_args(const at::Tensor& logits, const OptTensor& weights, const at::Tensor& t,
                       const OptTensor& t_next, int64_t pad, const at::Tensor& maxlen, const at::Tensor& alive,
                       const at::Tensor& tokens,
                       const at::Tensor& scores, const at::Tensor& out_len, const at::Tensor& prev,
                       const OptTensor& attn) {
  check_shape(logits, "logits", {-1, -1});
  const int64_t B = logits.size(0), V = logits.size(1);
  TORCH_CHECK_TYPE(at::isFloatingType(logits.scalar_type()), "fastrnn: logits must be floating point, got ",
                   logits.scalar_type());
  TORCH_CHECK_VALUE(V > 0, "fastrnn: greedy_update needs a vocabulary of at least one token");
  TORCH_CHECK_VALUE(pad >= 0 && pad < V, "fastrnn: pad must be in [0, ", V, "), got ", pad);
  auto need = [&](const at::Tensor& x, const char* name, at::ScalarType dt, std::vector<int64_t> shape) {
    TORCH_CHECK_TYPE(x.scalar_type() == dt, "fastrnn: ", name, " must be ", dt, ", got ", x.scalar_type());
    TORCH_CHECK(x.device() == logits.device(), "fastrnn: ", name, " is on ", x.device(), " but logits is on ",
                logits.device());
    check_shape(x, name, std::move(shape));
    TORCH_CHECK(x.is_contiguous(), "fastrnn: ", name, " must be contiguous");
  };
  need(logits, "logits", logits.scalar_type(), {B, V});
  need(t, "t", at::kLong, {1});
  if (defined(t_next)) {
    need(*t_next, "t_next", at::kLong, {1});
    TORCH_CHECK_VALUE(!t_next->is_same(t), "fastrnn: t_next must be another buffer than t");
  }
  need(maxlen, "maxlen", at::kLong, {B});
  need(alive, "alive", at::kBool, {B});
  need(tokens, "tokens", at::kLong, {B, -1});
  need(scores, "scores", at::kFloat, {B});
  need(out_len, "out_len", at::kLong, {B});
  need(prev, "prev", at::kLong, {B});
  TORCH_CHECK_VALUE(defined(weights) == defined(attn), "fastrnn: weights and attn come together");
  if (defined(attn)) {
    const int64_t S = weights->size(-1);
    need(*weights, "weights", weights->scalar_type(), {B, S});
    need(*attn, "attn", weights->scalar_type(), {B, tokens.size(1), S});
  }
}

void greedy_update(const at::Tensor& logits, const OptTensor& weights, const at::Tensor& t, const OptTensor& t_next,
                   int64_t pad,
                   int64_t eos, const at::Tensor& maxlen, const at::Tensor& alive, const at::Tensor& tokens,
                   const at::Tensor& scores, const at::Tensor& out_len, const at::Tensor& prev,
                   const OptTensor& attn) {
  check_greedy_args(logits, weights, t, t_next, pad, maxlen, alive, tokens, scores, out_len, prev, attn);
  py::gil_scoped_release no_gil;
  if (logits.is_cuda()) {
#ifdef FASTRNN_WITH_CUDA
    greedy_update_cuda(logits, weights, t, t_next, pad, eos, maxlen, alive, tokens, scores, out_len, prev, attn);
    return;
#else
    TORCH_CHECK(false, "fastrnn._C was built without CUDA");
#endif
  }
  TORCH_CHECK(logits.is_cpu(), "fastrnn: greedy_update takes CPU or CUDA tensors, got ", logits.device());
  greedy_update_cpu(logits, weights, t, t_next, pad, eos, maxlen, alive, tokens, scores, out_len, prev, attn);
}

}  // namespace

void decode_init(py::module& m) {
  m.def("greedy_update", &greedy_update,
        "One greedy-decoding step's bookkeeping in place (csrc/decode/decode.h): argmax outside pad, "
        "log-probability, tokens/scores/lengths/alive/prev and the attention column",
        py::arg("logits"), py::arg("weights"), py::arg("t"), py::arg("t_next"), py::arg("pad"), py::arg("eos"), py::arg("maxlen"),
        py::arg("alive"), py::arg("tokens"), py::arg("scores"), py::arg("out_len"), py::arg("prev"),
        py::arg("attn"));
}

}  // namespace fastrnn
