# The Python door over random memory layouts, on the C reference (CPU): q, k,
# v and out as views into NaN-filled storages (layouts.py: contiguous, slices of
# a fused QKV projection, padded rows / heads / batch entries / head_dim), in
# either layout, with and without out=. The result must equal the call on
# contiguous copies bit for bit (the algorithm does not depend on where the
# elements lie), no element outside a view may be read (it is NaN: it would
# reach the output) and none written (out's storage outside its view stays NaN;
# the inputs' storages stay as they were). test_gpu.py runs the same cases
# through sale.attention.
import os
import random

import pytest
import torch

import sale
from layouts import check, draw, snapshot

SEED = int(os.environ.get("SALE_TEST_SEED", "0")) or random.randrange(1, 2 ** 31)
CASES = int(os.environ.get("SALE_PY_LAYOUT_CASES", "60"))


@pytest.mark.parametrize("i", range(CASES))
def test_random_layouts_equal_contiguous_and_touch_nothing_else(i):
    rng = random.Random(SEED * 1000 + i)
    c = draw(rng, max_n=500)
    tau = rng.choice((1e-6, 0.004, 0.03, [0.004, 0.0] * 4))
    if isinstance(tau, list):
        tau = tau[:c["q"].shape[1 if c["layout"] == "bhnd" else 2]]
    mode = rng.choice(("auto", "dense", "plain", "two_pass", "fused"))
    thr = rng.choice((None, "run", "fixed"))
    why = "SALE_TEST_SEED=%d case %d: %s tau=%s mode=%s thr=%s" % (SEED, i, c["desc"], tau, mode, thr)
    before = snapshot(c)
    got = sale.reference_attention(c["q"], c["k"], c["v"], tau=tau, mode=mode, layout=c["layout"], out=c["out"],
                                   thr=thr)
    ref = sale.reference_attention(c["q"].contiguous(), c["k"].contiguous(), c["v"].contiguous(), tau=tau, mode=mode,
                                   layout=c["layout"], thr=thr)
    check(c, got, ref, before, why)


def test_the_layouts_are_what_they_claim():
    # the generator's own check: every kind appears, the views are not all contiguous, and a read of a gap shows
    rng = random.Random(7)
    kinds, noncontig = set(), 0
    for _ in range(60):
        c = draw(rng, max_n=80)
        kinds.add(c["desc"].split()[7])
        noncontig += not c["q"].is_contiguous()
    assert kinds == {"contig", "fused", "padded"} and noncontig > 10, (kinds, noncontig)
    c = draw(random.Random(3), max_n=80)
    while c["desc"].split()[7] != "padded" or c["q"].shape[-1] == c["q"].stride(-2):
        c = draw(random.Random(random.randrange(10 ** 6)), max_n=80)
    # a view one element wider along head_dim reaches the NaN gap: the same call must then give NaN
    q = c["q"]
    wide = torch.as_strided(q, (*q.shape[:3], q.shape[3] + 1), q.stride())
    assert torch.isnan(wide[..., -1]).all()
