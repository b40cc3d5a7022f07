"""The benchmark's counters on real work: CPU shares, step times and memory in flight.

    .venv/bin/python benchmarks/measurement.py

Prints what benchmarks/harness/machine.py, timing.py and memory.py measure on
work whose size is known (a busy loop of one core, sleeps of known length, a temporary tensor
of known size), beside the values expected on an idle machine. It checks nothing: on a shared
machine the CPU shares and step times move with the load, which the others' share shows.
tests/perf/test_measurement.py tests the same counters on scripted clocks.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness.machine import Share  # noqa: E402
from benchmarks.harness.memory import measure_peak  # noqa: E402
from benchmarks.harness.timing import StepClock  # noqa: E402


def cpu_share(seconds: float = 0.5) -> dict[str, float]:
    share = Share().start()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # one core busy
        pass
    return share.stop()


def step_times(sleeps: tuple[float, ...] = (0.02, 0.04, 0.06)) -> StepClock:
    clock = StepClock()
    for step, s in enumerate(sleeps):
        time.sleep(s)
        clock(step)
    return clock


def memory_in_flight(mb: int = 128) -> int:
    def work() -> float:
        tmp = torch.ones(mb * 2**20 // 4)
        time.sleep(0.05)
        return float(tmp[0])

    return measure_peak(work)[1].in_flight


def main() -> None:
    cpus = os.cpu_count() or 1
    share = cpu_share()
    print(f"busy loop on one core: own CPU share {share['own_cpu_share']:.3f} "
          f"(idle machine: 1/{cpus} = {1 / cpus:.3f}), others {share['others_cpu_share']:.3f}")
    clock = step_times()
    steps = ", ".join(f"{t:.4f}" for t in clock.steps())
    step, quiet = clock.step_time()
    print(f"sleeps of 0.04 s and 0.06 s as steps: {steps} s; median {step:.4f} s "
          f"({'quiet steps' if quiet else 'no quiet step'}); others per step: "
          + ", ".join(f"{o:.3f}" for o in clock.others[1:]))
    print(f"temporary 128 MB tensor: {memory_in_flight() / 2**20:.1f} MB in flight")


if __name__ == "__main__":
    main()
