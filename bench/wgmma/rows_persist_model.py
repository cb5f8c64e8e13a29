#!/usr/bin/env python3
"""rows_persist_model.py — a brute-force model of the barrier protocol of the
persistent rows attend kernel (templates/wgmma_rows.cuh), written from the
protocol as the kernel's comments and NOTES state it.

One CTA (CTAs share only the row counter, an atomic), one producer thread,
four consumer warps, a ring of ST stages (KFULL, VFULL: count 1 with
transaction bytes; EMPTY: count 4), the Q tile (QFULL: count 1 with bytes;
QEMPTY: count 4) and the row slot INFO. The CTA takes R rows with random
tile counts (0 included). The producer, per row r: the first min(F, nkt)
tiles (F = 0 by default: Q first; --first F to change it), then Q (after
waiting QEMPTY for row r - 1; INFO written before the arrive on QFULL), then
the rest; at the end, after QEMPTY of the last row, INFO = -1 and a plain
arrive on QFULL. A consumer warp, per row: wait QFULL, read INFO (-1: exit),
read Q into registers (its fragments: S reads them, not the tile) and arrive
on QEMPTY, S of tile 0; for j >= 1 wait KFULL(j), VFULL(j - 1), S(j) and
P V(j - 1), release stage j - 1; then P V of the last tile and its release;
the CTA's tile index carries over from row to row. (Until the twentieth
session Q stayed in shared memory, QEMPTY came after the row's last S and the
producer loaded Q after the row's first ST - 1 tiles.)

TMA bytes land at random later times. Random interleavings run to the end;
the model fails on a deadlock, on Q or a stage (K, V, header) overwritten
while a warp may still read the old contents, on a warp reading a Q, K, V,
header or INFO that is not the one it expects, or on an exit with a copy in
flight. mbarrier semantics as the PTX ISA gives them (a phase completes when
its arrivals and its transaction count reach zero).
Usage: rows_persist_model.py [--first F|st] [runs] (default 3000); exit
status 1 on a failure.
--mutants: run broken protocols and require each to fail: Q loaded before
the previous row's QEMPTY; QEMPTY arrived before Q is read into registers;
INFO written after the arrive; and all of a row's tiles issued before its Q.
"""
import sys


from mbar_model import Fail, QRing, cli, interleave


def run(rng, rows, ST, mutant=None, first=None):
    q = QRing(ST, 4, "row")
    R = len(rows)

    def producer():
        i = 0
        for r, n in enumerate(rows):
            f = 0 if first is None else (ST if first == "st" else int(first))
            qat = i + (n if mutant == "q-last" else min(f, n))
            for _ in range(n):
                if i == qat:
                    yield from q.load_q(r, n, mutant)
                yield from q.emit(i)
                i += 1
            if i == qat:
                yield from q.load_q(r, n, mutant)
        yield from q.finish(R)

    def consumer(w):
        i, r = 0, 0
        while True:
            yield lambda: q.qfull.done(r & 1)
            if q.info is None:
                raise Fail(f"warp {w} read INFO before any was written")
            x, n = q.info
            q.inforead[w] += 1
            if x == -1:
                if r != R:
                    raise Fail(f"warp {w} told to exit after {r} of {R} rows")
                return
            if (x, n) != (r, rows[r]):
                raise Fail(f"warp {w} read INFO {(x, n)} for row {r}")

            def q_is_mine():
                if q.qdata != r:
                    raise Fail(f"warp {w} read Q of row {q.qdata} for row {r}")

            if mutant == "qempty-early":
                q.release_q(w)
                yield lambda: True
            q_is_mine()  # ldmatrix of the fragments
            if mutant != "qempty-early":
                q.release_q(w)
            if n > 0:
                s0 = i % ST
                yield lambda: q.kfull[s0].done((i // ST) & 1)
                if q.hdr[s0] != i or q.kdata[s0] != i:
                    raise Fail(f"warp {w} tile {i}: header {q.hdr[s0]}, K {q.kdata[s0]}")
                for j in range(1, n):
                    t = i + j
                    sj, sp = t % ST, (t - 1) % ST
                    yield lambda: q.kfull[sj].done((t // ST) & 1)
                    if q.hdr[sj] != t or q.kdata[sj] != t:
                        raise Fail(f"warp {w} tile {t}: header {q.hdr[sj]}, K {q.kdata[sj]}")
                    yield lambda: q.vfull[sp].done(((t - 1) // ST) & 1)
                    if q.vdata[sp] != t - 1:
                        raise Fail(f"warp {w} tile {t - 1}: V {q.vdata[sp]}")
                    yield lambda: True  # the wgmma in flight: others may move
                    q.release(w, t - 1)
                tl = i + n - 1
                sl = tl % ST
                yield lambda: q.vfull[sl].done((tl // ST) & 1)
                if q.vdata[sl] != tl:
                    raise Fail(f"warp {w} last tile {tl}: V {q.vdata[sl]}")
                q.release(w, tl)
            i += n
            r += 1

    threads = {"p": producer()}
    for w in range(4):
        threads[w] = consumer(w)
    interleave(rng, threads, q.inflight, q.land)
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
