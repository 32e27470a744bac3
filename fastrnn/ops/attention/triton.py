"""Triton kernels for the fused attention family (contract in function.py).

Forward, per (batch entry, block of BLOCK_M query rows):
  attention_fwd_scores_kernel  e = qp.kp (dot-like) or v_score.tanh(qp_i + kp_j) (additive),
                               tiled over keys and over D (the [BM, BN, BD] tile lives in
                               registers only: [B,Tq,Tk,D] is never stored), raw e into a
                               scratch, row log-sum-exp;
  attention_fwd_ctx_kernel     p = masked exp(e - lse) written as the weights, ctx = p @ v
                               tiled over Dv.
Backward:
  attention_bwd_ds_kernel      ds = p * (dweights + dctx v^T - delta), delta = rowsum(p dweights)
                               + dctx.ctx (the FlashAttention identity, no extra pass over keys);
  attention_bwd_dq_kernel      additive dqp and per-block dv_score partials, tanh recomputed
                               tile by tile;
  attention_bwd_dk_kernel      additive dkp, looping over query blocks (no atomics: tanh is
                               recomputed).
The remaining products (dv = p^T dctx, and dqp/dkp of the dot-like kinds) are plain batched
GEMMs and go to torch (cuBLAS) on the host.
No tl.tanh under the interpreter: tanh(x) = 2 sigmoid(2x) - 1. Products are broadcast-and-sum
in fp32, not tl.dot, so fp32 stays exact (no TF32) and bf16 works under the interpreter.
"""
import torch
import triton
import triton.language as tl

BLOCK_M = 16
BLOCK_N = 16
BLOCK_D = 32


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


# Raw scores of a [BLOCK_M, BLOCK_N] tile, summed over D in BLOCK_D chunks.
@triton.jit
def _score_tile(qp_ptr, kp_ptr, vs_ptr, b, offs_m, offs_n, Tq, Tk, D,
                ADDITIVE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_D: tl.constexpr):
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        dm = offs_d < D
        q = tl.load(qp_ptr + (b * Tq + offs_m[:, None]) * D + offs_d[None, :],
                    mask=(offs_m[:, None] < Tq) & dm[None, :], other=0.0).to(tl.float32)
        k = tl.load(kp_ptr + (b * Tk + offs_n[:, None]) * D + offs_d[None, :],
                    mask=(offs_n[:, None] < Tk) & dm[None, :], other=0.0).to(tl.float32)
        if ADDITIVE:
            vs = tl.load(vs_ptr + offs_d, mask=dm, other=0.0).to(tl.float32)
            t = _tanh(q[:, None, :] + k[None, :, :])
            acc += tl.sum(t * vs[None, None, :], axis=2)
        else:
            acc += tl.sum(q[:, None, :] * k[None, :, :], axis=2)
    return acc


