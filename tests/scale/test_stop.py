"""SIGTERM mid-optimization: a clean stop with its own exit code, then the same command resumes.

A real `python train.py` on the embedded default, its output read as a log file would get it
(not a terminal): progress lines of the stages and of the optimization, then the stop line.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import threading
import time

from tests.conftest import ROOT
from tests.scale import assert_each_image_once, records
from train import EXIT_STOPPED

IMAGES = 5
# Small stages (a fresh cache), one image per batch, a line per batch (progress_every_s=0).
ARGS = ["logger=none", "heldout.enabled=false", "summary=false", "stages.pool_size=64", "stages.frame_samples=16",
        f"data.identities={IMAGES}", "method.steps=6", "attributes.views=0", "batch_size=1", "progress_every_s=0"]
FIRST_DONE = re.compile(r"\[progress\] optimize: [1-9]\d*/\d+ images")


def _start(args: list[str]) -> tuple[subprocess.Popen, list[str]]:
    """The child and the list its output lines are appended to, as they come."""
    child = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(child.stdout.readline, "")), daemon=True).start()
    return child, lines


def _start_and_stop(args: list[str], ready: re.Pattern) -> tuple[int, float, str, list[str]]:
    """Start the job, send SIGTERM once a line matches `ready`: (exit code, seconds it took to
    stop, the log, its lines)."""
    child, lines = _start(args)
    deadline = time.monotonic() + 300
    while child.poll() is None and not any(ready.match(x) for x in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, "".join(lines[-40:])
    child.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code = child.wait(timeout=60)
    return code, time.monotonic() - sent, "".join(lines), lines


def _released(run_dir) -> dict[str, str]:
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in (run_dir / "release" / "images").glob("*")}


def test_sigterm_stops_cleanly_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "run"
    args = [*ARGS, f"cache_dir={tmp_path / 'cache'}", f"run_dir={out}"]
    code, took, log, lines = _start_and_stop(args, FIRST_DONE)
    assert code == EXIT_STOPPED, log[-3000:]
    assert took < 10, f"took {took:.1f} s to stop"

    # The log: plain progress lines (no carriage returns) of the stages and the optimization.
    assert "\r" not in log
    for stage in ("frame: detect on generator samples", "prepare: detect + align", "fake pool: sample + embed",
                  "pairing features"):
        assert f"[progress] {stage}: 0/" in log
        assert re.search(rf"\[progress\] {re.escape(stage)}: .* images/s, done", log)
    assert f"[progress] optimize: 0/{IMAGES} images (0%), started" in log
    assert re.search(rf"\[progress\] optimize: 1/{IMAGES} images \(20%\), .* images/s, ETA \d:\d\d:\d\d", log)
    assert re.search(r"\[progress\] optimize: \d+/\d+ images .*, stopped", log)
    stop = next(x for x in lines if x.startswith("[stop] stopped by SIGTERM"))
    assert "Resume with python train.py " in stop and f"run_dir={out}" in stop and "Exit code 4" in stop
    # The run directory keeps the same lines (falco/runlog.py), the stop line last.
    kept = (out / "train.log").read_text().splitlines()
    shown = [x.rstrip("\n") for x in lines if x.startswith("[progress] ")]
    assert [x for x in kept if x.startswith("[progress] ")] == shown
    assert kept[-1] == stop.rstrip("\n")

    # Nothing partial: every release image has its record and latent, no claim or temporary file is left.
    before = records(out)
    assert 1 <= len(before) < IMAGES, "the stop did not land mid-run"
    assert sorted(_released(out)) == sorted(r["pseudonym"] for r in before.values())
    assert len(list((out / "private" / "latents").rglob("*.pt"))) == len(before)
    assert not list((out / "private").glob("pending/*/*"))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    images_before = _released(out)

    # The same command again: it finishes, redoing only what was not done.
    child, lines = _start(args)
    assert child.wait(timeout=600) == 0, "".join(lines)[-3000:]
    after = assert_each_image_once(out)
    assert len(after) == IMAGES and all(r["status"] == "ok" for r in after.values())
    assert {k: after[k] for k in before} == before  # the earlier records are untouched
    assert {k: v for k, v in _released(out).items() if k in images_before} == images_before
    assert f"[progress] optimize: 0/{IMAGES - len(before)} images (0%), started" in "".join(lines)


def test_sigterm_stops_ddp_spawn_ranks_at_a_step_boundary_and_the_same_command_resumes(tmp_path):
    """trainer=ddp_sim (ddp_spawn, 2 ranks): the signal reaches the parent only, which forwards it
    to its ranks; each stops at its next step, the job exits with the stop code within 10 s, and
    the same command finishes the rest."""
    out = tmp_path / "run"
    # 8 faces of 40 steps: each rank still has work when its first image is done
    args = [*ARGS, "data.identities=8", "method.steps=40", "trainer=ddp_sim", f"cache_dir={tmp_path / 'cache'}",
            f"run_dir={out}"]
    # a line between the first and the last (progress_every_s=0 must reach the spawned ranks too)
    first_done = re.compile(r"\[progress\] optimize \(process 0 of 2, its share\): [1-9]\d*/\d+ images .*ETA")
    code, took, log, _ = _start_and_stop(args, first_done)
    assert code == EXIT_STOPPED, log[-3000:]
    assert took < 10, f"took {took:.1f} s to stop"
    assert "Traceback" not in log, log[-3000:]
    before = records(out)
    assert 1 <= len(before) < 8, "the stop did not land mid-run"
    assert sorted(_released(out)) == sorted(r["pseudonym"] for r in before.values())
    assert not list((out / "private").glob("pending/*/*"))

    child, lines = _start(args)
    assert child.wait(timeout=600) == 0, "".join(lines)[-3000:]
    after = assert_each_image_once(out)
    assert len(after) == 8 and {k: after[k] for k in before} == before
