"""Train the 40-attribute CelebA classifier on a dataset's real TRAIN split and save it.

    python -m evaluation.train_attribute_classifier data=celebahq data.root=/data/CelebAMask-HQ \
        out=weights/celeba_resnet18.pt
    python evaluate.py run_dir=outputs/RUN attribute_classifier=weights/celeba_resnet18.pt

The classifier learns from the photos of `data` (split `split`, train by default) with
their attribute labels, is measured after every epoch and at the end on `val_split` (accuracy
and balanced accuracy per attribute, torchmetrics), and is saved to `out`; `<out>.json` holds
the per-epoch history and the final per-attribute figures. Progress goes to the console and
to the configured logger (CSV by default, under `log_dir`). evaluate.py then applies it to the
originals and the anonymized images of a run (held-out judge: no loss ever used it).

Lightning does the training (`Trainer.fit` of evaluation.attribute_classifier.ClassifierTraining
with ClassifierData): the device and precision come from `trainer` (conf/trainer/*.yaml, e.g.
trainer=gpu), a ModelCheckpoint writes `checkpoint.dirpath`/last.ckpt after every epoch, and the
same command run again resumes from it (the epochs continue; a finished run only re-measures and
re-saves). resume=false starts over.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from evaluation.attribute_classifier import (
    AttributeClassifier,
    ClassifierConfig,
    ClassifierData,
    ClassifierTraining,
    save_classifier,
)
from falco.data.imageio import atomic_write_text, to_tensor
from falco.data.items import SkipImage
from falco.precision import resolve_precision

log = logging.getLogger(__name__)


class LabelledPhotos(Dataset):
    """(image (3,S,S) in [-1,1], labels (A,) 0/1) per item of a data source; an unusable file
    gives None (dropped by `collate` and counted in `skipped`)."""

    def __init__(self, source: Any, names: tuple[str, ...], size: int) -> None:
        self.source, self.names, self.size = source, names, size
        self.items = [it for it in source.items if all(n in it.labels for n in names)]
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        item = self.items[index]
        try:
            photo = to_tensor(self.source.read(item))
        except SkipImage as err:
            log.warning("skipped %s: %s", item.id, err)
            self.skipped.add(item.id)
            return None
        image = F.interpolate(photo, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=photo.shape[-1] > self.size)[0]
        return image, torch.tensor([int(item.labels[n]) for n in self.names])


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the usable samples of a batch (possibly none: an empty batch)."""
    kept = [b for b in batch if b is not None]
    if not kept:
        return torch.zeros(0), torch.zeros(0)
    return torch.stack([b[0] for b in kept]), torch.stack([b[1] for b in kept])


def labelled_split(cfg: DictConfig, split: str | None, names: tuple[str, ...]) -> LabelledPhotos:
    """The photos of `cfg.data` (its split `split`; None = all) that carry every attribute in `names`."""
    target = str(cfg.data.get("_target_", ""))
    if target.endswith(".synthetic"):
        raise ValueError("data=synthetic has no attribute labels; train the classifier on a labelled dataset "
                         "such as data=celebahq data.root=/path/to/CelebAMask-HQ")
    if OmegaConf.is_missing(cfg.data, "root") or ("root" in cfg.data and cfg.data.root is None):
        raise ValueError("data.root is required: the dataset folder, e.g. data.root=/data/CelebAMask-HQ")
    if split is not None and "split" not in cfg.data:
        raise ValueError(f"split={split!r} needs a data config with splits (data=celebahq); with this one set "
                         "split=null val_split=null")
    source = instantiate(cfg.data, generator=None, **({} if split is None else {"split": split}))
    photos = LabelledPhotos(source, names, cfg.input_size)
    if not photos.items:
        where = f"split {split!r} of " if split else ""
        raise ValueError(f"no image of {where}{source.name} carries the {len(names)} attribute labels the "
                         f"classifier learns (e.g. {names[0]!r}); train on a labelled dataset such as data=celebahq")
    return photos


