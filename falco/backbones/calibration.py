"""Same-person threshold calibration for any IdentityEncoder, reproducible from a seed.

Genuine pairs: each face against `copies` augmented copies of itself. Each copy draws, from a
seeded torch.Generator, a horizontal flip (p = 0.5), a rotation in +-10 degrees, a scale in
+-10%, a shift in +-5% of the image size per axis (one affine warp about the image centre,
reflection padding), contrast and brightness factors in [0.8, 1.2] and a Gaussian blur of sigma
in [0, 1] px. The copy's landmarks go through the same affine (left/right swapped under the
flip), so the judge aligns every image with its own landmarks, as in use.
Impostor pairs: all unordered pairs of different (unaugmented) faces.

Threshold: the `far` quantile of the impostor distances. With k = floor(far * M) of M impostor
distances sorted, it is the midpoint of the k-th and (k+1)-th, so exactly k impostor pairs
fall below it (same-person rule: distance < threshold) and the measured false-accept rate is
within 1/M of the target. Reported with it: the share of genuine pairs accepted (TAR), the
equal error rate and the mean distances.

`calibration_faces` gives the faces the embedded default judges: DCGAN (gan-face-generate)
faces, 64 px, with MTCNN's landmarks (detected on bicubic 256-px upscales, coordinates mapped
back), plus skimage's astronaut (a real face) framed like them at 64 px.

    python -m falco.backbones.calibration lightcnn_v4 --faces 128
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .base import IdentityEncoder

# Judge name -> loader, imported lazily so that a missing module breaks only its own entry.
JUDGES: dict[str, Callable[[], IdentityEncoder]] = {
    "lightcnn_v4": lambda: _loader("falco.backbones.lightcnn", "load_lightcnn")(),
    "sface": lambda: _loader("falco.backbones.sface", "load_sface")(),
    "faceplugin_mfn": lambda: _loader("falco.backbones.faceplugin", "load_faceplugin_recognizer")(),
    "dlib_resnet": lambda: _loader("falco.backbones.dlib_resnet", "load_dlib_recognizer")(),
}

FLIP_ORDER = [1, 0, 2, 4, 3]  # MTCNN points after a mirror: the eyes and mouth corners swap
DETECT_SIZE = 256  # faces are detected on bicubic upscales to this size
# Where MTCNN's box sits in a 64-px DCGAN face (38 of 40 faces, seed 0): width 0.72 of the
# image, centre at (0.506, 0.595); the astronaut is cropped to the same framing.
DCGAN_BOX_WIDTH = 0.72
DCGAN_BOX_CENTRE = (0.506, 0.595)


def _loader(module: str, name: str) -> Callable[..., IdentityEncoder]:
    return getattr(importlib.import_module(module), name)


def load_judge(name: str) -> IdentityEncoder:
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; choose one of {sorted(JUDGES)}")
    return JUDGES[name]()


# ----------------------------------------------------------------------------- augmentation

def _pixel_to_normalized(h: int, w: int) -> torch.Tensor:
    """3x3: pixel coordinates (pixel i spans [i, i+1)) -> affine_grid's normalized ones."""
    return torch.tensor([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Separable Gaussian blur with one sigma (px) per image, reflect padding; sigma ~ 0 = identity."""
    n, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma.double().clamp_min(1e-3)[:, None] ** 2))
    k = (k / k.sum(1, keepdim=True)).to(x.dtype).repeat_interleave(c, 0)  # (n*c, 2r+1)
    y = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def augment(images: torch.Tensor, landmarks: torch.Tensor,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented copies of images (N,3,H,W) in [-1,1] and their landmarks (N,5,2) in pixels."""
    n, _, h, w = images.shape
    draw = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    flip = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
    angle = draw(-10.0, 10.0) * math.pi / 180
    scale = draw(0.9, 1.1)
    shift = torch.stack([draw(-0.05, 0.05) * w, draw(-0.05, 0.05) * h], -1)
    contrast, brightness = draw(0.8, 1.2), draw(0.8, 1.2)
    sigma = draw(0.0, 1.0)

    # Forward map in pixels: p' = centre + scale R (mirror(p) - centre) + shift.
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    lin = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (n,2,2)
    mirror = torch.diag_embed(torch.stack([torch.where(flip, -1.0, 1.0), torch.ones(n, dtype=torch.float64)], -1))
    lin = lin @ mirror
    centre = torch.tensor([w / 2, h / 2], dtype=torch.float64)
    offset = centre + shift - (lin @ centre)
    fwd = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    fwd[:, :2, :2], fwd[:, :2, 2] = lin, offset

    pts = landmarks.double() @ lin.transpose(1, 2) + offset[:, None]
    order = torch.tensor(FLIP_ORDER)
    pts = torch.where(flip[:, None, None], pts[:, order], pts)

    to_norm = _pixel_to_normalized(h, w)
    theta = (to_norm @ torch.linalg.inv(fwd) @ torch.linalg.inv(to_norm))[:, :2].to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    x = (out + 1) / 2
    mean = x.mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast.view(n, 1, 1, 1).to(x) + mean) * brightness.view(n, 1, 1, 1).to(x)
    x = _gaussian_blur(x.clamp(0, 1), sigma)
    return (x * 2 - 1).clamp(-1, 1), pts.to(landmarks.dtype)


# ----------------------------------------------------------------------------- calibration

@torch.no_grad()
def embed_aligned(judge: IdentityEncoder, images: torch.Tensor, landmarks: torch.Tensor,
                  batch: int = 32) -> torch.Tensor:
    """Embeddings of images each aligned with its own landmarks (judge.crop_theta)."""
    device = next((p.device for p in judge.parameters()), torch.device("cpu"))
    out = []
    for s in range(0, len(images), batch):
        img, lm = images[s:s + batch].to(device), landmarks[s:s + batch].to(device)
        theta = judge.crop_theta(lm, (img.shape[-2], img.shape[-1]))
        out.append(judge.embed(img, theta).float().cpu())
    return torch.cat(out)


def pair_distances(judge: IdentityEncoder, images: torch.Tensor, landmarks: torch.Tensor, *,
                   seed: int = 0, copies: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(genuine (N*copies,), impostor (N(N-1)/2,)) distances in the judge's metric (float64)."""
    if images.ndim != 4 or landmarks.shape != (len(images), 5, 2):
        raise ValueError(f"expected images (N,3,H,W) and landmarks (N,5,2), got {tuple(images.shape)} "
                         f"and {tuple(landmarks.shape)}")
    n = len(images)
    if n < 2:
        raise ValueError("need at least 2 faces for impostor pairs")
    gen = torch.Generator().manual_seed(int(seed))
    base = embed_aligned(judge, images, landmarks)
    genuine = []
    for _ in range(copies):
        aug, aug_lm = augment(images.float(), landmarks.float(), gen)
        genuine.append(judge.distance(base, embed_aligned(judge, aug, aug_lm)))
    i, j = torch.triu_indices(n, n, offset=1)
    impostor = judge.distance(base[i], base[j])
    return torch.cat(genuine).double(), impostor.double()


def threshold_at_far(impostor: torch.Tensor, far: float) -> float:
    """The `far` quantile of the impostor distances: exactly floor(far * M) of them lie below."""
    s = impostor.double().sort().values
    m = len(s)
    k = math.floor(far * m)
    if k <= 0:
        return float(s[0])  # "distance < s[0]" accepts none
    if k >= m:
        return float(s[-1]) + 1e-9
    return float((s[k - 1] + s[k]) / 2)


def equal_error_rate(genuine: torch.Tensor, impostor: torch.Tensor) -> float:
    """EER: where the false-accept (impostor < t) and false-reject (genuine >= t) rates meet."""
    g, i = genuine.double().sort().values, impostor.double().sort().values
    t = torch.cat([torch.cat([g, i]).unique(), torch.tensor([math.inf], dtype=torch.float64)])
    far = torch.searchsorted(i, t, side="left").double() / len(i)
    frr = 1 - torch.searchsorted(g, t, side="left").double() / len(g)
    best = int((far - frr).abs().argmin())
    return float((far[best] + frr[best]) / 2)


def calibrate(judge: IdentityEncoder, images: torch.Tensor, landmarks: torch.Tensor, *,
              far: float = 0.01, seed: int = 0, copies: int = 1) -> dict:
    """Same-person threshold of `judge` for a target false-accept rate on impostor pairs.

    images: (N,3,H,W) in [-1,1]; landmarks: (N,5,2) MTCNN points in pixels of those images.
    Returns threshold, far_target, far_measured, tar_at_threshold (share of genuine pairs
    accepted), genuine / impostor pair counts, their mean distances and the EER."""
    if not 0 < far < 1:
        raise ValueError(f"far must be in (0, 1), got {far}")
    genuine, impostor = pair_distances(judge, images, landmarks, seed=seed, copies=copies)
    thr = threshold_at_far(impostor, far)
    return {
        "threshold": thr,
        "far_target": far,
        "far_measured": float((impostor < thr).double().mean()),
        "tar_at_threshold": float((genuine < thr).double().mean()),
        "genuine": len(genuine),
        "impostor": len(impostor),
        "genuine_distance_mean": float(genuine.mean()),
        "impostor_distance_mean": float(impostor.mean()),
        "eer": equal_error_rate(genuine, impostor),
    }


# ----------------------------------------------------------------------------- faces

def _detect_64(mtcnn, images: torch.Tensor) -> list[np.ndarray | None]:
    """MTCNN's 5 points of the most probable face of each (N,3,64,64) image, in 64-px pixels."""
    from PIL import Image

    size = images.shape[-1]
    up = F.interpolate(images.float(), size=DETECT_SIZE, mode="bicubic", align_corners=False)
    arr = ((up.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    out: list[np.ndarray | None] = []
    for a in arr:
        boxes, probs, points = mtcnn.detect(Image.fromarray(a), landmarks=True)
        if boxes is None:
            out.append(None)
        else:
            out.append(np.asarray(points[int(np.argmax(probs))], dtype=np.float64) * size / DETECT_SIZE)
    return out


def astronaut_64(mtcnn) -> torch.Tensor:
    """skimage's astronaut cropped square around her face with the DCGAN faces' framing, 64 px,
    as (1,3,64,64) in [-1,1]."""
    import skimage.data
    from PIL import Image

    img = Image.fromarray(skimage.data.astronaut())
    boxes, probs = mtcnn.detect(img)
    x0, y0, x1, y1 = (float(v) for v in boxes[int(np.argmax(probs))])
    side = (x1 - x0) / DCGAN_BOX_WIDTH
    left = (x0 + x1) / 2 - DCGAN_BOX_CENTRE[0] * side
    top = (y0 + y1) / 2 - DCGAN_BOX_CENTRE[1] * side
    crop = img.resize((64, 64), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))
    return torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


@torch.no_grad()
def calibration_faces(n: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n faces (n,3,64,64) in [-1,1] with MTCNN landmarks (n,5,2) in 64-px pixels: skimage's
    astronaut first, then n-1 DCGAN faces where MTCNN finds a face. DCGAN latents come from
    `sample(count, seed + 7919 * r)` in rounds r = 0, 1, ... until enough faces are found."""
    from facenet_pytorch import MTCNN

    from .dcgan import load_dcgan

    if n < 2:
        raise ValueError("need at least 2 faces")
    mtcnn = MTCNN(keep_all=False)
    astro = astronaut_64(mtcnn)
    (astro_lm,) = _detect_64(mtcnn, astro)
    if astro_lm is None:
        raise RuntimeError("MTCNN found no face in the 64-px astronaut")
    gen = load_dcgan()
    images, points = [astro], [astro_lm]
    need, r = n - 1, 0
    while need > 0:
        if r > 20:
            raise RuntimeError(f"MTCNN found too few faces among DCGAN samples (still {need} missing)")
        cand = gen.synthesize(gen.sample(math.ceil(need * 1.2) + 4, seed + 7919 * r)).float()
        for img, lm in zip(cand, _detect_64(mtcnn, cand), strict=True):
            if lm is not None and need > 0:
                images.append(img[None])
                points.append(lm)
                need -= 1
        r += 1
    return torch.cat(images), torch.tensor(np.stack(points), dtype=torch.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("judge", choices=sorted(JUDGES))
    parser.add_argument("--faces", type=int, default=128, help="number of faces (astronaut + DCGAN)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the DCGAN faces and of the augmentations")
    parser.add_argument("--far", type=float, default=0.01, help="target false-accept rate on impostor pairs")
    parser.add_argument("--copies", type=int, default=1, help="augmented copies per face (genuine pairs)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (float results depend on it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    judge = load_judge(args.judge)
    images, landmarks = calibration_faces(args.faces, args.seed)
    result = calibrate(judge, images, landmarks, far=args.far, seed=args.seed, copies=args.copies)
    print(json.dumps({"judge": args.judge, "faces": args.faces, "seed": args.seed, **result}, indent=2))


if __name__ == "__main__":
    main()
