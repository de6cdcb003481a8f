"""Timing shared by the whole-model benchmarks (decode.py, models.py,
prefill.py): each runner makes `repeat` calls back to back after one
warm-up call, the runners take turns `rounds` times, medians."""

from __future__ import annotations

import statistics
import time


def measure(runners, repeat, rounds=3, args=()):
    """{name: median seconds per call of run(*args)} for {name: run}."""
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            run(*args)
            for _ in range(repeat):
                t = time.perf_counter()
                run(*args)
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(t) for name, t in times.items()}
