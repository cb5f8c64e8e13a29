#!/usr/bin/env python3
"""rows_sched_model.py — a brute-force model of the queue between the
scheduler warp and the issuer of the rows attend kernel (templates/
wgmma_rows.cuh: RowWg::schedule, RowWg::issue, RowWg::publish), written from
the kernel's code.

The scheduler takes rows (random tile counts, 0 included), and per row waits
for a free slot (LEMPTY), writes up to C tiles into it, and when it is full
hands it over (header {row, the row's tile count, the chunk's tile count},
then the arrive on LFULL) and waits for the next; the row's last chunk is
handed over as it is (0 tiles for an empty row). At the end, one slot with
row -1. The issuer waits LFULL, reads the header (-1: stop), reads the
chunk's tiles, arrives on LEMPTY, and goes on to the row's next chunk until
it has seen the row's tile count.

Random interleavings of the two run to the end; the model fails on a
deadlock, on a slot written while the issuer may still read it, on a header
or tile the issuer reads that is not the one written for that chunk, or
when the issuer's sequence of (row, tiles) differs from the rows'. mbarrier
semantics from mbar_model.py.
Usage: rows_sched_model.py [runs] (default 3000); exit status 1 on a failure.
--mutants: run broken protocols and require each to fail: no wait for a free
slot when a chunk fills; LEMPTY arrived before the chunk's tiles are read;
the row's end tested with > instead of >=.
"""
import sys

from mbar_model import Bar, Fail, cli, interleave


def run(rng, rows, QS, C, mutant=None):
    lfull = [Bar(1) for _ in range(QS)]
    lempty = [Bar(1) for _ in range(QS)]
    owner = ["s"] * QS          # who may touch slot s: the scheduler or the issuer
    hdr = [None] * QS
    tiles = [[None] * C for _ in range(QS)]
    out = []                    # what the issuer emitted: (row, tile)
    seen_rt = {}

    def wait_empty(k):
        s = k % QS
        yield lambda: lempty[s].done(((k // QS) & 1) ^ 1)
        owner[s] = "s"

    def write_tile(k, t, v):
        s = k % QS
        if owner[s] != "s":
            raise Fail(f"slot {s} written (chunk {k}, tile {t}) while the issuer may read it")
        tiles[s][t] = (k, v)

    def publish(k, r, rt, t):
        s = k % QS
        if owner[s] != "s":
            raise Fail(f"header of chunk {k} written while the issuer may read slot {s}")
        hdr[s] = (k, r, rt, t)
        owner[s] = "i"
        lfull[s].arrive()

    def scheduler():
        k = 0
        for r, n in enumerate(rows):
            t = 0
            yield from wait_empty(k)  # a free slot first, then the row's ticket
            for j in range(n):
                if t == C:
                    publish(k, r, n, t)
                    k += 1
                    t = 0
                    if mutant != "no-wait":
                        yield from wait_empty(k)
                    yield lambda: True
                write_tile(k, t, (r, j))
                t += 1
                yield lambda: True
            publish(k, r, n, t)
            k += 1
            yield lambda: True
        yield from wait_empty(k)
        publish(k, -1, 0, 0)

    def read_hdr(k):
        s = k % QS
        yield lambda: lfull[s].done((k // QS) & 1)
        h = hdr[s]
        if h is None or h[0] != k:
            raise Fail(f"issuer read header {h} for chunk {k}")
        return h

    def issuer():
        k = 0
        while True:
            h = yield from read_hdr(k)
            _, r, rt, t = h
            if r < 0:
                return
            seen_rt[r] = rt
            done = 0
            while True:
                s = k % QS
                if mutant == "empty-early":
                    lempty[s].arrive()
                    yield lambda: True
                for j in range(t):
                    v = tiles[s][j]
                    if v is None or v[0] != k:
                        raise Fail(f"issuer read tile {v} as tile {j} of chunk {k}")
                    out.append(v[1])
                    yield lambda: True
                if mutant != "empty-early":
                    lempty[s].arrive()
                k += 1
                done += t
                if (done > rt) if mutant == "gt" else (done >= rt):
                    break
                h = yield from read_hdr(k)
                _, r2, rt2, t = h
                if r2 != r or rt2 != rt:
                    raise Fail(f"chunk {k} of row {r} carries row {r2}, {rt2} tiles")

    threads = {"s": scheduler(), "i": issuer()}
    interleave(rng, threads)
    want = [(r, j) for r, n in enumerate(rows) for j in range(n)]
    if out != want:
        raise Fail(f"issued {out}, want {want}")
    for r, n in enumerate(rows):
        if seen_rt.get(r) != n:
            raise Fail(f"row {r}: the issuer saw {seen_rt.get(r)} tiles, it has {n}")
    return True


def case(rng, mutant=None):
    QS, C = rng.choice([1, 2, 3]), rng.choice([1, 2, 3, 32])
    rows = [rng.choice([0, 1, 1, 2, 3, 4, 5, 7, 9]) for _ in range(rng.randint(0, 6))]
    try:
        run(rng, rows, QS, C, mutant)
    except Fail as e:
        raise Fail(f"(slots {QS}, chunk {C}, rows {rows}): {e}")


def main():
    cli(sys.argv[1:], lambda m: lambda rng: case(rng, m), ["no-wait", "empty-early", "gt"],
        "no deadlock, no slot written under the issuer, every row's tiles issued in order")


if __name__ == "__main__":
    main()
