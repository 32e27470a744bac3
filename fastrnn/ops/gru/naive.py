"""Pure-PyTorch GRU: the ground truth for tests and the fallback when no kernel applies.

Shapes: x [T,B,I], h0 [B,H], w_ih [3H,I], w_hh [3H,H], b_ih/b_hh [3H] or None, lengths [B] or None.
Gate order r|z|n and torch's formula: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
Steps t >= lengths[b] keep h and write y[t,b] = 0.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def gru(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
        b_hh: Optional[Tensor] = None, lengths: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    T = x.shape[0]
    xw = x @ w_ih.t()                                   # input projection for all T at once
    if b_ih is not None:
        xw = xw + b_ih
    h = h0
    ys = []
    for t in range(T):
        hw = h @ w_hh.t()
        if b_hh is not None:
            hw = hw + b_hh
        xr, xz, xn = xw[t].chunk(3, dim=1)
        hr, hz, hn = hw.chunk(3, dim=1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h_new = (1 - z) * n + z * h
        if lengths is not None:
            live = (t < lengths).to(x.device).unsqueeze(1)
            h = torch.where(live, h_new, h)
            ys.append(h_new * live.to(h_new.dtype))
        else:
            h = h_new
            ys.append(h_new)
    return torch.stack(ys), h
