"""The CPU kernels' few-row paths: fastrnn.ops.linear (the streaming GEMV behind a decoding
step's linear layers) and the LSTM/GRU calls of at most kSmallRows = 16 rows (T*B), which stream
W_ih and W_hh instead of packing them. Against F.linear and the naive references, in fp64 and
in fp32 (the AVX-512 kernel where the CPU has it), with the tails of every blocking."""
import importlib
import math

import pytest
import torch
import torch.nn.functional as F

import fastrnn
from fastrnn import backends
from fastrnn.ops import linear
from fastrnn.ops.linear import SMALL_ROWS

gru_naive = importlib.import_module("fastrnn.ops.gru.naive")
lstm_naive = importlib.import_module("fastrnn.ops.lstm.naive")

needs_cpu = pytest.mark.skipif("cpu" not in backends.available(), reason="fastrnn._C not built")
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-12), torch.float32: dict(rtol=1e-5, atol=1e-5)}


# --- fastrnn.ops.linear ----------------------------------------------------------------------

@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 15, 16])
@pytest.mark.parametrize("N,K", [(1, 1), (5, 13), (37, 16), (64, 600), (1003, 33)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_f_linear(dtype, rows, N, K, bias):
    g = torch.Generator().manual_seed(rows * 1000 + N + K)
    x = torch.randn(rows, K, generator=g, dtype=dtype)
    w = torch.randn(N, K, generator=g, dtype=dtype)
    b = torch.randn(N, generator=g, dtype=dtype) if bias else None
    y = linear(x, w, b, backend="cpu")           # the kernel, or RuntimeError
    ref = F.linear(x.double(), w.double(), None if b is None else b.double()).to(dtype)
    scale = math.sqrt(K)                          # sums of K products of unit normals
    torch.testing.assert_close(y, ref, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale)


@needs_cpu
def test_linear_leading_dims_strides_and_inputs_untouched():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 40, generator=g)[:, :, ::2]          # [2,3,20], not contiguous
    w = torch.randn(20, 7, generator=g).t()                    # [7,20], not contiguous
    b = torch.randn(7, generator=g)
    before = [t.clone() for t in (x, w, b)]
    y = linear(x, w, b, backend="cpu")
    assert y.shape == (2, 3, 7)
    torch.testing.assert_close(y, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    for t, t0 in zip((x, w, b), before):
        assert torch.equal(t, t0)


@needs_cpu
def test_linear_nan_input_propagates():
    x = torch.randn(1, 33)
    x[0, 32] = float("nan")                                     # in the masked tail
    y = linear(x, torch.randn(9, 33), backend="cpu")
    assert torch.isnan(y).all()


def test_linear_falls_back_and_keeps_gradients():
    x = torch.randn(2, 6, requires_grad=True)
    w = torch.randn(5, 6, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    y = linear(x, w, b)                                         # needs grad: F.linear
    y.sum().backward()
    grads = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    F.linear(x, w, b).sum().backward()
    for g1, t in zip(grads, (x, w, b)):
        torch.testing.assert_close(g1, t.grad)
    big = torch.randn(SMALL_ROWS + 1, 6)                        # too many rows: F.linear
    torch.testing.assert_close(linear(big, w.detach()), F.linear(big, w.detach()))


@needs_cpu
def test_linear_explicit_cpu_backend_says_why_it_refuses():
    w = torch.randn(5, 6)
    with pytest.raises(RuntimeError, match="rows"):
        linear(torch.randn(SMALL_ROWS + 1, 6), w, backend="cpu")
    with pytest.raises(RuntimeError, match="float32 or float64"):
        linear(torch.randn(1, 6, dtype=torch.bfloat16), w.bfloat16(), backend="cpu")
    with pytest.raises(RuntimeError, match="gradients"):
        linear(torch.randn(1, 6, requires_grad=True), w, backend="cpu")


def test_linear_bad_arguments_raise_like_f_linear():
    with pytest.raises(ValueError, match="backend"):
        linear(torch.randn(1, 6), torch.randn(5, 6), backend="cuda")
    x, w = torch.randn(1, 6), torch.randn(5, 7)
    with pytest.raises(RuntimeError) as ours:
        linear(x, w)
    with pytest.raises(RuntimeError) as theirs:
        F.linear(x, w)
    assert str(ours.value) == str(theirs.value)
    v = torch.randn(6)                                          # what F.linear takes, linear takes
    torch.testing.assert_close(linear(x, v), F.linear(x, v))


def test_linear_reference_backend_env(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    x, w = torch.randn(1, 6), torch.randn(5, 6)
    assert torch.equal(linear(x, w), F.linear(x, w))


# --- LSTM/GRU calls of few rows ----------------------------------------------------------------

def _params(cell, I, H, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    G = 4 if cell == "lstm" else 3
    k = 1 / math.sqrt(H)
    u = lambda *s: ((torch.rand(*s, generator=g, dtype=torch.float64) * 2 - 1) * k).to(dtype)  # noqa: E731
    return u(G * H, I), u(G * H, H), u(G * H), u(G * H)


@needs_cpu
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
# T*B <= 16 with B above the fused small-batch path (4), at 16, and just past the few-row path;
# H=32 makes 3H and 4H multiples of 32 (the packed GEMM's shapes), H=21 leaves tails everywhere.
@pytest.mark.parametrize("T,B", [(1, 1), (1, 5), (3, 5), (1, 16), (2, 8), (17, 1), (3, 6)])
@pytest.mark.parametrize("H", [32, 21])
def test_few_row_calls_match_reference_and_leave_weights_alone(cell, dtype, T, B, H):
    I = 13
    w_ih, w_hh, b_ih, b_hh = _params(cell, I, H, dtype, seed=T * 100 + B + H)
    g = torch.Generator().manual_seed(B)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64).to(dtype)
    h0 = (torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5).to(dtype)
    c0 = (torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5).to(dtype)
    params = (w_ih, w_hh, b_ih, b_hh)
    before = [p.clone() for p in params]
    d = lambda t: t.double()  # noqa: E731
    with torch.no_grad():
        if cell == "lstm":
            y, (h, c) = fastrnn.ops.lstm(x, h0, c0, *params, backend="cpu")
            y2, (h2, c2) = lstm_naive.lstm(d(x), d(h0), d(c0), *map(d, params))
            torch.testing.assert_close(c, c2.to(dtype), **TOL[dtype])
        else:
            y, h = fastrnn.ops.gru(x, h0, *params, backend="cpu")
            y2, h2 = gru_naive.gru(d(x), d(h0), *map(d, params))
    torch.testing.assert_close(y, y2.to(dtype), **TOL[dtype])
    torch.testing.assert_close(h, h2.to(dtype), **TOL[dtype])
    # At T*B = 1 the bias-initialised gate buffer must be a copy: the GEMM accumulates into it.
    for p, p0 in zip(params, before):
        assert torch.equal(p, p0)


# --- the packed AVX-512 GEMM path (T*B >= kPackRows = 256 rows) --------------------------------

def _packed_case(cell, H, ragged, T=37, B=7):
    """fastrnn's cpu kernel (fp32) and the naive reference (fp64) on one packed-path problem:
    each returns [y, h_T, grads of x, states, weights and biases] for the same loss."""
    # 37*7 = 259 rows (a tail past the 8-row tiles), I=320 (a K block of 256 and a tail)
    I = 320
    w_ih, w_hh, b_ih, b_hh = _params(cell, I, H, torch.float64, seed=7)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5
    c0 = torch.randn(B, H, generator=g, dtype=torch.float64) * 0.5
    lengths = None
    if ragged:   # varied lengths, one of them T (the batch's maximum), one of 1
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0], lengths[min(3, B - 1)] = T, 1
    gy = torch.randn(T, B, H, generator=g, dtype=torch.float64)
    if lengths is not None:
        gy = gy * (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2)

    def run(dtype, fn):
        states = (h0, c0) if cell == "lstm" else (h0,)
        leaves = [t.to(dtype).requires_grad_() for t in (x, *states, w_ih, w_hh, b_ih, b_hh)]
        if cell == "lstm":
            y, (h, c) = fn(*leaves)
            loss = (y * gy.to(dtype)).sum() + h.sum() + 0.5 * c.sum()
        else:
            y, h = fn(*leaves)
            loss = (y * gy.to(dtype)).sum() + h.sum()
        grads = torch.autograd.grad(loss, leaves)
        return [y, h] + list(grads)

    op, naive = (fastrnn.ops.lstm, lstm_naive.lstm) if cell == "lstm" else (fastrnn.ops.gru, gru_naive.gru)
    ours = lambda: run(torch.float32, lambda *a: op(*a, backend="cpu", lengths=lengths))  # noqa: E731
    ref = lambda: run(torch.float64, lambda *a: naive(*a, lengths=lengths))  # noqa: E731
    return ours, ref


@needs_cpu
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("H", [32, 96, 160])
def test_packed_gemm_path_outputs_and_gradients(cell, ragged, H):
    # H a multiple of 32 (3H, 4H and H too, so every GEMM that can be packed is), fp32 against
    # fp64. The weight grads' transposed A is packed in blocks of up to 512 rows of 8-row panels:
    # one block at H=32 and 96, a full block and a part one for the LSTM at H=160 (4H = 640).
    # The LSTM's dW_ih and dW_hh come from one pass over [X | H_prev] (I=320, H: two outputs).
    ours, ref = _packed_case(cell, H, ragged)
    for a, b in zip(ours(), ref()):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4 * (1 + b.abs().max().item()))


@needs_cpu
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("T,B", [(37, 7), (11, 25), (41, 9)])
def test_packed_gemm_path_same_result_on_any_thread_count(cell, threads, T, B):
    # The suite runs on one thread (conftest); here the GEMMs' column strips, the weight grads'
    # row groups (each thread packing its own panels of the transposed A), the cells and the
    # packing split over 2 and 3 threads. The backward's dx (T*B rows, I = 320: 10 strips) is
    # split over 96-row blocks instead where each thread gets one: 259 and 275 rows on 2
    # threads, 369 (three full blocks and a part one) on 2 and 3. Each sum runs over k in the same order however the
    # work is split, so everything but the bias grads (ATen's sum over T*B rows) is bit for bit
    # the one-thread result.
    # At B=25 (>= 8 rows a thread) each thread runs the whole recurrence of its own rows instead
    # (batch_groups: 12 + 13 rows on 2 threads, 8 + 8 + 9 on 3).
    ours, _ = _packed_case(cell, 96, ragged=True, T=T, B=B)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ours()
        torch.set_num_threads(threads)
        many = ours()
    finally:
        torch.set_num_threads(n)
    for i, (a, b) in enumerate(zip(many, one)):
        if i >= len(one) - 2:   # db_ih, db_hh
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(a, b), f"output {i} differs between {threads} threads and one"


@needs_cpu
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("ragged", [False, True])
def test_unpoisoned_buffers_give_the_poisoned_result(cell, ragged, monkeypatch):
    # The suite runs with FASTRNN_CPU_POISON=1 (conftest): outputs and work buffers start as NaN,
    # so an element a kernel forgot to write shows. Production runs skip that fill; their
    # results must be the same bit for bit.
    ours, _ = _packed_case(cell, 96, ragged)
    monkeypatch.setenv("FASTRNN_CPU_POISON", "1")
    poisoned = ours()
    monkeypatch.setenv("FASTRNN_CPU_POISON", "0")
    for i, (a, b) in enumerate(zip(ours(), poisoned)):
        assert torch.equal(a, b), f"output {i} differs without poisoning"



def _inference_case(cell, dtype, T, B, H, I, ragged, proj=0, seed=11):
    """fastrnn.ops.<cell> on the cpu backend without autograd (the kernel's needs_grad=False
    forward) and the naive reference in fp64: two functions giving [y, h_T(, c_T)]."""
    g = torch.Generator().manual_seed(seed)
    gates = 4 if cell == "lstm" else 3
    P = proj or H
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64) * 0.3  # noqa: E731
    ts = [r(T, B, I), r(B, P), r(B, H), r(gates * H, I), r(gates * H, P), r(gates * H), r(gates * H)]
    w_hr = r(P, H) if proj else None
    lengths = None
    if ragged:
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0], lengths[B - 1] = T, 1

    def call(dt, lstm, gru, **kw):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh = [t.to(dt) for t in ts]
        with torch.no_grad():
            if cell == "lstm":
                y, (h, c) = lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr=None if w_hr is None else w_hr.to(dt),
                                 lengths=lengths, **kw)
                return [y, h, c]
            y, h = gru(x, h0, w_ih, w_hh, b_ih, b_hh, lengths=lengths, **kw)
            return [y, h]

    return (lambda: call(dtype, fastrnn.ops.lstm, fastrnn.ops.gru, backend="cpu"),
            lambda: call(torch.float64, lstm_naive.lstm, gru_naive.gru))


