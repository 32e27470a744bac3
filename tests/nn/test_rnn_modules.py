"""fastrnn.LSTM/GRU/LSTMCell/GRUCell against torch.nn on the same state_dict, on every backend.

Outputs, final states and every gradient (input, hx, all parameters) are compared in fp64 with
tight tolerances; one fp32 check follows the tolerance rule (fastrnn's error against fp64 at most
2x torch's own fp32 error, plus a small atol).
"""
import copy
import functools
import io
import pickle
from typing import NamedTuple, Optional, Tuple

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastrnn
from fastrnn.ops.gru import IMPLS as GRU_IMPLS
from fastrnn.ops.lstm import IMPLS as LSTM_IMPLS

BACKENDS = fastrnn.backends.available()
IMPLS = {"LSTM": LSTM_IMPLS, "GRU": GRU_IMPLS}
F64 = dict(atol=1e-10, rtol=1e-8)
F32 = dict(atol=1e-5, rtol=1.3e-6)


def assert_close(got, want, *, atol, rtol, what="tensor"):
    """The test of torch's assert_close (same shape, dtype, device; |got - want| <= atol +
    rtol |want| elementwise; NaN fails) without its first-call import cost, seconds of CI."""
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(want), f"{what}: {got!r} vs {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, atol=atol, rtol=rtol, what=f"{what}[{i}]")
        return
    assert got.shape == want.shape, f"{what}: shape {list(got.shape)} vs expected {list(want.shape)}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} vs expected {want.dtype}"
    assert got.device == want.device, f"{what}: device {got.device} vs expected {want.device}"
    g, w = got.detach(), want.detach()
    diff = (g - w).abs()
    ok = diff <= atol + rtol * w.abs()
    if not bool(ok.all()):
        bad = tuple((~ok).nonzero()[0].tolist())
        raise AssertionError(f"{what}: {int((~ok).sum())} of {ok.numel()} elements differ beyond "
                             f"atol={atol}, rtol={rtol}; max abs diff "
                             f"{diff.nan_to_num(float('inf')).max().item():.3g}; first at {list(bad)}: "
                             f"{g[bad].item()} vs {w[bad].item()}")


class Case(NamedTuple):
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    proj: int = 0
    packed: Optional[str] = None          # None, "sorted" or "unsorted"
    lengths: Optional[Tuple[int, ...]] = None
    unbatched: bool = False
    hx: bool = True
    quick: bool = False                   # small enough for the Triton interpreter


CASES = [
    pytest.param(Case(5, 3, 4, 6, quick=True), id="T5-B3-I4-H6"),
    pytest.param(Case(4, 3, 5, 6, layers=2, bidirectional=True), id="T4-B3-I5-H6-L2-bi"),
    pytest.param(Case(3, 2, 4, 5, layers=3, batch_first=True, hx=False), id="T3-B2-I4-H5-L3-bf-nohx"),
    pytest.param(Case(1, 1, 3, 4), id="T1-B1-I3-H4"),
    pytest.param(Case(3, 2, 7, 63, bidirectional=True), id="T3-B2-I7-H63-bi"),
    pytest.param(Case(4, 3, 4, 5, layers=2, bidirectional=True, bias=False), id="T4-B3-I4-H5-L2-bi-nobias"),
    pytest.param(Case(4, 1, 3, 5, layers=2, bidirectional=True, unbatched=True), id="unbatched-T4-I3-H5-L2-bi"),
    pytest.param(Case(4, 1, 3, 5, batch_first=True, unbatched=True, hx=False), id="unbatched-T4-I3-H5-bf-nohx"),
    pytest.param(Case(5, 3, 4, 5, layers=2, bidirectional=True, packed="sorted", lengths=(5, 3, 1)),
                 id="packed-sorted-T5-B3-L2-bi"),
    pytest.param(Case(5, 3, 4, 5, layers=2, bidirectional=True, batch_first=True, packed="unsorted",
                      lengths=(2, 5, 3), quick=True), id="packed-unsorted-T5-B3-L2-bi-bf"),
    pytest.param(Case(4, 3, 4, 5, packed="unsorted", lengths=(4, 4, 4), hx=False),
                 id="packed-unsorted-equal-T4-B3-nohx"),
    pytest.param(Case(4, 1, 3, 5, packed="sorted", lengths=(4,)), id="packed-T4-B1"),
]
PROJ_CASES = [
    pytest.param(Case(4, 3, 4, 6, layers=2, bidirectional=True, proj=3, quick=True), id="proj3-T4-B3-H6-L2-bi"),
    pytest.param(Case(5, 3, 4, 6, layers=2, proj=2, packed="unsorted", lengths=(3, 5, 1)),
                 id="proj2-packed-unsorted-T5-B3-L2"),
    pytest.param(Case(3, 1, 4, 6, proj=4, unbatched=True, bias=False), id="proj4-unbatched-nobias"),
]
MODE_CASES = ([pytest.param("LSTM", *p.values, id="LSTM-" + p.id) for p in CASES + PROJ_CASES]
              + [pytest.param("GRU", *p.values, id="GRU-" + p.id) for p in CASES])


