"""The one autograd Function of the attention family; the chosen backend hands it fwd/bwd.

The fused kernel sees the query and keys already mapped by the kind's linear maps (done with
torch GEMMs in __init__.py, whose gradients autograd handles):
    dot-like (v_score None):  e[b,i,j] = qp[b,i] . kp[b,j]
    additive:                 e[b,i,j] = v_score . tanh(qp[b,i] + kp[b,j])
then weights = masked_softmax_j(e) and ctx = weights @ v.

Backend contract (cpu and cuda through fastrnn._C, triton through triton.py):
    fwd(qp, kp, v, mask, v_score, needs_grad) -> (ctx, weights, saved)
    bwd(dctx, dweights, qp, kp, v, mask, v_score, weights, saved) -> (dqp, dkp, dv, dv_score)
``saved`` is a tuple of tensors only that backend's bwd reads. The backward reads ``weights``
(an output the caller gets anyway, O(B*Tq*Tk)) rather than a log-sum-exp, so it never has to
recompute the scores before the softmax gradient; the additive backward recomputes tanh tile
by tile instead of saving [B,Tq,Tk,H]. dv_score is None for dot-like calls.
Asked for a graph of the backward (create_graph=True), the Function returns the reference's
gradients as a graph instead (_common.graph_backward), so double backward works.
"""
import torch

from fastrnn.ops._common import graph_backward
from fastrnn.ops.attention import naive


class AttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, impl, qp, kp, v, mask, v_score):
        needs_grad = any(ctx.needs_input_grad[1:4]) or ctx.needs_input_grad[5]
        out, weights, saved = impl.fwd(qp, kp, v, mask, v_score, needs_grad)
        ctx.impl = impl
        if needs_grad:
            ctx.save_for_backward(qp, kp, v, mask, v_score, weights, *saved)
        return out, weights

    @staticmethod
    def backward(ctx, dctx, dweights):
        qp, kp, v, mask, v_score, weights, *saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True
            return (None, *graph_backward(naive.mapped_attention, (qp, kp, v, mask, v_score),
                                          ctx.needs_input_grad[1:6], (dctx, dweights)))
        dqp, dkp, dv, dvs = ctx.impl.bwd(dctx.contiguous(), dweights.contiguous(), qp, kp, v, mask,
                                         v_score, weights, tuple(saved))
        need = ctx.needs_input_grad
        return (None, dqp if need[1] else None, dkp if need[2] else None, dv if need[3] else None,
                None, dvs if (need[5] and v_score is not None) else None)
