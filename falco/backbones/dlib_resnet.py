"""dlib's ResNet face recognizer (`dlib_face_recognition_resnet_model_v1.dat`) in pure PyTorch.

The weights ship in the PyPI package face_recognition_models (CC0) and are read with our own
parser (falco/backbones/dlib_dat.py); no dlib at run time. tests/backbones/test_dlib_resnet.py
proves the port equal to `dlib.face_recognition_model_v1.compute_face_descriptor`.

Network (input: a 150x150 RGB dlib face chip, (x in 0..255 - mean) / 256):
  7x7/2 valid conv, affine, ReLU, 3x3/2 max pool -> 35x35x32
  14 residual blocks: 3 at 32 ch; then (down + 3) at 64, (down + 2) at 128, (down + 2) at 256,
  one down at 256 -> 2x2x256
  global mean pool, fc 256 -> 128 without bias.
A residual block is relu(x + affine(conv3x3(relu(affine(conv3x3(x)))))). A down block's first
conv is 3x3 stride 2 without padding and its shortcut is a 2x2/2 average pool of x; dlib adds
tensors of different shapes by zero-padding the smaller one at the end of each axis (trailing
channels, bottom rows, right columns), which happens at 8 -> 3 vs 4 and 4 -> 1 vs 2 pixels.
Embeddings are 128-d and NOT unit-norm (norms ~1.3-1.5); same person: Euclidean distance < 0.6.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..align import fit_similarity, template_with_padding, theta_from_landmarks
from .base import IdentityEncoder, warp
from .checkpoints import package_file
from .dlib_dat import DatLayer, DatNet, read_dlib_net

# MTCNN's 5 points (left eye centre, right eye centre, nose tip, left mouth corner, right mouth
# corner; left/right as seen in the image) in the unit frame of dlib's *unpadded* face chip,
# i.e. where they land on average in the chip `dlib.get_face_chip_details(shape_5pt, size, 0)`
# selects. dlib aligns with its own 5-point predictor (eye corners + nose base), so the relation
# was measured: tests/backbones/calibrate_dlib_template.py runs dlib's HOG detector + 5-point
# predictor and facenet-pytorch's MTCNN on faces both find -- skimage's astronaut (15 rotated,
# rescaled and mirrored versions), 187 real LFW faces (skimage's lfw_subset and mirrors) and 217
# DCGAN faces (gan_face_generate, upscaled to 256 px, and mirrors) -- maps MTCNN's points into
# dlib's chip frame and averages (real and synthetic faces weighted equally). Per-face spread
# (std): ~0.02 for the eyes, ~0.05 for nose and mouth.
MTCNN_TEMPLATE = torch.tensor([
    [0.2322, 0.2121],
    [0.7678, 0.2091],
    [0.4963, 0.5362],
    [0.2700, 0.8063],
    [0.7296, 0.8059],
], dtype=torch.float64)

CHIP_SIZE = 150  # the recognizer's input: a 150x150 dlib face chip ...
CHIP_PADDING = 0.25  # ... with dlib's default padding, as in compute_face_descriptor(img, shape)
RGB_MEAN = (122.782, 117.001, 104.298)  # dlib's input_rgb_image_sized mean, 0..255 units


def check_image(image: torch.Tensor) -> None:
    """Fail clearly unless `image` is float (N,3,H,W) in the pipeline's [-1, 1] convention."""
    if image.ndim != 4 or image.shape[1] != 3 or not image.is_floating_point():
        raise ValueError(f"expected a float RGB batch (N,3,H,W) in [-1,1], got {tuple(image.shape)} "
                         f"{image.dtype}")
    if image.device.type == "meta":  # shapes only (a placement check): no values to check
        return
    lo, hi = image.detach().aminmax()
    if lo < -1.01 or hi > 1.01:  # small slack for interpolation overshoot
        raise ValueError(f"image values must be in [-1,1], got [{lo.item():.3g}, {hi.item():.3g}] "
                         "(0..255 or 0..1 images must be converted first)")


