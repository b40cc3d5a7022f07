"""Importing the library turns on MKL's alignment-independent results (falco/__init__.py): without
it, tests/perf/test_batch_invariant.py stops matching the official loop after unrelated tests have
shifted the heap. A user's own MKL_CBWR is kept."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

PRINT = "import torch, falco, os; torch.ones(8, 8) @ torch.ones(8, 8); print(os.environ['MKL_CBWR'])"


def mkl_cbwr(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    out = subprocess.run([sys.executable, "-c", PRINT], cwd=ROOT, env={**base, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_turns_on_reproducible_results():
    assert mkl_cbwr() == "AUTO"


def test_a_users_setting_wins():
    assert mkl_cbwr(MKL_CBWR="COMPATIBLE") == "COMPATIBLE"
