#!/usr/bin/env python3
"""Host-side cost of one sale.attention() call against the bare C call with the
same arguments already built (one ctypes call of sale_attention): the
difference is what the Python layer adds (goal: <= 30 us). Small problem, so
the GPU keeps up and host time is what is measured. Needs a CUDA device.
    python3 bench/py_overhead.py [calls]"""
import ctypes
import os
import sys
import time

import torch  # noqa: E402

try:  # an installed sale (the wheel) wins; else the checkout's python/
    import sale
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import sale
from sale import _core, _lib  # noqa: E402


def burst_time(fn, calls, burst=16):
    """Host seconds per call, timed in bursts on an idle stream: back to back,
    a few hundred calls fill the driver's launch queue and then every launch
    waits for the GPU, which measures the GPU, not the call."""
    total, n = 0.0, 0
    while n < calls:
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(burst):
            fn()
        total += time.perf_counter() - t
        n += burst
    torch.cuda.synchronize()
    return total / n


def measure(calls=1000, N=1024, Hq=8, Hkv=2, D=128, tau=0.004):
    q, k, v = (torch.randn(1, H, N, D, device="cuda", dtype=torch.bfloat16) for H in (Hq, Hkv, Hkv))
    out = torch.empty_like(q)
    kw = dict(tau=tau, out=out, dense_below=-1)
    for _ in range(20):
        sale.attention(q, k, v, **kw)
    py = burst_time(lambda: sale.attention(q, k, v, **kw), calls)
    # the bare C call: args built once, workspace allocated once
    keep = []
    a, _, _, _, _, _ = _core._prepare(q, k, v, tau, "fused", "bhnd", None, out, "cuda", {"dense_below": -1}, keep)
    ctx = sale.default_context()
    ws = ctypes.c_size_t()
    ctx.check(ctx._lib.sale_attention_workspace_size(ctx.handle, ctypes.byref(a), ctypes.byref(ws)))
    buf = torch.empty(ws.value, dtype=torch.uint8, device="cuda")
    a.workspace, a.workspace_bytes = buf.data_ptr(), ws.value
    stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
    f, h, ap = ctx._lib.sale_attention, ctx.handle, ctypes.byref(a)
    for _ in range(20):
        f(h, ap, stream)
    st = f(h, ap, stream)
    c = burst_time(lambda: f(h, ap, stream), calls)
    assert st == _lib.OK, ctx.last_error()
    return {"python_us": py * 1e6, "c_us": c * 1e6, "overhead_us": (py - c) * 1e6, "calls": calls, "N": N}


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("py_overhead: SKIPPED: no CUDA device")
        sys.exit(0)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    r = measure(n)
    print("sale.attention: %.1f us/call on the host; the C call alone %.1f us; Python adds %.1f us (goal <= 30)"
          % (r["python_us"], r["c_us"], r["overhead_us"]))
