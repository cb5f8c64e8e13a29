"""sale — SALE sparse attention for PyTorch, over libsale's C API (ctypes).

    import sale
    out = sale.attention(q, k, v)                    # CUDA fp16/bf16, [B, H, N, D]
    ref = sale.reference_attention(q, k, v)          # the C reference on CPU tensors
    with sale.capture(model, "calib/"): model(ids)   # post-RoPE Q/K/V per layer
    sale.calibrate("calib/", model="llama-3.1-8b", budget=0.02)
    AutoModelForCausalLM.from_config(cfg, attn_implementation="sale")
"""
from ._core import (CacheError, CompileError, Context, CudaError, InvalidArgument, NoDevice, NotFound, SaleError,
                    Unsupported, attention, cache_info, compile, default_context, devices, format_key, get_kernel,
                    mask_to_blocks, nvrtc_version, prewarm, put_thresholds, reference_attention, thresholds)
from ._lib import LoadError, cli_path, library_path
from .calib import calibrate, capture, read_safetensors, write_safetensors
from . import hf
from .hf import use_thresholds

__version__ = "0.1.0"

hf.install_hook()
if "torch" in __import__("sys").modules:  # torch.ops.sale.attention for torch.compile, registered now (not while tracing)
    from ._core import _t as _load_torch
    _load_torch()

__all__ = ["attention", "reference_attention", "mask_to_blocks", "get_kernel", "compile", "prewarm", "cache_info",
           "devices", "nvrtc_version", "format_key", "thresholds", "put_thresholds", "Context", "default_context",
           "SaleError", "InvalidArgument", "Unsupported", "CompileError", "CacheError", "NoDevice", "CudaError",
           "NotFound", "LoadError", "capture", "calibrate", "read_safetensors", "write_safetensors", "use_thresholds",
           "hf", "library_path", "cli_path"]
