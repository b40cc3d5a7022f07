"""Progress a person can follow on a terminal or in a log file: one reporter for every long loop.

`Progress(name, total)` reports `done/total` images, the rate (images/s) and the time left.
On a terminal it draws one line that redraws itself (tqdm, the bar Lightning's own progress
bar uses). Into a file or a pipe (a batch job's log) it prints plain lines instead, each
flushed at once: one when the loop starts, one at least every `interval_s` seconds while it
runs (a background heartbeat, so a batch that takes minutes still leaves a line), and a last
one when it ends or is stopped. Only the first process of a multi-process run reports.

`PredictProgress` is the Lightning callback that reports the images `trainer.predict` has
optimized, across its batches, and inside a batch the optimization step it is at (a batch of
many images can take minutes: its lines show the steps moving and an ETA that counts them).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only
from tqdm import tqdm

from .stopping import Stopped

INTERVAL_S = 30.0  # default seconds between two plain lines; train.py sets it from `progress_every_s`


def configure(interval_s: float) -> None:
    """Seconds between two plain lines for every reporter created from now on (0: a line per update)."""
    global INTERVAL_S
    if interval_s < 0:
        raise ValueError(f"progress interval must be >= 0 seconds, got {interval_s}")
    INTERVAL_S = float(interval_s)


def clock_text(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    s = max(0, round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """done/total of a named loop. Use as a context manager, or call `close()` at the end.

    total: None when unknown (then no percentage or ETA). scale: counts are shown divided by it
    (bytes as MB: unit="MB", scale=1e6). initial: already done before this loop (a resumed
    download): counted in done/total, not in the rate. stream: sys.stdout by default; tty:
    whether to redraw one line (default: whether the stream is a terminal). clock and
    heartbeat exist for tests: a fake clock, and no background thread."""

    def __init__(self, name: str, total: int | None = None, *, unit: str = "images", scale: float = 1.0,
                 initial: int = 0, interval_s: float | None = None, stream: IO[str] | None = None,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic,
                 heartbeat: bool = True, enabled: bool | None = None) -> None:
        self.name, self.total, self.unit, self.scale, self.initial = name, total, unit, scale, initial
        self.stream = stream if stream is not None else sys.stdout
        self.interval_s = INTERVAL_S if interval_s is None else interval_s
        self.clock = clock
        self.done = initial
        self.partial, self.note = 0.0, ""  # work of the unit in progress (e.g. steps of a batch), and what it is
        self.enabled = rank_zero_only.rank == 0 if enabled is None else enabled
        tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.start = self.last = clock()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._bar = None
        self._bar_note_at = -float("inf")
        if not self.enabled:
            return
        if tty:
            self._bar = tqdm(total=total, initial=initial, desc=name, unit=unit.rstrip("s") or unit,
                             unit_scale=1 / scale if scale != 1 else False, file=self.stream, dynamic_ncols=True)
            return
        self._print(f"{self._count()}, started")
        if heartbeat and self.interval_s > 0:
            threading.Thread(target=self._beat, name=f"progress {name}", daemon=True).start()

    def update(self, n: int = 1) -> None:
        """n more done; prints a line when the interval has passed since the last one."""
        with self._lock:
            self.done += n
            self.partial, self.note = 0.0, ""
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled:
            self._maybe_line()

    def set_partial(self, units: float, note: str = "") -> None:
        """Work done inside units not yet counted (e.g. a batch of images half way through its
        optimization steps): it counts toward the rate and the ETA, and `note` says where it is.
        No line is printed for it: the heartbeat's next line shows it (a batch that takes minutes
        still shows it moving); `update` clears it."""
        with self._lock:
            self.partial, self.note = max(0.0, float(units)), note
        if self._bar is not None and self.clock() - self._bar_note_at >= 0.5:
            self._bar_note_at = self.clock()
            self._bar.set_postfix_str(note)

    def close(self, error: BaseException | None = None) -> None:
        """The last line: done (with the time taken), or stopped / failed where it got to."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._bar is not None:
            self._bar.close()
        if not self.enabled:
            return
        elapsed = self.clock() - self.start
        how = ("done" if error is None else "stopped" if isinstance(error, Stopped)
               else f"failed ({type(error).__name__})")
        rate = f", {self._rate(elapsed)}" if self.done > self.initial and elapsed > 0 else ""
        if self._bar is None or error is not None:
            self._print(f"{self._count()} in {clock_text(elapsed)}{rate}, {how}")

    def line(self) -> str:
        """The current plain line: done/total, percentage, rate and ETA (when known)."""
        elapsed = self.clock() - self.start
        with self._lock:
            partial, note = self.partial, self.note
        parts = [self._count()] + ([note] if note else [])
        new = self.done + partial - self.initial
        if new > 0 and elapsed > 0:
            parts.append(self._rate(elapsed, partial))
            if self.total is not None:
                parts.append(f"ETA {clock_text(max(0.0, self.total - self.done - partial) * elapsed / new)}")
        return ", ".join(parts)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc)

    def _amount(self, n: int) -> str:
        return str(n) if self.scale == 1 else f"{n / self.scale:.1f}"

    def _count(self) -> str:
        if self.total is None:
            return f"{self._amount(self.done)} {self.unit}"
        pct = f" ({self.done / self.total:.0%})" if self.total else ""
        return f"{self._amount(self.done)}/{self._amount(self.total)} {self.unit}{pct}"

    def _rate(self, elapsed: float, partial: float = 0.0) -> str:
        rate = (self.done + partial - self.initial) / self.scale / elapsed
        return f"{rate:.0f} {self.unit}/s" if rate >= 100 else f"{rate:.3g} {self.unit}/s"

    def _maybe_line(self) -> None:
        if self._closed.is_set() or self.clock() - self.last < self.interval_s:
            return
        self._print(self.line())

    def _print(self, text: str) -> None:
        with self._lock:
            self.last = self.clock()
            print(f"[progress] {self.name}: {text}", file=self.stream, flush=True)

    def _beat(self) -> None:
        """The heartbeat: a line whenever `interval_s` passes without one."""
        while not self._closed.wait(max(0.05, self.interval_s - (self.clock() - self.last))):
            self._maybe_line()


class PredictProgress(pl.Callback):
    """Images `trainer.predict` has optimized, across its batches (on several processes: the
    first process's share). Quiet when Lightning's own bar already draws on a terminal."""

    def __init__(self, total: int, name: str = "optimize") -> None:
        self.total = total  # images the whole predict run optimizes (all processes together)
        self.name = name
        # read now, in the job's process: a ddp_spawn rank imports this module afresh (default interval)
        self.interval_s = INTERVAL_S
        self.bar: Progress | None = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or (trainer.progress_bar_callback is not None and sys.stdout.isatty()):
            return
        world = trainer.world_size
        name = self.name if world == 1 else f"{self.name} (process 0 of {world}, its share)"
        # predict's sampler gives process r the images r, r + world, ... (no padding)
        self.bar = Progress(name, len(range(trainer.global_rank, self.total, world)), enabled=True,
                            interval_s=self.interval_s)

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.bar is not None and outputs is not None:  # None: a placeholder batch, no image
            self.bar.update(len(batch["index"]))

    def on_optimization_step(self, images_done: float, note: str) -> None:
        """Called by the module after each optimization step: `images_done` of the current batch
        (fractional: images times the share of their steps done), `note` where the batch is."""
        if self.bar is not None:
            self.bar.set_partial(images_done, note)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close(None)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._close(exception)

    def _close(self, error: BaseException | None) -> None:
        if self.bar is not None:
            self.bar.close(error)
            self.bar = None