def dlib_chip_theta(landmarks: torch.Tensor, image_hw: tuple[int, int], template: torch.Tensor,
                    padding: float, size: int) -> torch.Tensor:
    """Theta (N,2,3) of the size x size chip dlib.get_face_chip_details(points, size, padding)
    selects, for points (N,K,2) in our pixel convention matching the unpadded `template` (K,2).

    dlib fits the least-squares similarity `fit` from the template in chip pixels,
    template_with_padding(template) * size, to the points (dlib's pixel centres are integers,
    ours are at +0.5). Its chip is the rectangle of side size * s image pixels (s = fit scale)
    centred on fit(size/2, size/2) and rotated like the fit, with the first and last chip
    pixel centres on the rectangle's edges, which dlib counts inclusively: they lie size*s - 1
    image pixels apart. The chip therefore spans (size*s - 1) / (size - 1) image pixels per
    chip pixel, not s; this matters at chip scale (0.6 chip pixel at the border of a 150 px
    chip from a face of similar size).
    """
    if landmarks.ndim != 3 or landmarks.shape[1:] != template.shape:
        raise ValueError(f"landmarks must be (N,{template.shape[0]},2), got {tuple(landmarks.shape)}")
    n, f64, dev = landmarks.shape[0], torch.float64, landmarks.device
    chip_px = (template_with_padding(template.to(dev, f64), padding) * size).expand(n, -1, -1)
    fit = fit_similarity(chip_px, landmarks.double() - 0.5).double()  # chip px -> dlib image px
    lin = fit[:, :, :2]
    centre = lin @ torch.full((2, 1), size / 2, dtype=f64, device=dev) + fit[:, :, 2:]  # (N,2,1)
    scale = lin[:, :, 0].norm(dim=1).view(n, 1, 1)  # image px per template chip px
    stretch = size * (size * scale - 1) / ((size - 1) * scale)  # unit chip -> template chip px
    # Three chip points in our unit coordinates, where dlib samples them (our pixel convention);
    # theta_from_landmarks fits them without residual.
    unit = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=f64, device=dev)
    where = (lin @ ((unit - 0.5).T * stretch) + centre + 0.5).transpose(1, 2)
    return theta_from_landmarks(where.float(), image_hw, unit.float())


def warp_chip(image: torch.Tensor, theta: torch.Tensor | None, size: int,
              max_factor: int = 8) -> torch.Tensor:
    """`warp` to (N,3,size,size) with dlib-like anti-aliasing for strong downscaling.

    dlib samples chips bilinearly unless the face is over 2x larger than the chip, when it
    first goes down an image pyramid. Likewise: bilinear up to 2 source pixels per chip pixel,
    beyond that sample a k-times finer grid and box-average it (k = that ratio, rounded up).
    """
    if theta is None:
        return warp(image, None, size)  # resize of the whole image, antialiased there
    h, w = image.shape[-2:]
    # A chip-pixel step (2/size in normalized units) moves theta[:, :, j] * 2/size, i.e. that
    # times (w/2, h/2) source pixels.
    half = torch.tensor([[w / 2], [h / 2]], dtype=torch.float64, device=theta.device)
    cols = theta.detach().double()[:, :, :2] * half
    if theta.device.type == "meta":  # shapes only (a placement check): no ratio to read
        k = 1
    else:
        ratio = float(cols.norm(dim=1).max()) * 2 / size
        k = 1 if ratio <= 2 else min(math.ceil(ratio), max_factor)
    fine = warp(image, theta, size * k)
    return F.avg_pool2d(fine, k) if k > 1 else fine


