# Every argument error raises sale.InvalidArgument (a ValueError with .status)
# whose message names the tensor or field; the C checks catch the rest.
import pytest
import torch

import sale


def qkv(Hq=4, Hkv=2, N=128, D=64, dtype=torch.float32):
    return torch.randn(1, Hq, N, D, dtype=dtype), torch.randn(1, Hkv, N, D, dtype=dtype), \
        torch.randn(1, Hkv, N, D, dtype=dtype)


def raises(match, fn, *a, **kw):
    with pytest.raises(sale.InvalidArgument, match=match) as e:
        fn(*a, **kw)
    assert e.value.status == 1 and e.value.status_name == "SALE_ERR_INVALID"
    assert isinstance(e.value, ValueError)


def test_wrong_device():
    q, k, v = qkv()
    raises(r"q: sale.attention runs on CUDA tensors", sale.attention, q, k, v)


def test_wrong_dtype():
    q, k, v = qkv()
    raises(r"k: dtype torch.float16, q has torch.float32", sale.reference_attention, q, k.half(), v)
    raises(r"q: dtype torch.float64 not supported", sale.reference_attention, q.double(), k.double(), v.double())


def test_wrong_shape():
    q, k, v = qkv()
    raises(r"q: expected 4 dimensions", sale.reference_attention, q[0], k, v)
    raises(r"k: head_dim 32, q has head_dim 64", sale.reference_attention, q, k[..., :32].contiguous(),
           v[..., :32].contiguous())
    raises(r"k: 100 keys for 128 queries", sale.reference_attention, q, k[:, :, :100], v[:, :, :100])
    raises(r"v: shape .* differs from k's", sale.reference_attention, q, k, v[:, :1])
    raises(r"out: expected a tensor of q's shape", sale.reference_attention, q, k, v, out=torch.empty(3))
    raises(r"layout: 'bhnd'", sale.reference_attention, q, k, v, layout="nhd")


def test_wrong_heads():
    q, k, v = qkv(Hq=4, Hkv=3)
    raises(r"heads: 4 query heads are not a multiple of 3 kv heads", sale.reference_attention, q, k, v)


def test_wrong_strides():
    q, k, v = qkv()
    raises(r"q: the last dimension \(head_dim\) must be contiguous", sale.reference_attention,
           q.transpose(2, 3).contiguous().transpose(2, 3), k, v)
    raises(r"k: stride 0 along dimension 1 \(an expanded", sale.reference_attention, q,
           k[:, :1].expand(1, 4, 128, 64), v[:, :1].expand(1, 4, 128, 64))


def test_wrong_tau_mode_scale():
    q, k, v = qkv()
    raises(r"tau: 3 per-head values given for 4 query heads", sale.reference_attention, q, k, v, tau=[0.1] * 3)
    raises(r"tau: must be in \[0, 1\)", sale.reference_attention, q, k, v, tau=2.0)
    raises(r"mode: 'auto', 'fused', 'two_pass', 'dense' or 'plain'", sale.reference_attention, q, k, v, mode="sparse")
    raises(r"scale: must be a finite number > 0", sale.reference_attention, q, k, v, scale=-1.0)
    raises(r"block_q: expected an int", sale.reference_attention, q, k, v, block_q="64")


def test_c_checks_catch_the_rest():
    q, k, v = qkv()
    with pytest.raises(sale.SaleError) as e:
        sale.reference_attention(q, k, v, block_k=48, dense_below=-1)
    assert "block_k" in str(e.value) and e.value.status_name.startswith("SALE_ERR_")


def test_missing_thresholds_name_the_model():
    from sale import _lib
    if not hasattr(_lib.load(), "sale_thresholds_get"):
        pytest.skip("this libsale does not read stored thresholds yet (sale_thresholds_get missing)")
    q, k, v = qkv()
    with pytest.raises(sale.SaleError) as e:
        sale.reference_attention(q, k, v, tau=("no-such-model", 3), dense_below=-1)
    assert e.value.status_name in ("SALE_ERR_NOT_FOUND", "SALE_ERR_INVALID", "SALE_ERR_UNSUPPORTED")


def test_bad_key_and_no_device():
    with pytest.raises(sale.SaleError, match=r"key 'fused:d=100,arch=sm_90': head_dim"):
        sale.compile("fused:d=100,arch=sm_90")
    if not sale.devices():
        with pytest.raises(sale.NoDevice):
            sale.get_kernel("fused:d=128,arch=current")
