"""A 40-attribute CelebA classifier: the fixed judge of attribute preservation.

FALCO's evaluation code was never released; a MobileNetV2 with 40 heads "taken from FALCO"
circulates in third-party code, of unknown training. We train our own, from
scratch (weights=None: nothing is downloaded), on the real TRAIN split, then apply it to the
originals and the anonymized test images (metrics/attributes.py compares the two).

Architectures: torchvision resnet18 or mobilenet_v2 with a 40-logit head, or `small_cnn` (four
stride-2 conv blocks) for quick runs and tests. Input: float RGB NCHW in [-1, 1], resized to
`input_size` inside `forward` (the only conversion). Output: (N, A) logits, one independent
binary decision per attribute (multi-label: sigmoid + BCE).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

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


def _loader(data: Data, batch_size: int, shuffle: bool, seed: int) -> Iterable:
    """A (images, labels) pair of tensors becomes a seeded DataLoader; loaders pass through."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return DataLoader(TensorDataset(*data), batch_size=batch_size, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(seed))
    return data


def evaluate_classifier(model: AttributeClassifier, data: Data, *, batch_size: int = 64) -> dict:
    """Accuracy and balanced accuracy per attribute vs labels (see metrics/attributes.py)."""
    probs, labels = [], []
    for x, y in _loader(data, batch_size, False, 0):
        if len(x) == 0:
            continue
        probs.append(model.predict_proba(x, batch_size))
        labels.append(y)
    return attribute_accuracy(torch.cat(probs), torch.cat(labels).long(), names=model.config.names)


def train_classifier(model: AttributeClassifier, data: Data, *, epochs: int = 10, lr: float = 1e-3,
                     weight_decay: float = 1e-4, batch_size: int = 64, val: Data | None = None,
                     device: str | torch.device = "cpu", seed: int = 0, log_every: int = 0,
                     progress: Callable[[dict], None] | None = None) -> list[dict]:
    """Multi-label BCE training with AdamW; returns one record per epoch.

    data / val: (images (N,3,H,W) in [-1,1], labels (N,A) in {0,1}) or a DataLoader yielding
    such batches (an empty batch is skipped). Each record: {"epoch", "loss" (mean train BCE),
    and with val: "val_accuracy_mean", "val_balanced_accuracy_mean"}. `progress` receives every
    epoch record, and every `log_every` batches (0 = never) {"epoch", "batch", "loss"}.
    """
    torch.manual_seed(seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = []
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for batch, (x, y) in enumerate(_loader(data, batch_size, True, seed + epoch)):
            if len(x) == 0:
                continue
            x, y = x.to(device), y.to(device).float()
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * len(x), count + len(x)
            if progress is not None and log_every and (batch + 1) % log_every == 0:
                progress({"epoch": epoch, "batch": batch + 1, "loss": float(loss.detach())})
        record = {"epoch": epoch, "loss": total / max(count, 1)}
        if val is not None:
            v = evaluate_classifier(model, val, batch_size=batch_size)
            record.update(val_accuracy_mean=v["accuracy_mean"],
                          val_balanced_accuracy_mean=v["balanced_accuracy_mean"])
        history.append(record)
        if progress is not None:
            progress(record)
    return history


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
