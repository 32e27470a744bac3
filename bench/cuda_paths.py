"""Times the two CUDA paths of the LSTM/GRU kernels (FASTRNN_CUDA_PATH=standard|persistent) and
cuDNN on the same inputs, over B and H, so that the `auto` choice in csrc/common/cuda_utils.cuh
can be set from measurements (bench/device_check.sh runs it; GPU only).

    python bench/cuda_paths.py --json paths.json [--T 128]

One row per (cell, dtype, H, B, pass): standard_ms, persistent_ms (None where the persistent
kernel refuses the call), cudnn_ms, and the auto path's time. The JSON is rewritten after every
row, so a run stopped at its time limit keeps what it measured.
"""
import argparse
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastrnn.bench import common  # noqa: E402
from fastrnn.bench.rnn import _module_fn, _op_fn, _ref_module  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--T", type=int, default=128)
    ap.add_argument("--B", default="1,3,8,16,32,64")
    ap.add_argument("--H", default="256,768,1024")
    ap.add_argument("--dtype", default="float16,float32")
    ap.add_argument("--cell", default="LSTM,GRU")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        ap.error("needs a CUDA GPU")
    env = common.env("cuda")
    rows = []
    T = args.T
    for cell, dt, H, B, passname in itertools.product(
            args.cell.split(","), args.dtype.split(","), [int(h) for h in args.H.split(",")],
            [int(b) for b in args.B.split(",")], ("fwd", "fwd+bwd")):
        dtype = getattr(torch, dt)
        bwd = passname == "fwd+bwd"
        mod = _ref_module(cell, H, H, "cuda", dtype)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(T, B, H, generator=g).to("cuda", dtype).requires_grad_(bwd)
        h0 = torch.zeros(B, H, device="cuda", dtype=dtype)
        c0 = torch.zeros(B, H, device="cuda", dtype=dtype) if cell == "LSTM" else None
        gy = torch.randn(T, B, H, generator=g).to("cuda", dtype)
        if not bwd:
            for p in mod.parameters():
                p.requires_grad_(False)
        fast = _op_fn(cell, mod, "cuda", x, h0, c0, bwd, gy)
        hx = (h0.unsqueeze(0), c0.unsqueeze(0)) if cell == "LSTM" else h0.unsqueeze(0)
        base = _module_fn(mod, x, hx, bwd, gy, list(mod.parameters()))
        r = {"cell": cell, "dtype": dt, "H": H, "B": B, "T": T, "pass": passname}
        with torch.set_grad_enabled(bwd):
            for path in ("standard", "persistent", "auto"):
                os.environ["FASTRNN_CUDA_PATH"] = path
                try:
                    fast()
                    r[f"{path}_ms"] = round(common.time_fn(fast, "cuda")[0], 4)
                except RuntimeError as exc:
                    if "persistent" not in str(exc):
                        raise
                    r[f"{path}_ms"] = None
            os.environ["FASTRNN_CUDA_PATH"] = "auto"
            r["cudnn_ms"] = round(common.time_fn(base, "cuda")[0], 4)
        rows.append(r)
        print(" ".join(f"{k}={v}" for k, v in r.items()), flush=True)
        common.save_json(args.json, env, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
