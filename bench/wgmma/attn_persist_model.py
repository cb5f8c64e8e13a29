#!/usr/bin/env python3
"""attn_persist_model.py — a brute-force model of the barrier protocol of the
persistent two-row attend kernel (templates/wgmma_attn.cuh, DenseWg::issue
and the consumers' loop in sale_attend_kernel), written from the protocol as
the kernel's comments state it (sixteenth session; prepared, not yet run on a
GPU: bench/wgmma/NOTES.md).

One CTA, one issuer thread, two consumer warpgroups of four warps each, a
ring of ST stages (KFULL, VFULL: count 1 with transaction bytes; EMPTY:
count 8), the Q tile (both warpgroups' 64-row halves; QFULL: count 1 with
bytes; QEMPTY: count 8) and INFO. The CTA takes R work items with random
tile counts (0 included); each tile holds blocks of warpgroup 0's row, of
warpgroup 1's, or of both (its own bits, in the stage's header).

The issuer, per item r: the first min(ST, n) tiles, then Q (after waiting
QEMPTY for item r - 1; INFO written before the arrive on QFULL; an item
without tiles loads no Q: a plain arrive), then the rest; at the end, after
QEMPTY of the last item, INFO = -1 and a plain arrive on QFULL.

A consumer warp, per item (DenseWg::consume_runs): wait QFULL, read INFO
(-1: exit); walk the item's tiles: a tile that holds none of its row's
blocks is released unread (after its KFULL); a run of tiles that do: S of
the first alone, then S(j) with P V(j - 1) (VFULL(j - 1) waited), releasing
j - 1; the run's last P V (VFULL waited) and its release; after the item,
the arrive on QEMPTY (every S and P V done). The CTA's tile index carries
over from item to item.

TMA bytes land at random later times. Random interleavings run to the end;
the model fails on a deadlock, on Q or a stage (K, V, header) overwritten
while a warp may still read the old contents, on a warp reading a Q, K, V,
header or INFO that is not the one it expects, or on an exit with a copy in
flight. mbarrier semantics: mbar_model.py.
Usage: attn_persist_model.py [runs] (default 3000); exit status 1 on a
failure.
--mutants: run broken protocols and require each to fail: Q loaded before
the previous item's QEMPTY; QEMPTY arrived before the item's last P V is
issued (before the run's end); INFO written after the arrive; Q after
ST + 1 tiles (the issuer then waits for a stage only this item frees).
"""
import sys

from mbar_model import Fail, QRing, cli, interleave

NW = 8  # consumer warps: two warpgroups of four


def run(rng, items, ST, mutant=None):
    q = QRing(ST, NW, "item")
    R = len(items)
    own = []  # global tile index -> own bits (1: wg 0, 2: wg 1, 3: both)
    for n in items:
        own += [rng.choice([1, 2, 3, 3]) for _ in range(n)]

    def issuer():
        i = 0
        for r, n in enumerate(items):
            qat = i + min(ST + (1 if mutant == "q-late" else 0), n)
            for _ in range(n):
                if i == qat:
                    yield from q.load_q(r, n, mutant, q_when_empty=False)
                yield from q.emit(i)
                i += 1
            if i == qat:
                yield from q.load_q(r, n, mutant, q_when_empty=False)
        yield from q.finish(R)

    def consumer(w):
        bit = 1 << (w // 4)  # the warp's warpgroup
        i, r = 0, 0

        def tile_ok(g, s):
            if q.hdr[s] != g or q.kdata[s] != g:
                raise Fail(f"warp {w} tile {g}: header {q.hdr[s]}, K {q.kdata[s]}")

        def q_ok():
            if q.qdata != r:
                raise Fail(f"warp {w} read Q of item {q.qdata} for item {r}")

        while True:
            yield lambda: q.qfull.done(r & 1)
            if q.info is None:
                raise Fail(f"warp {w} found INFO unwritten at item {r}")
            x, n = q.info
            q.inforead[w] += 1
            if x == -1:
                if r != R:
                    raise Fail(f"warp {w} told to exit after {r} of {R} items")
                return
            if (x, n) != (r, items[r]):
                raise Fail(f"warp {w} read INFO {(x, n)} for item {r}")
            j, early = 0, False
            while True:
                while j < n:  # skip to the run's first tile
                    g = i + j
                    yield lambda g=g: q.kfull[g % ST].done((g // ST) & 1)
                    tile_ok(g, g % ST)
                    if own[g] & bit:
                        break
                    q.release(w, g)
                    j += 1
                if j >= n:
                    break
                g = i + j
                q_ok()  # S of the run's first tile
                yield lambda: True
                jp = g
                j += 1
                while j < n:  # the run: S(j) under P V(jp)
                    g = i + j
                    yield lambda g=g: q.kfull[g % ST].done((g // ST) & 1)
                    tile_ok(g, g % ST)
                    if not own[g] & bit:
                        break
                    yield lambda jp=jp: q.vfull[jp % ST].done((jp // ST) & 1)
                    if q.vdata[jp % ST] != jp:
                        raise Fail(f"warp {w} tile {jp}: V {q.vdata[jp % ST]}")
                    q_ok()
                    yield lambda: True  # the wgmma in flight: others may move
                    q.release(w, jp)
                    jp = g
                    j += 1
                if mutant == "qempty-early" and not early:
                    early = True
                    q.release_q(w)
                yield lambda jp=jp: q.vfull[jp % ST].done((jp // ST) & 1)  # the run's last P V
                if q.vdata[jp % ST] != jp:
                    raise Fail(f"warp {w} last tile {jp}: V {q.vdata[jp % ST]}")
                yield lambda: True
                q.release(w, jp)
            if not early:
                q.release_q(w)
            i += n
            r += 1

    threads = {"p": issuer()}
    for w in range(NW):
        threads[w] = consumer(w)
    interleave(rng, threads, q.inflight, q.land, max_steps=200000)
    return True


def case(rng, mutant=None):
    ST = rng.choice([2, 3])
    items = [rng.choice([0, 1, 1, 2, 3, 4, 5, 7]) for _ in range(rng.randint(0, 5))]
    try:
        run(rng, items, ST, mutant)
    except Fail as e:
        raise Fail(f"(ST {ST}, items {items}): {e}")


def main():
    cli(sys.argv[1:], lambda m: lambda rng: case(rng, m), ["q-early", "qempty-early", "info-late", "q-late"],
        "no deadlock, no overwrite under a reader, every Q, K, V, header and INFO as expected")


if __name__ == "__main__":
    main()
