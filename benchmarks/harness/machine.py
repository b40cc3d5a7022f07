"""How busy the machine is: other processes' share of the CPUs while we measure (Linux).

Timings on a shared machine depend on what else runs. /proc/stat counts the CPU time of the
whole machine, os.times() our own; the difference is everything else, reported beside every
figure, and `wait_for_idle` can hold the benchmark until the others have stopped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

TICK = os.sysconf("SC_CLK_TCK")


def machine_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over its CPUs."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return (total - idle) / TICK, total / TICK


def own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Share:
    """CPU use between start() and stop(), as fractions of all the machine's CPU time."""

    busy0: float = 0.0
    total0: float = 0.0
    own0: float = 0.0

    def start(self) -> Share:
        (self.busy0, self.total0), self.own0 = machine_seconds(), own_seconds()
        return self

    def stop(self) -> dict[str, float]:
        (busy, total), own = machine_seconds(), own_seconds()
        span = max(total - self.total0, 1e-9)
        mine = own - self.own0
        return {"others_cpu_share": max(0.0, (busy - self.busy0 - mine) / span), "own_cpu_share": mine / span}


def wait_for_idle(max_wait: float, busy_below: float = 0.1, window: float = 3.0) -> dict[str, float]:
    """Wait (at most `max_wait` seconds) until the machine is less than `busy_below` busy over
    `window` seconds; returns the last busy share seen and the time waited."""
    start = time.time()
    while True:
        share = Share().start()
        time.sleep(window)
        busy = share.stop()["others_cpu_share"]
        if busy < busy_below or time.time() - start >= max_wait:
            return {"busy_share": busy, "waited_s": time.time() - start}
