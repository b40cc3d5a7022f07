"""Classical anonymization baselines over a face box: blur, pixelation, black box.

They are the reference points every anonymization paper compares with: strong privacy at the
price of all utility inside the box. Images are float RGB NCHW in [-1, 1]; `boxes` has one
entry per image, (x0, y0, x1, y1) in pixels (x = column), or None for the whole image; passing
boxes=None treats every image as a whole-image box. Boxes are widened to whole pixels and
clipped to the image. Pixels outside the box are returned unchanged (bit for bit), so the
baselines only ever touch the face.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

Box = Sequence[float] | None
# fill(image (3,H,W), rows, cols) -> new content (3,h,w) of image[:, rows, cols]
Fill = Callable[[torch.Tensor, slice, slice], torch.Tensor]


def _box_slices(box: Box, h: int, w: int) -> tuple[slice, slice]:
    """Row and column slices of a pixel box."""
    if box is None:
        return slice(0, h), slice(0, w)
    x0, y0, x1, y1 = (float(v) for v in box)
    r0, r1 = max(0, math.floor(y0)), min(h, math.ceil(y1))
    c0, c1 = max(0, math.floor(x0)), min(w, math.ceil(x1))
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _per_box(images: torch.Tensor, boxes: Sequence[Box] | None, fill: Fill) -> torch.Tensor:
    """Replace each image's box content by fill(...), leaving everything else as it was."""
    if images.ndim != 4:
        raise ValueError(f"expected images (N,3,H,W), got {tuple(images.shape)}")
    boxes = [None] * len(images) if boxes is None else list(boxes)
    if len(boxes) != len(images):
        raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
    out = images.clone()
    h, w = images.shape[-2:]
    for i, box in enumerate(boxes):
        rows, cols = _box_slices(box, h, w)
        if rows.stop > rows.start and cols.stop > cols.start:
            out[i, :, rows, cols] = fill(images[i], rows, cols)
    return out


def gaussian_blur(images: torch.Tensor, boxes: Sequence[Box] | None = None, *,
                  sigma: float = 8.0) -> torch.Tensor:
    """Gaussian blur of std `sigma` pixels inside each box (kernel +-3 sigma).

    The whole image is blurred and the box is cut from it, so pixels near the box border
    average in the surrounding context as in a blurred photo, with no seam of padding.
    """
    def fill(image: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        k = 2 * math.ceil(3 * sigma) + 1
        k = min(k, 2 * ((min(image.shape[-2:]) - 1) // 2) + 1)  # reflect padding needs k <= size
        return TF.gaussian_blur(image[None], [k, k], [sigma, sigma])[0, :, rows, cols]
    return _per_box(images, boxes, fill)


def pixelate(images: torch.Tensor, boxes: Sequence[Box] | None = None, *,
             block: int = 16) -> torch.Tensor:
    """Mosaic inside each box: the mean colour of each `block` x `block` pixel cell.

    Cells are anchored at the box's top-left corner; the last row/column of cells may be
    smaller (ceil_mode), so no pixel of the box escapes the mosaic.
    """
    def fill(image: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        crop = image[None, :, rows, cols]  # (1,3,h,w)
        cells = F.avg_pool2d(crop, block, stride=block, ceil_mode=True)  # (1,3,ceil(h/b),ceil(w/b))
        up = cells.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)
        return up[0, :, : crop.shape[2], : crop.shape[3]]
    return _per_box(images, boxes, fill)


def black_box(images: torch.Tensor, boxes: Sequence[Box] | None = None, *,
              value: float = -1.0) -> torch.Tensor:
    """Fill each box with a constant; -1 is black in the [-1, 1] convention."""
    def fill(image: torch.Tensor, rows: slice, cols: slice) -> torch.Tensor:
        return torch.full_like(image[:, rows, cols], value)
    return _per_box(images, boxes, fill)


BASELINES: dict[str, Callable[..., torch.Tensor]] = {
    "blur": gaussian_blur, "pixelate": pixelate, "black_box": black_box,
}
