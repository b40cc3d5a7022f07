"""Real faces that install with the set-up: every face of the demo photos shipped in the npm
package @vladmandic/face-api (6 photos, 1920 px, MIT) plus skimage's astronaut, as 256 px crops.

    .venv/bin/python benchmarks/real_faces.py OUT_DIR    # then: train.py data=folder data.root=OUT_DIR

Faces: MTCNN (facenet-pytorch) probability >= 0.98 and box side >= 80 px, each cropped as the
square of 1.8 x its larger box side about the box centre, resized to 256 px (LANCZOS). On
@vladmandic/face-api 1.7.15 that gives 20 faces, all of women, plus the astronaut (a woman):
a set on which every gender judge should read "female", so a judge's error on the originals is
measured, not argued. Not a balanced set (no men): it tests whether women stay women.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from falco.backbones.checkpoints import npm_package_file  # noqa: E402

PACKAGE = "@vladmandic/face-api@1.7.15"
PHOTOS = tuple(f"demo/sample{i}.jpg" for i in range(1, 7))
MIN_PROB = 0.98
MIN_SIDE = 80  # px in the 1920 px photo
CROP = 1.8  # crop side / larger box side
SIZE = 256
ASTRONAUT_BOX = (140, 20, 300, 180)  # her face in skimage.data.astronaut() (512 px), square


def faces_of(image: Image.Image, mtcnn) -> list[Image.Image]:
    """Every face of `image` that passes MIN_PROB and MIN_SIDE, as SIZE px square crops."""
    boxes, probs = mtcnn.detect(image)
    out = []
    for box, prob in zip(boxes if boxes is not None else [], probs if probs is not None else [], strict=True):
        w, h = box[2] - box[0], box[3] - box[1]
        if prob < MIN_PROB or min(w, h) < MIN_SIDE:
            continue
        cx, cy, half = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(w, h) * CROP / 2
        square = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
        out.append(image.crop(square).resize((SIZE, SIZE), Image.LANCZOS))
    return out


def write_real_faces(out_dir: Path) -> list[Path]:
    """The crops as PNGs in out_dir (created); returns their paths."""
    import skimage.data
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for rel in PHOTOS:
        photo = npm_package_file(PACKAGE, rel, "face-api.js demo photo")
        for j, face in enumerate(faces_of(Image.open(photo).convert("RGB"), mtcnn)):
            written.append(out_dir / f"{Path(rel).stem}_{j}.png")
            face.save(written[-1])
    astronaut = Image.fromarray(np.asarray(skimage.data.astronaut())).crop(ASTRONAUT_BOX)
    written.append(out_dir / "astronaut.png")
    astronaut.resize((SIZE, SIZE), Image.LANCZOS).save(written[-1])
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    print(f"{len(write_real_faces(args.out_dir))} faces in {args.out_dir}")


if __name__ == "__main__":
    main()