# ---------------------------------------------------------------------------------------------
# which backend can run a case


def _layer_calls(mode: str, c: Case, dtype: torch.dtype):
    """The check() arguments of every op call the module makes for case c."""
    T = max(c.lengths) if c.packed else c.T
    has_lengths = bool(c.packed) and min(c.lengths) < T
    P = c.proj or c.H
    D = 2 if c.bidirectional else 1
    B = 1 if c.unbatched else c.B
    for layer in range(c.layers):
        I = c.I if layer == 0 else (P if mode == "LSTM" else c.H) * D
        if mode == "LSTM":
            yield dict(dtype=dtype, T=T, B=B, I=I, H=c.H, P=P, has_proj=c.proj > 0,
                       has_lengths=has_lengths)
        else:
            yield dict(dtype=dtype, T=T, B=B, I=I, H=c.H, has_lengths=has_lengths)


@functools.lru_cache(maxsize=None)
def _unimplemented(family: str, backend: str) -> Optional[str]:
    """A backend whose kernels are still the skeleton's stubs says so; anything else propagates.
    (The compiled extension of the main checkout can be importable before its kernels land.)"""
    x = torch.zeros(1, 1, 2)
    h = torch.zeros(1, 2)
    try:
        if family == "lstm":
            fastrnn.ops.lstm(x, h, h, torch.zeros(8, 2), torch.zeros(8, 2), backend=backend)
        else:
            fastrnn.ops.gru(x, h, torch.zeros(6, 2), torch.zeros(6, 2), backend=backend)
    except (RuntimeError, NotImplementedError) as exc:
        if "not implemented" in str(exc) or isinstance(exc, NotImplementedError):
            return f"{family} backend {backend!r} is not implemented yet: {exc}"
        if "cannot run this call" in str(exc):
            return None      # this probe's dtype/size is refused; the real check decides
        raise
    return None


def skip_unless_runs(mode: str, backend: str, calls):
    for call in calls:
        reason = IMPLS[mode][backend].check(**call)
        if reason is not None:
            pytest.skip(f"{backend} refuses {mode} {call}: {reason}")
    reason = _unimplemented(mode.lower(), backend)
    if reason is not None:
        pytest.skip(reason)


def skip_slow_backend(backend: str, c: Case):
    if backend == "triton" and not c.quick:
        pytest.skip("the Triton interpreter is slow: it runs the quick cases only")


# ---------------------------------------------------------------------------------------------
# building and running a pair of modules


def make_pair(mode: str, c: Case, dtype=torch.float64, backend=None, dropout=0.0):
    kw = dict(num_layers=c.layers, bias=c.bias, batch_first=c.batch_first, dropout=dropout,
              bidirectional=c.bidirectional, dtype=dtype)
    if c.proj:
        kw["proj_size"] = c.proj
    ref = getattr(torch.nn, mode)(c.I, c.H, **kw)
    mod = getattr(fastrnn, mode)(c.I, c.H, backend=backend, **kw)
    mod.load_state_dict(ref.state_dict())
    return ref, mod


