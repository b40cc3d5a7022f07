"""Stage batches sized by time (falco/stopping.py Pace): a stop waits for one batch of about the
budget, however slow an item is, and fast items still go in batches of the memory bound."""

from __future__ import annotations

import pytest
import torch

from falco import stopping
from falco.stages.fakepool import run_fakepool
from falco.stages.frame import FFHQ_TEMPLATE
from falco.stopping import Pace, Stopped
from tests.core.stage_nets import stage_parts


class Clock:
    """A fake perf_counter that the work under test advances by its simulated cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(stopping, "_clock", c)
    return c


@pytest.mark.parametrize(("seconds_per_item", "expected"), [
    (3.0, [1] * 10),  # slower than the budget's half: one at a time
    (1.0, [1, 4, 4, 1]),  # 4 s budget: four per batch after the first
    (1e-4, [1, 8, 1]),  # fast: the memory bound (8) after the first
])
def test_batches_follow_the_measured_time_per_item_and_cover_the_range(clock, seconds_per_item, expected):
    sizes, covered = [], []
    for part in Pace(8, budget_s=4.0).slices(10):
        sizes.append(part.stop - part.start)
        covered += list(range(10))[part]
        clock.now += seconds_per_item * sizes[-1]
    assert sizes == expected and covered == list(range(10))


def test_a_stop_is_seen_before_the_next_batch():
    seen = []
    with stopping.on_signals(), pytest.raises(Stopped, match="SIGTERM"):
        for part in Pace(4).split(torch.arange(100)):
            seen.append(part)
            stopping.request("SIGTERM")
    assert len(seen) == 1 and seen[0].tolist() == [0]


def test_the_fake_pool_stops_within_the_budget_when_each_fake_is_slow(clock, monkeypatch):
    """A generator that takes 3 s per fake (a 1024 px one on a CPU) and a stop asked during the
    first batch: the pool stops before its second batch, not after a whole chunk of 64 fakes."""
    parts = stage_parts()
    generator, synthesized = parts["generator"], []
    plain = generator.synthesize

    def slow(z):
        synthesized.append(len(z))
        clock.now += 3.0 * len(z)
        stopping.request("SIGTERM")
        return plain(z)

    monkeypatch.setattr(generator, "synthesize", slow)
    with stopping.on_signals(), pytest.raises(Stopped):
        run_fakepool(generator, parts["attributes"], FFHQ_TEMPLATE, None, size=128, seed=0, batch=64)
    assert synthesized == [1]  # with batches of the memory bound alone: 64 fakes, 192 s, before the stop


def test_a_batch_bound_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        Pace(0)
