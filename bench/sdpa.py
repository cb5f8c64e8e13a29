#!/usr/bin/env python3
"""Anchors for bench_attention: torch SDPA (FLASH and cuDNN backends) on the
same shape, same GPU, same run. Writes lines "flash N ms" / "cudnn N ms".
With --check DIR it also compares our outputs dumped by bench_attention
(--dump DIR) against SDPA on the same inputs."""
import argparse
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def bench(fn, warmup=2, reps=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lens", default="16384,32768,65536,131072")
    ap.add_argument("--heads", nargs=2, type=int, default=[32, 8])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="anchors.txt")
    ap.add_argument("--check", default=None)
    args = ap.parse_args()
    hq, hkv = args.heads
    d = args.dim
    lines = []
    for n in [int(x) for x in args.lens.split(",")]:
        g = torch.Generator(device="cuda").manual_seed(n)
        q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
        k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            t = bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                      reps=args.reps)
        lines.append(f"flash {n} {t:.3f}")
        kr = k.repeat_interleave(hq // hkv, dim=1)
        vr = v.repeat_interleave(hq // hkv, dim=1)
        try:
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                t2 = bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, kr, vr, is_causal=True),
                           reps=args.reps)
            lines.append(f"cudnn {n} {t2:.3f}")
        except RuntimeError as e:  # cuDNN backend absent: the table says '-'
            print(f"sdpa: cudnn backend failed at N={n}: {e}", file=sys.stderr)
        print(f"sdpa: N={n} flash {t:.1f} ms" + (f", cudnn {t2:.1f} ms" if len(lines) and lines[-1].startswith("cudnn") else ""),
              file=sys.stderr, flush=True)
        del q, k, v, kr, vr
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")

    if args.check:
        hq, hkv, n, d = [int(x) for x in open(f"{args.check}/shape.txt").read().split()]

        def load(name, h):
            raw = torch.from_file(f"{args.check}/{name}", size=h * n * d, dtype=torch.bfloat16)
            return raw.view(1, h, n, d).cuda()

        q, k, v = load("q.bin", hq), load("k.bin", hkv), load("v.bin", hkv)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).float()
        for name in ["o_dense.bin", "o_fused_tau0.bin"]:
            o = load(name, hq).float()
            rel = (o - ref).abs().sum() / ref.abs().sum()
            print(f"check: {name} vs torch SDPA flash: relative L1 {rel.item():.3e}, max abs {(o - ref).abs().max().item():.3e}")


if __name__ == "__main__":
    main()
