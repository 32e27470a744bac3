"""LSTM and GRU at B=32, T=64, H=256, forward+backward: fastrnn's cpu backend against torch.nn, called
alternately in one process. Prints the median of the per-pair time ratios, robust to a shared
machine whose speed drifts. Usage: python bench/cpu_paired.py [pairs, default 100]"""
import torch, time, statistics, fastrnn, sys
torch.manual_seed(0)
T,B,H=64,32,256
for cell in ("LSTM","GRU"):
    mod=(torch.nn.LSTM if cell=="LSTM" else torch.nn.GRU)(H,H)
    x=torch.randn(T,B,H,requires_grad=True); h0=torch.zeros(B,H); c0=torch.zeros(B,H); gy=torch.randn(T,B,H)
    w=[mod.weight_ih_l0, mod.weight_hh_l0, mod.bias_ih_l0, mod.bias_hh_l0]
    def fast():
        y,_=(fastrnn.ops.lstm(x,h0,c0,*w,backend='cpu') if cell=="LSTM" else fastrnn.ops.gru(x,h0,*w,backend='cpu'))
        torch.autograd.grad(y,[x]+w,gy)
    hx=(h0[None],c0[None]) if cell=="LSTM" else h0[None]
    def base():
        y,_=mod(x,hx); torch.autograd.grad(y,[x]+w,gy)
    for _ in range(5): fast(); base()
    F=[];Bs=[];R=[]
    for i in range(int(sys.argv[1]) if len(sys.argv)>1 else 100):
        t0=time.perf_counter(); fast(); t1=time.perf_counter(); base(); t2=time.perf_counter()
        F.append((t1-t0)*1e3); Bs.append((t2-t1)*1e3); R.append((t1-t0)/(t2-t1))
    print(f"{cell} B=32 fwd+bwd, {len(R)} alternating pairs: ratio median {statistics.median(R):.3f} "
          f"(quartiles {statistics.quantiles(R,n=4)[0]:.3f}-{statistics.quantiles(R,n=4)[2]:.3f}); "
          f"fastrnn min {min(F):.2f} med {statistics.median(F):.2f} ms, torch.nn min {min(Bs):.2f} med {statistics.median(Bs):.2f} ms")
