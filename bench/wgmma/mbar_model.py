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
