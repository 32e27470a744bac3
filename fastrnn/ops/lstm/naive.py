"""Pure-PyTorch LSTM: the ground truth for tests and the fallback when no kernel applies.

Shapes: x [T,B,I], h0 [B,P], c0 [B,H], w_ih [4H,I], w_hh [4H,P], b_ih/b_hh [4H] or None,
w_hr [P,H] or None (proj_size; P = H without it), lengths [B] int64 or None.
Gate order i|f|g|o as torch.nn.LSTM. Steps t >= lengths[b] keep (h, c) and write y[t,b] = 0.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def lstm(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
         b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None,
         w_hr: Optional[Tensor] = None, lengths: Optional[Tensor] = None
         ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
    T = x.shape[0]
    xw = x @ w_ih.t()                                   # input projection for all T at once
    if b_ih is not None:
        xw = xw + b_ih
    if b_hh is not None:
        xw = xw + b_hh
    h, c = h0, c0
    ys = []
    for t in range(T):
        gates = xw[t] + h @ w_hh.t()
        i, f, g, o = gates.chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()
        if lengths is not None:
            live = (t < lengths).to(x.device).unsqueeze(1)   # [B,1]
            c = torch.where(live, c_new, c)
            h = torch.where(live, h_new, h)
            ys.append(h_new * live.to(h_new.dtype))
        else:
            c, h = c_new, h_new
            ys.append(h_new)
    return torch.stack(ys), (h, c)
