"""The benchmark's counters measure what they claim: FLOPs, memory in flight, CPU shares, step
times. Clocks and CPU counters are replaced by scripted ones, so every expected value is known
beforehand and no assertion depends on how busy the machine is (benchmarks/measurement.py
prints the same counters on real work)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from benchmarks.harness import machine, timing
from benchmarks.harness.flops import count_flops, matmul_flops
from benchmarks.harness.machine import Share
from benchmarks.harness.memory import measure_peak
from benchmarks.harness.timing import QUIET, StepClock, median


def test_flops_of_a_matmul_a_conv_and_their_backward():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert count_flops(lambda: a @ b) == matmul_flops(64, 32, 16) == 2 * 64 * 32 * 16
    x, w = torch.randn(2, 8, 10, 10, requires_grad=True), torch.randn(4, 8, 3, 3, requires_grad=True)
    forward = 2 * (2 * 10 * 10) * 4 * (8 * 3 * 3)  # 2 * output pixels * out channels * taps
    assert count_flops(lambda: F.conv2d(x, w, padding=1)) == forward
    both = count_flops(lambda: F.conv2d(x, w, padding=1).sum().backward())
    assert both == 3 * forward  # backward: gradient of the input and of the weight
    frozen = w.detach()
    assert count_flops(lambda: F.conv2d(x, frozen, padding=1).sum().backward()) == 2 * forward  # no weight grad
    grouped = torch.randn(8, 1, 3, 3)  # depthwise: each output channel sees one input channel
    assert count_flops(lambda: F.conv2d(x.detach(), grouped, padding=1, groups=8)) == 2 * (2 * 10 * 10) * 8 * 9


def test_memory_in_flight_sees_a_temporary_tensor_and_not_a_kept_one():
    kept = torch.ones(32 * 2**20 // 4)  # 32 MB allocated before the measurement

    def work():
        tmp = torch.ones(128 * 2**20 // 4)  # 128 MB, freed at return
        time.sleep(0.05)  # several sampling intervals with the tensor alive
        return float(tmp[0] + kept[0])

    _, mem = measure_peak(work)
    assert 120 * 2**20 < mem.in_flight < 180 * 2**20


def _script(monkeypatch, machine_readings, own_readings):
    """machine_seconds() and own_seconds() return these readings, one per call."""
    busy_total, own = iter(machine_readings), iter(own_readings)
    monkeypatch.setattr(machine, "machine_seconds", lambda: next(busy_total))
    monkeypatch.setattr(machine, "own_seconds", lambda: next(own))


def test_cpu_shares_from_the_machine_and_process_counters(monkeypatch):
    # 60 CPU-seconds pass on the machine; 30 of them busy, 18 of those ours: 30% ours, 20% others'.
    _script(monkeypatch, [(10.0, 100.0), (40.0, 160.0)], [2.0, 20.0])
    assert Share().start().stop() == {"others_cpu_share": 0.2, "own_cpu_share": 0.3}
    # Counters tick coarsely: when ours outran the machine's busy count, others' share is 0, not < 0.
    _script(monkeypatch, [(10.0, 100.0), (20.0, 160.0)], [2.0, 20.0])
    assert Share().start().stop() == {"others_cpu_share": 0.0, "own_cpu_share": 0.3}


class _ScriptedShare:
    """Share whose stop() reports the next scripted share of the other processes."""

    others: list[float] = []

    def start(self):
        return self

    def stop(self):
        return {"others_cpu_share": _ScriptedShare.others.pop(0), "own_cpu_share": 0.5}


def _clock(monkeypatch, ends: list[float], others: list[float]) -> StepClock:
    """A StepClock started at t = 0 and called at each of `ends`, the other processes' CPU share
    in each interval being `others`."""
    times = iter([0.0, *ends])
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: next(times)))
    monkeypatch.setattr(timing, "Share", _ScriptedShare)
    _ScriptedShare.others = list(others)
    clock = StepClock()
    for step in range(len(ends)):
        clock(step)
    return clock


def test_step_clock_drops_steps_the_machine_was_busy_during(monkeypatch):
    assert QUIET == 0.1
    # Interval 0 (set-up + step 0) is not a step; the step during which others used 50% is dropped.
    clock = _clock(monkeypatch, [1.0, 1.5, 2.5, 2.625, 3.0], [0.9, 0.0, 0.5, 0.05, 0.1])
    assert clock.first() == 1.0
    assert clock.steps() == [0.5, 1.0, 0.125, 0.375]
    assert clock.others[1:] == [0.0, 0.5, 0.05, 0.1]
    assert clock.step_time() == (0.375, True)  # median of the quiet 0.5, 0.125, 0.375
    # No quiet step at all: the median of every step, flagged as not quiet.
    noisy = _clock(monkeypatch, [1.0, 1.5, 2.5, 2.625, 3.0], [0.5] * 5)
    assert noisy.step_time() == (0.4375, False)  # (0.375 + 0.5) / 2


def test_median():
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([1.0, 4.0]) == 2.5 and median([7.0]) == 7.0
