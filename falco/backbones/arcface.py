"""ArcFace IR-SE-50 (TreB1eN `model_ir_se50.pth`): FALCO's identity network.

Official model: `Backbone(input_size=112, num_layers=50, mode='ir_se', drop_ratio=0.6)` from
TreB1eN/InsightFace_Pytorch, as vendored in FALCO `lib/arcface.py` and pSp/e4e. Input (N,3,112,112)
in [-1,1] (TreB1eN normalizes with mean = std = 0.5); output (N,512) L2-normalized.

FALCO feeds it FFHQ-aligned faces: resize to 256, crop rows 35:223 and columns 32:220 (the
188x188 face region of an FFHQ crop), adaptive average pool to 112 (`lib/id_loss.py`).

Native metric: cosine similarity of the unit embeddings (FALCO's identity loss is |cos - m|).
`distance` = 1 - cosine. Same-person rule: TreB1eN's inference config matches a face when the
squared Euclidean distance of unit embeddings is <= 1.5 (`config.py: conf.threshold = 1.5`,
used in `Learner.infer`), i.e. cosine >= 0.25, i.e. 1 - cosine <= 0.75. That threshold is the
repository's default for this very checkpoint, not a calibrated FAR; recalibrate for a target FAR.
"""

from __future__ import annotations

import os
import pickle

import torch
import torch.nn.functional as F
from torch import nn

from .base import IdentityEncoder, resize, warp
from .checkpoints import user_checkpoint
from .irse50 import make_body, make_input_layer, with_batchnorm_counters

FILENAME = "model_ir_se50.pth"
SOURCE = ("TreB1eN/InsightFace_Pytorch README (IR-SE50 'model_ir_se50.pth'); FALCO's "
          "download_models.py ships the same file in its ARCFACE tar (models/pretrained/arcface/)")
# Same-person rule in this module's distance (1 - cosine): TreB1eN's squared-L2 1.5 / 2.
SAME_PERSON_BELOW = 0.75


def falco_face_crop(image: torch.Tensor) -> torch.Tensor:
    """FALCO's fixed ArcFace crop of an FFHQ-aligned image: (N,3,H,W) -> (N,3,112,112).

    Resize(256) + CenterCrop(256) (as torchvision would, antialiased), keep rows 35:223 and
    columns 32:220, then adaptive average pooling 188 -> 112. Differentiable.
    """
    x = _resize_center_crop(image, 256)
    x = x[:, :, 35:223, 32:220]
    return F.adaptive_avg_pool2d(x, (112, 112))


def _resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision Resize(size) + CenterCrop(size): shorter side to `size`, then central square."""
    h, w = image.shape[-2:]
    if (h, w) != (size, size):
        short, long = min(h, w), max(h, w)
        new_long = int(size * long / short)
        new_hw = (size, new_long) if h <= w else (new_long, size)
        image = resize(image, new_hw)
        top = int(round((new_hw[0] - size) / 2.0))
        left = int(round((new_hw[1] - size) / 2.0))
        image = image[:, :, top:top + size, left:left + size]
    return image


class ArcFaceIRSE50(IdentityEncoder):
    """TreB1eN IR-SE-50 ArcFace; parameters named exactly like the official state dict."""

    name = "arcface_irse50"
    input_size = 112
    same_person_below = SAME_PERSON_BELOW

    def __init__(self):
        super().__init__()
        self.input_layer = make_input_layer()  # (N,3,112,112) -> (N,64,112,112)
        self.body = make_body()  # -> (N,512,7,7)
        # Official indices: 0 BN2d, 1 Dropout (off in eval), 2 Flatten, 3 Linear, 4 BN1d.
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(),
            nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> ArcFaceIRSE50:
        # Frozen judge: BatchNorm must keep its running statistics (batch independence).
        return super().train(False)

    def forward(self, x112: torch.Tensor) -> torch.Tensor:
        """(N,3,112,112) in [-1,1] -> (N,512) unit embeddings (float32)."""
        # channels_last: oneDNN's faster layout for these convolutions on CPU (~1.3x at batch 1)
        x112 = x112.contiguous(memory_format=torch.channels_last)
        x = self.output_layer(self.body(self.input_layer(x112)))
        x = x.float()  # normalize in fp32 also under bf16 autocast
        return x / x.norm(dim=1, keepdim=True)

    def embed(self, image: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """(N,3,H,W) in [-1,1] -> (N,512). theta None: FALCO's fixed crop of an FFHQ-aligned
        image; else warp the 112x112 chip directly out of `image` with theta (N,2,3)."""
        x = falco_face_crop(image) if theta is None else warp(image, theta, self.input_size)
        return self(x)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """1 - cosine similarity, (N,): 0 same direction, 1 orthogonal, 2 opposite."""
        return 1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1)

    def margin_distance(self, margin: float) -> float:
        """FALCO's margin m is a cosine similarity: |cos - m| = |d - (1 - m)| with d = 1 - cos."""
        return 1.0 - float(margin)


def load_arcface_irse50(path: str | os.PathLike | None) -> ArcFaceIRSE50:
    """Load TreB1eN's bare state dict `model_ir_se50.pth` (strict; `num_batches_tracked` optional)."""
    p = user_checkpoint(path, what="ArcFace IR-SE-50 (TreB1eN)", filename=FILENAME, source=SOURCE,
                        config_key="identity.checkpoint")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{p}: refused to unpickle (not a plain tensor file; weights_only "
                         f"loading failed, nothing was executed): {err}") from err
    if isinstance(state, dict) and "state_dict" in state:  # tolerate a wrapped copy
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel copies
    model = ArcFaceIRSE50()
    model.load_state_dict(with_batchnorm_counters(model, state), strict=True)
    return model.eval()
