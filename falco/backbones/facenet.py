"""FaceNet judges: facenet-pytorch InceptionResnetV1 with its VGGFace2 / CASIA-WebFace weights.

Held-out recognizers for re-identification (the CIAGAN/FALCO lineage reports FaceNet with both
weight sets). The network is facenet-pytorch's own `InceptionResnetV1(pretrained=None,
classify=False)`; only the weights are read here, from a local file, never downloaded:
`20180402-114759-vggface2.pt` / `20180408-102900-casia-webface.pt` (facenet-pytorch GitHub
release v2.2.9; converted from davidsandberg/facenet). With no path given, the file is looked up
in the weights folder (`./run weights` downloads it there), then where `pretrained=...` would have
cached it: `$TORCH_HOME/checkpoints/` (TORCH_HOME defaults to `$XDG_CACHE_HOME/torch`, i.e.
`~/.cache/torch`).

Input contract: 160x160 face crops (facenet-pytorch's MTCNN crops the detection box, without
rotation), standardized as (pixel - 127.5) / 128; from our [-1,1] images that is x * 127.5/128.
Output: (N,512) L2-normalized embeddings.

Metric: Euclidean distance of the unit embeddings (0..2). Same-person rule: there is no
published threshold for these weights (facenet-pytorch's LFW notebook picks one per fold by
10-fold cross-validation over squared distances). We use the FaceNet paper's illustration
(Schroff et al. 2015, arXiv 1503.03832, Fig. 1: squared L2 of 1.1 separates same/different
pairs) as a convention: distance < sqrt(1.1) ~= 1.049. Calibrate on real pairs for a target FAR.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import torch
from facenet_pytorch import InceptionResnetV1

from .base import IdentityEncoder, warp
from .checkpoints import MissingWeights, user_checkpoint, weights_dir
from .irse50 import with_batchnorm_counters

RELEASE = "https://github.com/timesler/facenet-pytorch/releases/tag/v2.2.9"
# which -> (official file name, judge name)
WEIGHTS = {
    "vggface2": ("20180402-114759-vggface2.pt", "facenet_vggface2"),
    "casia-webface": ("20180408-102900-casia-webface.pt", "facenet_casia"),
}
SAME_PERSON_BELOW = math.sqrt(1.1)  # Euclidean; FaceNet paper Fig. 1's squared-L2 1.1
STANDARDIZE = 127.5 / 128.0  # (255 (x+1)/2 - 127.5) / 128 for x in [-1,1]


class FaceNetJudge(IdentityEncoder):
    """facenet-pytorch InceptionResnetV1 as an identity encoder (eval, frozen)."""

    input_size = 160
    same_person_below = SAME_PERSON_BELOW

    def __init__(self, net: InceptionResnetV1, name: str):
        super().__init__()
        self.name = name
        self.net = net
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FaceNetJudge:
        return super().train(False)  # BatchNorm on running statistics, dropout off

    def embed(self, image: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """(N,3,H,W) in [-1,1] -> (N,512) unit embeddings (float32). theta (N,2,3) selects the
        160x160 face crop (e.g. `mtcnn_box_theta`); None resizes the whole image."""
        x = warp(image, theta, self.input_size) * STANDARDIZE
        e = self.net(x).float()  # already unit-norm in fp32; renormalize after bf16 autocast
        return e / e.norm(dim=1, keepdim=True)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Euclidean distance, (N,): 0 identical, sqrt(2) orthogonal, 2 opposite."""
        return (a.float() - b.float()).norm(dim=-1)


def mtcnn_box_theta(boxes: torch.Tensor, image_hw: tuple[int, int], image_size: int = 160,
                    margin: float = 0.0) -> torch.Tensor:
    """Theta (N,2,3) of facenet-pytorch's `extract_face` crop: the MTCNN box (N,4) = (x0,y0,x1,y1)
    in pixels, grown by `margin` pixels of the final crop, truncated to integers and clipped to
    the image, then stretched to image_size x image_size (aspect not kept, as there)."""
    h, w = image_hw
    b = boxes.double()
    mx = margin * (b[:, 2] - b[:, 0]) / (image_size - margin)
    my = margin * (b[:, 3] - b[:, 1]) / (image_size - margin)
    x0 = (b[:, 0] - mx / 2).clamp(min=0).trunc()
    y0 = (b[:, 1] - my / 2).clamp(min=0).trunc()
    x1 = (b[:, 2] + mx / 2).clamp(max=w).trunc()
    y1 = (b[:, 3] + my / 2).clamp(max=h).trunc()
    # Output u in [-1,1] spans the box's pixel edges: x_norm = 2 p / W - 1 (align_corners=False).
    zero = torch.zeros_like(x0)
    theta = torch.stack([
        torch.stack([(x1 - x0) / w, zero, (x0 + x1) / w - 1], -1),
        torch.stack([zero, (y1 - y0) / h, (y0 + y1) / h - 1], -1)], -2)
    return theta.float()


def torch_home() -> Path:
    """facenet-pytorch's cache root: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", default)))


def _resolve(which: str, path: str | os.PathLike | None) -> Path:
    filename, name = WEIGHTS[which]
    what = f"FaceNet judge ({name}, facenet-pytorch InceptionResnetV1)"
    if path is None:
        looked = [weights_dir() / filename, torch_home() / "checkpoints" / filename]
        found = next((p for p in looked if p.is_file()), None)
        if found is None:
            raise MissingWeights(
                f"{what}: no path configured and {filename!r} is neither at {str(looked[0])!r} (the "
                f"weights folder: `./run weights` downloads it there) nor at {str(looked[1])!r} "
                "($TORCH_HOME/checkpoints/, where facenet-pytorch caches it; TORCH_HOME defaults to "
                f"~/.cache/torch). Put the file there or pass its path. It is published at {RELEASE} "
                "(facenet-pytorch's GitHub releases). Nothing is downloaded at run time.")
        return found
    return user_checkpoint(path, what=what, filename=filename, source=RELEASE,
                           config_key=f"judges.{name}.net.path")


def load_facenet(which: str, path: str | os.PathLike | None = None) -> FaceNetJudge:
    """FaceNet judge from a local weight file ('vggface2' or 'casia-webface'). The classifier
    head (`logits.*`, 8631 / 10575 classes) in the official files is not needed and dropped."""
    if which not in WEIGHTS:
        raise ValueError(f"unknown FaceNet weights {which!r}; choose one of {sorted(WEIGHTS)}")
    p = _resolve(which, path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{p}: refused to unpickle (weights_only loading failed, nothing was "
                         f"executed): {err}") from err
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    net = InceptionResnetV1(pretrained=None, classify=False)  # never pretrained=...: no download
    net.load_state_dict(with_batchnorm_counters(net, state), strict=True)
    return FaceNetJudge(net.eval(), WEIGHTS[which][1])
