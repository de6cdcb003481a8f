"""Timing shared by the whole-model benchmarks (decode.py, models.py,
prefill.py): each runner makes `repeat` calls back to back after one
warm-up call and 0.2 s of quiet (so that the runtime before it has stopped
spinning its worker threads on the same cores), the runners take turns
`rounds` times, medians."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time


def measure(runners, repeat, rounds=3, args=()):
    """{name: median seconds per call of run(*args)} for {name: run}."""
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            time.sleep(0.2)
            run(*args)
            for _ in range(repeat):
                t = time.perf_counter()
                run(*args)
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(t) for name, t in times.items()}


@contextlib.contextmanager
def empty_build_cache():
    """A fresh HETC_CACHE holding only x86's kernel library, which is built
    once per machine and hetc version: compiles timed inside build their
    model's own code, as every compile after a user's first does. Yields
    the seconds the library took to build."""
    from hetc.backends.x86 import kernel_library

    before = os.environ.get("HETC_CACHE")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["HETC_CACHE"] = cache
        try:
            start = time.perf_counter()
            kernel_library()
            yield time.perf_counter() - start
        finally:
            if before is None:
                os.environ.pop("HETC_CACHE", None)
            else:
                os.environ["HETC_CACHE"] = before
