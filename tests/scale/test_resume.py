"""Resumable runs: kill -9 mid-run, a crash between writes, batch size. Each compares with
the uninterrupted reference run of the same images (see tests/scale/__init__.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from falco.data.imageio import write_png_clean
from falco.rundir import RunDir
from tests.conftest import ROOT, compose_train
from tests.scale import BASE, assert_each_image_once, assert_same_results, records, reference, scale_cache
from train import EXIT_SKIPPED, run


def _ok(run_dir) -> dict[str, dict]:
    return {k: r for k, r in records(run_dir).items() if r["status"] == "ok"}


def test_batch_size_does_not_change_results(tmp_path, tmp_path_factory):
    ref = reference(tmp_path_factory)  # batch_size 4
    out = tmp_path / "b1"
    run(compose_train([*BASE, f"cache_dir={scale_cache(tmp_path_factory)}", "batch_size=1"]), str(out))
    assert_same_results(out, ref)


def test_kill_9_mid_run_then_resume(tmp_path, tmp_path_factory):
    ref = reference(tmp_path_factory)  # also warms the stage cache, so the child reaches predict fast
    total = len(_ok(ref))
    out = tmp_path / "run"
    args = [*BASE, f"cache_dir={scale_cache(tmp_path_factory)}", f"run_dir={out}", "batch_size=1"]
    child = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while child.poll() is None and len(_ok(out)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    before = _ok(out)
    assert child.returncode == -signal.SIGKILL and 2 <= len(before) < total, "the kill did not land mid-run"

    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    recs = assert_each_image_once(out)
    skipped = any(r["status"] != "ok" for r in recs.values())
    assert proc.returncode == (EXIT_SKIPPED if skipped else 0), proc.stderr[-3000:]
    assert_same_results(out, ref)
    # Images done before the kill kept their pseudonym (only the unfinished ones were redrawn).
    assert all(recs[k]["pseudonym"] == r["pseudonym"] for k, r in before.items())


class _Crash(RuntimeError):
    pass


def test_crash_between_image_and_record_leaves_no_orphan(tmp_path, tmp_path_factory, monkeypatch):
    ref = reference(tmp_path_factory)
    cfg = compose_train([*BASE, f"cache_dir={scale_cache(tmp_path_factory)}", "batch_size=2"])
    out = tmp_path / "run"
    real_write = RunDir.write_record
    calls = []

    def crash_on_third_ok(self, record):
        calls.append(record["status"])
        if calls.count("ok") == 3:  # its claim, image and latent are on disk, the record is not
            raise _Crash("simulated crash")
        real_write(self, record)

    monkeypatch.setattr(RunDir, "write_record", crash_on_third_ok)
    with pytest.raises(_Crash):
        run(cfg, str(out))
    monkeypatch.undo()
    done = _ok(out)
    images = list((out / "release" / "images").glob("*.png"))
    assert len(done) == 2 and len(images) == 3  # the orphan the crash left behind
    pending = list((out / "private" / "pending").glob("*/*.json"))
    assert len(pending) == 1 and json.loads(pending[0].read_text())["id"] not in done

    result = run(cfg, str(out))
    assert result.done_before == len(records(ref)) - len(_ok(ref)) + 2 and result.processed == len(_ok(ref)) - 2
    assert_each_image_once(out)
    assert_same_results(out, ref)


def test_recover_undoes_only_unrecorded_claims_of_its_own_ids(tmp_path):
    run_dir = RunDir(tmp_path)
    image = np.zeros((4, 4, 3), np.uint8)
    for item_id, name in (("cut", "aaaa"), ("done", "bbbb"), ("other_shard", "cccc")):
        run_dir.claim(item_id, name)
        write_png_clean(run_dir.image_path(name), image)
    partial = run_dir.images / ".aaaa.png.0123.tmp"  # what a kill inside the atomic write leaves
    partial.write_bytes(b"\x89PNG")
    run_dir.write_record({"id": "done", "pseudonym": "bbbb", "status": "ok"})  # killed before unclaim
    assert run_dir.recover({"cut", "done"}) == 1
    assert not run_dir.image_path("aaaa").exists() and not partial.exists()  # cut off mid-write: it goes
    assert run_dir.image_path("bbbb").exists() and not run_dir.pending_path("done").exists()
    # another job's in-flight write is left alone
    assert run_dir.image_path("cccc").exists() and run_dir.pending_path("other_shard").exists()
