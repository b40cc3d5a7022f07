"""`method.faithful_quirks`: reproduce the official FALCO code's defects, to match the paper's numbers.

The official code (github.com/chi0tzp/FALCO, branch cvpr23) differs from the
method as published in three ways that change its outputs:
- range mix: real images enter ArcFace and FaRL in [0, 1] while generated images enter in
  [-1, 1], and FaRL gets no CLIP mean/std normalization;
- unaligned target: the losses compare the FFHQ-aligned generator output with the original
  photo as it is (resized), not with the photo aligned into the generator's frame;
- output: each image is min-max scaled to the full [0, 255] range ("adaptive") and saved as
  JPEG quality 75, which washes images out.
With the switch off (the default) every network gets its documented input range, the targets
are the aligned originals, and outputs are lossless PNGs clamped to [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch

from .backbones.base import resize

JPEG_QUALITY = 75  # the official code's output quality


def apply_network_quirks(attributes: torch.nn.Module) -> None:
    """FaRL without CLIP's mean/std (the official attribute loss feeds the raw range)."""
    if hasattr(attributes, "normalize"):
        attributes.normalize = False


def unaligned_target(photo: np.ndarray, size: int) -> torch.Tensor:
    """The whole photo uint8 (H, W, 3) resized to (3, size, size) uint8, as the official loss
    sees it (no alignment; a non-square photo is squeezed like the official resize does)."""
    x = torch.from_numpy(np.ascontiguousarray(photo).copy()).permute(2, 0, 1).unsqueeze(0).float()
    x = resize(x, (size, size))
    return x[0].round().clamp(0, 255).byte()


def official_range(image: torch.Tensor) -> torch.Tensor:
    """A [-1, 1] original mapped to [0, 1]: how the official code feeds real images to the losses."""
    return (image + 1) / 2


def adaptive_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float -> uint8 (N, H, W, 3), each image min-max scaled to [0, 255]."""
    if not torch.isfinite(images).all():
        raise ValueError("image tensor contains NaN or inf")
    x = images.detach().float()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return (x * 255).round().clamp(0, 255).to(torch.uint8).movedim(1, -1).cpu().numpy()
