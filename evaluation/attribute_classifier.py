"""A 40-attribute CelebA classifier: the fixed judge of attribute preservation.

FALCO's evaluation code was never released; a MobileNetV2 with 40 heads "taken from FALCO"
circulates in third-party code, of unknown training. We train our own, from
scratch (weights=None: nothing is downloaded), on the real TRAIN split, then apply it to the
originals and the anonymized test images (metrics/attributes.py compares the two).

Architectures: torchvision resnet18 or mobilenet_v2 with a 40-logit head, or `small_cnn` (four
stride-2 conv blocks) for quick runs and tests. Input: float RGB NCHW in [-1, 1], resized to
`input_size` inside `forward` (the only conversion). Output: (N, A) logits, one independent
binary decision per attribute (multi-label: sigmoid + BCE).

Training is Lightning's: `ClassifierTraining` (the LightningModule: BCE, AdamW, per-epoch
figures) and `ClassifierData` (the LightningDataModule) go to `Trainer.fit`, which brings the
device, precision, loggers, checkpoints and resuming; `train_classifier` is the short form for
in-memory data.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset
from torchmetrics import MeanMetric, Metric
from torchmetrics.utilities import dim_zero_cat

from evaluation.metrics.attributes import attribute_accuracy

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones",
    "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin",
    "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair",
    "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace",
    "Wearing_Necktie", "Young",
)  # the column order of list_attr_celeba.txt / CelebAMask-HQ-attribute-anno.txt


@dataclass
class ClassifierConfig:
    arch: str = "resnet18"  # resnet18 | mobilenet_v2 | small_cnn
    input_size: int = 128  # pixels; images are resized to this square inside forward
    names: tuple[str, ...] = field(default=CELEBA_ATTRIBUTES)  # one logit per name
    width: int = 32  # small_cnn only: channels of the first block (doubles per block)


def _small_cnn(width: int, outputs: int) -> nn.Module:
    layers, c_in = [], 3
    for i in range(4):  # each block halves the resolution and doubles the channels
        c_out = width * 2 ** i
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, outputs))


def _backbone(config: ClassifierConfig) -> nn.Module:
    a = len(config.names)
    if config.arch == "small_cnn":
        return _small_cnn(config.width, a)
    if config.arch == "resnet18":
        return torchvision.models.resnet18(weights=None, num_classes=a)
    if config.arch == "mobilenet_v2":
        return torchvision.models.mobilenet_v2(weights=None, num_classes=a)
    raise ValueError(f"unknown arch {config.arch!r}: use resnet18, mobilenet_v2 or small_cnn")


class AttributeClassifier(nn.Module):
    """images (N,3,H,W) in [-1,1] -> logits (N, len(config.names))."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config or ClassifierConfig()
        self.net = _backbone(self.config)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        s = self.config.input_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False,
                                   antialias=images.shape[-1] > s)
        return self.net(images)

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """(N,A) probabilities, eval mode, in batches on the model's device."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = [torch.sigmoid(self(b.to(device))).cpu() for b in images.split(batch_size)]
        self.train(was_training)
        return torch.cat(out)

    def predict(self, images: torch.Tensor, threshold: float = 0.5, batch_size: int = 64) -> torch.Tensor:
        """(N,A) bool attribute decisions."""
        return self.predict_proba(images, batch_size) >= threshold


Data = tuple[torch.Tensor, torch.Tensor] | Iterable


def _batches(data: Data, batch_size: int) -> Iterable:
    """A (images, labels) pair of tensors becomes a DataLoader in order; loaders pass through."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return DataLoader(TensorDataset(*data), batch_size=batch_size)
    return data


def evaluate_classifier(model: AttributeClassifier, data: Data, *, batch_size: int = 64) -> dict:
    """Accuracy and balanced accuracy per attribute vs labels (see metrics/attributes.py)."""
    probs, labels = [], []
    for x, y in _batches(data, batch_size):
        if len(x) == 0:
            continue
        probs.append(model.predict_proba(x, batch_size))
        labels.append(y)
    return attribute_accuracy(torch.cat(probs), torch.cat(labels).long(), names=model.config.names)


