"""Triton GRU kernels and their hosts ``gru_fwd``/``gru_bwd`` (contract: function.py).

Shapes: x [T,B,I], h0 [B,H], w_ih [3H,I], w_hh [3H,H], gates in order r|z|n as torch.nn.GRU:
    r = s(W_ir x + b_ir + W_hr h + b_hr), z = s(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) n + z h.

The plan is the LSTM's (see fastrnn/ops/lstm/triton.py for the reasoning): x W_ih^T for all T
is one torch GEMM (b_ih and the r|z part of b_hh folded in; b_hn stays inside r * (.)); T == 1
runs the fused cell kernel on precomputed projections; T > 1 runs ``gru_fwd_kernel``, one
persistent launch per batch tile when a program holds all of H, one launch per step when
programs split H. Backward: ``gru_bwd_kernel`` in reverse time, then torch GEMMs for the weights.

Saved for backward: hs [T+1,B,H] (h0 .. h_{T-1}, held through padded steps) and, per step,
[T,B,4H] = r | z | n | hn with hn = W_hn h + b_hn, all fp32. The backward kernel writes
dG [T,B,4H] = dA_r | dA_z | dhn | dA_n: the recurrent side's pre-activation gradients are the
first 3H (in W_hh's row order), the input side's are r|z and the last H.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from fastrnn.ops import _triton_utils as tu
from fastrnn.ops._triton_utils import mma, sigmoid, tanh


def check(*, dtype, T, B, I, H, has_lengths=False, **_) -> Optional[str]:
    return tu.check_dtype(dtype) or tu.check_sizes(B, H, 4)   # 4: the saved [B,4H] per step


# --------------------------------------------------------------------------------------------
# Cell math shared by the recurrent and the single-step kernels
# --------------------------------------------------------------------------------------------

@triton.jit
def _gru_cell(a_r, a_z, x_n, hn, h_prev):
    """Pre-activations of r and z, the input part of n, hn = W_hn h + b_hn -> r, z, n, h_t."""
    r = sigmoid(a_r)
    z = sigmoid(a_z)
    n = tanh(x_n + r * hn)
    h = (1.0 - z) * n + z * h_prev
    return r, z, n, h


@triton.jit
def _gru_cell_bwd(dh, r, z, n, hn, h_prev):
    """dL/dh_t -> gradients of a_r, a_z, hn, the n pre-activation, and the direct part of
    dL/dh_{t-1} (through z h)."""
    d_an = dh * (1.0 - z) * (1.0 - n * n)
    d_r = d_an * hn * r * (1.0 - r)
    d_z = dh * (h_prev - n) * z * (1.0 - z)
    return d_r, d_z, d_an * r, d_an, dh * z


# --------------------------------------------------------------------------------------------
# Recurrent forward
# --------------------------------------------------------------------------------------------

@triton.jit(do_not_specialize=["t_start", "t_stop", "B", "H", "NSLOT"])
def gru_fwd_kernel(xw_ptr, whh_ptr, bhn_ptr, hs_ptr, y_ptr, gates_ptr, len_ptr,
                   t_start, t_stop, B, H, NSLOT,
                   HAS_LENGTHS: tl.constexpr, SAVE: tl.constexpr, DOT_F32: tl.constexpr,
                   BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                   RESIDENT: tl.constexpr):
    # Steps t in [t_start, t_stop) for batch rows offs_b and hidden units offs_h. hs slot s holds
    # h after step s-1 (slot 0 = h0), slots wrap modulo NSLOT (T+1 when saved, 2 otherwise).
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    mb = offs_b < B
    mh = offs_h < H
    m2 = mb[:, None] & mh[None, :]
    H64 = H.to(tl.int64)
    BH = B * H64
    st_off = offs_b[:, None] * H + offs_h[None, :]              # [BB,BH] into a [B,H] slot
    x_off = offs_b[:, None] * (3 * H) + offs_h[None, :]         # gate r of xw [B,3H]
    s_off = offs_b[:, None] * (4 * H) + offs_h[None, :]         # r of the saved [B,4H]
    b_hn = tl.load(bhn_ptr + offs_h, mask=mh, other=0.0)[None, :]
    if HAS_LENGTHS:
        L = tl.load(len_ptr + offs_b, mask=mb, other=0)

    # RESIDENT (BLOCK_K >= H): W_hh slices stay in registers; element (k, j) = W_hh[q*H + offs_h[j], k]
    if RESIDENT:
        rk = tl.arange(0, BLOCK_K)
        w_off = offs_h[None, :] * H + rk[:, None]
        wm = (rk[:, None] < H) & mh[None, :]
        w_r = tl.load(whh_ptr + w_off, mask=wm, other=0.0)
        w_z = tl.load(whh_ptr + H64 * H64 + w_off, mask=wm, other=0.0)
        w_n = tl.load(whh_ptr + 2 * H64 * H64 + w_off, mask=wm, other=0.0)

    for t in range(t_start, t_stop):
        t64 = tl.zeros([], tl.int64) + t  # 64-bit offsets; t is a plain int under the interpreter
        h_prev_ptr = hs_ptr + (t64 % NSLOT) * BH
        nxt = ((t64 + 1) % NSLOT) * BH

        # r, z pre-activations (xw + h W^T), x part of n, and hn = h W_hn^T + b_hn
        xw_t = xw_ptr + t64 * (BH * 3)
        a_r = tl.load(xw_t + x_off, mask=m2, other=0.0)
        a_z = tl.load(xw_t + H64 + x_off, mask=m2, other=0.0)
        x_n = tl.load(xw_t + 2 * H64 + x_off, mask=m2, other=0.0)
        hn = tl.zeros((BLOCK_B, BLOCK_H), tl.float32) + b_hn
        if RESIDENT:
            hk = tl.load(h_prev_ptr + offs_b[:, None] * H + rk[None, :],
                         mask=mb[:, None] & (rk[None, :] < H), other=0.0)
            a_r = mma(hk, w_r, a_r, DOT_F32)
            a_z = mma(hk, w_z, a_z, DOT_F32)
            hn = mma(hk, w_n, hn, DOT_F32)
        else:
            for k0 in range(0, H, BLOCK_K):
                rk = k0 + tl.arange(0, BLOCK_K)
                mk = rk < H
                hk = tl.load(h_prev_ptr + offs_b[:, None] * H + rk[None, :],
                             mask=mb[:, None] & mk[None, :], other=0.0)
                w_off = offs_h[None, :] * H + rk[:, None]
                wm = mk[:, None] & mh[None, :]
                a_r = mma(hk, tl.load(whh_ptr + w_off, mask=wm, other=0.0), a_r, DOT_F32)
                a_z = mma(hk, tl.load(whh_ptr + H64 * H64 + w_off, mask=wm, other=0.0), a_z, DOT_F32)
                hn = mma(hk, tl.load(whh_ptr + 2 * H64 * H64 + w_off, mask=wm, other=0.0), hn, DOT_F32)

        # state update; padded steps (t >= lengths[b]) keep h and write y = 0
        h_prev = tl.load(h_prev_ptr + st_off, mask=m2, other=0.0)
        r, z, n, h = _gru_cell(a_r, a_z, x_n, hn, h_prev)
        y_val = h
        if HAS_LENGTHS:
            live = (t64 < L)[:, None]
            h = tl.where(live, h, h_prev)
            y_val = tl.where(live, y_val, 0.0)
        tl.store(hs_ptr + nxt + st_off, h, mask=m2)
        tl.store(y_ptr + t64 * BH + st_off, y_val.to(y_ptr.dtype.element_ty), mask=m2)
        if SAVE:
            gt = gates_ptr + t64 * (BH * 4)
            tl.store(gt + s_off, r, mask=m2)
            tl.store(gt + H64 + s_off, z, mask=m2)
            tl.store(gt + 2 * H64 + s_off, n, mask=m2)
            tl.store(gt + 3 * H64 + s_off, hn, mask=m2)
        # the next step reads h_t of every unit of this program: order the writes before it
        tl.debug_barrier()


# --------------------------------------------------------------------------------------------
# Recurrent backward
# --------------------------------------------------------------------------------------------

@triton.jit(do_not_specialize=["t_hi", "n_steps", "T", "B", "H"])
def gru_bwd_kernel(dy_ptr, whh_ptr, gates_ptr, hs_ptr, dg_ptr, dpass_ptr, len_ptr,
                   t_hi, n_steps, T, B, H,
                   HAS_LENGTHS: tl.constexpr, DOT_F32: tl.constexpr,
                   BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
                   RESIDENT: tl.constexpr):
    # Steps t = t_hi, ..., t_hi-n_steps+1 of backpropagation through time.
    # dL/dh_t = dG_{t+1}[:3H] W_hh + dpass (+ dy_t), where dpass is the part that does not go
    # through step t+1's gates: dhT at the start, z * dL/dh_{t+1}, or all of it on padded steps.
    # dpass is [B,H] and only touched by the program owning the tile.
    pid_b = tl.program_id(0)
    pid_h = tl.program_id(1)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_h = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)
    mb = offs_b < B
    mh = offs_h < H
    m2 = mb[:, None] & mh[None, :]
    H64 = H.to(tl.int64)
    BH = B * H64
    st_off = offs_b[:, None] * H + offs_h[None, :]
    g_off = offs_b[:, None] * (4 * H) + offs_h[None, :]
    if HAS_LENGTHS:
        L = tl.load(len_ptr + offs_b, mask=mb, other=0)

    # RESIDENT (BLOCK_K >= H): W_hh slices stay in registers; element (j, k) = W_hh[q*H + j, offs_h[k]]
    if RESIDENT:
        rj = tl.arange(0, BLOCK_K)
        w_off = rj[:, None] * H + offs_h[None, :]
        wm = (rj[:, None] < H) & mh[None, :]
        w_r = tl.load(whh_ptr + w_off, mask=wm, other=0.0)
        w_z = tl.load(whh_ptr + H64 * H64 + w_off, mask=wm, other=0.0)
        w_n = tl.load(whh_ptr + 2 * H64 * H64 + w_off, mask=wm, other=0.0)

    for s in range(0, n_steps):
        t64 = tl.zeros([], tl.int64) + t_hi - s

        # dL/dh_t for this tile: dpass + dG_{t+1}[:3H] W_hh (nothing from step T)
        dh = tl.load(dpass_ptr + st_off, mask=m2, other=0.0)
        dg_next = dg_ptr + (t64 + 1) * (BH * 4)
        has_next = (t64 + 1) < T
        if RESIDENT:
            dm = (mb[:, None] & (rj[None, :] < H)) & has_next
            gq = offs_b[:, None] * (4 * H) + rj[None, :]
            dh = mma(tl.load(dg_next + gq, mask=dm, other=0.0), w_r, dh, DOT_F32)
            dh = mma(tl.load(dg_next + H64 + gq, mask=dm, other=0.0), w_z, dh, DOT_F32)
            dh = mma(tl.load(dg_next + 2 * H64 + gq, mask=dm, other=0.0), w_n, dh, DOT_F32)
        else:
            for j0 in range(0, H, BLOCK_K):
                rj = j0 + tl.arange(0, BLOCK_K)
                mj = rj < H
                dm = (mb[:, None] & mj[None, :]) & has_next
                gq = offs_b[:, None] * (4 * H) + rj[None, :]
                w_off = rj[:, None] * H + offs_h[None, :]
                wm = mj[:, None] & mh[None, :]
                for q in tl.static_range(3):
                    dh = mma(tl.load(dg_next + q * H64 + gq, mask=dm, other=0.0),
                             tl.load(whh_ptr + q * H64 * H64 + w_off, mask=wm, other=0.0), dh, DOT_F32)

        # gate gradients of step t (zero on padded steps, whose gradient passes straight through)
        dy = tl.load(dy_ptr + t64 * BH + st_off, mask=m2, other=0.0).to(tl.float32)
        if HAS_LENGTHS:
            live = (t64 < L)[:, None]
            dh_in = dh
            dh = dh + tl.where(live, dy, 0.0)
        else:
            dh = dh + dy
        gt = gates_ptr + t64 * (BH * 4)
        r = tl.load(gt + g_off, mask=m2, other=0.0)
        z = tl.load(gt + H64 + g_off, mask=m2, other=0.0)
        n = tl.load(gt + 2 * H64 + g_off, mask=m2, other=0.0)
        hn = tl.load(gt + 3 * H64 + g_off, mask=m2, other=0.0)
        h_prev = tl.load(hs_ptr + t64 * BH + st_off, mask=m2, other=0.0)
        d_r, d_z, d_hn, d_n, dpass = _gru_cell_bwd(dh, r, z, n, hn, h_prev)
        if HAS_LENGTHS:
            d_r = tl.where(live, d_r, 0.0)
            d_z = tl.where(live, d_z, 0.0)
            d_hn = tl.where(live, d_hn, 0.0)
            d_n = tl.where(live, d_n, 0.0)
            dpass = tl.where(live, dpass, dh_in)
        tl.store(dpass_ptr + st_off, dpass, mask=m2)
        dgt = dg_ptr + t64 * (BH * 4)
        tl.store(dgt + g_off, d_r, mask=m2)
        tl.store(dgt + H64 + g_off, d_z, mask=m2)
        tl.store(dgt + 2 * H64 + g_off, d_hn, mask=m2)
        tl.store(dgt + 3 * H64 + g_off, d_n, mask=m2)
        # the next (earlier) step reads dG_t of every unit of this program
        tl.debug_barrier()


# --------------------------------------------------------------------------------------------
# Single step (T == 1)
# --------------------------------------------------------------------------------------------

@triton.jit(do_not_specialize=["N", "H"])
def gru_cell_fwd_kernel(xw_ptr, hw_ptr, h0_ptr, y_ptr, h_ptr, gates_ptr, N, H,
                        SAVE: tl.constexpr, BLOCK: tl.constexpr):
    # One step for N = B*H elements from xw = x W_ih^T + b_ih and hw = h0 W_hh^T + b_hh [B,3H]
    offs = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    m = offs < N
    H64 = H.to(tl.int64)
    b = offs // H64
    p = b * (3 * H64) + offs % H64
    a_r = tl.load(xw_ptr + p, mask=m, other=0.0) + tl.load(hw_ptr + p, mask=m, other=0.0)
    a_z = tl.load(xw_ptr + H64 + p, mask=m, other=0.0) + tl.load(hw_ptr + H64 + p, mask=m, other=0.0)
    x_n = tl.load(xw_ptr + 2 * H64 + p, mask=m, other=0.0)
    hn = tl.load(hw_ptr + 2 * H64 + p, mask=m, other=0.0)
    h_prev = tl.load(h0_ptr + offs, mask=m, other=0.0).to(tl.float32)
    r, z, n, h = _gru_cell(a_r, a_z, x_n, hn, h_prev)
    tl.store(y_ptr + offs, h.to(y_ptr.dtype.element_ty), mask=m)
    tl.store(h_ptr + offs, h.to(h_ptr.dtype.element_ty), mask=m)
    if SAVE:
        q = b * (4 * H64) + offs % H64
        tl.store(gates_ptr + q, r, mask=m)
        tl.store(gates_ptr + H64 + q, z, mask=m)
        tl.store(gates_ptr + 2 * H64 + q, n, mask=m)
        tl.store(gates_ptr + 3 * H64 + q, hn, mask=m)


@triton.jit(do_not_specialize=["N", "H"])
def gru_cell_bwd_kernel(dy_ptr, dhT_ptr, gates_ptr, h0_ptr, dg_ptr, dpass_ptr, N, H,
                        BLOCK: tl.constexpr):
    # Gradients of one step: dh = dy + dhT -> dG [B,4H] and the direct part of dh0 (z * dh)
    offs = (tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)
    m = offs < N
    H64 = H.to(tl.int64)
    q = (offs // H64) * (4 * H64) + offs % H64
    dh = tl.load(dy_ptr + offs, mask=m, other=0.0).to(tl.float32) + \
        tl.load(dhT_ptr + offs, mask=m, other=0.0).to(tl.float32)
    r = tl.load(gates_ptr + q, mask=m, other=0.0)
    z = tl.load(gates_ptr + H64 + q, mask=m, other=0.0)
    n = tl.load(gates_ptr + 2 * H64 + q, mask=m, other=0.0)
    hn = tl.load(gates_ptr + 3 * H64 + q, mask=m, other=0.0)
    h_prev = tl.load(h0_ptr + offs, mask=m, other=0.0).to(tl.float32)
    d_r, d_z, d_hn, d_n, dpass = _gru_cell_bwd(dh, r, z, n, hn, h_prev)
    tl.store(dg_ptr + q, d_r, mask=m)
    tl.store(dg_ptr + H64 + q, d_z, mask=m)
    tl.store(dg_ptr + 2 * H64 + q, d_hn, mask=m)
    tl.store(dg_ptr + 3 * H64 + q, d_n, mask=m)
    tl.store(dpass_ptr + offs, dpass, mask=m)


# Autotuned wrappers of the H-tiled regime, one per batch-tile size (GPU only: the interpreter
# runs fixed blocks). Tuning benchmarks the first step's launch; the backward kernel updates its
# carried gradients in place (dG_t is rewritten identically), so tuning runs restore only those.
if not tu.INTERPRET:
    _fwd_tuned = tu.autotuned(gru_fwd_kernel)
    _bwd_tuned = tu.autotuned(gru_bwd_kernel, restore=["dpass_ptr"])

CELL_BLOCK = 1024


# --------------------------------------------------------------------------------------------
# Hosts
# --------------------------------------------------------------------------------------------

def gru_fwd(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, needs_grad):
    T, B, _ = x.shape
    H = h0.shape[1]
    dev, dt = x.device, x.dtype
    # xw = x W_ih^T + b_ih as fp32 [T,B,3H]: one GEMM in the input dtype for all T
    xw = torch.matmul(x.reshape(T * B, -1), w_ih.t()).float().view(T, B, 3 * H)
    if b_ih is not None:
        xw += b_ih.float()
    y = tu.nan_like((T, B, H), dev, dt)

    if T == 1:
        hw = torch.matmul(h0, w_hh.t()).float()
        if b_hh is not None:
            hw += b_hh.float()
        hT = tu.nan_like((B, H), dev, dt)
        gates = tu.nan_like((1, B, 4 * H), dev) if needs_grad else y
        gru_cell_fwd_kernel[(triton.cdiv(B * H, CELL_BLOCK),)](
            xw, hw, h0, y, hT, gates, B * H, H, SAVE=needs_grad, BLOCK=CELL_BLOCK)
        return y, hT, ((gates,) if needs_grad else ())

    if b_hh is not None:
        xw[..., :2 * H] += b_hh[:2 * H].float()
        b_hn = b_hh[2 * H:].float().contiguous()
    else:
        b_hn = torch.zeros(H, device=dev, dtype=torch.float32)
    nslot = T + 1 if needs_grad else 2
    hs = tu.nan_like((nslot, B, H), dev)
    hs[0] = h0
    gates = tu.nan_like((T, B, 4 * H), dev) if needs_grad else y   # y: unused placeholder
    lens = lengths if lengths is not None else y
    cfg = tu.plan(B, H)
    common = dict(HAS_LENGTHS=lengths is not None, SAVE=needs_grad, DOT_F32=tu.dot_f32(dt),
                  BLOCK_B=cfg.BLOCK_B)
    nb = triton.cdiv(B, cfg.BLOCK_B)
    args = (xw, w_hh, b_hn, hs, y, gates, lens)
    if cfg.BLOCK_H and tu.persistent(cfg, H):
        gru_fwd_kernel[(nb, 1)](*args, 0, T, B, H, nslot, BLOCK_H=cfg.BLOCK_H, BLOCK_K=cfg.BLOCK_K,
                                num_warps=cfg.num_warps, RESIDENT=cfg.BLOCK_K >= H, **common)
    elif cfg.BLOCK_H:  # fixed tiles (interpreter, tests)
        grid = (nb, triton.cdiv(H, cfg.BLOCK_H))
        for t in range(T):
            gru_fwd_kernel[grid](*args, t, t + 1, B, H, nslot, BLOCK_H=cfg.BLOCK_H,
                                 BLOCK_K=cfg.BLOCK_K, num_warps=cfg.num_warps,
                                 RESIDENT=cfg.BLOCK_K >= H, **common)
    else:
        grid = lambda meta: (nb, triton.cdiv(H, meta["BLOCK_H"]))  # noqa: E731
        for t in range(T):
            _fwd_tuned[cfg.BLOCK_B][grid](*args, t, t + 1, B, H, nslot, RESIDENT=False, **common)

    hT = hs[T % nslot].to(dt)
    return y, hT, ((hs, gates) if needs_grad else ())


def gru_bwd(dy, dhT, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, y, saved):
    T, B, _ = x.shape
    H = h0.shape[1]
    dev, dt = x.device, x.dtype
    dpass = tu.nan_like((B, H), dev) if T == 1 else dhT.float().clone()
    dg = tu.nan_like((T, B, 4 * H), dev)

    if T == 1:
        (gates,) = saved
        gru_cell_bwd_kernel[(triton.cdiv(B * H, CELL_BLOCK),)](
            dy, dhT, gates, h0, dg, dpass, B * H, H, BLOCK=CELL_BLOCK)
        hs_prev = h0.unsqueeze(0)
    else:
        hs, gates = saved
        lens = lengths if lengths is not None else dy
        cfg = tu.plan(B, H)
        common = dict(HAS_LENGTHS=lengths is not None, DOT_F32=tu.dot_f32(dt), BLOCK_B=cfg.BLOCK_B)
        nb = triton.cdiv(B, cfg.BLOCK_B)
        args = (dy, w_hh, gates, hs, dg, dpass, lens)
        if cfg.BLOCK_H and tu.persistent(cfg, H):
            gru_bwd_kernel[(nb, 1)](*args, T - 1, T, T, B, H, BLOCK_H=cfg.BLOCK_H, BLOCK_K=cfg.BLOCK_K,
                                    num_warps=cfg.num_warps, RESIDENT=cfg.BLOCK_K >= H, **common)
        elif cfg.BLOCK_H:
            grid = (nb, triton.cdiv(H, cfg.BLOCK_H))
            for t in range(T - 1, -1, -1):
                gru_bwd_kernel[grid](*args, t, 1, T, B, H, BLOCK_H=cfg.BLOCK_H, BLOCK_K=cfg.BLOCK_K,
                                     num_warps=cfg.num_warps, RESIDENT=cfg.BLOCK_K >= H, **common)
        else:
            grid = lambda meta: (nb, triton.cdiv(H, meta["BLOCK_H"]))  # noqa: E731
            for t in range(T - 1, -1, -1):
                _bwd_tuned[cfg.BLOCK_B][grid](*args, t, 1, T, B, H, RESIDENT=False, **common)
        hs_prev = hs[:T]

    dgh = dg[..., :3 * H]
    dgx = torch.cat((dg[..., :2 * H], dg[..., 3 * H:]), dim=-1)
    dx, dw_ih, dw_hh, db_ih, db_hh = tu.weight_grads(dgx, dgh, x, hs_prev, w_ih, w_hh,
                                                     b_ih is not None, b_hh is not None, dt)
    # dL/dh0 = dG_0[:3H] W_hh + the part that bypasses step 0's gates
    dh0 = torch.matmul(dgh[0], w_hh.float()) + dpass
    return dx, dh0.to(dt), dw_ih, dw_hh, db_ih, db_hh
