"""The one autograd Function of the LSTM family; the chosen backend hands it fwd/bwd.

Backend contract (cpu and cuda through fastrnn._C, triton through triton.py):
    fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, needs_grad) -> (y, hT, cT, saved)
    bwd(dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, y, saved)
        -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr)
``saved`` is a tuple of tensors only that backend's bwd reads; absent inputs are None and get
None gradients. Asked for a graph of the backward (create_graph=True), the Function returns the
reference's gradients as a graph instead (_common.graph_backward), so double backward works.
"""
import torch

from fastrnn.ops._common import graph_backward
from fastrnn.ops.lstm import naive


def _reference(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths):
    y, (hT, cT) = naive.lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths)
    return y, hT, cT


class LSTMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, impl, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths):
        needs_grad = any(ctx.needs_input_grad[1:9])
        y, hT, cT, saved = impl.fwd(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, needs_grad)
        ctx.impl = impl
        ctx.n_saved = len(saved)
        if needs_grad:
            ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, y, *saved)
        return y, hT, cT

    @staticmethod
    def backward(ctx, dy, dhT, dcT):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths, y, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            grads = graph_backward(_reference, (x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, lengths),
                                   ctx.needs_input_grad[1:10], (dy, dhT, dcT))
            return (None, *grads)
        grads = ctx.impl.bwd(dy.contiguous(), dhT.contiguous(), dcT.contiguous(), x, h0, c0,
                             w_ih, w_hh, b_ih, b_hh, w_hr, lengths, y, tuple(saved))
        grads = [g if need else None for g, need in zip(grads, ctx.needs_input_grad[1:9])]
        return (None, *grads, None)