class AttributeAccuracy(Metric):
    """`attribute_accuracy` (per-attribute accuracy and balanced accuracy, metrics/attributes.py)
    over every batch given to `update`, gathered across processes by torchmetrics."""

    full_state_update = False

    def __init__(self, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = tuple(names)
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        self.probs.append(probs.detach().float())
        self.labels.append(labels.detach().long())

    def compute(self) -> dict:
        probs, labels = dim_zero_cat(self.probs).cpu(), dim_zero_cat(self.labels).cpu()
        return attribute_accuracy(probs, labels, names=self.names)


def _config_dict(config: ClassifierConfig) -> dict:
    return {**asdict(config), "names": list(config.names)}


class ClassifierTraining(pl.LightningModule):
    """Multi-label BCE training of `model` with AdamW, for `Trainer.fit`.

    Each epoch appends {"epoch", "loss" (mean train BCE per image), and when the fit validates:
    "val_accuracy_mean", "val_balanced_accuracy_mean"} to `history`, which checkpoints carry (a
    resumed fit continues it). Logged: classifier/loss and the val figures per epoch,
    classifier/batch_loss every step when log_every > 0 (at the Trainer's log_every_n_steps), and
    classifier/final_* from a `Trainer.validate` after the fit, whose full figures land in `final`.
    `progress` (rank 0) receives every epoch record and, every `log_every` batches (0 = never),
    {"epoch", "batch", "loss"}.
    """

    def __init__(self, model: AttributeClassifier, *, lr: float = 1e-3, weight_decay: float = 1e-4,
                 log_every: int = 0, progress: Callable[[dict], None] | None = None) -> None:
        super().__init__()
        self.model = model
        self.lr, self.weight_decay, self.log_every, self.progress = lr, weight_decay, log_every, progress
        self.train_loss = MeanMetric()
        self.measured = AttributeAccuracy(model.config.names)
        self.history: list[dict] = []
        self.final: dict | None = None  # the figures of the last Trainer.validate
        self._val: dict | None = None  # this epoch's validation figures, until its record is made

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        if len(x) == 0:  # no readable photo in this batch: Lightning skips the step
            return None
        loss = F.binary_cross_entropy_with_logits(self.model(x).float(), y.float())
        self.train_loss.update(loss.detach(), weight=len(x))
        if self.log_every:
            self.log("classifier/batch_loss", loss.detach(), on_step=True, on_epoch=False, batch_size=len(x))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (self.progress is not None and self.log_every and (batch_idx + 1) % self.log_every == 0
                and outputs is not None and self.trainer.is_global_zero):
            self.progress({"epoch": self.current_epoch, "batch": batch_idx + 1, "loss": float(outputs["loss"])})

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        if len(x):
            self.measured.update(torch.sigmoid(self.model(x).float()), y)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.measured.update_count == 0:
            self.measured.reset()
            return
        figures = self.measured.compute()
        self.measured.reset()
        fitting = self.trainer.state.fn == "fit"
        kind = "val" if fitting else "final"
        self.log_dict({f"classifier/{kind}_accuracy_mean": figures["accuracy_mean"],
                       f"classifier/{kind}_balanced_accuracy_mean": figures["balanced_accuracy_mean"]})
        if fitting:
            self._val = figures
        else:
            self.final = figures

    def on_train_epoch_end(self) -> None:  # after the epoch's validation, before its checkpoint
        loss = float(self.train_loss.compute()) if self.train_loss.update_count else 0.0
        self.train_loss.reset()
        self.log("classifier/loss", loss)
        record: dict[str, Any] = {"epoch": self.current_epoch, "loss": loss}
        if self._val is not None:
            record.update(val_accuracy_mean=self._val["accuracy_mean"],
                          val_balanced_accuracy_mean=self._val["balanced_accuracy_mean"])
            self._val = None
        self.history.append(record)
        if self.progress is not None and self.trainer.is_global_zero:
            self.progress(record)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["classifier"] = {"config": _config_dict(self.model.config), "history": self.history}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved, mine = checkpoint.get("classifier", {}).get("config"), _config_dict(self.model.config)
        if saved != mine:
            raise ValueError(f"the checkpoint is of another classifier ({saved}, this run: {mine}); "
                             "resume=false starts over, or give another out=")
        self.history = list(checkpoint["classifier"]["history"])


def _dataset(data: Dataset | tuple[torch.Tensor, torch.Tensor]) -> Dataset:
    if isinstance(data, tuple):
        return TensorDataset(*data)
    return data


class ClassifierData(pl.LightningDataModule):
    """Training and validation data for `ClassifierTraining` (a Dataset, or (images, labels)
    tensors). The training order is a permutation drawn from `seed` + the epoch (Lightning sets
    the epoch), so each epoch of a resumed fit sees the order it would have seen uninterrupted."""

    def __init__(self, train: Dataset | tuple[torch.Tensor, torch.Tensor],
                 val: Dataset | tuple[torch.Tensor, torch.Tensor] | None = None, *, batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0, collate_fn: Callable | None = None) -> None:
        super().__init__()
        self.train, self.val = _dataset(train), None if val is None else _dataset(val)
        self.batch_size, self.num_workers, self.seed, self.collate_fn = batch_size, num_workers, seed, collate_fn

    def _loader(self, data: Dataset, sampler: DistributedSampler | None = None) -> DataLoader:
        return DataLoader(data, batch_size=self.batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.num_workers, collate_fn=self.collate_fn)

    def train_dataloader(self) -> DataLoader:
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        return self._loader(self.train, DistributedSampler(self.train, num_replicas=world, rank=rank,
                                                           shuffle=True, seed=self.seed))

    def val_dataloader(self) -> DataLoader | list:
        return [] if self.val is None else self._loader(self.val)  # [] = no validation

    def measure_dataloader(self) -> DataLoader:
        """What the final figures are measured on: the validation data, else the training data."""
        return self._loader(self.val if self.val is not None else self.train)


def train_classifier(model: AttributeClassifier, data: Dataset | tuple[torch.Tensor, torch.Tensor], *,
                     epochs: int = 10, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 64,
                     val: Dataset | tuple[torch.Tensor, torch.Tensor] | None = None, seed: int = 0,
                     log_every: int = 0, progress: Callable[[dict], None] | None = None,
                     **trainer_options: Any) -> list[dict]:
    """`Trainer.fit` of `model` on `data`; returns one record per epoch (ClassifierTraining).

    data / val: (images (N,3,H,W) in [-1,1], labels (N,A) in {0,1}) or a Dataset of such pairs.
    trainer_options: pl.Trainer arguments (default: one CPU process, float32, no logger and no
    checkpoint written).
    """
    pl.seed_everything(seed, verbose=False)
    options = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
               "enable_progress_bar": False, "enable_model_summary": False, **trainer_options}
    training = ClassifierTraining(model, lr=lr, weight_decay=weight_decay, log_every=log_every, progress=progress)
    trainer = pl.Trainer(max_epochs=epochs, log_every_n_steps=max(log_every, 1), **options)
    trainer.fit(training, ClassifierData(data, val, batch_size=batch_size, seed=seed))
    return training.history


def save_classifier(model: AttributeClassifier, path: str | os.PathLike) -> Path:
    """Write {"config", "state_dict"} atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config": {**asdict(model.config), "names": list(model.config.names)},
               "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_classifier(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> AttributeClassifier:
    """Rebuild a classifier saved by `save_classifier` (plain tensors only: weights_only)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"attribute classifier not found: {path}; train one on the real train split "
                                "with `python -m evaluation.train_attribute_classifier data=celebahq "
                                f"data.root=/path/to/CelebAMask-HQ out={path}`")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    cfg = dict(payload["config"])
    cfg["names"] = tuple(cfg["names"])
    model = AttributeClassifier(ClassifierConfig(**cfg))
    model.load_state_dict(payload["state_dict"])
    return model.eval()