def make_inputs(mode: str, c: Case, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)

    def rand(*s):
        return torch.randn(*s, generator=g, dtype=dtype).to(device).requires_grad_()

    if c.unbatched:
        x = rand(c.T, c.I)
    else:
        x = rand(c.B, c.T, c.I) if c.batch_first else rand(c.T, c.B, c.I)
    hx = None
    if c.hx:
        n = c.layers * (2 if c.bidirectional else 1)
        lead = (n,) if c.unbatched else (n, c.B)
        h = rand(*lead, c.proj or c.H)
        hx = (h, rand(*lead, c.H)) if mode == "LSTM" else h
    return x, hx


def run(module, c: Case, x, hx):
    """Forward (packing x first when the case is packed); returns (output, states, meta)."""
    inp = x
    if c.packed:
        inp = pack_padded_sequence(x, torch.tensor(c.lengths), batch_first=c.batch_first,
                                   enforce_sorted=c.packed == "sorted")
    out, state = module(inp) if hx is None else module(inp, hx)
    meta = None
    if c.packed:
        assert isinstance(out, PackedSequence)
        meta = (out.batch_sizes, out.sorted_indices, out.unsorted_indices)
        out = out.data
    states = tuple(state) if isinstance(state, tuple) else (state,)
    return out, states, meta


def forward_backward(module, c: Case, x, hx, seed=1):
    out, states, meta = run(module, c, x, hx)
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)).sum()
               for t in (out, *states))
    hxs = () if hx is None else (hx if isinstance(hx, tuple) else (hx,))
    wrt = [x, *hxs, *module.parameters()]
    names = ["input"] + [f"hx[{i}]" for i in range(len(hxs))] + [n for n, _ in module.named_parameters()]
    grads = torch.autograd.grad(loss, wrt)
    return out, states, meta, dict(zip(names, grads))


def assert_matches(got, want, **tol):
    out, states, meta, grads = got
    out_r, states_r, meta_r, grads_r = want
    assert_close(out, out_r, **tol, what="output")
    assert len(states) == len(states_r)
    for i, (s, r) in enumerate(zip(states, states_r)):
        assert s.shape == r.shape, f"state {i}: shape {s.shape} vs torch {r.shape}"
        assert_close(s, r, **tol, what=f"final state {i}")
    if meta_r is not None:
        for a, b in zip(meta, meta_r):
            assert (a is None and b is None) or torch.equal(a, b), "PackedSequence metadata differs"
    assert grads.keys() == grads_r.keys()
    for name in grads_r:
        assert_close(grads[name], grads_r[name], **tol, what=f"grad of {name}")


# ---------------------------------------------------------------------------------------------
# the comparisons


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode, case", MODE_CASES)
def test_matches_torch_fp64(mode, case, backend):
    skip_slow_backend(backend, case)
    skip_unless_runs(mode, backend, _layer_calls(mode, case, torch.float64))
    ref, mod = make_pair(mode, case, backend=backend)
    x, hx = make_inputs(mode, case)
    got = forward_backward(mod, case, x, hx)
    want = forward_backward(ref, case, x, hx)
    assert got[0].shape == want[0].shape
    assert_matches(got, want, **F64)


def penalty_grads(module, c: Case, x, hx):
    """The grads of a gradient penalty (the squared norm of a loss's first-order grads, taken with
    create_graph=True) against the input, hx and every parameter: double backward."""
    out, states, _ = run(module, c, x, hx)
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)).sum() + (t ** 2).sum()
               for t in (out, *states))
    hxs = () if hx is None else (hx if isinstance(hx, tuple) else (hx,))
    wrt = [x, *hxs, *module.parameters()]
    first = torch.autograd.grad(loss, wrt, create_graph=True)
    return first, torch.autograd.grad(sum((f ** 2).sum() for f in first), wrt)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode, case", [p for p in MODE_CASES if p.values[1].quick])
