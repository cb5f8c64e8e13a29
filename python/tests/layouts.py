# Random memory layouts of q, k, v and out for the Python door's tests
# (test_layouts.py on the CPU reference, test_gpu.py on the GPU): each tensor is
# a view into a larger storage filled with NaN (guard bands before and after,
# gaps between rows, heads and batch entries), as real models hand them over:
# contiguous in either layout, slices of one fused QKV projection, or padded
# along the sequence, the heads and head_dim. A read of any element that is
# not the view's gives NaN in the output; a write outside out's view leaves a
# non-NaN in its storage.
import random

import torch

GUARD = 4096  # elements of NaN before and after every storage


def _embed(shape, dtype, device, gen_pad):
    """A view of `shape` (4-D, the last dimension contiguous) into a NaN storage
    with random padding of each dimension; returns (view, storage)."""
    padded = [s + gen_pad(i) for i, s in enumerate(shape)]
    n = 1
    for s in padded:
        n *= s
    store = torch.full((GUARD + n + GUARD,), float("nan"), dtype=dtype, device=device)
    big = store[GUARD:GUARD + n].view(padded)
    view = big[:shape[0], :shape[1], :shape[2], :shape[3]]
    return view, store


def draw(rng, device="cpu", dtypes=(torch.bfloat16, torch.float16), max_n=700):
    """One case: dict with q, k, v (views holding random data), out (None or a
    NaN view), the storages to check, layout and the case's description."""
    B = rng.choice((1, 2))
    Hkv = rng.choice((1, 2))
    Hq = Hkv * rng.choice((1, 2, 4))
    N = rng.choice((17, 33, 64, 65, 129)) if rng.random() < 0.3 else rng.randint(20, max_n)
    D = rng.choice((64, 128))
    dtype = rng.choice(dtypes)
    layout = rng.choice(("bhnd", "bnhd"))
    kind = rng.choice(("contig", "fused", "padded"))
    g = torch.Generator(device="cpu").manual_seed(rng.getrandbits(31))

    def shape(H):
        return (B, H, N, D) if layout == "bhnd" else (B, N, H, D)

    def fill(view):
        view.copy_(torch.randn(view.shape, generator=g, dtype=torch.float32).to(dtype))

    stores = []
    if kind == "fused":  # one projection [B, N, Hq + 2 Hkv, D], the heads split off it
        fused, st = _embed((B, N, Hq + 2 * Hkv, D), dtype, device, lambda i: 0)
        stores.append(st)
        parts = (fused[:, :, :Hq], fused[:, :, Hq:Hq + Hkv], fused[:, :, Hq + Hkv:])
        qkv = [p if layout == "bnhd" else p.transpose(1, 2) for p in parts]
    else:
        pad = (lambda i: 0) if kind == "contig" else (lambda i: rng.choice((0, 1, 3)) if i < 3 else rng.choice((0, 8, 64)))
        qkv = []
        for H in (Hq, Hkv, Hkv):
            t, st = _embed(shape(H), dtype, device, pad)
            stores.append(st)
            qkv.append(t)
    for t in qkv:
        fill(t)
    out, out_store = None, None
    if rng.random() < 0.5:
        out, out_store = _embed(shape(Hq), dtype, device, lambda i: rng.choice((0, 2)) if i < 3 else rng.choice((0, 8)))
    desc = "B=%d Hq=%d Hkv=%d N=%d D=%d %s layout=%s %s out=%s" % (B, Hq, Hkv, N, D, str(dtype)[6:], layout, kind,
                                                                   "view" if out is not None else "new")
    return dict(q=qkv[0], k=qkv[1], v=qkv[2], out=out, out_store=out_store, stores=stores, layout=layout, desc=desc)


def nan_outside(store, view):
    """Elements of `store` outside `view` that are no longer NaN (a write past the view)."""
    mark = torch.zeros(store.shape, dtype=torch.bool, device=store.device)
    # the view's elements in the storage, by offset: mark them through a bool view of the same geometry
    off = view.storage_offset() - store.storage_offset()
    mview = torch.as_strided(mark, view.shape, view.stride(), off)
    mview.fill_(True)
    return int((~mark & ~torch.isnan(store)).sum().item())


def snapshot(c):
    """The inputs' storages, bit for bit, before a call (check() compares after)."""
    return [s.view(torch.int16).clone() for s in c["stores"]]


def check(c, got, ref, before, why):
    """A call on case c against ref (the same call on contiguous copies): the same
    bits, no NaN read in, the inputs' storages unchanged, nothing written outside out's view."""
    if c["out"] is not None:
        assert got.data_ptr() == c["out"].data_ptr(), "%s: the result is not out" % why
    assert not torch.isnan(got).any(), "%s: NaN in the output (an element outside a view was read)" % why
    assert torch.equal(got, ref), "%s: differs from the call on contiguous copies (max %.3g)" % (
        why, (got.float() - ref.float()).abs().max().item())
    for st, b in zip(c["stores"], before):
        assert torch.equal(st.view(torch.int16), b), "%s: an input's storage changed" % why
    if c["out"] is not None:
        assert nan_outside(c["out_store"], c["out"]) == 0, "%s: written outside out's view" % why
