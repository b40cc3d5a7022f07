"""Role interfaces every backbone implements.

Image convention between stages: float32 RGB, NCHW, values in [-1, 1]. Each network converts
from it exactly once, inside its own `embed` / `features` / `predict`.

Crop convention: a per-image affine `theta` of shape (N, 2, 3) in the normalized coordinates
of `torch.nn.functional.affine_grid` (align_corners=False). It maps the network's input grid
(its "chip") to the source image, so `grid_sample(image, affine_grid(theta, chip_size))` is
the network's input. It is computed once per original (from landmarks, see falco/align.py) and
applied to the original and to every generated image alike. `theta=None` means "resize the
whole image to the network's input size".
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LatentLayout:
    """Shape of one image's latent and which part of it the anonymizer optimizes.

    shape: per-image latent shape, e.g. (18, 512) for StyleGAN2 W+ or (100,) for DCGAN z.
    trainable: (start, stop) range along the first latent axis that is optimized; the rest
        is a fixed copy of the original's inversion. For a single-vector latent, (0, 1) over a
        shape of (100,) is expressed as `layered=False` and the whole vector trains.
    layered: True when the first axis indexes generator layers (W+).
    """

    shape: tuple[int, ...]
    trainable: tuple[int, int]
    layered: bool

    def trainable_mask(self) -> torch.Tensor:
        """Boolean mask of `shape`: True where the latent is optimized."""
        mask = torch.zeros(self.shape, dtype=torch.bool)
        if not self.layered:
            return ~mask
        start, stop = self.trainable
        mask[start:stop] = True
        return mask


def resize(image: torch.Tensor, size_hw: tuple[int, int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of (N,C,H,W) (align_corners=False; antialias as torchvision's Resize).

    Computed and returned in float32, with autocast off: CPU has no bf16 antialiased kernel
    (CPU autocast would cast the input to bf16 and the kernel raises), and the official code
    resizes in float32."""
    off = torch.autocast(image.device.type, enabled=False) if image.device.type in ("cpu", "cuda") else nullcontext()
    with off:  # (other devices, such as meta, have no autocast to turn off)
        return F.interpolate(image.float(), size=size_hw, mode="bilinear", align_corners=False, antialias=antialias)


def warp(image: torch.Tensor, theta: torch.Tensor | None, size: int) -> torch.Tensor:
    """Differentiable crop of `image` (N,3,H,W) to (N,3,size,size) by `theta` (N,2,3)."""
    if theta is None:
        if image.shape[-2:] == (size, size):
            return image
        return resize(image, (size, size), antialias=image.shape[-1] > size)
    theta = theta.to(device=image.device, dtype=image.dtype)
    grid = F.affine_grid(theta, [image.shape[0], image.shape[1], size, size], align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Generator(nn.Module, metaclass=ABCMeta):
    """Pretrained, frozen image generator.

    sample(n, seed) -> (n, *layout.shape) latents, reproducible from the seed.
    synthesize(latent) -> (n, 3, resolution, resolution) images in [-1, 1].
    """

    layout: LatentLayout
    resolution: int

    @abstractmethod
    def sample(self, n: int, seed: int) -> torch.Tensor: ...

    @abstractmethod
    def synthesize(self, latent: torch.Tensor) -> torch.Tensor: ...

    def partial_synthesis(self, latent: torch.Tensor, exact: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
        """f(part) == synthesize(latent with its trainable layers replaced by part), for a
        latent optimization that calls it at every step: generators that can do the fixed
        layers' work once per batch override this (build and call it under one autocast state).
        exact: only reorganize work that gives bit-identical results (no folded arithmetic).

        latent: (B, *layout.shape); part: (B, stop - start, ...) for layered latents, else the
        whole (B, *layout.shape) latent."""
        if not self.layout.layered:
            return self.synthesize
        start, stop = self.layout.trainable
        head, tail = latent[:, :start].detach(), latent[:, stop:].detach()
        return lambda part: self.synthesize(torch.cat([head, part, tail], dim=1))


class IdentityEncoder(nn.Module, metaclass=ABCMeta):
    """Face recognizer with its own metric.

    embed(image, theta) -> (N, D) embeddings.
    distance(a, b) -> (N,) dissimilarity in the recognizer's native metric (larger = more
        different). `same_person_below` is its same-person rule: distance < threshold.
    """

    name: str
    input_size: int
    same_person_below: float

    @abstractmethod
    def embed(self, image: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor: ...

    @abstractmethod
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor: ...

    def margin_distance(self, margin: float) -> float:
        """The identity margin as a distance. Default: the margin already is a distance in this
        recognizer's metric; similarity-based recognizers (ArcFace: m is a cosine) override."""
        return float(margin)

    def crop_theta(self, landmarks: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor | None:
        """Theta (N,2,3) of this network's crop from 5 landmarks (N,5,2) in pixels of an
        image of size `image_hw`; None when the network takes the whole aligned image."""
        return None


class AttributeEncoder(nn.Module, metaclass=ABCMeta):
    """Attribute network(s): features the attribute loss and the pairing compare.

    features(image, thetas) -> (N, ...) tensor; the attribute loss is the per-image mean
        absolute difference of these (summed over tokens where the encoder has tokens).
    pairing_features(image, thetas) -> (N, D) vectors for nearest-neighbour pairing (cosine).
    predict(image, thetas) -> {name: (N,) tensor} named attributes, where available.
    `thetas` maps a crop name (see `crops`) to its (N,2,3) theta.
    """

    name: str
    crops: tuple[str, ...]

    @abstractmethod
    def features(self, image: torch.Tensor,
                 thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor: ...

    def crop_thetas(self, landmarks: torch.Tensor, image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """{crop name: theta (N,2,3)} from 5 landmarks (N,5,2); empty = whole aligned image."""
        return {}

    def pairing_features(self, image: torch.Tensor,
                         thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return self.features(image, thetas).flatten(1)

    def predict(self, image: torch.Tensor,
                thetas: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        return {}


class Inversion(nn.Module, metaclass=ABCMeta):
    """Maps an aligned original to the generator's latent space.

    invert(image) -> (N, *generator.layout.shape); image is the aligned crop in [-1, 1].
    """

    name: str

    @abstractmethod
    def invert(self, image: torch.Tensor) -> torch.Tensor: ...
