"""Release images are the float32 renders of the saved latents, also in a bf16-mixed run."""

from __future__ import annotations

import json

import numpy as np
import torch
from hydra.utils import instantiate

from falco.data.imageio import read_rgb, to_uint8
from falco.rundir import RunDir
from train import run


def test_bf16_run_releases_the_fp32_render_of_each_saved_latent(fast_cfg, tmp_path):
    out = tmp_path / "run"
    # Batch-invariant: predict_step renders each image alone, as the renders below do.
    cfg = fast_cfg("data.identities=4", "method.steps=3", "stages.pool_size=64", "trainer.precision=bf16-mixed",
                   "method.batch_invariant=true")
    result = run(cfg, str(out))
    assert str(result.run.root) == str(out) and result.processed == 4
    rd = RunDir(out)
    records = [json.loads(line) for line in (out / "private" / "records.jsonl").read_text().splitlines()]
    latents = torch.stack([torch.load(rd.latent_path(r["id"]), weights_only=True) for r in records])
    assert latents.dtype == torch.float32

    generator = instantiate(cfg.generator.net)
    with torch.no_grad():
        fp32 = np.stack([to_uint8(generator.synthesize(z[None]).float())[0] for z in latents])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = to_uint8(generator.synthesize(latents).float())
    released = np.stack([read_rgb(rd.image_path(r["pseudonym"])) for r in records])
    assert np.array_equal(released, fp32)
    # What the PNGs were before: rendered under the Trainer's autocast, not what the latent gives.
    assert np.abs(bf16.astype(int) - fp32.astype(int)).max() > 1

    # The records' final distances are measured as the summary measures the released images
    # (float32; the summary reads the 8-bit PNGs, hence the small tolerance).
    finals = [r["identity_distance"]["final"] for r in records]
    assert abs(np.mean(finals) - result.summary["identity"]["distance_mean"]) < 5e-3
