#!/usr/bin/env python3
"""sdpa_host.py — the anchor of bench_host: per-call host time (the Python
call returning) and GPU time (CUDA events) of torch scaled_dot_product_attention,
causal, bf16, B=1, 32 query / 8 kv heads (enable_gqa), D=128, on the same
lengths. Writes "N host_us gpu_us" lines for `bench_host --anchors FILE`.
   usage: python3 sdpa_host.py [--lens 2048,16384] [--iters 200] [--out sdpa_host.txt]"""
import argparse
import time

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lens", default="2048,16384")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--out", default="sdpa_host.txt")
    args = ap.parse_args()
    dev = torch.device("cuda")
    rows = []
    print("| what | N | host us/call | GPU us/call |\n|---|---|---|---|")
    for n in [int(x) for x in args.lens.split(",")]:
        q = torch.randn(1, 32, n, 128, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, 8, n, 128, device=dev, dtype=torch.bfloat16)
        v = torch.randn(1, 8, n, 128, device=dev, dtype=torch.bfloat16)
        for _ in range(3):
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        host = 0.0
        e0.record()
        for _ in range(args.iters):
            t0 = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            host += time.perf_counter() - t0
        e1.record()
        e1.synchronize()
        host_us = 1e6 * host / args.iters
        gpu_us = 1000.0 * e0.elapsed_time(e1) / args.iters
        rows.append((n, host_us, gpu_us))
        print(f"| torch SDPA | {n} | {host_us:.2f} | {gpu_us:.1f} |")
    with open(args.out, "w") as f:
        for n, h, g in rows:
            f.write(f"{n} {h:.3f} {g:.3f}\n")


if __name__ == "__main__":
    main()
