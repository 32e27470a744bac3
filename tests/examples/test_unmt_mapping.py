"""The self-learning mapping: CSLS and dictionary induction against brute force, recovery of a
known rotation from scratch (no supervision), the weakly supervised starts, and BLI."""
from __future__ import annotations

import pytest
import torch

import mapping




def brute_csls(x, z, k):
    """CSLS(i, j) = 2 cos - r_Z(x_i) - r_X(z_j), element by element."""
    x = torch.nn.functional.normalize(x.double(), dim=1)
    z = torch.nn.functional.normalize(z.double(), dim=1)
    out = torch.empty(len(x), len(z), dtype=torch.float64)
    r_x = [sorted((float(x[i] @ z[j]) for j in range(len(z))), reverse=True)[:k]
           for i in range(len(x))]
    r_z = [sorted((float(x[i] @ z[j]) for i in range(len(x))), reverse=True)[:k]
           for j in range(len(z))]
    for i in range(len(x)):
        for j in range(len(z)):
            out[i, j] = 2 * float(x[i] @ z[j]) - sum(r_x[i]) / k - sum(r_z[j]) / k
    return out


@pytest.mark.parametrize("ns,nt,k", [pytest.param(23, 31, 4, id="S23-T31-k4"),
                                     pytest.param(40, 17, 10, id="S40-T17-k10")])
def test_csls_matches_brute_force(ns, nt, k):
    g = torch.Generator().manual_seed(ns * nt)
    x, z = torch.randn(ns, 8, generator=g), torch.randn(nt, 8, generator=g)
    ref = brute_csls(x, z, k)
    # retrieval, in chunks smaller than the matrix
    top = mapping.retrieve(x, z, topn=3, csls_k=k, chunk=7)
    assert torch.equal(top, ref.topk(3, dim=1).indices)
    # induction in both directions, keep_prob 1 (deterministic)
    xn = torch.nn.functional.normalize(x, dim=1)
    zn = torch.nn.functional.normalize(z, dim=1)
    fwd, bwd, obj = mapping.induce(xn, zn, 1.0, k, chunk=5)
    assert torch.equal(fwd, ref.argmax(1)) and torch.equal(bwd, ref.argmax(0))
    expected = (ref.max(1).values.mean() + ref.max(0).values.mean()) / 2
    assert obj == pytest.approx(float(expected), abs=1e-5)
    # nearest neighbour by cosine when csls_k == 0
    cos = xn.double() @ zn.double().T
    assert torch.equal(mapping.retrieve(x, z, topn=1, csls_k=0)[:, 0], cos.argmax(1))


def test_stochastic_induction_keeps_a_fraction():
    g = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=1)
    fwd_full, _, _ = mapping.induce(x, x, 1.0, 5)
    assert torch.equal(fwd_full, torch.arange(300))  # identical spaces: each word finds itself
    fwd, _, _ = mapping.induce(x, x, 0.1, 5, generator=torch.Generator().manual_seed(0))
    same = (fwd == torch.arange(300)).float().mean()
    assert 0.02 < same < 0.3  # the true match survives the dropout about 10% of the time


def rotated_pair(v=400, d=32, noise=0.01, seed=0):
    g = torch.Generator().manual_seed(seed)
    # anisotropic, clustered embeddings, like real ones (a few strong directions)
    x = torch.randn(v, d, generator=g) * torch.linspace(3, 0.3, d)
    rot, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    perm = torch.randperm(v, generator=g)
    z = (x.double() @ rot).float()[perm] + noise * torch.randn(v, d, generator=g)
    truth = torch.argsort(perm)  # x row i is z row truth[i]
    return x, z, rot.float(), truth


def test_unsupervised_mapping_recovers_rotation():
    x, z, rot, truth = rotated_pair()
    xn, zn = mapping.normalize(x), mapping.normalize(z)
    init = mapping.init_unsupervised(xn, zn, n=400, csls_k=10)
    xw, zw, (si, ti), hist = mapping.self_learning(
        xn, zn, *init, cutoff=400, early_cutoff=200, patience=2, max_iter=60, seed=0)
    found = mapping.retrieve(xw, zw, topn=1, csls_k=10)[:, 0]
    assert (found == truth).float().mean() > 0.97
    # the induced dictionary is the true one, and Procrustes on it gives the rotation back
    assert (ti[si < 400] == truth[si[si < 400]]).float().mean() > 0.97
    w = mapping.orthogonal(xn, zn, si, ti)
    assert torch.allclose(w, rot, atol=0.05)
    assert torch.allclose(w.T @ w, torch.eye(32), atol=1e-4)
    assert hist[-1]["keep_prob"] == 1.0


def test_identical_and_numeral_starts():
    src = ["der", "2", "jesus", "und", "12", "mose"]
    trg = ["the", "jesus", "12", "and", "2", "moses"]
    s, t = mapping.init_identical(src, trg)
    assert list(zip(s.tolist(), t.tolist())) == [(1, 4), (2, 1), (4, 2)]
    s, t = mapping.init_identical(src, trg, r"\d+")
    assert list(zip(s.tolist(), t.tolist())) == [(1, 4), (4, 2)]
    with pytest.raises(ValueError, match="numerals"):
        mapping.init_identical(["a"], ["b"], r"\d+")


def test_refine_keeps_dictionary_pairs_close():
    x, z, _, truth = rotated_pair(v=300, noise=0.05, seed=3)
    xn, zn = mapping.normalize(x), mapping.normalize(z)
    idx = torch.arange(300)
    xw, zw = mapping.refine(xn, zn, idx, truth)
    assert torch.isfinite(xw).all() and torch.isfinite(zw).all()
    found = mapping.retrieve(xw, zw, topn=1, csls_k=10)[:, 0]
    assert (found == truth).float().mean() > 0.97


def test_bli_scores():
    import embed
    x, z, _, truth = rotated_pair(v=200, noise=0.0, seed=5)
    xn, zn = mapping.normalize(x), mapping.normalize(z)
    w = mapping.orthogonal(xn, zn, torch.arange(200), truth)
    src = [f"s{i}" for i in range(200)]
    trg = [f"t{j}" for j in range(200)]
    good = {(f"s{i}", f"t{int(truth[i])}") for i in range(200)}
    res = embed.bli(xn @ w, zn, src, trg, good, n_words=50)
    assert res["words"] == 50 and res["csls_p@1"] == 100.0 and res["nn_p@5"] == 100.0
    wrong = {(f"s{i}", f"t{(int(truth[i]) + 1) % 200}") for i in range(200)}
    res = embed.bli(xn @ w, zn, src, trg, wrong, n_words=50)
    assert res["csls_p@1"] < 10.0
