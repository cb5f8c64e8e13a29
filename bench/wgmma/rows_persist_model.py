#!/usr/bin/env python3
"""rows_persist_model.py — a brute-force model of the barrier protocol of the
persistent rows attend kernel (templates/wgmma_rows.cuh), written from the
protocol as the kernel's comments and NOTES state it.

One CTA (CTAs share only the row counter, an atomic), one producer thread,
four consumer warps, a ring of ST stages (KFULL, VFULL: count 1 with
transaction bytes; EMPTY: count 4), the Q tile (QFULL: count 1 with bytes;
QEMPTY: count 4) and the row slot INFO. The CTA takes R rows with random
tile counts (0 included). The producer, per row r: the first min(F, nkt)
tiles (F = ST - 1 by default: the stages the previous row frees before its
last S; --first F to change it), then Q (after waiting QEMPTY for row r - 1; INFO written before the
arrive on QFULL), then the rest; at the end, after QEMPTY of the last row,
INFO = -1 and a plain arrive on QFULL. A consumer warp, per row: wait QFULL,
read INFO (-1: exit), S of tile 0; for j >= 1 wait KFULL(j), VFULL(j - 1),
S(j) and P V(j - 1), release stage j - 1; after the loop arrive on QEMPTY
(every S done), then P V of the last tile and its release; the CTA's tile
index carries over from row to row.

TMA bytes land at random later times. Random interleavings run to the end;
the model fails on a deadlock, on Q or a stage (K, V, header) overwritten
while a warp may still read the old contents, on a warp reading a Q, K, V,
header or INFO that is not the one it expects, or on an exit with a copy in
flight. mbarrier semantics as the PTX ISA gives them (a phase completes when
its arrivals and its transaction count reach zero).
Usage: rows_persist_model.py [--first F|st] [runs] (default 3000); exit
status 1 on a failure.
--mutants: run broken protocols and require each to fail: Q loaded before
the previous row's QEMPTY; QEMPTY arrived before the last S; INFO written
after the arrive; and all of a row's tiles issued before its Q.
"""
import sys


from mbar_model import Bar, Fail, cli, interleave


