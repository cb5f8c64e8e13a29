#!/usr/bin/env python3
"""rows_cluster_model.py — a brute-force model of the barrier protocol of
bench/wgmma/rows_cluster.patch (the rows attend kernel in clusters of two),
written from the protocol as NOTES states it, not from the kernel's code.

Two CTAs, each: one producer thread, four consumer warps, a ring of ST
stages with KFULL/VFULL (count 1, with transaction bytes) and EMPTY (count 8)
mbarriers; the two rows' shared tiles come first in both rings, then each
CTA's own. A shared tile's K is issued by rank 0 and its V by rank 1, each
multicast into both CTAs; own tiles are loaded locally. A consumer warp
releases a shared tile on both CTAs' EMPTY and an own tile on its own with
count 2. Cluster barriers: one after init; then each warp arrives after its
last shared release (or at once) and waits before exit.

Random interleavings of every enabled step are run to the end; the model
fails on:
  - a deadlock (threads left, none can move);
  - a tile's bytes landing in a stage whose previous tile a consumer warp of
    that CTA has not released (an overwrite under a reader);
  - a consumer reading a stage whose K or V (or header) is not the tile it
    expects;
  - any arrive or landing on a CTA after it exited.
mbarrier semantics as the PTX ISA gives them: a phase completes when its
pending arrivals reach 0 and its transaction count is 0; the count may pass
below 0 within a phase (a complete_tx before the matching expect_tx).
Usage: rows_cluster_model.py [runs] (default 3000); exit status 1 on a failure.
--mutants: run three broken protocols instead and require each to fail (that
the model can see what it is for): a shared tile released only here (count
2, no remote arrive), an exit without the cluster wait, and K multicast by
both ranks.
"""
import random
import sys


from mbar_model import Bar, Fail


MUTANT = None


