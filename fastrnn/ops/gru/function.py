"""The one autograd Function of the GRU family; the chosen backend hands it fwd/bwd.

Backend contract (cpu and cuda through fastrnn._C, triton through triton.py):
    fwd(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, needs_grad) -> (y, hT, saved)
    bwd(dy, dhT, x, h0, w_ih, w_hh, b_ih, b_hh, lengths, y, saved)
        -> (dx, dh0, dw_ih, dw_hh, db_ih, db_hh)
Asked for a graph of the backward (create_graph=True), the Function returns the reference's
gradients as a graph instead (_common.graph_backward), so double backward works.
"""
import torch

from fastrnn.ops._common import graph_backward
from fastrnn.ops.gru import naive


class GRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, impl, x, h0, w_ih, w_hh, b_ih, b_hh, lengths):
        needs_grad = any(ctx.needs_input_grad[1:7])
        y, hT, saved = impl.fwd(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, needs_grad)
        ctx.impl = impl
        if needs_grad:
            ctx.save_for_backward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, y, *saved)
        return y, hT

    @staticmethod
    def backward(ctx, dy, dhT):
        x, h0, w_ih, w_hh, b_ih, b_hh, lengths, y, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            grads = graph_backward(naive.gru, (x, h0, w_ih, w_hh, b_ih, b_hh, lengths), ctx.needs_input_grad[1:8],
                                   (dy, dhT))
            return (None, *grads)
        grads = ctx.impl.bwd(dy.contiguous(), dhT.contiguous(), x, h0, w_ih, w_hh, b_ih, b_hh,
                             lengths, y, tuple(saved))
        grads = [g if need else None for g, need in zip(grads, ctx.needs_input_grad[1:7])]
        return (None, *grads, None)
