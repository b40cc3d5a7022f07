"""The paper's stack end to end: genforce StyleGAN2-1024 + e4e + ArcFace IR-SE-50 + FaRL.

Full-size networks with the fixtures' deterministic weights, saved in the official containers
and loaded through the configs' `checkpoint=` paths, on one real photo (skimage's astronaut)
for 2 steps. Slow (about 3.5 minutes and 5 GB on 2 CPU cores): run with `-m slow`.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from skimage import data as skdata

from falco.rundir import RunDir
from tests.conftest import compose_train
from tests.fixture_weights import write_official_checkpoints
from train import run

pytestmark = pytest.mark.slow


def test_paper_stack_runs_and_keeps_the_inversion_layers(tmp_path_factory):
    weights = write_official_checkpoints(tmp_path_factory.mktemp("weights"))
    photos = tmp_path_factory.mktemp("photos")
    Image.fromarray(skdata.astronaut()).save(photos / "astronaut.jpg")
    out = tmp_path_factory.mktemp("run")
    cfg = compose_train([
        "logger=none", "trainer.enable_progress_bar=false", f"cache_dir={tmp_path_factory.mktemp('cache')}",
        "generator=stylegan2_ffhq1024", "identity=arcface_irse50", "attributes=farl", "inversion=e4e",
        "method=falco", *(f"{k}={v}" for k, v in weights.items()), "data=folder", f"data.root={photos}",
        "method.steps=2", "batch_size=1", "stages.pool_size=4", "stages.frame_samples=2", "stages.batch=1",
        "stages.pairing_detectable_only=false"])  # random-weight fakes hold no faces
    result = run(cfg, str(out))
    assert result.processed == 1
    record = json.loads((out / "private" / "records.jsonl").read_text().splitlines()[0])
    assert record["status"] == "ok" and record["identity_distance"]["judge"] == "arcface_irse50"
    assert Image.open(RunDir(out).image_path(record["pseudonym"])).size == (1024, 1024)
    latent = torch.load(RunDir(out).latent_path(record["id"]), weights_only=True)
    inversion = torch.load(next((tmp_path_factory.getbasetemp()).rglob("invert/*/latents.pt")), weights_only=True)[0]
    # W+ = [e4e layers 0-2 | optimized layers 3-7 | e4e layers 8-17] (falco/latent.py, as in FALCO)
    assert latent.shape == (18, 512)
    assert torch.equal(latent[:3], inversion[:3]) and torch.equal(latent[8:], inversion[8:])
    assert (latent[3:8] - inversion[3:8]).abs().max() > 0.1
