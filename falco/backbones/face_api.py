"""face-api.js age and gender network (AgeGenderNet on a TinyXception), in differentiable PyTorch.

Two roles, never both in one run: a second attribute network for the loss (`attributes=ensemble`,
beside the dlib/Cydral nets of falco/backbones/age_gender.py), or, when no loss uses it (the
default), a HELD-OUT gender and age judge (`FaceApiJudge`, fed from the attacker's detector box).
Weights: `model/age_gender_model.bin` + `age_gender_model-weights_manifest.json` of the npm
package @vladmandic/face-api 1.7.15 (MIT, a maintained fork of justadudewhohacks/face-api.js),
unpacked by the set-up (requirements/npm.txt); nothing is downloaded at run time.

The manifest is TensorFlow.js's: weights in file order, each uint8-quantized as q * scale + min.
Layouts: conv filters (kh, kw, in, out), depthwise (kh, kw, in, 1), dense (in, out).
Network (the package's TinyXception with 2 main blocks, then AgeGenderNet), on 112x112 RGB in
0..255, (x - [122.782, 117.001, 104.298]) / 255, NHWC in the original:
  conv_in 3x3/2 + ReLU -> reduction block 0 (input not activated) -> reduction block 1 ->
  main blocks 0, 1 -> exit reduction block -> separable conv 256 -> 512 + ReLU -> 7x7 average
  pool -> 512 -> dense age (1, years) and dense gender (2, softmax; class 0 is MALE).
  reduction block: [ReLU] -> sep conv -> ReLU -> sep conv -> max pool 3x3/2 'same', plus a
  1x1/2 conv of the block input. main block: 3 x (ReLU -> sep conv), plus the input.
  A separable conv is a 3x3 depthwise conv, then a 1x1 pointwise conv, then the bias.
TensorFlow 'same' padding is reproduced (more at the bottom/right for stride 2; max pooling
pads with -inf). tests/backbones/test_face_api.py checks the port against outputs computed by
TensorFlow.js itself (tests/fixtures/face_api/).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import AttributeEncoder
from .checkpoints import MissingWeights, npm_package_file
from .dlib_resnet import MTCNN_TEMPLATE, RGB_MEAN, check_image, dlib_chip_theta, warp_chip
from .mini_xception import same_pads

NPM_PACKAGE = "@vladmandic/face-api@1.7.15"
MANIFEST = "model/age_gender_model-weights_manifest.json"
INPUT_SIZE = 112
# The network was trained on face-detector boxes (tight on the facial features, a little above
# the brows to below the chin). From MTCNN's 5 points we take dlib's face chip with this
# padding, which frames the face like such a box.
CHIP_PADDING = 0.3
FEATURE_SCALE = 0.69  # mean |difference| of the 512 pooled features between unrelated faces
AGE_UNIT = 5.0  # years per unit of the matched predicted age
FEATURE_REPEAT = {"pooled": 1, "age": 128, "male": 128}  # copies in the feature vector


def read_tfjs(manifest: str | Path) -> dict[str, np.ndarray]:
    """{name: float32 array} from a TensorFlow.js weights manifest (or a graph model's model.json,
    which holds one under "weightsManifest") and its .bin shards; int32 constants stay exact."""
    manifest = Path(manifest)
    out: dict[str, np.ndarray] = {}
    groups = json.loads(manifest.read_text())
    for group in groups["weightsManifest"] if isinstance(groups, dict) else groups:
        data = b"".join((manifest.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"], dtype=np.int64))
            q = w.get("quantization")
            dtype = np.dtype(q["dtype"] if q else w["dtype"])
            raw = np.frombuffer(data, dtype, n, offset)
            offset += n * dtype.itemsize
            if q and dtype.kind == "u":
                values = raw.astype(np.float64) * q["scale"] + q["min"]
            elif dtype == np.float32 or (q and dtype == np.float16):
                values = raw
            elif not q and dtype == np.int32:
                out[w["name"]] = raw.reshape(w["shape"]).copy()
                continue
            else:
                raise ValueError(f"{manifest}: unsupported weight encoding {w}")
            out[w["name"]] = values.astype(np.float32).reshape(w["shape"])
        if offset != len(data):
            raise ValueError(f"{manifest}: {len(data) - offset} bytes left over after the listed weights")
    return out


def _same(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    (t, b), (left, r) = same_pads(x.shape[-2], kernel, stride), same_pads(x.shape[-1], kernel, stride)
    return F.pad(x, (left, r, t, b), value=value) if t or b or left or r else x


def _frozen(array: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(array.copy()), requires_grad=False)


class SeparableConv(nn.Module):
    def __init__(self, w: dict[str, np.ndarray], prefix: str) -> None:
        super().__init__()
        dw, pw = w[f"{prefix}/depthwise_filter"], w[f"{prefix}/pointwise_filter"]
        self.depthwise = nn.Parameter(torch.from_numpy(dw.transpose(2, 3, 0, 1).copy()), requires_grad=False)
        self.pointwise = nn.Parameter(torch.from_numpy(pw.transpose(3, 2, 0, 1).copy()), requires_grad=False)
        self.bias = nn.Parameter(torch.from_numpy(w[f"{prefix}/bias"].copy()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(_same(x, 3, 1), self.depthwise.to(x.dtype), groups=x.shape[1])
        return F.conv2d(x, self.pointwise.to(x.dtype), self.bias.to(x.dtype))


class Conv(nn.Module):
    def __init__(self, w: dict[str, np.ndarray], prefix: str, stride: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(w[f"{prefix}/filters"].transpose(3, 2, 0, 1).copy()),
                                   requires_grad=False)
        self.bias = nn.Parameter(torch.from_numpy(w[f"{prefix}/bias"].copy()), requires_grad=False)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _same(x, self.weight.shape[-1], self.stride)
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), stride=self.stride)


class ReductionBlock(nn.Module):
    def __init__(self, w: dict[str, np.ndarray], prefix: str, activate_input: bool = True) -> None:
        super().__init__()
        self.sep0 = SeparableConv(w, f"{prefix}/separable_conv0")
        self.sep1 = SeparableConv(w, f"{prefix}/separable_conv1")
        self.expansion = Conv(w, f"{prefix}/expansion_conv", stride=2)
        self.activate_input = activate_input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sep1(F.relu(self.sep0(F.relu(x) if self.activate_input else x)))
        out = F.max_pool2d(_same(out, 3, 2, float("-inf")), 3, 2)
        return out + self.expansion(x)


class MainBlock(nn.Module):
    def __init__(self, w: dict[str, np.ndarray], prefix: str) -> None:
        super().__init__()
        self.seps = nn.ModuleList(SeparableConv(w, f"{prefix}/separable_conv{i}") for i in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for sep in self.seps:
            out = sep(F.relu(out))
        return out + x


class AgeGenderNet(nn.Module):
    """(N,3,112,112) RGB in 0..255 -> (age in years (N,), gender logits (N,2) [male, female],
    pooled features (N,512))."""

    def __init__(self, w: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.conv_in = Conv(w, "entry_flow/conv_in", stride=2)
        self.blocks = nn.Sequential(
            ReductionBlock(w, "entry_flow/reduction_block_0", activate_input=False),
            ReductionBlock(w, "entry_flow/reduction_block_1"),
            MainBlock(w, "middle_flow/main_block_0"), MainBlock(w, "middle_flow/main_block_1"),
            ReductionBlock(w, "exit_flow/reduction_block"))
        self.exit_sep = SeparableConv(w, "exit_flow/separable_conv")
        self.fc = nn.ParameterDict({k: _frozen(w[f"fc/{k}/weights"].T) for k in ("age", "gender")})
        self.fc_bias = nn.ParameterDict({k: _frozen(w[f"fc/{k}/bias"]) for k in ("age", "gender")})
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

    def forward(self, rgb255: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (rgb255 - self.mean.to(rgb255.dtype)) / 255
        x = F.relu(self.conv_in(x))
        x = F.relu(self.exit_sep(self.blocks(x)))
        pooled = F.avg_pool2d(x, 7, 2).flatten(1)  # 7x7 -> 1x1 (valid)
        age = F.linear(pooled, self.fc["age"].to(x.dtype), self.fc_bias["age"].to(x.dtype))[:, 0]
        gender = F.linear(pooled, self.fc["gender"].to(x.dtype), self.fc_bias["gender"].to(x.dtype))
        return age.float(), gender.float(), pooled.float()


class FaceApiAgeGender(AttributeEncoder):
    """The network as an attribute encoder: features for the loss, predictions for reports."""

    name = "faceapi_age_gender"
    crops = ("faceapi",)

    def __init__(self, manifest: str | Path) -> None:
        super().__init__()
        self.net = AgeGenderNet(read_tfjs(manifest))

    def crop_thetas(self, landmarks: torch.Tensor, image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        return {"faceapi": dlib_chip_theta(landmarks, image_hw, MTCNN_TEMPLATE, CHIP_PADDING, INPUT_SIZE)}

    def run(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None):
        check_image(image)
        theta = None if thetas is None else thetas["faceapi"]
        return self.net((warp_chip(image, theta, INPUT_SIZE) + 1) * 127.5)

    def features(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(N, 768): the 512 pooled features (scaled to ~1 between unrelated faces), the predicted
        age / 5 years and 2 x P(male), each repeated 128 times (as in the dlib nets' vector)."""
        age, gender, pooled = self.run(image, thetas)
        male = 2 * gender.softmax(1)[:, :1]
        parts = [pooled / FEATURE_SCALE, (age / AGE_UNIT)[:, None].expand(-1, FEATURE_REPEAT["age"]),
                 male.expand(-1, FEATURE_REPEAT["male"])]
        return torch.cat(parts, 1)

    def pairing_features(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        age, gender, _ = self.run(image, thetas)
        return torch.cat([gender.softmax(1).sqrt(), (age / 100)[:, None]], 1)

    def predict(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """{"age": years (N,), "male": probability of male (N,)}."""
        age, gender, _ = self.run(image, thetas)
        return {"age": age, "male": gender.softmax(1)[:, 0]}


def load_face_api(manifest: str | None = None) -> FaceApiAgeGender:
    """The network from `manifest` (a weights manifest path), else the set-up's npm copy."""
    what = "face-api.js age/gender network"
    path = Path(manifest) if manifest else npm_package_file(NPM_PACKAGE, MANIFEST, what)
    if not path.is_file():
        raise MissingWeights(f"{what}: no weights manifest at {str(path)!r} (from {NPM_PACKAGE}, "
                             f"file package/{MANIFEST}, MIT); it sits beside age_gender_model.bin")
    return FaceApiAgeGender(path)


class FaceApiJudge(nn.Module):
    """The same network as a HELD-OUT attribute judge (for runs whose losses do not use it), fed
    the way face-api.js's own detection path feeds it, not the loss's landmark chip: the detector's
    box padded to a centred square with black (`padToSquare`), resized to 112 px (bilinear).

    Measured on 21 real faces (20 women cut from the package's own demo photos + skimage's
    astronaut), from their YuNet boxes: 0% called male at 256 and at 64 px (Adience: 9.5%)."""

    name = "faceapi"
    source = f"npm {NPM_PACKAGE}: package/model/age_gender_model.bin (face-api.js AgeGenderNet)"
    licence = "MIT"

    def __init__(self, net: AgeGenderNet) -> None:
        super().__init__()
        self.net = net

    def predict(self, image: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (N,3,H,W) RGB in [-1,1], boxes (N,4) x0,y0,x1,y1 pixels -> {"male": P(male) (N,),
        "age": years (N,)}."""
        check_image(image)
        age, gender, _ = self.net(square_box_crop((image.float() + 1) * 127.5, boxes.float(), INPUT_SIZE))
        return {"male": gender.softmax(1)[:, 0], "age": age}


def square_box_crop(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """The square of side max(width, height) centred on each box, zero outside the image, resized
    to size x size (bilinear)."""
    n, _, h, w = image.shape
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    theta = torch.zeros(n, 2, 3, device=image.device, dtype=image.dtype)
    theta[:, 0, 0], theta[:, 1, 1] = side / w, side / h
    theta[:, 0, 2] = (boxes[:, 0] + boxes[:, 2]) / w - 1
    theta[:, 1, 2] = (boxes[:, 1] + boxes[:, 3]) / h - 1
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def load_face_api_judge(manifest: str | None = None) -> FaceApiJudge:
    """The held-out judge: the network of `load_face_api`, frozen, in eval mode."""
    return FaceApiJudge(load_face_api(manifest).net).eval().requires_grad_(False)