def test_double_backward_matches_torch(mode, case, backend):
    """Gradient penalties work as with torch.nn's CPU modules (the kernels' Functions hand autograd
    the reference's graph when it asks for one), through packing, both directions and layers."""
    skip_unless_runs(mode, backend, _layer_calls(mode, case, torch.float64))
    ref, mod = make_pair(mode, case, backend=backend)
    x, hx = make_inputs(mode, case)
    got, want = penalty_grads(mod, case, x, hx), penalty_grads(ref, case, x, hx)
    assert_close(got[0], want[0], **F64, what="first-order grads")
    assert_close(got[1], want[1], **F64, what="grads of the penalty")


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_meta_device_gives_torch_shapes(mode):
    """Modules on the meta device (deferred init, shape inference) run as torch.nn's do."""
    kw = dict(num_layers=2, bidirectional=True, batch_first=True, device="meta")
    ref, mod = getattr(torch.nn, mode)(4, 5, **kw), getattr(fastrnn, mode)(4, 5, **kw)
    x = torch.empty(2, 3, 4, device="meta")
    got, want = mod(x), ref(x)
    assert got[0].shape == want[0].shape and got[0].device.type == "meta"
    for g, w in zip(got[1] if mode == "LSTM" else [got[1]], want[1] if mode == "LSTM" else [want[1]]):
        assert g.shape == w.shape


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_torch_func_transforms_match_torch(mode):
    """torch.func.grad and jacrev give torch.nn's results (the calls run on the reference under
    the transforms); vmap, which torch.nn's RNNs lack, matches a loop."""
    from torch.func import grad, jacrev, vmap
    c = Case(3, 2, 4, 5, layers=2, bidirectional=True)
    ref, mod = make_pair(mode, c)
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    for fn in (grad(lambda z, m: m(z)[0].pow(2).sum()), jacrev(lambda z, m: m(z)[0])):
        assert_close(fn(x, mod), fn(x, ref), **F64)
    xs = torch.randn(4, 3, 2, 4, dtype=torch.float64)
    assert_close(vmap(lambda z: mod(z)[0])(xs), torch.stack([ref(z)[0] for z in xs]), **F64)


