"""Helpers shared by the Triton RNN kernels (fastrnn/ops/lstm/triton.py, fastrnn/ops/gru/triton.py).

Shape legend: T time, B batch, H hidden size, I input size. State buffers are fp32 whatever the
input dtype: the recurrence accumulates in fp32 and only y is written in the input dtype.

Block configuration: ``BLOCK_B`` (batch rows of a program, >= 16 because tl.dot needs it),
``BLOCK_H`` (hidden units of a program), ``BLOCK_K`` (reduction chunk of the recurrent product).
A program that holds the whole of H runs the time loop by itself (one launch for all T); when
BLOCK_H < H the programs split H and the host launches one step at a time (see ``plan``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import List, Optional

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# Largest hidden size one program holds entirely (persistent time loop inside one launch). Above
# it, 4 gate accumulators of [16, H] fp32 plus the W_hh operand tiles no longer fit in registers
# (ptxas -v for sm_90, 8 warps: H = 128 spills ~150 bytes, H = 256 ~800 bytes, more in fp32), so
# programs split H and the host steps through time.
MAX_PERSISTENT_H = 128

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    BLOCK_B: int
    BLOCK_H: int
    BLOCK_K: int
    num_warps: int = 4


# Tests set this (monkeypatch) to force H-tiling at small H, e.g. BlockConfig(16, 16, 16).
OVERRIDE: Optional[BlockConfig] = None


def check_dtype(dtype: torch.dtype) -> Optional[str]:
    if dtype not in SUPPORTED_DTYPES:
        return (f"dtype {str(dtype).replace('torch.', '')} not supported by the triton backend "
                "(takes float32, float16, bfloat16; its state is fp32, too coarse for float64)")
    return None


def check_sizes(B: int, H: int, gates: int) -> Optional[str]:
    """Offsets inside one step ([B, gates*H] slices, W_hh) are 32-bit, which saves registers;
    the time component of every offset (t * B * gates*H) is 64-bit, so B*T*H may pass 2^31."""
    if B * gates * H >= 2**31 or gates * H * H >= 2**31:
        return f"B*{gates}H or {gates}H*H reaches 2^31 (B={B}, H={H}): one step's offsets are 32-bit"
    return None


def block_b(B: int) -> int:
    # Batch tile: tl.dot needs >= 16 rows; large tiles cut the number of programs, each of which
    # streams W_hh once per step, but small batches (the decoding case) must not waste 64 rows.
    return 16 if B <= 16 else (32 if B <= 32 else 64)


def plan(B: int, H: int) -> BlockConfig:
    """Block sizes for a call. Under the interpreter: as large as possible (each program instance
    costs milliseconds). On the GPU: BLOCK_B from B, BLOCK_H = whole H when it fits
    (persistent), else the autotuner chooses BLOCK_H/BLOCK_K/num_warps (see ``tile_configs``)."""
    if OVERRIDE is not None:
        return OVERRIDE
    hp = max(16, triton.next_power_of_2(H))
    if INTERPRET:
        return BlockConfig(block_b(B), hp, hp)
    if hp <= MAX_PERSISTENT_H:
        # keep the 4 fp32 gate accumulators at <= 4 x 2048 values (32 registers a thread with 8
        # warps): fewer batch rows per program at larger H, which also means more programs
        bb = max(16, min(block_b(B), 2048 // hp))
        return BlockConfig(bb, hp, min(hp, 64), 4 if hp <= 32 else 8)
    return BlockConfig(block_b(B), 0, 0)  # 0: tiled; BLOCK_H/BLOCK_K come from the autotuner


def persistent(cfg: BlockConfig, H: int) -> bool:
    return cfg.BLOCK_H >= H


def tile_configs(block_b: int) -> List[triton.Config]:
    """Autotuning space of the H-tiled (one launch per step) kernels for a batch tile of block_b
    rows. Tiles with more than 2048 accumulator rows x units spill (ptxas -v for sm_90: 4 gate
    accumulators plus the W_hh operand tiles exceed 255 registers a thread), so they are left out."""
    # Kept small on purpose: every config is compiled for each (H, dtype, flags) on first use,
    # and GPU time on the lent machines is minutes. FASTRNN_TRITON_AUTOTUNE=0 (read when the
    # kernels are first built) keeps the first config only: correctness runs (the GPU tests in
    # bench/device_check.sh) then compile one variant instead of up to six.
    out = []
    for bh in (32, 64, 128):
        if block_b * bh > 2048:
            continue
        for w in (4, 8):
            out.append(triton.Config({"BLOCK_H": bh, "BLOCK_K": 64}, num_warps=w))
    if os.environ.get("FASTRNN_TRITON_AUTOTUNE", "1") == "0":
        return out[:1]
    return out


def autotuned(kernel, restore=()):
    """One autotuner per batch-tile size (its config space depends on it), keyed on H and the
    operand precision; the autotuner adds the tensors' dtypes to the key. Never keyed on T or B,
    so tuning happens once per model shape. Tuning runs restore the buffers the kernel updates in
    place."""
    return {bb: triton.autotune(tile_configs(bb), key=["H", "DOT_F32"], restore_value=list(restore))(kernel)
            for bb in (16, 32, 64)}


def dot_f32(dtype: torch.dtype) -> bool:
    """Whether the recurrent products run with fp32 operands. Always under the interpreter (its
    bf16 tl.dot returns garbage) and for fp32 inputs (as 'ieee': PyTorch does not use TF32 for
    matmuls by default, and the tolerance rule compares with PyTorch's fp32 error)."""
    return INTERPRET or dtype == torch.float32


def nan_like(shape, device, dtype=torch.float32) -> torch.Tensor:
    """Outputs start as NaN so that an element a kernel forgets to write fails the tests."""
    return torch.full(shape, float("nan"), device=device, dtype=dtype)


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # The interpreter has no tl.tanh and libdevice.tanh errors there; the sigmoid identity works
    # on both, and saturates cleanly for large |x| (exp overflows to inf -> sigmoid 0 -> tanh -1).
    return 2.0 * sigmoid(2.0 * x) - 1.0


@triton.jit
def mma(a, b, acc, DOT_F32: tl.constexpr):
    """acc + a @ b with fp32 accumulation. DOT_F32: fp32 operands in IEEE precision; otherwise a is
    cast to b's dtype (fp16/bf16 weights) for the tensor cores."""
    if DOT_F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        return tl.dot(a.to(b.dtype), b, acc)


def weight_grads(dgx, dgh, x, hs_prev, w_ih, w_hh, has_b_ih, has_b_hh, dt):
    """dx, dW_ih, dW_hh, db_ih, db_hh from the pre-activation gradients of the input side
    dgx [T,B,GI] and of the recurrent side dgh [T,B,GH] (fp32; the same tensor for LSTM), with
    hs_prev [T,B,H] the state each step read. Big GEMMs over all T after the recurrence, in the
    input dtype for fp16/bf16 (tensor cores; PyTorch's autograd keeps these in that dtype too)."""
    T, B, _ = dgx.shape
    gx = dgx.reshape(T * B, -1)
    gh = dgh.reshape(T * B, -1)
    gxd = gx if dt == torch.float32 else gx.to(dt)
    ghd = gxd if dgh is dgx else (gh if dt == torch.float32 else gh.to(dt))
    dx = torch.matmul(gxd, w_ih).view(T, B, -1).to(dt)
    dw_ih = torch.matmul(gxd.t(), x.reshape(T * B, -1)).to(dt)
    dw_hh = torch.matmul(ghd.t(), hs_prev.reshape(T * B, -1).to(ghd.dtype)).to(dt)
    db_ih = gx.sum(0).to(dt) if has_b_ih else None
    db_hh = gh.sum(0).to(dt) if has_b_hh else None
    return dx, dw_ih, dw_hh, db_ih, db_hh