def report_progress(record: dict) -> None:
    """The console line of a ClassifierTraining progress record (the logger gets its own entries)."""
    log.info("%s", " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """cfg.trainer (its `auto` precision resolved by the hardware: falco/precision.py) with the
    configured logger under `log_dir` and the ModelCheckpoint of cfg.checkpoint."""
    choice = resolve_precision(cfg.trainer.precision, cfg.trainer.get("accelerator", "auto"))
    log.info("precision: %s", choice.reason)
    loggers = [instantiate(cfg.logger, save_dir=cfg.log_dir)] if cfg.logger.get("_target_") else []
    bar = bool(cfg.trainer.get("enable_progress_bar", True)) and sys.stdout.isatty()  # terminals only
    return instantiate(cfg.trainer, max_epochs=cfg.epochs, precision=choice.precision, logger=loggers or False,
                       callbacks=[instantiate(cfg.checkpoint)], enable_progress_bar=bar,
                       default_root_dir=cfg.log_dir, log_every_n_steps=max(cfg.log_every, 1))


def last_checkpoint(cfg: DictConfig) -> str | None:
    """"last" (Lightning's pick of the newest last*.ckpt in the checkpoint folder) when resuming
    and there is one, else None (a fresh start)."""
    folder = Path(cfg.checkpoint.dirpath)
    return "last" if cfg.resume and any(folder.glob("last*.ckpt")) else None


def train_from_config(cfg: DictConfig) -> dict:
    """The whole command for a composed conf/train_classifier.yaml; returns what <out>.json holds."""
    pl.seed_everything(cfg.seed, verbose=False)  # the initialization (the training order has its own seed)
    model = AttributeClassifier(ClassifierConfig(arch=cfg.arch, input_size=cfg.input_size, width=cfg.width))
    names = model.config.names
    train = labelled_split(cfg, cfg.split, names)
    val = labelled_split(cfg, cfg.val_split, names) if cfg.val_split else None
    log.info("training %s on %d images of %s (%s)", cfg.arch, len(train), train.source.name,
             f"{len(val)} {cfg.val_split} images" if val else "no validation split")
    data = ClassifierData(train, val, batch_size=cfg.batch_size, num_workers=cfg.num_workers, seed=cfg.seed,
                          collate_fn=collate)
    training = ClassifierTraining(model, lr=cfg.lr, weight_decay=cfg.weight_decay, log_every=cfg.log_every,
                                  progress=report_progress)
    trainer = build_trainer(cfg)
    ckpt_path = last_checkpoint(cfg)
    if ckpt_path is not None:
        log.info("resuming from the last checkpoint in %s", cfg.checkpoint.dirpath)
    trainer.fit(training, datamodule=data, ckpt_path=ckpt_path)
    trainer.validate(training, dataloaders=data.measure_dataloader(), verbose=False)  # the final figures
    final = training.final
    if final is None:  # validate measured nothing in this process
        raise RuntimeError("no figures from Trainer.validate: no readable photo to measure on, or a spawning "
                           "strategy (ddp_spawn keeps them in its processes: use strategy=ddp)")
    counted = cfg.num_workers == 0  # DataLoader workers skip in their own copies of the dataset
    report = {"weights": str(Path(cfg.out)), "data": train.source.name, "train_images": len(train),
              "skipped": sorted(train.skipped | (val.skipped if val else set())) if counted else None,
              "measured_on": cfg.val_split or f"{cfg.split or 'all'} (no val_split: an optimistic figure)",
              "history": training.history, "final": final}
    if trainer.is_global_zero:
        path = save_classifier(model.cpu(), cfg.out)
        atomic_write_text(Path(f"{path}.json"), json.dumps(report, indent=1))
        log.info("saved %s: accuracy %.4f, balanced accuracy %.4f on %s", path, final["accuracy_mean"],
                 final["balanced_accuracy_mean"], report["measured_on"])
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_classifier")
def main(cfg: DictConfig) -> None:
    train_from_config(cfg)


if __name__ == "__main__":
    main()
