"""Random views for the attribute loss: an expectation over small crops, shifts, blur and colour.

An attribute network can be moved by pixel patterns no person would see (an optimizer finds
them: the white-box network keeps its prediction while another network's changes). Matching
the attribute features of the generated and the original face under the SAME random view --
crop jitter (shift, zoom, rotation of the network's crop), a Gaussian blur and a colour change
-- makes such patterns pay: only what survives every view, the semantic attribute, is matched.

Views are drawn once per image before the optimization, from a seed of the image alone, so an
image's views do not depend on its batch mates (batch invariance holds) and a resumed run draws
the same ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

N_PARAMS = 8  # per view: dx, dy, log-zoom, angle, blur sigma, brightness, contrast, saturation


@dataclass
class ViewSpec:
    views: int = 0  # random views per step added to the plain one; 0 = off (the paper's loss)
    shift: float = 0.04  # max shift of the crop, fraction of its side
    zoom: float = 0.06  # max relative zoom of the crop
    rotate_deg: float = 6.0  # max rotation of the crop, degrees
    blur_sigma: float = 0.8  # max Gaussian blur sigma, pixels of the generated image
    color: float = 0.12  # max relative change of brightness, contrast and saturation

    def __post_init__(self) -> None:
        if self.views < 0:
            raise ValueError(f"views must be >= 0, got {self.views}")
        for name in ("shift", "zoom", "rotate_deg", "blur_sigma", "color"):
            if getattr(self, name) < 0:
                raise ValueError(f"views.{name} must be >= 0, got {getattr(self, name)}")


def draw(spec: ViewSpec, seeds: list[int], steps: int) -> torch.Tensor:
    """(B, steps, views, N_PARAMS) view parameters, each image's from its own seed."""
    lo_hi = torch.tensor([spec.shift, spec.shift, math.log1p(spec.zoom), math.radians(spec.rotate_deg),
                          spec.blur_sigma, spec.color, spec.color, spec.color])
    out = []
    for seed in seeds:
        u = torch.rand(steps, spec.views, N_PARAMS, generator=torch.Generator().manual_seed(int(seed)))
        p = (2 * u - 1) * lo_hi
        p[..., 4] = u[..., 4] * spec.blur_sigma  # blur in [0, max]
        out.append(p)
    return torch.stack(out)


def jitter_thetas(thetas: dict[str, torch.Tensor], p: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each crop theta (B,2,3) composed with the views' similarity in the crop's own frame:
    (V*B,2,3), view-major. p: (B, V, N_PARAMS)."""
    b, v = p.shape[:2]
    q = p.transpose(0, 1).reshape(v * b, -1)
    s, a = torch.exp(q[:, 2]), q[:, 3]
    j = torch.zeros(v * b, 3, 3, dtype=torch.float64)
    c, n = s * torch.cos(a), s * torch.sin(a)
    j[:, 0, 0], j[:, 0, 1], j[:, 1, 0], j[:, 1, 1] = c, -n, n, c
    j[:, 0, 2], j[:, 1, 2], j[:, 2, 2] = 2 * q[:, 0], 2 * q[:, 1], 1.0  # shift: fraction of side, in [-1,1] units
    out = {}
    for name, t in thetas.items():
        full = t.double().repeat(v, 1, 1)
        out[name] = (full @ j.to(full.device)).to(t.dtype)
    return out


def photometric(images: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Blur and colour change of (B,3,H,W) images in [-1,1] for every view: (V*B,3,H,W)."""
    b, v = p.shape[:2]
    q = p.transpose(0, 1).reshape(v * b, -1).to(device=images.device, dtype=images.dtype)
    x = images.repeat(v, 1, 1, 1)
    x = _blur(x, q[:, 4])
    x = (x + 1) / 2
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = grey + (x - grey) * (1 + q[:, 7]).view(-1, 1, 1, 1)  # saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (1 + q[:, 6]).view(-1, 1, 1, 1)  # contrast
    x = x * (1 + q[:, 5]).view(-1, 1, 1, 1)  # brightness
    return (x * 2 - 1).clamp(-1, 1)


def _blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma (0 = identity), 5-tap kernels."""
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(1, keepdim=True)  # (N, 5); sigma ~ 0 gives [0, 0, 1, 0, 0]
    n, c, h, w = x.shape
    y = F.pad(x, (radius, radius, radius, radius), mode="replicate").reshape(1, n * c, h + 2 * radius, w + 2 * radius)
    kc = k.repeat_interleave(c, 0)  # (N*C, 5)
    y = F.conv2d(y, kc.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, kc.view(n * c, 1, -1, 1), groups=n * c)
    return y.reshape(n, c, h, w)


def robust_features(features, images: torch.Tensor, thetas: dict[str, torch.Tensor], views: int,
                    spec: ViewSpec | None = None, seed: int = 0) -> torch.Tensor:
    """(N, D) mean of `features(images, thetas)` over the plain view and `views` fixed random ones
    (the same views for every image, so an original and a fake are seen alike): pairing by what
    the attribute network sees under every view, not by what one crop happens to show."""
    out = features(images, thetas).float()
    if views <= 0:
        return out
    p = draw(ViewSpec(views=views) if spec is None else spec, [seed], 1)[:, 0]  # (1, V, P)
    p = p.expand(images.shape[0], -1, -1)
    many = features(photometric(images, p), jitter_thetas(thetas, p)).float()
    return (out + many.view(views, images.shape[0], -1).sum(0)) / (views + 1)