@needs_cpu
@pytest.mark.parametrize("cell,proj", [("lstm", 0), ("gru", 0), ("lstm", 24)], ids=["lstm", "gru", "lstm-proj"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("T,B,threads,chunks", [(300, 2, 1, ("128", "200")), (13, 64, 1, ("4", "5")),
                                                (13, 64, 2, ("4", "5"))],
                         ids=["B2", "B64", "B64-2threads"])
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
def test_inference_in_chunks_gives_the_whole_result(cell, proj, dtype, T, B, threads, chunks, ragged, monkeypatch):
    # Without gradients the input projection runs a few steps at a time through one reused buffer
    # (input_chunk_steps; FASTRNN_CPU_CHUNK_STEPS sets the chunk here, each of at least 256 rows,
    # as the kernel's own choice keeps them, so that every chunk's GEMM is the packed one). That
    # GEMM sums over k in the same order for any number of rows, so in fp32 (H=32: 4H and 3H
    # multiples of 32) the chunked result is the whole one bit for bit; fp64 runs on ATen's
    # GEMM, whose rounding may depend on the row count. B=2 takes the small-batch GEMV
    # recurrence, B=64 on 2 threads the per-thread one (batch_groups).
    ours, ref = _inference_case(cell, dtype, T=T, B=B, H=32, I=40, ragged=ragged, proj=proj)
    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        monkeypatch.setenv("FASTRNN_CPU_CHUNK_STEPS", str(T))
        whole = ours()
        for steps in chunks:
            monkeypatch.setenv("FASTRNN_CPU_CHUNK_STEPS", steps)
            for i, (a, b) in enumerate(zip(ours(), whole)):
                if dtype == torch.float32:
                    assert torch.equal(a, b), f"output {i} differs in chunks of {steps} steps"
                else:
                    torch.testing.assert_close(a, b, **TOL[dtype])
    finally:
        torch.set_num_threads(n)
    tol = TOL[dtype] if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    for a, b in zip(whole, ref()):
        torch.testing.assert_close(a.double(), b, **tol)


@needs_cpu
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_packed_gemm_path_single_step(cell):
    # T=1 with 260 rows at H=96 (4H and 3H >= 256 rows of dW): the weight grads' packed h_{t-1} is
    # h0 alone (no rows of y follow it).
    ours, ref = _packed_case(cell, 96, ragged=False, T=1, B=260)
    for a, b in zip(ours(), ref()):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4 * (1 + b.abs().max().item()))