def run(rng, rows, ST, mutant=None, first=None):
    TX = 16
    qfull, qempty = Bar(1), Bar(4)
    kfull = [Bar(1) for _ in range(ST)]
    vfull = [Bar(1) for _ in range(ST)]
    empty = [Bar(4) for _ in range(ST)]
    kdata, vdata, hdr = [None] * ST, [None] * ST, [None] * ST
    qdata, info = [None], [None]
    rel = [[0] * 4 for _ in range(ST)]  # rel[s][w]: uses of stage s warp w released
    qrel = [0] * 4                      # rows whose Q warp w released
    inforead = [0] * 4                  # INFO reads of warp w
    inflight = []                       # (what, stage or None, value)
    R = len(rows)
    tile_of = []                        # global tile index -> (row, j)
    for r, n in enumerate(rows):
        tile_of += [(r, j) for j in range(n)]

    def land(what, s, val):
        if what == "q":
            for w in range(4):
                if qrel[w] < val:
                    raise Fail(f"Q of row {val} landed while warp {w} may still read row {qrel[w]}'s")
            qdata[0] = val
            qfull.complete_tx(TX)
            return
        use = val // ST
        for w in range(4):
            if rel[s][w] < use:
                raise Fail(f"stage {s}: tile {val} landed while warp {w} still read use {rel[s][w]}")
        (kdata if what == "k" else vdata)[s] = val
        (kfull if what == "k" else vfull)[s].complete_tx(TX)

    def load_q(r, n):
        if mutant != "q-early" and r > 0:
            yield lambda: qempty.done((r - 1) & 1)
        for w in range(4):
            if mutant != "info-late" and inforead[w] < r:
                raise Fail(f"INFO of row {r} written before warp {w} read row {inforead[w]}'s")
        if mutant == "info-late":
            qfull.arrive(tx=TX)
            inflight.append(("q", None, r))
            yield lambda: True
            info[0] = (r, n)
        else:
            info[0] = (r, n)
            qfull.arrive(tx=TX)
            inflight.append(("q", None, r))

    def emit(i):
        s = i % ST
        yield lambda: empty[s].done(((i // ST) & 1) ^ 1)
        for w in range(4):
            if rel[s][w] < i // ST:
                raise Fail(f"header of tile {i} written while warp {w} still read stage {s}")
        hdr[s] = i
        kfull[s].arrive(tx=TX)
        vfull[s].arrive(tx=TX)
        inflight.append(("k", s, i))
        inflight.append(("v", s, i))

    def producer():
        i = 0
        for r, n in enumerate(rows):
            f = ST - 1 if first is None else (ST if first == "st" else int(first))
            qat = i + (n if mutant == "q-last" else min(f, n))
            for _ in range(n):
                if i == qat:
                    yield from load_q(r, n)
                yield from emit(i)
                i += 1
            if i == qat:
                yield from load_q(r, n)
        if R > 0:
            yield lambda: qempty.done((R - 1) & 1)
        for w in range(4):
            if inforead[w] < R:
                raise Fail(f"INFO end written before warp {w} read row {inforead[w]}'s")
        info[0] = (-1, 0)
        qfull.arrive()

    def consumer(w):
        i, r = 0, 0
        while True:
            yield lambda: qfull.done(r & 1)
            x, n = info[0]
            inforead[w] += 1
            if x == -1:
                if r != R:
                    raise Fail(f"warp {w} told to exit after {r} of {R} rows")
                return
            if (x, n) != (r, rows[r]):
                raise Fail(f"warp {w} read INFO {(x, n)} for row {r}")

            def q_is_mine():
                if qdata[0] != r:
                    raise Fail(f"warp {w} read Q of row {qdata[0]} for row {r}")

            if n == 0:
                qrel[w] += 1
                qempty.arrive()
            else:
                s0 = i % ST
                yield lambda: kfull[s0].done((i // ST) & 1)
                if hdr[s0] != i or kdata[s0] != i:
                    raise Fail(f"warp {w} tile {i}: header {hdr[s0]}, K {kdata[s0]}")
                q_is_mine()
                if mutant == "qempty-early":
                    qrel[w] += 1
                    qempty.arrive()
                for j in range(1, n):
                    t = i + j
                    sj, sp = t % ST, (t - 1) % ST
                    yield lambda: kfull[sj].done((t // ST) & 1)
                    if hdr[sj] != t or kdata[sj] != t:
                        raise Fail(f"warp {w} tile {t}: header {hdr[sj]}, K {kdata[sj]}")
                    yield lambda: vfull[sp].done(((t - 1) // ST) & 1)
                    if vdata[sp] != t - 1:
                        raise Fail(f"warp {w} tile {t - 1}: V {vdata[sp]}")
                    q_is_mine()  # S(j) reads Q
                    yield lambda: True  # the wgmma in flight: others may move
                    rel[sp][w] += 1
                    empty[sp].arrive()
                if mutant != "qempty-early":
                    qrel[w] += 1
                    qempty.arrive()
                tl = i + n - 1
                sl = tl % ST
                yield lambda: vfull[sl].done((tl // ST) & 1)
                if vdata[sl] != tl:
                    raise Fail(f"warp {w} last tile {tl}: V {vdata[sl]}")
                rel[sl][w] += 1
                empty[sl].arrive()
            i += n
            r += 1

    threads = {"p": producer()}
    for w in range(4):
        threads[w] = consumer(w)
    interleave(rng, threads, inflight, land)
    return True


def case(rng, mutant=None, first=None):
    ST = rng.choice([2, 3])
    rows = [rng.choice([0, 1, 1, 2, 3, 4, 5, 7]) for _ in range(rng.randint(0, 6))]
    try:
        run(rng, rows, ST, mutant, first)
    except Fail as e:
        raise Fail(f"(ST {ST}, rows {rows}): {e}")


def main():
    args = sys.argv[1:]
    first = None
    if "--first" in args:
        k = args.index("--first")
        first = args[k + 1]
        del args[k:k + 2]
    cli(args, lambda m: lambda rng: case(rng, m, first), ["q-early", "qempty-early", "info-late", "q-last"],
        "no deadlock, no overwrite under a reader, every Q, K, V, header and INFO as expected")


if __name__ == "__main__":
    main()
