"""Peak resident memory of a piece of work, sampled from /proc while it runs (CPU, Linux).

The process's own high-water mark (ru_maxrss) never goes down, so it cannot give the peak of
one phase after another; a background thread instead samples the resident set size every
`interval` seconds and keeps the maximum. `peak - before` is the memory the work had in
flight (activations, gradients, cast weights), the figure that grows with the batch. Large
tensors are allocated with mmap and returned on free, so the resident size follows them; the
sampling can miss a peak shorter than the interval. Memory freed earlier but kept by the C
allocator is handed back first (malloc_trim), so it does not hide the work's own peak.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@dataclass
class MemoryPeak:
    before: int = 0  # resident bytes when the work started
    peak: int = 0  # highest resident bytes seen while it ran

    @property
    def in_flight(self) -> int:
        return max(0, self.peak - self.before)


def release_free_memory() -> None:
    """Hand memory the allocator keeps after frees back to the OS (glibc malloc_trim), so that
    the resident size before a measurement is what is really in use; no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def measure_peak(work: Callable[[], object], interval: float = 0.002) -> tuple[object, MemoryPeak]:
    """(work(), its MemoryPeak), the resident size measured from a trimmed heap."""
    gc.collect()
    release_free_memory()
    mem = MemoryPeak(rss_bytes(), rss_bytes())
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            mem.peak = max(mem.peak, rss_bytes())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = work()
    finally:
        done.set()
        thread.join()
    mem.peak = max(mem.peak, rss_bytes())
    return result, mem

