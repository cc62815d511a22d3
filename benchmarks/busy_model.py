"""A stand-in for a model that computes: the mirror baseline plus ``ms_per_step`` of busy CPU.

For measuring how generation scales over processes (benchmarks/bench_eval_workers.py) without
a GPU model: each step holds one core for a fixed time, as a CPU forward pass would, and the
outputs are the mirror baseline's, so every executor must write the same bytes.
"""

from __future__ import annotations

import time

from responsenet.eval.baselines.simple import MirrorListener


class BusyListener(MirrorListener):
    def __init__(self, *, ms_per_step: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.seconds = float(ms_per_step) / 1000

    def advance(self, state, obs):
        until = time.perf_counter() + self.seconds
        while time.perf_counter() < until:  # busy: holds the core like a forward pass
            pass
        return super().advance(state, obs)
