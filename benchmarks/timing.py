"""The one timing loop the benchmark scripts share (imported as a sibling module)."""
from __future__ import annotations

import time
from typing import Callable


def time_calls(fn: Callable[[], object], repeats: int, sync: Callable[[], object] = lambda: None) -> list[float]:
    """Wall seconds of `repeats` calls of fn after one warm-up call; `sync` (e.g. torch.cuda.synchronize)
    runs before each clock read so asynchronous GPU work is counted."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times
