# A tiny random Llama (no weights downloaded) for the transformers tests.
import torch


def tiny_llama(attn="sdpa", layers=2, hidden=256, heads=4, kv_heads=2, dtype=torch.float32, seed=0, **kw):
    from transformers import AutoModelForCausalLM, LlamaConfig
    cfg = LlamaConfig(vocab_size=1000, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=65536,
                      rope_theta=500000.0, **kw)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=dtype).eval()
