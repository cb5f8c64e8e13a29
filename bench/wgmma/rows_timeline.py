#!/usr/bin/env python3
"""rows_timeline.py — per-phase cycle counts of the rows attend kernel's
consumer chain from a timeline file of bench/rows_timeline.c (the stamps a
build with SALE_WR_TIMELINE 1 writes: layout in templates/wgmma_rows.cuh).

Per row (clock64 cycles of its SM, lane 0 of consumer warp 0):
  gap     previous row of the same CTA stored -> this row's QFULL wait began
  qwait   QFULL wait (the row's Q and INFO)
  qa      Q's fragments loaded (ldmatrix) and QEMPTY arrived
  k0wait  tile 0's K landed
  s0      S(0) issued -> complete (nothing else in flight)
  sm0     S(0)'s mask and softmax
  then per tile j >= 1 (j <= 7):
  wait    P(j-1) converted -> K(j), V(j-1) landed (ring waits)
  s       S(j), P V(j-1) issued -> S(j) complete
  rest    S(j) complete -> P V(j-1) complete (softmax(j) runs in it)
  tail    P V(j-1) complete -> the next tile's issue (rescale, release, convert)
  lastpv  the last P V: issue to complete (from the last recorded stamp)
  store   last P V complete -> row stored, stage released
Also: the row's cycles, cycles a tile, and how many of a CTA's rows overlap
the other CTA of the same SM (two CTAs an SM).
usage: rows_timeline.py FILE [FILE ...]   (or --self-test)
"""
import struct
import sys
from collections import defaultdict

MAGIC = 0x5A1E


def rows_of(path):
    """The records of a file: dicts with smid, nkt, cta, r and the stamps."""
    data = open(path, "rb").read()
    n = len(data) // 256
    out = []
    for i in range(n):
        w = struct.unpack_from("<32Q", data, i * 256)
        if w[0] >> 48 != MAGIC:
            continue
        out.append({"smid": (w[0] >> 32) & 0xFFFF, "nkt": w[0] & 0xFFFFFFFF, "cta": w[1] >> 32,
                    "r": w[1] & 0xFFFFFFFF, "w": w, "row": i})
    return out


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def phases(rec):
    w = rec["w"]
    n = rec["nkt"]
    ph = {"qwait": w[3] - w[2], "qa": w[4] - w[3], "k0wait": w[5] - w[4], "s0": w[6] - w[5], "sm0": w[7] - w[6],
          "store": w[31] - w[30], "row": w[31] - w[3], "waitsum": w[29]}
    tiles = []
    prev_end = w[7]  # softmax(0) done (tile 1's convert follows)
    for j in range(1, min(n, 8)):
        b = 8 + 3 * (j - 1)
        issue, sdone, pvdone = w[b], w[b + 1], w[b + 2]
        tiles.append({"pre": issue - prev_end, "s": sdone - issue, "rest": pvdone - sdone})
        prev_end = pvdone
    ph["tiles"] = tiles
    # the last P V: after the last recorded tile (all of them when nkt <= 8)
    ph["lastpv"] = w[30] - prev_end if n <= 8 else None
    return ph


def report(path):
    recs = rows_of(path)
    print(f"{path}: {len(recs)} rows stamped")
    if not recs:
        return
    P = [phases(r) for r in recs]
    cols = ["qwait", "qa", "k0wait", "s0", "sm0", "store"]
    print("per row, cycles (median / mean): " +
          ", ".join(f"{c} {median([p[c] for p in P]):.0f}/{mean([p[c] for p in P]):.0f}" for c in cols))
    lp = [p["lastpv"] for p in P if p["lastpv"] is not None]
    print(f"  last P V (rows of <= 8 tiles: {len(lp)}): {median(lp):.0f}/{mean(lp):.0f}")
    for k in ("pre", "s", "rest"):
        xs = [t[k] for p in P for t in p["tiles"]]
        print(f"  tile j >= 1, {k}: median {median(xs):.0f}, mean {mean(xs):.0f} (n {len(xs)})")
    ws = [p["waitsum"] / max(1, r["nkt"] - 1) for p, r in zip(P, recs) if r["nkt"] > 1]
    print(f"  ring waits a tile (K, V landed): median {median(ws):.0f}, mean {mean(ws):.0f}")
    byn = defaultdict(list)
    for p, r in zip(P, recs):
        byn[min(r["nkt"], 40)].append(p["row"])
    print("  row cycles by tile count: " + ", ".join(
        f"{n}: {median(v):.0f} (x{len(v)})" for n, v in sorted(byn.items()) if len(v) >= 50))
    tot_rows = sum(p["row"] for p in P)
    tot_tiles = sum(r["nkt"] for r in recs)
    print(f"  mean cycles a tile over whole rows: {tot_rows / tot_tiles:.0f} ({tot_tiles} tiles)")
    # gaps between consecutive rows of one CTA
    bycta = defaultdict(list)
    for r in recs:
        bycta[r["cta"]].append(r)
    gaps = []
    for rs in bycta.values():
        rs.sort(key=lambda r: r["r"])
        for a, b in zip(rs, rs[1:]):
            if b["r"] == a["r"] + 1:
                gaps.append(b["w"][2] - a["w"][31])
    print(f"  gap between a CTA's rows (stored -> next QFULL wait): median {median(gaps):.0f}, mean {mean(gaps):.0f}")
    # per SM: span from the first row's start to the last row's end, against the sum of rows
    bysm = defaultdict(list)
    for r in recs:
        bysm[r["smid"]].append(r)
    busy = []
    both = []
    for rs in bysm.values():
        span = max(r["w"][31] for r in rs) - min(r["w"][2] for r in rs)
        busy.append(sum(r["w"][31] - r["w"][3] for r in rs) / span)
        ev = sorted([(r["w"][3], 1) for r in rs] + [(r["w"][31], -1) for r in rs])
        cur, last, t2 = 0, ev[0][0], 0
        for t, d in ev:
            if cur >= 2:
                t2 += t - last
            cur += d
            last = t
        both.append(t2 / span)
    print(f"  per SM: rows in flight on average {mean(busy):.2f} (of 2 CTAs), both CTAs in a row {mean(both):.0%} of the span")


def self_test():
    # one synthetic record: every phase 100 cycles apart, 3 tiles
    w = [0] * 32
    w[0] = MAGIC << 48 | 5 << 32 | 3
    w[1] = 7 << 32 | 0
    t = 1000
    for k in range(2, 8):
        w[k] = t
        t += 100
    for j in (1, 2):
        b = 8 + 3 * (j - 1)
        for k in range(3):
            w[b + k] = t
            t += 100
    w[29] = 40
    w[30] = t
    w[31] = t + 100
    rec = {"smid": 5, "nkt": 3, "cta": 7, "r": 0, "w": w}
    p = phases(rec)
    assert p["qwait"] == 100 and p["s0"] == 100 and p["store"] == 100, p
    assert [x["s"] for x in p["tiles"]] == [100, 100], p
    assert p["lastpv"] == 100, p
    import os
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "t.bin")
        with open(f, "wb") as fh:
            fh.write(b"\0" * 256 + struct.pack("<32Q", *w))
        rs = rows_of(f)
        assert len(rs) == 1 and rs[0]["row"] == 1 and rs[0]["nkt"] == 3 and rs[0]["smid"] == 5, rs
    print("rows_timeline.py: self-test passed")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    elif len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
    else:
        for f in sys.argv[1:]:
            report(f)
