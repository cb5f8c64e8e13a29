"""mbar_model.py — the mbarrier of the PTX ISA, for the protocol models of
this folder (rows_cluster_model.py, rows_persist_model.py,
rows_sched_model.py, attn_persist_model.py): a phase completes when its pending arrivals reach 0
and its transaction count is 0; the count may pass below 0 within a phase (a
complete_tx before the matching expect_tx); try_wait.parity P succeeds once
the phase of parity P has completed. Also the models' shared random sweep
and command line (sweep, cli)."""


class Bar:
    def __init__(self, count):
        self.count, self.pending, self.tx, self.phase = count, count, 0, 0

    def _check(self):
        if self.pending == 0 and self.tx == 0:
            self.phase += 1
            self.pending = self.count

    def arrive(self, n=1, tx=0):
        self.tx += tx
        self.pending -= n
        assert self.pending >= 0, "more arrivals than the barrier counts"
        self._check()

    def complete_tx(self, nbytes):
        self.tx -= nbytes
        if self.pending == 0:
            self._check()

    def done(self, parity):  # try_wait.parity: the phase of this parity has completed
        return self.phase % 2 != parity


class Fail(Exception):
    pass


def interleave(rng, threads, inflight=None, land=None, max_steps=100000):
    """Run the threads (name -> generator; each yield is the predicate the
    thread waits on) in a random order, landing the copies in flight
    (inflight: a list of argument tuples, land(*args) lands one) at random
    points, until every thread has ended and nothing is in flight. Fail on a
    deadlock (nothing ready, nothing in flight) or after max_steps."""
    inflight = [] if inflight is None else inflight
    waits = {k: (lambda: True) for k in threads}
    steps = 0
    while threads or inflight:
        steps += 1
        if steps > max_steps:
            raise Fail(f"no end after {max_steps} steps")
        ready = [k for k in threads if waits[k]()]
        choices = [("t", k) for k in ready] + [("l", j) for j in range(len(inflight))]
        if not choices:
            raise Fail(f"deadlock: threads {sorted(map(str, threads))} wait, nothing in flight")
        kind, k = rng.choice(choices)
        if kind == "l":
            land(*inflight.pop(k))
            continue
        try:
            waits[k] = next(threads[k])
        except StopIteration:
            del threads[k]
            del waits[k]


def sweep(runs, seed, case):
    """Run case(rng) `runs` times with one generator seeded with `seed`; case
    draws a configuration and runs it, raising Fail with the configuration in
    its text. Returns the first failure as 'run N (...): why', or None."""
    import random
    rng = random.Random(seed)
    for n in range(runs):
        try:
            case(rng)
        except Fail as e:
            return f"run {n} {e}"
    return None


def cli(args, case_for, mutants, ok):
    """The models' command line. `--mutants`: case_for(m) for each mutant m
    must fail within 3,000 runs (seed 7); exit status 1 if one does not.
    Else `[runs]` (default 3,000) runs of case_for(None) (seed 1) must pass:
    prints `ok` or the failure; exit status 1 on a failure."""
    import sys
    if args and args[0] == "--mutants":
        bad = 0
        for m in mutants:
            r = sweep(3000, 7, case_for(m))
            print(f"mutant {m}: {'caught: ' + r if r else 'NOT caught'}")
            bad += r is None
        sys.exit(1 if bad else 0)
    runs = int(args[0]) if args else 3000
    r = sweep(runs, 1, case_for(None))
    if r:
        print("FAIL", r)
        sys.exit(1)
    print(f"{runs} schedules: {ok}")


