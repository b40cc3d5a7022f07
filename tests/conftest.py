"""Shared test helpers: compose the real Hydra configs, sized down for CPU CI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from falco.schema import register

ROOT = Path(__file__).resolve().parents[1]
register()

# Small but real: the embedded networks, few faces, few steps, a small fake pool.
# Held-out judges are off here (their loading costs seconds per run); tests that check them turn them on.
FAST = ["logger=none", "trainer.enable_progress_bar=false", "heldout.enabled=false",
        "stages.pool_size=256", "stages.frame_samples=32", "batch_size=4"]


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


@pytest.fixture
def fast_cfg(tmp_path):
    """compose(overrides) with the fast defaults and a per-test cache directory."""

    def make(*overrides: str, cache: Path | None = None):
        return compose_train([*FAST, f"cache_dir={cache or tmp_path / 'cache'}", *overrides])

    return make


@pytest.fixture(autouse=True)
def _threads():
    # Fixed thread count: reductions (and so float results) depend on it.
    torch.set_num_threads(2)
    # Flush-to-zero as every job process has it (falco/__init__.py): some test before may have
    # changed this thread's float mode, and results (and weight fingerprints after a load's
    # arithmetic) depend on it; the scale tests compare in-process runs with CLI runs.
    torch.set_flush_denormal(True)


@pytest.fixture(autouse=True, scope="session")
def _empty_weights_folder(tmp_path_factory):
    # Tests never pick up official checkpoints a user fetched with `./run weights`.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FALCO_WEIGHTS", str(tmp_path_factory.mktemp("weights")))
        yield