FP32_CASE = Case(5, 3, 6, 12, layers=2, bidirectional=True, packed="unsorted", lengths=(3, 5, 2),
                 quick=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode, case", [p for p in MODE_CASES if p.values[1].quick])
def test_fp32_error_within_twice_torch(mode, case, backend):
    """fp32 on every backend (the Triton backend takes no fp64): fastrnn's error against torch.nn
    in fp64 is at most twice torch.nn's own fp32 error, plus a small atol."""
    c = case
    skip_unless_runs(mode, backend, _layer_calls(mode, c, torch.float32))
    ref64, _ = make_pair(mode, c)
    ref32 = copy.deepcopy(ref64).float()
    _, mod32 = make_pair(mode, c, dtype=torch.float32, backend=backend)
    mod32.load_state_dict(ref32.state_dict())
    x64, hx64 = make_inputs(mode, c)
    x32, hx32 = make_inputs(mode, c, dtype=torch.float32)
    truth = forward_backward(ref64, c, x64, hx64)
    torch_err = _errors(forward_backward(ref32, c, x32, hx32), truth)
    ours_err = _errors(forward_backward(mod32, c, x32, hx32), truth)
    for name, err in ours_err.items():
        assert err <= 2 * torch_err[name] + 1e-5, f"{name}: error {err:.3g} vs torch fp32 {torch_err[name]:.3g}"


def _errors(got, truth):
    out, states, _, grads = got
    out_t, states_t, _, grads_t = truth
    err = lambda a, b: (a.detach().cpu().double() - b).abs().max().item()  # noqa: E731
    errs = {"output": err(out, out_t)}
    for i, (s, t) in enumerate(zip(states, states_t)):
        errs[f"state{i}"] = err(s, t)
    for name in grads_t:
        errs["grad " + name] = err(grads[name], grads_t[name])
    return errs


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton", "reference"])
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_cuda_fp32_error_within_twice_cudnn(mode, backend):
    """On the GPU the baseline is torch.nn on cuDNN; the truth is torch.nn in fp64 on the CPU."""
    if backend not in BACKENDS:
        pytest.skip(f"backend {backend!r} is not available here ({BACKENDS})")
    c = FP32_CASE
    skip_unless_runs(mode, backend, _layer_calls(mode, c, torch.float32))
    ref64, _ = make_pair(mode, c)
    cudnn = copy.deepcopy(ref64).float().cuda()
    mod = getattr(fastrnn, mode)(c.I, c.H, num_layers=c.layers, bidirectional=True,
                                 backend=backend, device="cuda")
    mod.load_state_dict(cudnn.state_dict())
    truth = forward_backward(ref64, c, *make_inputs(mode, c))
    base = _errors(forward_backward(cudnn, c, *make_inputs(mode, c, torch.float32, device="cuda")), truth)
    ours = _errors(forward_backward(mod, c, *make_inputs(mode, c, torch.float32, device="cuda")), truth)
    for name, e in ours.items():
        assert e <= 2 * base[name] + 1e-5, f"{name}: error {e:.3g} vs cuDNN fp32 {base[name]:.3g}"


# ---------------------------------------------------------------------------------------------
# dropout, modes and module plumbing (reference backend: the module logic, not the kernels)

DROP = Case(4, 3, 4, 5, layers=3, bidirectional=True)


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_dropout_train_differs_run_to_run(mode):
    _, mod = make_pair(mode, DROP, backend="reference", dropout=0.5)
    mod.train()
    x, _ = make_inputs(mode, DROP)
    a, b = mod(x)[0], mod(x)[0]
    assert not torch.equal(a, b)
    _, plain = make_pair(mode, DROP, backend="reference")
    plain.load_state_dict(mod.state_dict())
    assert not torch.equal(a, plain(x)[0])


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_dropout_eval_equals_no_dropout(mode):
    ref, mod = make_pair(mode, DROP, backend="reference", dropout=0.5)
    _, plain = make_pair(mode, DROP, backend="reference")
    plain.load_state_dict(mod.state_dict())
    mod.eval()
    ref.eval()
    x, hx = make_inputs(mode, DROP)
    got, want = run(mod, DROP, x, hx), run(plain, DROP, x, hx)
    assert_close(got[0], want[0], rtol=0, atol=0, what="output")
    assert_close(got[1], want[1], rtol=0, atol=0, what="final states")
    assert_close(got[0], run(ref, DROP, x, hx)[0], **F64, what="output vs torch.nn")


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_dropout_placement_matches_torch(mode):
    """p=1 zeroes whatever dropout touches: the result equals torch's only if dropout sits on the
    same tensors (each layer's output but the last, never the final states' own layer)."""
    ref, mod = make_pair(mode, DROP, backend="reference", dropout=1.0)
    ref.train()
    mod.train()
    x, hx = make_inputs(mode, DROP)
    got, want = run(mod, DROP, x, hx), run(ref, DROP, x, hx)
    assert_close(got[0], want[0], **F64, what="output")
    assert_close(got[1], want[1], **F64, what="final states")
    assert got[0].abs().sum() > 0   # the last layer's output is not dropped


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_state_dict_round_trip_and_identity(mode):
    c = Case(3, 2, 4, 6, layers=2, bidirectional=True, bias=False, proj=3 if mode == "LSTM" else 0)
    ref, mod = make_pair(mode, c, dtype=torch.float32)
    assert isinstance(mod, getattr(torch.nn, mode))
    assert list(mod.state_dict().keys()) == list(ref.state_dict().keys())
    assert repr(mod) == repr(ref)
    # fastrnn -> torch: a freshly initialised torch module takes fastrnn's weights exactly
    fresh = getattr(torch.nn, mode)(c.I, c.H, num_layers=2, bidirectional=True, bias=False,
                                    **({"proj_size": 3} if c.proj else {}))
    mod.backend = "reference"
    with torch.no_grad():
        for p in mod.parameters():
            p.add_(1.0)          # make them differ from ref's
    fresh.load_state_dict(mod.state_dict())
    for (n, a), (m, b) in zip(fresh.state_dict().items(), mod.state_dict().items()):
        assert n == m and torch.equal(a, b)
    # and back again, through a serialised state_dict
    buf = io.BytesIO()
    torch.save(fresh.state_dict(), buf)
    buf.seek(0)
    back = getattr(fastrnn, mode)(c.I, c.H, num_layers=2, bidirectional=True, bias=False,
                                  backend="reference", **({"proj_size": 3} if c.proj else {}))
    back.load_state_dict(torch.load(buf))
    x = torch.randn(3, 2, 4)
    assert_close(back(x)[0], fresh(x)[0], atol=1e-5, rtol=1e-4, what="output")


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_init_matches_torch_under_same_seed(mode):
    torch.manual_seed(7)
    ref = getattr(torch.nn, mode)(5, 7)
    torch.manual_seed(7)
    mod = getattr(fastrnn, mode)(5, 7)
    for (n, a), (m, b) in zip(ref.named_parameters(), mod.named_parameters()):
        assert n == m and torch.equal(a, b)
    torch.manual_seed(8)
    mod.reset_parameters()
    torch.manual_seed(8)
    ref.reset_parameters()
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), mod.parameters()))


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_backend_kwarg_repr_and_pickle(mode):
    mod = getattr(fastrnn, mode)(3, 4, backend="reference")
    assert mod.backend == "reference"
    assert repr(mod).endswith("backend='reference')")
    clone = pickle.loads(pickle.dumps(mod))
    assert clone.backend == "reference"
    x = torch.randn(2, 3) if "Cell" in mode else torch.randn(2, 2, 3)
    a, b = mod(x), clone(x)
    a = a[0] if isinstance(a, tuple) else a
    b = b[0] if isinstance(b, tuple) else b
    assert torch.equal(a, b)


