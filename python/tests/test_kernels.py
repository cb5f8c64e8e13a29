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


def test_generated_prewarm_builds_what_sale_prewarm_builds_for_hopper(tmp_path):
    # the generated set is what sale_attention runs on each arch: on sm_90 the
    # wgmma kernels (sm_90a cubins: dense, attend's two kernels, fused's
    # wgmma half, the thr=fixed select), the same set as the CLI's
    import subprocess
    ctx = sale.Context(cache=str(tmp_path / "py.db"))
    infos = sale.prewarm(archs=("sm_90",), head_dims=(128,), dtypes=("bf16",), context=ctx)
    ctx.close()
    py = sorted(i["key"] for i in infos)
    assert any(k.startswith("select:") and "arch=sm_90a" in k and k.endswith("thr=fixed") for k in py), py
    assert any(k.startswith("attend:") and "warps=5," in k and "arch=sm_90a" in k for k in py), py
    assert any(k.startswith("attend:") and "warps=12," in k and "arch=sm_90a" in k for k in py), py
    assert any(k.startswith("dense:") and "arch=sm_90a" in k for k in py), py
    cli = subprocess.run([_lib.cli_path(), "--cache", str(tmp_path / "cli.db"), "prewarm", "--arch", "sm_90",
                          "--head-dim", "128", "--dtype", "bf16", "-q"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    ls = subprocess.run([_lib.cli_path(), "--cache", str(tmp_path / "cli.db"), "ls"], capture_output=True, text=True)
    assert ls.returncode == 0, ls.stderr
    cli_keys = sorted(line.split()[0] for line in ls.stdout.splitlines() if ":" in line.split()[0])
    assert py == cli_keys
