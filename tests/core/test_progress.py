"""Progress lines (falco/progress.py) and clean stopping on signals (falco/stopping.py), in process."""

from __future__ import annotations

import io
import os
import re
import signal
import time

import pytest
import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from falco import stopping
from falco.progress import PredictProgress, Progress, clock_text
from falco.stopping import Stopped


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_plain_lines_follow_the_interval_with_rate_and_eta():
    clock, out = FakeClock(), io.StringIO()  # a StringIO is not a terminal: plain lines
    bar = Progress("optimize", 100, stream=out, clock=clock, heartbeat=False, interval_s=30, enabled=True)
    assert _lines(out) == ["[progress] optimize: 0/100 images (0%), started"]
    clock.t += 10
    bar.update(10)
    clock.t += 19
    bar.update(10)
    assert len(_lines(out)) == 1  # 29 s since the last line: too early
    clock.t += 1
    bar.update(0)
    assert _lines(out)[-1] == "[progress] optimize: 20/100 images (20%), 0.667 images/s, ETA 0:02:00"
    clock.t += 15
    bar.update(20)
    assert len(_lines(out)) == 2  # 15 s after the last line
    clock.t += 15
    bar.update(20)
    assert _lines(out)[-1] == "[progress] optimize: 60/100 images (60%), 1 images/s, ETA 0:00:40"
    clock.t += 5
    bar.close()
    assert _lines(out)[-1] == "[progress] optimize: 60/100 images (60%) in 0:01:05, 0.923 images/s, done"
    bar.close()
    assert len(_lines(out)) == 4  # a second close prints nothing


def test_interval_zero_prints_every_update_and_unknown_total_has_no_eta():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress("held-out judges", None, stream=out, clock=clock, heartbeat=False, interval_s=0, enabled=True)
    for _ in range(3):
        clock.t += 2
        bar.update(64)
    assert _lines(out)[1:] == [f"[progress] held-out judges: {n} images, 32 images/s" for n in (64, 128, 192)]
    clock.t += 0.1
    bar.update(808)
    assert _lines(out)[-1] == "[progress] held-out judges: 1000 images, 164 images/s"  # not 1.64e+02


def test_stopped_and_failed_loops_say_so():
    out = io.StringIO()
    with pytest.raises(Stopped), Progress("invert", 8, stream=out, heartbeat=False, enabled=True) as bar:
        bar.update(4)
        raise Stopped("SIGTERM")
    assert re.fullmatch(r"\[progress\] invert: 4/8 images \(50%\) in 0:00:0\d, .* images/s, stopped", _lines(out)[-1])
    with pytest.raises(ValueError), Progress("invert", 8, stream=out, heartbeat=False, enabled=True):
        raise ValueError
    assert _lines(out)[-1].endswith("failed (ValueError)")


def test_heartbeat_prints_while_a_long_step_gives_no_update():
    out = io.StringIO()
    bar = Progress("optimize", 10, stream=out, interval_s=0.05, enabled=True)
    time.sleep(0.6)
    bar.close()
    beats = [line for line in _lines(out) if line == "[progress] optimize: 0/10 images (0%)"]
    assert len(beats) >= 2  # about 12 in 0.6 s; at least 2 even on a busy machine
    n = len(_lines(out))
    time.sleep(0.2)
    assert len(_lines(out)) == n  # closed: the heartbeat has stopped


def test_terminal_redraws_and_other_ranks_stay_quiet():
    tty = io.StringIO()
    with Progress("prepare", 5, stream=tty, tty=True, enabled=True) as bar:
        bar.update(5)
    assert "\r" in tty.getvalue() and "[progress]" not in tty.getvalue() and "5/5" in tty.getvalue()
    quiet = io.StringIO()
    with Progress("prepare", 5, stream=quiet, enabled=False) as bar:
        bar.update(5)
    assert quiet.getvalue() == ""


