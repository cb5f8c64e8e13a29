"""mbar_model.py — the mbarrier of the PTX ISA, for the protocol models of
this folder (rows_cluster_model.py, rows_persist_model.py): a phase
completes when its pending arrivals reach 0 and its transaction count is 0;
the count may pass below 0 within a phase (a complete_tx before the matching
expect_tx); try_wait.parity P succeeds once the phase of parity P has
completed."""


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
