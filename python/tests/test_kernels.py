# Kernels and the cache from Python without a GPU: compile/prewarm through
# sale_compile (NVRTC), the cache info, and the message when NVRTC is missing.
import pytest

import sale
from sale import _lib


def test_prewarm_compiles_once_then_serves_the_cache(tmp_path):
    ctx = sale.Context(cache=str(tmp_path / "k.db"))
    keys = ["quantize:d=64,dt=f16,arch=sm_80", "quantize:d=64,dt=f16,arch=sm_80,est=4"]
    first = sale.prewarm(keys, context=ctx)
    assert len(first) == 1  # the same kernel once resolved
    assert first[0]["key"].startswith("quantize:d=64") and first[0]["cubin_bytes"] > 0
    again = sale.prewarm(keys, context=ctx)
    assert again[0]["from_cache"] and again[0]["src_hash"] == first[0]["src_hash"]
    info = sale.cache_info(ctx)
    assert info["path"] == str(tmp_path / "k.db") and info["bytes"] > 0 and info.get("kernels", 1) >= 1
    ctx.close()


def test_format_key_resolves_nothing_but_canonicalises():
    assert sale.format_key("fused:arch=sm_90,d=128").startswith("fused:d=128")


def test_missing_nvrtc_is_a_clear_import_error(monkeypatch):
    monkeypatch.setattr(_lib, "_nvrtc_candidates", lambda: iter(["/nonexistent/libnvrtc.so.13", "libnvrtc-no.so"]))
    with pytest.raises(_lib.LoadError, match=r"cannot load NVRTC \(libnvrtc.so.13\).*LD_LIBRARY_PATH"):
        _lib._load_nvrtc()