def run(rng, ns, no, st):
    """ns shared blocks' tiles (both CTAs), no[c] own tiles of CTA c, st stages."""
    KT = 16  # bytes of a K or V tile in the model
    ts = ns
    nkt = [ts + no[0], ts + no[1]]
    # tile ids: shared tile i -> ("s", i); own tile i of CTA c -> ("o", c, i)
    tiles = [[("s", i) for i in range(ts)] + [("o", c, i) for i in range(no[c])] for c in range(2)]
    kfull = [[Bar(1) for _ in range(st)] for _ in range(2)]
    vfull = [[Bar(1) for _ in range(st)] for _ in range(2)]
    empty = [[Bar(8) for _ in range(st)] for _ in range(2)]
    kdata = [[None] * st for _ in range(2)]
    vdata = [[None] * st for _ in range(2)]
    hdr = [[None] * st for _ in range(2)]
    # released[c][s]: how many uses of stage s all four warps of CTA c have released
    rel_count = [[[0] * 4 for _ in range(st)] for _ in range(2)]
    exited = [False, False]
    inflight = []  # (cta, 'k'|'v', stage, tile)
    # cluster barrier phase 2: arrivals of 2 x (4 consumer warps + producer warp)
    cl_arrived = [0]
    CL_TOTAL = 10

    def land(c, kind, s, tile):
        if exited[c]:
            raise Fail(f"bytes landed in CTA {c} after it exited")
        use = tiles[c].index(tile) // st
        for w in range(4):
            if rel_count[c][s][w] < use:
                raise Fail(f"CTA {c} stage {s}: tile {tile} landed while warp {w} still read use {rel_count[c][s][w]}")
        (kdata if kind == "k" else vdata)[c][s] = tile
        (kfull if kind == "k" else vfull)[c][s].complete_tx(KT)

    # producer state: position
    ppos = [0, 0]
    pstate = ["run", "run"]  # run -> cl_arrived -> done

    def prod_step(c):
        i = ppos[c]
        if i >= nkt[c]:
            return None
        s, u = i % st, i // st
        if not empty[c][s].done((u & 1) ^ 1):
            return None

        def act():
            tile = tiles[c][i]
            hdr[c][s] = tile
            kfull[c][s].arrive(1, KT)
            vfull[c][s].arrive(1, KT)
            if i < ts:
                kind = "k" if c == 0 else "v"
                for d in range(2):
                    inflight.append((d, kind, s, tile))
                    if MUTANT == "k-from-both" and c == 1:
                        inflight.append((d, "k", s, tile))
            else:
                inflight.append((c, "k", s, tile))
                inflight.append((c, "v", s, tile))
            ppos[c] += 1
        return act

    # consumer warp state: (j, phase) with phase 'k' (wait KFULL j), 'v' (wait VFULL j-1 then release j-1)
    cpos = [[[0, "k"] for _ in range(4)] for _ in range(2)]
    cl_warp_arrived = [[False] * 4 for _ in range(2)]
    cl_prod_arrived = [False, False]
    finished = [[False] * 4 for _ in range(2)]

    def release(c, w, j):
        s = j % st
        if exited[c]:
            raise Fail("arrive after exit")
        if j < ts and MUTANT == "no-remote-release":
            empty[c][s].arrive(2)
        elif j < ts:
            empty[c][s].arrive(1)
            if exited[c ^ 1]:
                raise Fail(f"CTA {c} warp {w} arrived on CTA {c ^ 1} after it exited")
            empty[c ^ 1][s].arrive(1)
        else:
            empty[c][s].arrive(2)
        rel_count[c][s][w] += 1
        if j == ts - 1:
            assert not cl_warp_arrived[c][w]
            cl_warp_arrived[c][w] = True
            cl_arrived[0] += 1

    def cons_step(c, w):
        j, ph = cpos[c][w]
        if finished[c][w]:
            return None
        if ts == 0 and not cl_warp_arrived[c][w]:
            def a0():
                cl_warp_arrived[c][w] = True
                cl_arrived[0] += 1
            return a0
        if j < nkt[c] and ph == "k":
            s, u = j % st, j // st
            if not kfull[c][s].done(u & 1):
                return None

            def a1():
                if kdata[c][s] != tiles[c][j] or hdr[c][s] != tiles[c][j]:
                    raise Fail(f"CTA {c} warp {w}: stage {s} holds K {kdata[c][s]} / header {hdr[c][s]}, wants {tiles[c][j]}")
                cpos[c][w] = [j, "v"] if j > 0 else [j + 1, "k"]
            return a1
        if (j < nkt[c] and ph == "v") or (j == nkt[c] and nkt[c] > 0 and ph == "k"):
            jp = j - 1 if ph == "v" else nkt[c] - 1
            s, u = jp % st, jp // st
            if not vfull[c][s].done(u & 1):
                return None

            def a2():
                if vdata[c][s] != tiles[c][jp]:
                    raise Fail(f"CTA {c} warp {w}: stage {s} holds V {vdata[c][s]}, wants {tiles[c][jp]}")
                release(c, w, jp)
                cpos[c][w] = [j + 1, "k"] if ph == "v" else [j + 1, "done"]
            return a2
        # all tiles done: the final cluster wait
        if cl_arrived[0] < CL_TOTAL and MUTANT != "no-cluster-wait":
            return None

        def a3():
            finished[c][w] = True
        return a3

    def prod_cluster_step(c):
        if not cl_prod_arrived[c]:
            def a():
                cl_prod_arrived[c] = True
                cl_arrived[0] += 1
            return a
        return None

    steps = 0
    while True:
        steps += 1
        if steps > 100000:
            raise Fail("no progress bound")
        acts = []
        for c in range(2):
            if exited[c]:
                continue
            a = prod_cluster_step(c)
            if a:
                acts.append(a)
            a = prod_step(c)
            if a:
                acts.append(a)
            for w in range(4):
                a = cons_step(c, w)
                if a:
                    acts.append(a)
        for k in range(len(inflight)):
            acts.append(("land", k))
        # a CTA exits when its warps are finished, its producer is through and the cluster wait passed
        for c in range(2):
            if not exited[c] and all(finished[c]) and ppos[c] >= nkt[c] and (cl_arrived[0] >= CL_TOTAL or MUTANT == "no-cluster-wait"):
                acts.append(("exit", c))
        if not acts:
            if all(exited):
                return
            raise Fail(f"deadlock: producers at {ppos}, consumers {cpos}, in flight {len(inflight)}, cluster {cl_arrived[0]}")
        a = rng.choice(acts)
        if isinstance(a, tuple) and a[0] == "land":
            d, kind, s, tile = inflight.pop(a[1])
            land(d, kind, s, tile)
        elif isinstance(a, tuple) and a[0] == "exit":
            exited[a[1]] = True
        else:
            a()


def sweep(runs, rng):
    for r in range(runs):
        st = rng.choice([2, 3])
        ns = rng.choice([0, 1, 2, 3, 5, 8])
        no = [rng.choice([0, 1, 2, 4, 7]), rng.choice([0, 1, 3, 6])]
        try:
            run(rng, ns, no, st)
        except (Fail, AssertionError) as e:
            return f"run {r}: stages {st}, shared tiles {ns}, own tiles {no}: {e}"
    return None


def main():
    global MUTANT
    if "--mutants" in sys.argv:
        bad = 0
        for m in ["no-remote-release", "no-cluster-wait", "k-from-both"]:
            MUTANT = m
            why = sweep(2000, random.Random(7))
            print(f"mutant {m}: " + (f"caught ({why})" if why else "NOT caught"))
            bad += why is None
        return 1 if bad else 0
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    why = sweep(runs, random.Random(12))
    if why:
        print(f"FAIL {why}")
        return 1
    print(f"rows_cluster_model: {runs} random schedules, stages 2-3, 0-8 shared and 0-7 own tiles: no deadlock, "
          "no overwrite under a reader, every tile read as itself, nothing reached an exited CTA")
    return 0


if __name__ == "__main__":
    sys.exit(main())