class QRing:
    """What the persistent attend models share (rows_persist_model.py: the
    rows kernel, 4 consumer warps; attn_persist_model.py: the two-row
    kernel, 8): a ring of ST stages (KFULL, VFULL: count 1 with transaction
    bytes; EMPTY: one arrive a consumer warp), the Q tile (QFULL: count 1
    with bytes; QEMPTY: one arrive a consumer warp), INFO, and the checks a
    landing copy or a producer write makes against the warps' releases.
    unit names the work unit in messages ("row", "item")."""
    TX = 16

    def __init__(self, ST, NW, unit):
        self.ST, self.NW, self.unit = ST, NW, unit
        self.qfull, self.qempty = Bar(1), Bar(NW)
        self.kfull = [Bar(1) for _ in range(ST)]
        self.vfull = [Bar(1) for _ in range(ST)]
        self.empty = [Bar(NW) for _ in range(ST)]
        self.kdata, self.vdata, self.hdr = [None] * ST, [None] * ST, [None] * ST
        self.qdata = self.info = None
        self.rel = [[0] * NW for _ in range(ST)]  # rel[s][w]: uses of stage s warp w released
        self.qrel = [0] * NW                      # units whose Q warp w released
        self.inforead = [0] * NW                  # INFO reads of warp w
        self.inflight = []                        # (what, stage or None, value)

    def land(self, what, s, val):
        u = self.unit
        if what == "q":
            for w in range(self.NW):
                if self.qrel[w] < val:
                    raise Fail(f"Q of {u} {val} landed while warp {w} may still read {u} {self.qrel[w]}'s")
            self.qdata = val
            self.qfull.complete_tx(self.TX)
            return
        use = val // self.ST
        for w in range(self.NW):
            if self.rel[s][w] < use:
                raise Fail(f"stage {s}: tile {val} landed while warp {w} still read use {self.rel[s][w]}")
        (self.kdata if what == "k" else self.vdata)[s] = val
        (self.kfull if what == "k" else self.vfull)[s].complete_tx(self.TX)

    def load_q(self, r, n, mutant, q_when_empty=True):
        """The producer's Q of unit r (n tiles): QEMPTY of r - 1 waited, INFO
        written, the arrive on QFULL (with Q's bytes unless n == 0 and not
        q_when_empty). Mutants: q-early (no QEMPTY wait), info-late (INFO
        after the arrive)."""
        u = self.unit
        if mutant != "q-early" and r > 0:
            yield lambda: self.qempty.done((r - 1) & 1)
        for w in range(self.NW):
            if mutant != "info-late" and self.inforead[w] < r:
                raise Fail(f"INFO of {u} {r} written before warp {w} read {u} {self.inforead[w]}'s")
        q = n > 0 or q_when_empty
        if mutant != "info-late":
            self.info = (r, n)
        self.qfull.arrive(tx=self.TX if q else 0)
        if q:
            self.inflight.append(("q", None, r))
        if mutant == "info-late":
            yield lambda: True
            self.info = (r, n)

    def emit(self, i):
        """The producer's tile i: its stage's EMPTY waited, header, K and V."""
        ST, s = self.ST, i % self.ST
        yield lambda: self.empty[s].done(((i // ST) & 1) ^ 1)
        for w in range(self.NW):
            if self.rel[s][w] < i // ST:
                raise Fail(f"header of tile {i} written while warp {w} still read stage {s}")
        self.hdr[s] = i
        self.kfull[s].arrive(tx=self.TX)
        self.vfull[s].arrive(tx=self.TX)
        self.inflight.append(("k", s, i))
        self.inflight.append(("v", s, i))

    def finish(self, R):
        """The producer's end: QEMPTY of the last unit, INFO = -1, a plain arrive."""
        if R > 0:
            yield lambda: self.qempty.done((R - 1) & 1)
        for w in range(self.NW):
            if self.inforead[w] < R:
                raise Fail(f"INFO end written before warp {w} read {self.unit} {self.inforead[w]}'s")
        self.info = (-1, 0)
        self.qfull.arrive()

    def release(self, w, t):
        """Warp w releases the stage of tile t."""
        s = t % self.ST
        self.rel[s][w] += 1
        self.empty[s].arrive()

    def release_q(self, w):
        self.qrel[w] += 1
        self.qempty.arrive()

