"""Clean stopping: SIGTERM or SIGINT (Ctrl+C) ends a job at the next step boundary.

`on_signals()` installs the handlers for the job's duration. A signal only sets a flag;
`check()`, called between optimization steps and between the batches of every stage, raises
`Stopped` once it is set. A stage's batches are bounded by time as well as memory (`Pace`: about
STEP_BUDGET_S each), so even a 1024 px generator on a CPU stops within seconds. The batch being
optimized is abandoned before anything of it is written (the writer runs only after a whole
batch), stage artefacts being computed go with
their temporary directory, and a re-run of the same command on the same run directory skips
the done images and redoes the rest. A second signal raises `Stopped` at once, wherever the
job is: what that cuts off, `RunDir.recover` undoes on the re-run.

Under ddp_spawn the signal reaches the parent, which forwards it to the ranks it spawned; each
rank (`listen_in_worker`, called when its predict starts) stops at its own next step boundary,
and the parent turns the ranks' failure into `Stopped` (`raise_if_requested`).

Lightning's own SIGTERM handler, installed during `trainer.predict`, calls the handler that
was there before it (this one) after its own, and puts it back afterwards; Lightning turns a
KeyboardInterrupt into exit code 1, which is why SIGINT does not raise one here.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import torch

SIGNALS = (signal.SIGTERM, signal.SIGINT)
STEP_BUDGET_S = 4.0  # a stage's batch is sized to take about this long at most: a stop waits for one batch
_clock = time.perf_counter  # what Pace times batches with (tests replace it)
_received: str | None = None  # name of the signal that asked the job to stop, None while none did


class Stopped(Exception):
    """A stop was requested by a signal; raised at a step boundary."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"stopped by {signal_name}")
        self.signal_name = signal_name


def requested() -> str | None:
    """The signal that asked the job to stop, or None."""
    return _received


def check() -> None:
    """Raise `Stopped` if a stop was requested (cheap: call it at every step boundary)."""
    if _received is not None:
        raise Stopped(_received)


class Pace:
    """Batches of a stage loop sized by time as well as memory, so that a stop waits for one
    batch of about `budget_s` rather than for `batch` slow images (a 1024 px generator on a CPU
    takes seconds per image). The first batch is one item; after each batch the next holds as
    many items as the measured time per item allows within the budget, at least one and at most
    `batch` (memory). The same object carries its measured rate across a stage's loops. The
    stop check (`check`) runs before every batch."""

    def __init__(self, batch: int, budget_s: float = STEP_BUDGET_S) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.batch, self.budget_s, self.size = batch, budget_s, 1

    def slices(self, total: int, start: int = 0) -> Iterator[slice]:
        """Consecutive slices covering range(start, total), each one batch."""
        s = start
        while s < total:
            check()
            k = min(self.size, total - s)
            began = _clock()
            yield slice(s, s + k)
            per_item = (_clock() - began) / k
            self.size = max(1, min(self.batch, int(self.budget_s / max(per_item, 1e-9))))
            s += k

    def split(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """`x` along its first dimension, one batch at a time."""
        for part in self.slices(len(x)):
            yield x[part]


def request(signal_name: str) -> None:
    """Ask the job to stop at its next step boundary (what the signal handler does)."""
    global _received
    _received = signal_name


def _handler(signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if _received is not None:  # the second signal: stop now
        raise Stopped(name)
    request(name)
    print(f"[stop] {name} received: stopping at the next step boundary (send it again to stop at once)",
          flush=True)
    for child in multiprocessing.active_children():  # ddp_spawn ranks: they stop at their own step boundary
        with suppress(ProcessLookupError):
            os.kill(child.pid, signum)


def _worker_handler(signum: int, frame) -> None:
    request(signal.Signals(signum).name)  # a rank stops at its next step boundary; the parent reports


def listen_in_worker() -> None:
    """In a process the job spawned (a ddp_spawn rank), SIGTERM and SIGINT from now on only ask
    for a stop at the next step boundary (the parent forwards its signal; the terminal sends
    Ctrl+C to every process). Elsewhere it does nothing. Lightning's own SIGTERM handler of the
    rank is replaced: it would broadcast from inside the handler."""
    if multiprocessing.parent_process() is None or threading.current_thread() is not threading.main_thread():
        return
    for s in SIGNALS:
        signal.signal(s, _worker_handler)


def raise_if_requested(error: BaseException) -> None:
    """After `error` came out of the work (e.g. a stopped ddp_spawn rank, which reaches the parent
    as torch's ProcessRaisedException): `Stopped` instead, if a stop was requested."""
    if _received is not None and not isinstance(error, Stopped):
        raise Stopped(_received) from error


@contextmanager
def on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT stop the job while inside; the previous handlers come back after.
    Outside the main thread (where Python cannot install handlers) it changes nothing."""
    global _received
    _received = None
    if threading.current_thread() is not threading.main_thread():
        try:
            yield
        finally:
            _received = None
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _received = None  # outside a job nothing is being stopped (the Stopped exception says why)