class _Affine(nn.Module):
    """dlib's affine_ layer: per-channel y = gamma * x + beta (batch norm frozen at inference)."""

    def __init__(self, rec: DatLayer) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.from_numpy(rec.arrays["gamma"]).view(1, -1, 1, 1))
        self.beta = nn.Parameter(torch.from_numpy(rec.arrays["beta"]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.to(x.dtype) + self.beta.to(x.dtype)


def _conv(rec: DatLayer) -> nn.Conv2d:
    w, b, g = rec.arrays["weight"], rec.arrays["bias"], rec.ints
    conv = nn.Conv2d(w.shape[1], w.shape[0], (g["nr"], g["nc"]), (g["stride_y"], g["stride_x"]),
                     (g["pad_y"], g["pad_x"]))
    conv.weight.data.copy_(torch.from_numpy(w))
    assert conv.bias is not None  # created with bias=True
    conv.bias.data.copy_(torch.from_numpy(b))
    return conv


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: sum of (N,C,H,W) tensors, the smaller zero-padded at the end of C, H, W."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))
    return grow(a) + grow(b)


class _Residual(nn.Module):
    def __init__(self, recs: list[DatLayer]) -> None:
        super().__init__()
        self.conv1, self.aff1 = _conv(recs[0]), _Affine(recs[1])
        self.conv2, self.aff2 = _conv(recs[3]), _Affine(recs[4])
        self.pool = None  # a down block's shortcut: (window, stride) of an average pool
        if recs[5].kind == "avg_pool_2":
            g = recs[5].ints
            if g["pad_y"] or g["pad_x"] or g["nr"] != g["nc"] or g["nr"] == 0:
                raise ValueError(f"unsupported shortcut pooling {g}")
            self.pool = (g["nr"], g["stride_y"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, *self.pool) if self.pool else x
        return F.relu(add_padded(y, shortcut))


class DlibResNet(nn.Module):
    """The network from the parsed records: (N,3,150,150) normalized input -> (N,128)."""

    def __init__(self, net: DatNet) -> None:
        super().__init__()
        kinds = [layer.kind for layer in net.layers]
        expect(kinds, 0, ["con_4", "affine_", "relu_", "max_pool_2"])
        self.stem_conv, self.stem_aff = _conv(net.layers[0]), _Affine(net.layers[1])
        pool = net.layers[3].ints
        self.pool = (pool["nr"], pool["stride_y"], pool["pad_y"])
        blocks, i = [], 4
        while kinds[i] == "con_4":
            down = kinds[i + 5] == "avg_pool_2"
            expect(kinds, i, ["con_4", "affine_", "relu_", "con_4", "affine_"]
                   + ["avg_pool_2"] * down + ["add_prev_", "relu_"])
            blocks.append(_Residual(net.layers[i:i + 6]))
            i += 7 + down
        self.blocks = nn.ModuleList(blocks)
        expect(kinds, i, ["avg_pool_2", "fc_2"])
        if len(kinds) != i + 2 or net.layers[i].ints["nr"] != 0 or "bias" in net.layers[i + 1].arrays:
            raise ValueError("expected the net to end with a global average pool and fc without bias")
        self.fc = nn.Parameter(torch.from_numpy(net.layers[i + 1].arrays["weight_in_out"]))  # (256, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_aff(self.stem_conv(x)))
        x = F.max_pool2d(x, self.pool[0], self.pool[1], self.pool[2])
        for block in self.blocks:
            x = block(x)
        return x.mean((2, 3)) @ self.fc.to(x.dtype)


def expect(kinds: list[str], start: int, pattern: list[str]) -> None:
    got = kinds[start:start + len(pattern)]
    if got != pattern:
        raise ValueError(f"unexpected dlib layer sequence at record {start}: {got}, expected {pattern}")


class DlibRecognizer(IdentityEncoder):
    name = "dlib_resnet"
    input_size = CHIP_SIZE
    same_person_below = 0.6  # dlib's rule on the Euclidean distance of descriptors
    mean: torch.Tensor  # (1,3,1,1) buffer

    def __init__(self, net: DatNet) -> None:
        super().__init__()
        if net.input_size != (CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected a {CHIP_SIZE}x{CHIP_SIZE} input layer, got {net.input_size}")
        self.net = DlibResNet(net)
        self.register_buffer("mean", torch.tensor(net.input_mean).view(1, 3, 1, 1), persistent=False)

    def embed(self, image: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """(N,3,H,W) in [-1,1] + theta of the 150x150 chip (None: resize) -> (N,128) float32."""
        check_image(image)
        chip = warp_chip(image, theta, CHIP_SIZE)
        x = ((chip + 1) * 127.5 - self.mean.to(chip.dtype)) / 256  # dlib's input scaling
        return self.net(x).float()

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a.float() - b.float()).norm(dim=-1)

    def crop_theta(self, landmarks: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """dlib's 150x150 face chip (padding 0.25) from MTCNN's 5 points (N,5,2) in pixels."""
        return dlib_chip_theta(landmarks, image_hw, MTCNN_TEMPLATE, CHIP_PADDING, CHIP_SIZE)


def default_path() -> Path:
    return package_file("face_recognition_models", "models/dlib_face_recognition_resnet_model_v1.dat",
                        what="dlib face recognition ResNet",
                        install="pip install face_recognition_models==0.3.0")


def load_dlib_recognizer(path: str | None = None) -> DlibRecognizer:
    """The pretrained recognizer, frozen and in eval mode."""
    model = DlibRecognizer(read_dlib_net(path or default_path()))
    return model.eval().requires_grad_(False)
