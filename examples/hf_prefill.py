#!/usr/bin/env python3
"""Prefill a long prompt through sale in a Hugging Face model, and compare with SDPA.

    python3 examples/hf_prefill.py                       # random 8B-shaped Llama (2 layers), 32K tokens
    python3 examples/hf_prefill.py --model PATH --tokens 65536 --thresholds llama-3.1-8b

With --model, weights are loaded from PATH (a local folder you have). With
--calibrate DIR, Q/K/V of the prompt are captured first and per-head
thresholds calibrated to --budget before the timed run."""
import argparse
import time

import torch

import sale  # registers attn_implementation="sale" with transformers


def build(args, attn):
    from transformers import AutoModelForCausalLM, LlamaConfig
    if args.model:
        return AutoModelForCausalLM.from_pretrained(args.model, attn_implementation=attn, dtype=torch.bfloat16,
                                                    device_map="cuda").eval()
    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=args.layers,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                      rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device("cuda"):
        return AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=torch.bfloat16).eval()


def timed(m, x):
    with torch.no_grad():
        m.model(x)
        torch.cuda.synchronize()
        t = time.perf_counter()
        h = m.model(x).last_hidden_state
        torch.cuda.synchronize()
    return h, (time.perf_counter() - t) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a local model folder (default: a random 8B-shaped Llama)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--tau", type=float, default=0.004)
    ap.add_argument("--mode", default="fused", choices=["fused", "two_pass", "dense", "plain"])
    ap.add_argument("--thresholds", help="model name whose calibrated thresholds to use")
    ap.add_argument("--calibrate", metavar="DIR", help="capture Q/K/V into DIR and calibrate first")
    ap.add_argument("--budget", type=float, default=0.02)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("hf_prefill: needs a CUDA device (sale.reference_attention is the CPU path)")
    m = build(a, "sdpa")
    x = torch.randint(0, m.config.vocab_size, (1, a.tokens), device="cuda")
    h_ref, t_sdpa = timed(m, x)
    name = a.thresholds
    if a.calibrate:
        name = name or "hf-prefill-example"
        with torch.no_grad(), sale.capture(m, a.calibrate):
            m.model(x)
        print(sale.calibrate(a.calibrate, model=name, budget=a.budget))
    sale.hf.configure(tau=a.tau, mode=a.mode, model=name)
    m.set_attn_implementation("sale")
    h, t_sale = timed(m, x)
    rel = ((h.float() - h_ref.float()).norm() / h_ref.float().norm()).item()
    print("%d tokens: sdpa %.1f ms, sale (%s, %s) %.1f ms, relative difference of the last hidden state %.2e"
          % (a.tokens, t_sdpa, a.mode, "thresholds of " + name if name else "tau %g" % a.tau, t_sale, rel))


if __name__ == "__main__":
    main()
