# attn_sdpa.py N... — torch SDPA anchor on the same shape (B=1, Hq=32, Hkv=8, D=128, bf16, causal):
# each backend that accepts it, CUDA events, 2 warm-ups, 256 MB L2 flush per rep, median of 7.
import sys, torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name())
flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
def med(f, reps=7):
    for _ in range(2): f()
    torch.cuda.synchronize()
    ts = []
    for r in range(reps):
        flush.fill_(r)
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); f(); e1.record(); e1.synchronize()
        ts.append(e0.elapsed_time(e1))
    return sorted(ts)[len(ts) // 2]
rows = []
for N in [int(x) for x in sys.argv[1:] if x.isdigit()]:
    g = torch.Generator(device="cuda").manual_seed(N)
    q = ((torch.rand(1, 32, N, 128, device="cuda", generator=g) * 2 - 1) * 2.5).bfloat16()
    k = ((torch.rand(1, 8, N, 128, device="cuda", generator=g) * 2 - 1) * 2.5).bfloat16()
    v = (torch.rand(1, 8, N, 128, device="cuda", generator=g) * 2 - 1).bfloat16()
    fl = 4.0 * 128 * 32 * N * (N + 1) / 2
    cases = [("cudnn", SDPBackend.CUDNN_ATTENTION, True), ("flash", SDPBackend.FLASH_ATTENTION, True)]
    if "--expanded" in sys.argv: cases += [("cudnn(expanded kv)", SDPBackend.CUDNN_ATTENTION, False), ("flash(expanded kv)", SDPBackend.FLASH_ATTENTION, False)]
    for name, be, gqa in cases:
        try:
            kk, vv = (k, v) if gqa else (k.repeat_interleave(4, 1), v.repeat_interleave(4, 1))
            with sdpa_kernel([be]):
                f = lambda: F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=gqa)
                ms = med(f)
            rows.append((N, "sdpa " + name, ms, fl / ms / 1e9))
            print(f"sdpa N={N} {name}: {ms:.3f} ms {fl / ms / 1e9:.0f} TF/s", flush=True)
            del kk, vv
        except Exception as e:
            print(f"sdpa N={N} {name}: not run ({str(e).splitlines()[0][:120]})", flush=True)
    del q, k, v
    torch.cuda.empty_cache()
print("\n| N | kernel | ms | TF/s |\n|---|---|---|---|")
for r in rows: print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.0f} |")
