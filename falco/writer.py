"""Writes each anonymized image as soon as its batch is done: claim, image, latent, record.

The record is written last, so "record exists" means "image done". The claim (id ->
pseudonym, in private/) comes first: a kill between the writes leaves a claim without a
record, and the re-run's `RunDir.recover` deletes that image and latent before redoing the id
under a new pseudonym. So no release image is ever left that no record names.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from .data.imageio import to_uint8, write_jpeg_clean, write_png_clean
from .quirks import JPEG_QUALITY, adaptive_uint8
from .rundir import RunDir, new_pseudonym


def _loss_summary(history: torch.Tensor) -> dict:
    """history (steps, 3) of one image -> first/last total, identity and attribute terms."""
    names = ("total", "identity", "attribute")
    return {when: {n: round(float(v), 6) for n, v in zip(names, history[i], strict=True)}
            for when, i in (("first", 0), ("last", -1))}


class RecordWriter(BasePredictionWriter):
    def __init__(self, run: RunDir, entries: list[dict], context: dict[str, Any], *,
                 official_output: bool = False) -> None:
        super().__init__(write_interval="batch")
        self.run = run
        self.official_output = official_output  # faithful_quirks: min-max scaled JPEG q75 (falco/quirks.py)
        self.entries = entries  # prepared ok entries, indexed by the batch's "index"
        self.context = context  # judge name, stage keys, method name: copied into every record

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if prediction is None:  # a placeholder batch of a process with nothing to do (falco/module.py RankShare)
            return
        images = adaptive_uint8(prediction["images"]) if self.official_output else to_uint8(prediction["images"].cpu())
        for j, k in enumerate(prediction["index"].tolist()):
            entry = self.entries[k]
            pseudonym = new_pseudonym()
            self.run.claim(entry["id"], pseudonym)
            if self.official_output:
                write_jpeg_clean(self.run.image_path(pseudonym, "jpg"), images[j], quality=JPEG_QUALITY)
            else:
                write_png_clean(self.run.image_path(pseudonym, "png"), images[j])
            self.run.write_latent(entry["id"], prediction["latents"][j])
            self.run.write_record({
                "id": entry["id"], "pseudonym": pseudonym, "status": "ok", "reason": None,
                "rank": trainer.global_rank,  # the process that did it (DDP); not part of the result
                "identity": entry.get("identity"), "labels": entry.get("labels", {}),
                "alignment": entry.get("alignment", "landmarks"),  # landmarks | box (stages.alignment_failure)
                "method": self.context["method"], "stage_keys": self.context["stage_keys"],
                "pair": {"fake": int(self.context["pairs"][k]),
                         "similarity": round(float(self.context["pair_sims"][k]), 6)},
                "losses": _loss_summary(prediction["history"][:, j].cpu()),
                "identity_distance": {"judge": self.context["judge"], "white_box": True,
                                      "initial_fake": round(float(prediction["distance_first"][j]), 6),
                                      "final": round(float(prediction["distance_final"][j]), 6)},
                "seconds": round(float(prediction["seconds_per_image"]), 4),
            })
            self.run.unclaim(entry["id"])
