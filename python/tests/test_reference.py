# sale.reference_attention (the C reference through the Python API) against
# torch's SDPA, in every layout and dtype the API takes, and its mask, lse and
# stats against a second path: the same C function called with plain ctypes.
import ctypes
import math

import pytest
import torch
import torch.nn.functional as F

import sale
from sale import _lib


def qkv(B=1, Hq=4, Hkv=2, N=384, D=64, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda H: torch.randn(B, H, N, D, generator=g).to(dtype)  # noqa: E731
    return mk(Hq), mk(Hkv), mk(Hkv)


def sdpa(q, k, v, scale=None):
    r = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(q.float(), k.float().repeat_interleave(r, 1),
                                          v.float().repeat_interleave(r, 1), is_causal=True, scale=scale)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_dense_mode_equals_sdpa(dtype, tol):
    q, k, v = qkv(dtype=dtype)
    out = sale.reference_attention(q, k, v, mode="dense")
    assert out.dtype == dtype and out.shape == q.shape
    assert (out.float() - sdpa(q, k, v)).abs().max().item() < tol


@pytest.mark.parametrize("mode", ["fused", "two_pass", "plain", "auto"])
def test_tau_to_zero_equals_dense(mode):
    q, k, v = qkv(N=1100, D=128, Hq=4, Hkv=1)
    out = sale.reference_attention(q, k, v, tau=1e-6, mode=mode, dense_below=-1)
    assert (out - sdpa(q, k, v)).abs().max().item() < 1e-5


def test_sparse_run_reports_stats():
    q, k, v = qkv(N=2048, D=64, Hq=2, Hkv=2, seed=3)
    out, stats = sale.reference_attention(q, k, v, tau=0.05, return_stats=True)
    assert 0 < stats["density"] <= 1 and not stats["dense_fallback"]
    assert len(stats["density_per_head"]) == 2
    assert torch.isfinite(out).all()  # (accuracy on i.i.d. inputs is the C suites' business)


def test_plain_mode_is_the_same_algorithm():
    # version 0 ("plain") differs from fused only on the GPU: the reference gives one result
    q, k, v = qkv(N=2048, D=64, Hq=2, Hkv=1, seed=5)
    a = sale.reference_attention(q, k, v, tau=0.05, mode="fused", dense_below=-1)
    b = sale.reference_attention(q, k, v, tau=0.05, mode="plain", dense_below=-1)
    assert torch.equal(a, b)
    # "auto" (the default) picks fused or two-pass by the GPU's arch: the same algorithm
    c = sale.reference_attention(q, k, v, tau=0.05, dense_below=-1)
    assert torch.equal(a, c)


def test_bnhd_layout_and_strided_views_match_bhnd():
    q, k, v = qkv(B=2, N=200)
    ref = sale.reference_attention(q, k, v, mode="dense")
    qn, kn, vn = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # [B, N, H, D]
    out = sale.reference_attention(qn, kn, vn, mode="dense", layout="bnhd")
    assert out.shape == qn.shape
    assert torch.equal(out.transpose(1, 2), ref)
    # views with a padded last dimension and a transposed [B, N, H, D] buffer
    big = torch.zeros(2, 4, 200, 96)
    big[..., :64] = q
    outv = torch.empty(2, 200, 4, 64).transpose(1, 2)
    r = sale.reference_attention(big[..., :64], kn.transpose(1, 2), vn.transpose(1, 2), mode="dense", out=outv)
    assert r.data_ptr() == outv.data_ptr() and torch.equal(r, ref)


def test_scale_and_per_head_tau():
    q, k, v = qkv(N=300)
    out = sale.reference_attention(q, k, v, mode="dense", scale=0.05)
    assert (out - sdpa(q, k, v, scale=0.05)).abs().max().item() < 1e-5
    a = sale.reference_attention(q, k, v, tau=[0.0, 0.0, 0.0, 0.0], dense_below=-1)
    b = sale.reference_attention(q, k, v, tau=torch.zeros(4), dense_below=-1)
    assert torch.equal(a, b)


def raw_reference(q, k, v, tau, **kw):
    """The same C function through plain ctypes on contiguous float32 buffers."""
    lib = _lib.load()
    B, Hq, N, D = q.shape
    Hkv = k.shape[1]
    a = _lib.AttentionArgs()
    lib.sale_attention_args_init(ctypes.byref(a))
    a.batch, a.heads_q, a.heads_kv, a.seq_len, a.head_dim = B, Hq, Hkv, N, D
    a.dtype = _lib.DTYPE_F32
    out = torch.empty_like(q)
    a.q, a.k, a.v, a.out = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
    a.tau_default = tau
    for f, val in kw.items():
        setattr(a, f, val)
    nqb, nkb = lib.sale_num_qblocks(ctypes.byref(a)), lib.sale_num_kblocks(ctypes.byref(a))
    mask = (ctypes.c_uint32 * (B * Hq * nqb * ((nkb + 31) // 32)))()
    lse = (ctypes.c_float * (B * Hq * N))()
    st = _lib.Stats()
    a.mask, a.lse = ctypes.addressof(mask), ctypes.addressof(lse)
    a.stats = ctypes.pointer(st)
    assert lib.sale_reference_attention(None, ctypes.byref(a)) == 0
    return out, list(mask), list(lse), st


def test_mask_lse_stats_agree_with_the_c_reference_called_directly():
    q, k, v = qkv(N=1500, D=64, Hq=4, Hkv=2, seed=7)
    out, mask, lse, stats = sale.reference_attention(q, k, v, tau=0.02, dense_below=-1, return_mask=True,
                                                     return_lse=True, return_stats=True)
    rout, rmask, rlse, rst = raw_reference(q, k, v, 0.02, dense_below=-1)
    assert torch.equal(out, rout)
    assert [m & 0xFFFFFFFF for m in mask.reshape(-1).tolist()] == rmask
    assert lse.reshape(-1).tolist() == pytest.approx(rlse, abs=0)
    assert (stats["kept_blocks"], stats["causal_blocks"]) == (rst.kept_blocks, rst.causal_blocks)
    # the mask and the stats tell the same story
    nkb = math.ceil(1500 / 32)
    kept = sale.mask_to_blocks(mask, nkb).sum().item()
    assert kept == stats["kept_blocks"]
    assert stats["density"] == pytest.approx(stats["kept_blocks"] / stats["causal_blocks"])


def test_lse_is_the_logsumexp_of_scaled_causal_scores():
    q, k, v = qkv(N=256, Hq=2, Hkv=2)
    _, lse = sale.reference_attention(q, k, v, mode="dense", return_lse=True)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(torch.triu(torch.ones(256, 256, dtype=torch.bool), 1), float("-inf"))
    assert (lse - torch.logsumexp(s, -1)).abs().max().item() < 1e-4


def test_fixed_threshold_keeps_a_superset_of_run():
    # thr="fixed": t_i once, after the local region and the sink; the running
    # log-sum-exp never decreases, so fixed keeps every block run keeps
    q, k, v = qkv(N=2048, D=64, Hq=2, Hkv=1, seed=7)
    kw = dict(tau=0.05, dense_below=-1, block_k=16, block_seg=32, local_window=32, return_mask=True,
              return_stats=True)
    _, mr, sr = sale.reference_attention(q, k, v, **kw)
    _, mf, sf = sale.reference_attention(q, k, v, thr="fixed", **kw)
    _, mr2, _ = sale.reference_attention(q, k, v, thr="run", **kw)
    assert torch.equal(mr, mr2), "run is the default"
    assert torch.equal(mr & ~mf, torch.zeros_like(mr))
    assert sf["kept_blocks"] >= sr["kept_blocks"] and sr["density"] < 1
    with pytest.raises(sale.InvalidArgument, match="thr"):
        sale.reference_attention(q, k, v, thr="late")
    assert sale.format_key("fused:thr=fixed,arch=sm_89").endswith(",thr=fixed")


def test_stored_thresholds_carry_their_variant(tmp_path):
    # thresholds stored with thr="fixed": thr None runs fixed (the mask of an
    # explicit fixed call with the same taus), thr="run" is refused; stored
    # without a variant, thr None stays run
    ctx = sale.Context(cache=str(tmp_path / "k.db"))
    q, k, v = qkv(N=2048, D=64, Hq=2, Hkv=1, seed=7)
    kw = dict(dense_below=-1, block_k=16, block_seg=32, local_window=32, return_mask=True, context=ctx)
    sale.put_thresholds("m-fixed", 0, [0.05, 0.05], thr="fixed", context=ctx)
    sale.put_thresholds("m-none", 0, [0.05, 0.05], context=ctx)
    _, mf = sale.reference_attention(q, k, v, tau=0.05, thr="fixed", **kw)
    _, mr = sale.reference_attention(q, k, v, tau=0.05, thr="run", **kw)
    assert not torch.equal(mf, mr), "run and fixed keep the same blocks here: the test cannot tell them apart"
    _, ms = sale.reference_attention(q, k, v, tau=("m-fixed", 0), **kw)
    assert torch.equal(ms, mf)
    with pytest.raises(sale.InvalidArgument, match="calibrated with thr=fixed and this call asks for thr=run"):
        sale.reference_attention(q, k, v, tau=("m-fixed", 0), thr="run", **kw)
    _, mn = sale.reference_attention(q, k, v, tau=("m-none", 0), **kw)
    assert torch.equal(mn, mr)
    with pytest.raises(sale.InvalidArgument, match="thr"):
        sale.put_thresholds("m-bad", 0, [0.05], thr="late", context=ctx)
    taus, infos = sale.thresholds("m-fixed", 0, 2, context=ctx, meta=True)
    assert taus == pytest.approx([0.05, 0.05]) and [i["thr"] for i in infos] == ["fixed", "fixed"]
    assert sale.thresholds("m-none", 0, 2, context=ctx, meta=True)[1][0]["thr"] is None
    assert sale.thresholds("m-none", 0, 2, context=ctx) == pytest.approx([0.05, 0.05])