def test_clock_text():
    assert clock_text(0) == "0:00:00" and clock_text(3725.4) == "1:02:05"


def _wait_for_stop_request() -> None:
    for _ in range(500):  # the handler runs at the interpreter's next check, within milliseconds
        if stopping.requested():
            return
        time.sleep(0.01)
    raise AssertionError("the signal handler never ran")


def test_signals_only_set_a_flag_until_a_second_one():
    before = {s: signal.getsignal(s) for s in stopping.SIGNALS}
    with stopping.on_signals():
        stopping.check()  # no signal yet: nothing happens
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for_stop_request()
        assert stopping.requested() == "SIGINT"
        with pytest.raises(Stopped, match="SIGINT"):
            stopping.check()
        with pytest.raises(Stopped, match="SIGTERM"):  # the second signal stops at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert {s: signal.getsignal(s) for s in stopping.SIGNALS} == before
    assert stopping.requested() is None  # after the job, code outside it (tests, stages) runs on
    stopping.check()
    with stopping.on_signals():
        stopping.check()  # a new job starts with no stop requested


class _Steps(pl.LightningModule):
    """A predict loop whose second batch receives SIGTERM between two of its steps."""

    def predict_step(self, batch, batch_idx):
        for step in range(3):
            if batch_idx == 1 and step == 1:
                os.kill(os.getpid(), signal.SIGTERM)
                _wait_for_stop_request()
            stopping.check()
        return {"index": batch["index"]}


class _Written(BasePredictionWriter):
    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.batches: list[list[int]] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        self.batches.append(prediction["index"].tolist())


def test_sigterm_under_lightning_stops_predict_between_steps(capsys):
    """Lightning installs its own SIGTERM handler during predict: ours still runs, the Stopped
    exception leaves trainer.predict as itself, and the interrupted batch is never written."""
    written = _Written()
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, callbacks=[written, PredictProgress(8)])
    with stopping.on_signals(), pytest.raises(Stopped, match="SIGTERM"):
        trainer.predict(_Steps(), DataLoader([{"index": i} for i in range(8)], batch_size=2),
                        return_predictions=False)
    assert written.batches == [[0, 1]]
    out = capsys.readouterr().out
    assert "[progress] optimize: 0/8 images (0%), started" in out
    assert re.search(r"\[progress\] optimize: 2/8 images \(25%\) in \d:\d\d:\d\d, .* images/s, stopped", out)


def test_scaled_and_resumed_counts():
    """A resumed download: bytes shown as MB, the resumed part counted in done but not in the rate."""
    clock, out = FakeClock(), io.StringIO()
    bar = Progress("a.pt", 10_000_000, unit="MB", scale=1e6, initial=5_000_000, stream=out, clock=clock,
                   heartbeat=False, interval_s=0, enabled=True)
    clock.t += 2
    bar.update(1_000_000)
    assert _lines(out)[-1] == "[progress] a.pt: 6.0/10.0 MB (60%), 0.5 MB/s, ETA 0:00:08"


def test_work_inside_a_batch_counts_toward_rate_and_eta_until_the_batch_ends():
    """A batch half way through its steps: the line says where it is, and its share of the work
    makes the rate and the ETA move before any image is done; `update` then counts whole images."""
    clock, out = FakeClock(), io.StringIO()
    bar = Progress("optimize", 16, stream=out, clock=clock, heartbeat=False, interval_s=30, enabled=True)
    clock.t += 40
    bar.set_partial(4.0, "batch: step 100/200 of images 1-8/16")
    assert len(_lines(out)) == 1  # no line of its own: the heartbeat shows it
    assert bar.line() == "0/16 images (0%), batch: step 100/200 of images 1-8/16, 0.1 images/s, ETA 0:02:00"
    clock.t += 40
    bar.update(8)
    assert bar.line() == "8/16 images (50%), 0.1 images/s, ETA 0:01:20"  # the partial work is cleared
