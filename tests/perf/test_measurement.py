"""The benchmark's counters measure what they claim: FLOPs, memory in flight, CPU shares."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from falco.perf.flops import count_flops, matmul_flops
from falco.perf.machine import Share
from falco.perf.memory import measure_peak
from falco.perf.timing import QUIET, StepClock, median


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
        time.sleep(0.05)
        return float(tmp[0] + kept[0])

    _, mem = measure_peak(work)
    assert 120 * 2**20 < mem.in_flight < 180 * 2**20


def test_cpu_share_and_step_clock():
    share = Share().start()
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:  # burn one core
        pass
    out = share.stop()
    assert out["own_cpu_share"] > 0.2  # of all CPUs (1/2 on a 2-core machine)
    clock = StepClock()
    for step in range(3):
        time.sleep(0.02 * (step + 1))
        clock(step)
    steps = clock.steps()  # the first interval (set-up + step 0) is not a step
    # sleeps never end early; a busy machine may wake them late
    assert len(steps) == 2 and 0.04 <= steps[0] < 0.3 and 0.06 <= steps[1] < 0.3
    quiet = [t for t, o in zip(steps, clock.others[1:], strict=True) if o <= QUIET]
    assert clock.step_time() == ((median(quiet), True) if quiet else (median(steps), False))
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([1.0, 4.0]) == 2.5
