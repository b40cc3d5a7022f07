"""A Hydra multirun from the command line: one run directory per job, one shared stage cache."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.conftest import FAST, ROOT


def test_two_job_margin_sweep_shares_the_stage_cache(tmp_path):
    cmd = [sys.executable, "train.py", "-m", *FAST, "data.identities=3", "method.steps=4",
           f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
           "method.margin=0.7,0.9"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads((tmp_path / "sweep" / str(j) / "summary.json").read_text()) for j in (0, 1)]
    assert summaries[0]["stage_keys"] == summaries[1]["stage_keys"]
    assert not any(summaries[0]["stages_reused"].values())  # first job computed the stages
    assert all(summaries[1]["stages_reused"].values())  # the second job reused every one
    margins = [json.loads(line)["identity_distance"]["final"] for j in (0, 1)
               for line in (tmp_path / "sweep" / str(j) / "private" / "records.jsonl").read_text().splitlines()]
    assert len(margins) == 6
    # Each job's config.yaml records the margin its loss used.
    written = [yaml.safe_load((tmp_path / "sweep" / str(j) / "config.yaml").read_text())["method"]["margin"]
               for j in (0, 1)]
    assert written == [0.7, 0.9]