@pytest.mark.parametrize("mode, op", [("LSTM", "lstm"), ("GRU", "gru"), ("LSTMCell", "lstm_cell"),
                                      ("GRUCell", "gru_cell")])
def test_backend_is_passed_to_every_op_call(monkeypatch, mode, op):
    seen = []
    real = getattr(fastrnn.ops, op)

    def spy(*args, **kwargs):
        seen.append((kwargs.get("backend"), kwargs.get("reverse"), kwargs.get("lengths") is not None))
        return real(*args, **kwargs)

    monkeypatch.setattr(fastrnn.ops, op, spy)
    if "Cell" in mode:
        getattr(fastrnn, mode)(3, 4, backend="reference")(torch.randn(2, 3))
        assert seen == [("reference", None, False)]
        return
    mod = getattr(fastrnn, mode)(3, 4, num_layers=2, bidirectional=True, backend="reference")
    mod(pack_padded_sequence(torch.randn(4, 2, 3), torch.tensor([4, 2])))
    # one call per layer and direction; the second direction runs reversed within each length
    assert seen == [("reference", False, True), ("reference", True, True)] * 2


def test_functional_call_uses_substituted_weights():
    mod = fastrnn.GRU(3, 4, backend="reference")
    ref = torch.nn.GRU(3, 4)
    params = {k: torch.randn_like(v) for k, v in ref.state_dict().items()}
    x = torch.randn(2, 2, 3)
    got = torch.func.functional_call(mod, params, (x,))
    want = torch.func.functional_call(ref, params, (x,))
    assert_close(got[0], want[0], **F32, what="output")


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "LSTMCell", "GRUCell"])
def test_autocast_dtype_matches_torch(mode):
    ref = getattr(torch.nn, mode)(4, 5)
    mod = getattr(fastrnn, mode)(4, 5, backend="reference")
    mod.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4) if "Cell" in mode else torch.randn(3, 2, 4)
    for inp in (x, x.bfloat16()):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = ref(inp), mod(inp)
        a = a[0] if isinstance(a, tuple) else a
        b = b[0] if isinstance(b, tuple) else b
        assert a.dtype == b.dtype, f"input {inp.dtype}: torch gives {a.dtype}, fastrnn {b.dtype}"
        assert_close(b.float(), a.float(), atol=2e-2, rtol=2e-2, what=f"output for {inp.dtype} input")


# ---------------------------------------------------------------------------------------------
# cells


class CellCase(NamedTuple):
    B: int
    I: int
    H: int
    bias: bool = True
    unbatched: bool = False
    hx: bool = True
    quick: bool = False