# Forward pass 1: raw scores into e_ptr, online max / sum into lse_ptr (-inf: all keys masked).
@triton.jit
def attention_fwd_scores_kernel(qp_ptr, kp_ptr, vs_ptr, mask_ptr, e_ptr, lse_ptr, Tq, Tk, D,
                                HAS_MASK: tl.constexpr, ADDITIVE: tl.constexpr,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                                BLOCK_D: tl.constexpr):
    b = tl.program_id(0)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    mrow = offs_m < Tq
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for n0 in range(0, Tk, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        keep = offs_n < Tk
        if HAS_MASK:
            keep = keep & (tl.load(mask_ptr + b * Tk + offs_n, mask=offs_n < Tk, other=0) != 0)
        s = _score_tile(qp_ptr, kp_ptr, vs_ptr, b, offs_m, offs_n, Tq, Tk, D,
                        ADDITIVE, BLOCK_M, BLOCK_N, BLOCK_D)
        tl.store(e_ptr + (b * Tq + offs_m[:, None]) * Tk + offs_n[None, :], s,
                 mask=mrow[:, None] & (offs_n[None, :] < Tk))
        s = tl.where(keep[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(s - m_safe[:, None]), axis=1)
        m_i = m_new
    lse = tl.where(m_i == float("-inf"), float("-inf"), m_i + tl.log(tl.where(l_i > 0, l_i, 1.0)))
    tl.store(lse_ptr + b * Tq + offs_m, lse, mask=mrow)


# Forward pass 2: p = exp(e - lse) (0 where masked or the row is empty), weights and ctx = p v.
@triton.jit
def attention_fwd_ctx_kernel(e_ptr, lse_ptr, mask_ptr, v_ptr, w_ptr, ctx_ptr, Tq, Tk, Dv,
                             HAS_MASK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_DV: tl.constexpr):
    b = tl.program_id(0)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_v = tl.program_id(2) * BLOCK_DV + tl.arange(0, BLOCK_DV)
    mrow = offs_m < Tq
    vmask = offs_v < Dv
    lse = tl.load(lse_ptr + b * Tq + offs_m, mask=mrow, other=float("-inf"))
    live = lse != float("-inf")
    lse_safe = tl.where(live, lse, 0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    for n0 in range(0, Tk, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        keep = offs_n < Tk
        if HAS_MASK:
            keep = keep & (tl.load(mask_ptr + b * Tk + offs_n, mask=offs_n < Tk, other=0) != 0)
        tile = mrow[:, None] & (offs_n[None, :] < Tk)
        e = tl.load(e_ptr + (b * Tq + offs_m[:, None]) * Tk + offs_n[None, :], mask=tile, other=0.0)
        p = tl.where(keep[None, :] & live[:, None], tl.exp(e - lse_safe[:, None]), 0.0)
        if tl.program_id(2) == 0:
            tl.store(w_ptr + (b * Tq + offs_m[:, None]) * Tk + offs_n[None, :],
                     p.to(w_ptr.dtype.element_ty), mask=tile)
        v = tl.load(v_ptr + (b * Tk + offs_n[:, None]) * Dv + offs_v[None, :],
                    mask=(offs_n[:, None] < Tk) & vmask[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(p[:, :, None] * v[None, :, :], axis=1)
    tl.store(ctx_ptr + (b * Tq + offs_m[:, None]) * Dv + offs_v[None, :],
             acc.to(ctx_ptr.dtype.element_ty), mask=mrow[:, None] & vmask[None, :])


# ds = p * (dweights + dctx . v_j - delta) for a [BLOCK_M, BLOCK_N] tile, dctx . v over Dv.
@triton.jit
def attention_bwd_ds_kernel(dctx_ptr, dw_ptr, v_ptr, w_ptr, delta_ptr, ds_ptr, Tq, Tk, Dv,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr):
    b = tl.program_id(0)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    mrow = offs_m < Tq
    ncol = offs_n < Tk
    dp = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, Dv, BLOCK_DV):
        offs_v = d0 + tl.arange(0, BLOCK_DV)
        vm = offs_v < Dv
        g = tl.load(dctx_ptr + (b * Tq + offs_m[:, None]) * Dv + offs_v[None, :],
                    mask=mrow[:, None] & vm[None, :], other=0.0).to(tl.float32)
        v = tl.load(v_ptr + (b * Tk + offs_n[:, None]) * Dv + offs_v[None, :],
                    mask=ncol[:, None] & vm[None, :], other=0.0).to(tl.float32)
        dp += tl.sum(g[:, None, :] * v[None, :, :], axis=2)
    tile = mrow[:, None] & ncol[None, :]
    idx = (b * Tq + offs_m[:, None]) * Tk + offs_n[None, :]
    dp += tl.load(dw_ptr + idx, mask=tile, other=0.0).to(tl.float32)
    p = tl.load(w_ptr + idx, mask=tile, other=0.0).to(tl.float32)
    delta = tl.load(delta_ptr + b * Tq + offs_m, mask=mrow, other=0.0)
    tl.store(ds_ptr + idx, p * (dp - delta[:, None]), mask=tile)


# Additive dqp (and dv_score partials per query block): sum over keys of
# ds * vs * (1 - t^2) and ds * t, t = tanh(qp_i + kp_j) recomputed per [BM, BN, BD] tile.
@triton.jit
def attention_bwd_dq_kernel(qp_ptr, kp_ptr, vs_ptr, ds_ptr, dq_ptr, dvs_ptr, Tq, Tk, D,
                            n_mblocks, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                            BLOCK_D: tl.constexpr):
    b = tl.program_id(0)
    pm = tl.program_id(1)
    offs_m = pm * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    mrow = offs_m < Tq
    dm = offs_d < D
    q = tl.load(qp_ptr + (b * Tq + offs_m[:, None]) * D + offs_d[None, :],
                mask=mrow[:, None] & dm[None, :], other=0.0).to(tl.float32)
    vs = tl.load(vs_ptr + offs_d, mask=dm, other=0.0).to(tl.float32)
    dq = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    dvs = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for n0 in range(0, Tk, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        ncol = offs_n < Tk
        k = tl.load(kp_ptr + (b * Tk + offs_n[:, None]) * D + offs_d[None, :],
                    mask=ncol[:, None] & dm[None, :], other=0.0).to(tl.float32)
        ds = tl.load(ds_ptr + (b * Tq + offs_m[:, None]) * Tk + offs_n[None, :],
                     mask=mrow[:, None] & ncol[None, :], other=0.0)
        t = _tanh(q[:, None, :] + k[None, :, :])
        dq += tl.sum(ds[:, :, None] * (1.0 - t * t), axis=1) * vs[None, :]
        dvs += tl.sum(tl.sum(ds[:, :, None] * t, axis=1), axis=0)
    tl.store(dq_ptr + (b * Tq + offs_m[:, None]) * D + offs_d[None, :],
             dq.to(dq_ptr.dtype.element_ty), mask=mrow[:, None] & dm[None, :])
    tl.store(dvs_ptr + (b * n_mblocks + pm) * D + offs_d, dvs, mask=dm)


# Additive dkp: sum over queries of ds * vs * (1 - t^2), per [BLOCK_N keys, BLOCK_D] tile.
@triton.jit
def attention_bwd_dk_kernel(qp_ptr, kp_ptr, vs_ptr, ds_ptr, dk_ptr, Tq, Tk, D,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    ncol = offs_n < Tk
    dm = offs_d < D
    k = tl.load(kp_ptr + (b * Tk + offs_n[:, None]) * D + offs_d[None, :],
                mask=ncol[:, None] & dm[None, :], other=0.0).to(tl.float32)
    vs = tl.load(vs_ptr + offs_d, mask=dm, other=0.0).to(tl.float32)
    dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for m0 in range(0, Tq, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mrow = offs_m < Tq
        q = tl.load(qp_ptr + (b * Tq + offs_m[:, None]) * D + offs_d[None, :],
                    mask=mrow[:, None] & dm[None, :], other=0.0).to(tl.float32)
        ds = tl.load(ds_ptr + (b * Tq + offs_m[:, None]) * Tk + offs_n[None, :],
                     mask=mrow[:, None] & ncol[None, :], other=0.0)
        t = _tanh(q[:, None, :] + k[None, :, :])
        dk += tl.sum(ds[:, :, None] * (1.0 - t * t), axis=0) * vs[None, :]
    tl.store(dk_ptr + (b * Tk + offs_n[:, None]) * D + offs_d[None, :],
             dk.to(dk_ptr.dtype.element_ty), mask=ncol[:, None] & dm[None, :])


DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check(dtype=None, B=1, Tq=1, Tk=1, D=1, Dv=1, **call):
    if dtype not in DTYPES:
        return f"dtype {dtype} not supported (takes float32, float16, bfloat16)"
    if min(B, Tq, Tk, D, Dv) == 0:
        return f"empty sizes (B={B}, Tq={Tq}, Tk={Tk}, D={D}, Dv={Dv})"
    return None


def _block_dv(Dv):
    return min(64, triton.next_power_of_2(Dv))


def attention_fwd(qp, kp, v, mask, v_score, needs_grad):
    B, Tq, D = qp.shape
    Tk, Dv = kp.shape[1], v.shape[2]
    nan = float("nan")
    e = torch.full((B, Tq, Tk), nan, device=qp.device, dtype=torch.float32)
    lse = torch.full((B, Tq), nan, device=qp.device, dtype=torch.float32)
    weights = torch.full((B, Tq, Tk), nan, device=qp.device, dtype=qp.dtype)
    ctx = torch.full((B, Tq, Dv), nan, device=qp.device, dtype=qp.dtype)
    additive = v_score is not None
    has_mask = mask is not None
    mask_arg = mask.view(torch.uint8) if has_mask else qp  # dummy pointer when absent
    vs_arg = v_score if additive else qp
    nm = triton.cdiv(Tq, BLOCK_M)
    attention_fwd_scores_kernel[(B, nm)](qp, kp, vs_arg, mask_arg, e, lse, Tq, Tk, D,
                                     HAS_MASK=has_mask, ADDITIVE=additive, BLOCK_M=BLOCK_M,
                                     BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D)
    bdv = _block_dv(Dv)
    attention_fwd_ctx_kernel[(B, nm, triton.cdiv(Dv, bdv))](
        e, lse, mask_arg, v, weights, ctx, Tq, Tk, Dv, HAS_MASK=has_mask, BLOCK_M=BLOCK_M,
        BLOCK_N=BLOCK_N, BLOCK_DV=bdv)
    return ctx, weights, ((ctx,) if needs_grad else ())


def attention_bwd(dctx, dweights, qp, kp, v, mask, v_score, weights, saved):
    (ctx,) = saved
    B, Tq, D = qp.shape
    Tk, Dv = kp.shape[1], v.shape[2]
    nan = float("nan")
    # delta_i = sum_j p_ij dP_ij = rowsum(p * dweights) + dctx_i . ctx_i
    delta = ((weights.float() * dweights.float()).sum(-1) + (dctx.float() * ctx.float()).sum(-1))
    ds = torch.full((B, Tq, Tk), nan, device=qp.device, dtype=torch.float32)
    nm, nn = triton.cdiv(Tq, BLOCK_M), triton.cdiv(Tk, BLOCK_N)
    attention_bwd_ds_kernel[(B, nm, nn)](
        dctx, dweights, v, weights, delta.contiguous(), ds, Tq, Tk, Dv,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_DV=_block_dv(Dv))
    dv = torch.bmm(weights.transpose(1, 2), dctx)
    if v_score is None:
        dsq = ds.to(qp.dtype)
        return torch.bmm(dsq, kp), torch.bmm(dsq.transpose(1, 2), qp), dv, None
    dqp = torch.full_like(qp, nan)
    dkp = torch.full_like(kp, nan)
    dvs_part = torch.full((B, nm, D), nan, device=qp.device, dtype=torch.float32)
    nd = triton.cdiv(D, BLOCK_D)
    attention_bwd_dq_kernel[(B, nm, nd)](qp, kp, v_score, ds, dqp, dvs_part, Tq, Tk, D, nm,
                                    BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D)
    attention_bwd_dk_kernel[(B, nn, nd)](qp, kp, v_score, ds, dkp, Tq, Tk, D,
                                    BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D)
    dvs = dvs_part.sum(dim=(0, 1)).to(v_score.dtype)
    return dqp, dkp, dv, dvs