CELL_CASES = [
    pytest.param(CellCase(3, 4, 5, quick=True), id="B3-I4-H5"),
    pytest.param(CellCase(1, 3, 4, hx=False), id="B1-I3-H4-nohx"),
    pytest.param(CellCase(2, 7, 63), id="B2-I7-H63"),
    pytest.param(CellCase(3, 4, 5, bias=False), id="B3-I4-H5-nobias"),
    pytest.param(CellCase(1, 4, 5, unbatched=True, quick=True), id="unbatched-I4-H5"),
    pytest.param(CellCase(1, 4, 5, unbatched=True, hx=False), id="unbatched-I4-H5-nohx"),
]


def _cell_call(mode, case, dtype):
    call = dict(dtype=dtype, T=1, B=case.B, I=case.I, H=case.H, has_lengths=False)
    if mode == "LSTMCell":
        call.update(P=case.H, has_proj=False)
    return call


def cell_forward_backward(module, case, dtype):
    """Outputs and gradients (input, hx, parameters) of one cell step on fixed fp64-drawn data."""
    g = torch.Generator().manual_seed(0)
    lead = () if case.unbatched else (case.B,)

    def rand(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).to(dtype).requires_grad_()

    x = rand(*lead, case.I)
    hx = None
    if case.hx:
        hx = (rand(*lead, case.H), rand(*lead, case.H)) if "LSTM" in type(module).__name__ else rand(*lead, case.H)
    out = module(x) if hx is None else module(x, hx)
    outs = out if isinstance(out, tuple) else (out,)
    gg = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=gg, dtype=torch.float64).to(dtype)).sum() for o in outs)
    hxs = () if hx is None else (hx if isinstance(hx, tuple) else (hx,))
    return outs, torch.autograd.grad(loss, [x, *hxs, *module.parameters()])


def make_cell_pair(mode, case, dtype, backend):
    ref = getattr(torch.nn, mode)(case.I, case.H, bias=case.bias, dtype=torch.float64)
    mod = getattr(fastrnn, mode)(case.I, case.H, bias=case.bias, dtype=dtype, backend=backend)
    mod.load_state_dict(ref.state_dict())
    return ref, mod


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("case", CELL_CASES)
def test_cell_matches_torch_fp64(mode, case, backend):
    if backend == "triton" and not case.quick:
        pytest.skip("the Triton interpreter is slow: it runs the quick cases only")
    skip_unless_runs(mode[:-4], backend, [_cell_call(mode, case, torch.float64)])
    ref, mod = make_cell_pair(mode, case, torch.float64, backend)
    (outs, grads), (outs_r, grads_r) = (cell_forward_backward(m, case, torch.float64) for m in (mod, ref))
    assert len(outs) == len(outs_r)
    for o, r in zip(outs, outs_r):
        assert o.shape == r.shape
        assert_close(o, r, **F64, what="output")
    for i, (a, b) in enumerate(zip(grads, grads_r)):
        assert_close(a, b, **F64, what=f"grad {i} (input, hx..., parameters)")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["LSTMCell", "GRUCell"])
@pytest.mark.parametrize("case", [p for p in CELL_CASES if p.values[0].quick])
def test_cell_fp32_error_within_twice_torch(mode, case, backend):
    skip_unless_runs(mode[:-4], backend, [_cell_call(mode, case, torch.float32)])
    ref64, mod32 = make_cell_pair(mode, case, torch.float32, backend)
    ref32 = copy.deepcopy(ref64).float()
    truth = cell_forward_backward(ref64, case, torch.float64)
    err = lambda got: [(t.detach().double() - r).abs().max().item()  # noqa: E731
                       for t, r in zip((*got[0], *got[1]), (*truth[0], *truth[1]))]
    base, ours = err(cell_forward_backward(ref32, case, torch.float32)), err(cell_forward_backward(mod32, case, torch.float32))
    assert len(ours) == len(base) == len(truth[0]) + len(truth[1])
    for i, (e, b) in enumerate(zip(ours, base)):
        assert e <= 2 * b + 1e-5, f"output/grad {i}: error {e:.3g} vs torch fp32 {b:.3g}"
