"""Calibrate MTCNN_TEMPLATE in falco/backbones/dlib_resnet.py (a script, not a test).

dlib aligns its face chips with its own 5-point predictor (eye corners, nose base); the
pipeline has MTCNN's 5 points (eye centres, nose tip, mouth corners). On faces where both dlib
(HOG detector + shape_predictor_5_face_landmarks) and MTCNN (facenet-pytorch) find the face,
this maps MTCNN's points into the unpadded unit frame of the chip dlib selects
(`get_face_chip_details(shape, 150, 0.25)`, the recognizer's chip) and averages them.

Where the chip lies is measured, not assumed: dlib extracts chips from images holding each
pixel's own x (resp. y) coordinate, and an affine map chip pixel -> image is fitted to them;
dlib_fit turns that into dlib's template fit.

Faces: skimage's astronaut (original, mirrored, rotated, rescaled), the 100 real LFW faces of
skimage.data.lfw_subset() (25x25 grey, upscaled), and DCGAN (gan_face_generate) faces
upscaled from 64 to 256 px, each also mirrored: the set of faces is then left-right symmetric,
while dlib's own template is not quite (its 5-point frame sits ~0.01 left of centre), so the
template is not symmetrized by hand. Real and synthetic faces are weighted equally.

Run:  .venv/bin/python -m tests.backbones.calibrate_dlib_template [--dcgan 150]
"""

from __future__ import annotations

import argparse
import functools

import dlib
import numpy as np
import skimage.data
import torch
from facenet_pytorch import MTCNN
from PIL import Image

from falco.backbones.checkpoints import package_file
from falco.backbones.dlib_resnet import CHIP_PADDING, CHIP_SIZE


def dlib_models() -> tuple:
    sp5 = package_file("face_recognition_models", "models/shape_predictor_5_face_landmarks.dat",
                       what="dlib 5-point predictor", install="pip install face_recognition_models")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(sp5))


def chip_to_image(img: np.ndarray, details) -> np.ndarray:
    """(2,3) affine: dlib chip pixel (col, row) -> image (x, y), dlib coords (pixel centres at
    integers), measured by extracting chips of coordinate images."""
    h, w = img.shape[:2]
    xs = np.tile(np.arange(w, dtype=np.float32), (h, 1))
    ys = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    cx, cy = dlib.extract_image_chip(xs, details), dlib.extract_image_chip(ys, details)
    cols, rows = np.meshgrid(np.arange(details.cols), np.arange(details.rows))
    a = np.stack([cols.ravel(), rows.ravel(), np.ones(cols.size)], 1)
    sol, *_ = np.linalg.lstsq(a, np.stack([cx.ravel(), cy.ravel()], 1), rcond=None)
    if np.abs(a @ sol - np.stack([cx.ravel(), cy.ravel()], 1)).max() > 1e-2:
        raise RuntimeError("chip sampling is not affine (pyramid? face near the border?)")
    return sol.T


def dlib_fit(chip_map: np.ndarray, size: int) -> np.ndarray:
    """dlib's similarity fit (2,3): template chip pixels -> image, from its measured chip map.

    The chip is a rectangle of side size * s (s: the fit's scale) centred on fit(size/2) whose
    inclusive edges hold the first and last pixel centres, so the map's scale is
    (size * s - 1) / (size - 1) and its centre pixel (size - 1) / 2 lands on fit(size / 2)."""
    lin = chip_map[:, :2]
    s_map = np.hypot(lin[0, 0], lin[1, 0])
    s = (s_map * (size - 1) + 1) / size
    centre = lin @ np.full(2, (size - 1) / 2) + chip_map[:, 2]
    fit_lin = lin * (s / s_map)
    return np.concatenate([fit_lin, (centre - fit_lin @ np.full(2, size / 2))[:, None]], 1)


def to_unpadded(fit: np.ndarray, points: np.ndarray, size: int, padding: float) -> np.ndarray:
    """Image points (K,2), dlib coordinates -> dlib's unpadded template frame."""
    chip_px = np.linalg.solve(fit[:, :2], (points - fit[:, 2]).T).T
    return chip_px / size * (1 + 2 * padding) - padding


def dlib_template(img: np.ndarray, rect, points: np.ndarray, size: int, padding: float) -> np.ndarray:
    """dlib's own unpadded 5-point template (5,2), recovered from its chips.

    Its fit is the least-squares similarity from the template T to the points P, linear in P:
    the rotation-scale entries (a, b) of [[a, -b], [b, a]] move by (t_x, -t_y) / sum |t|^2 per
    unit of x_k, for the centred template t; the fit maps the centroids onto each other."""
    def fit_for(pts: np.ndarray) -> np.ndarray:
        shape = dlib.full_object_detection(rect, dlib.points([dlib.point(int(x), int(y)) for x, y in pts]))
        return dlib_fit(chip_to_image(img, dlib.get_face_chip_details(shape, size, padding)), size)

    base, step, grads = fit_for(points), 8, []
    for k in range(len(points)):
        moved = points.copy()
        moved[k, 0] += step
        f = fit_for(moved)
        grads.append([(f[0, 0] - base[0, 0]) / step, -(f[1, 0] - base[1, 0]) / step])
    g = np.array(grads)
    centre = np.linalg.solve(base[:, :2], points.mean(0) - base[:, 2])
    chip_px = g / (g**2).sum() + centre
    return chip_px / size * (1 + 2 * padding) - padding


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def mtcnn_in_chip(img: np.ndarray, detector, predictor, mtcnn: MTCNN) -> np.ndarray | None:
    """MTCNN's 5 points of the largest dlib face, in dlib's unpadded unit chip frame, or None."""
    # A grey border keeps the whole chip inside the image, so that the measured chip sampling is
    # affine everywhere (dlib fills outside pixels with 0); both detectors see the same image.
    border = round(0.3 * max(img.shape[:2]))
    img = np.pad(img, ((border, border), (border, border), (0, 0)), constant_values=128)
    dets = sorted(detector(img, 1), key=lambda r: -r.area())
    boxes, probs, points = mtcnn.detect(Image.fromarray(img), landmarks=True)
    if not dets or boxes is None:
        return None
    boxes, points = np.asarray(boxes, dtype=np.float64), np.asarray(points, dtype=np.float64)
    d = dets[0]
    box = np.array([d.left(), d.top(), d.right() + 1, d.bottom() + 1], dtype=np.float64)
    overlaps = [iou(box, b) for b in boxes]
    if max(overlaps) < 0.3:
        return None
    pts = points[int(np.argmax(overlaps))]  # (5,2), taken as our convention: pixel i = [i, i+1)
    details = dlib.get_face_chip_details(predictor(img, d), CHIP_SIZE, CHIP_PADDING)
    try:
        fit = dlib_fit(chip_to_image(img, details), CHIP_SIZE)
    except RuntimeError:
        return None
    return to_unpadded(fit, pts - 0.5, CHIP_SIZE, CHIP_PADDING)  # -0.5: to dlib's pixel centres


def astronaut_variants() -> list[np.ndarray]:
    base = Image.fromarray(skimage.data.astronaut())
    out = [base]
    out += [base.rotate(a, Image.Resampling.BILINEAR, fillcolor=(128, 128, 128)) for a in (-20, -10, 10, 20)]
    out += [base.resize((round(512 * s),) * 2, Image.Resampling.BICUBIC) for s in (0.5, 0.75, 1.5)]
    return [np.asarray(im) for im in out]


def lfw_faces() -> list[np.ndarray]:
    grey = (skimage.data.lfw_subset()[:100] * 255).round().astype(np.uint8)  # first 100 are faces
    return [np.asarray(Image.fromarray(g).resize((150, 150), Image.Resampling.BICUBIC).convert("RGB"))
            for g in grey]


@functools.lru_cache(maxsize=4)
def dcgan_with_landmarks(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DCGAN faces where MTCNN finds a face: images (M,3,64,64) in [-1,1] and MTCNN's 5 points
    (M,5,2) in 64-px coordinates (detected at 256 px, where MTCNN is reliable)."""
    from falco.backbones.dcgan import load_dcgan

    gen = load_dcgan()
    with torch.no_grad():
        imgs = gen.synthesize(gen.sample(n, seed))
    mtcnn, keep, points = MTCNN(keep_all=False), [], []
    for i, arr in enumerate(dcgan_faces_uint8(imgs)):
        box, _, lm = mtcnn.detect(Image.fromarray(arr), landmarks=True)
        if box is not None:
            keep.append(i)
            points.append(np.asarray(lm[0], dtype=np.float64) / 4)
    return imgs[keep], torch.tensor(np.stack(points), dtype=torch.float32)


def dcgan_faces_uint8(imgs: torch.Tensor) -> list[np.ndarray]:
    """(N,3,64,64) in [-1,1] -> N uint8 HxWx3 images upscaled to 256 px (bicubic)."""
    imgs = torch.nn.functional.interpolate(imgs, size=256, mode="bicubic", align_corners=False)
    return list(((imgs.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())


def dcgan_faces(n: int, seed: int = 0) -> list[np.ndarray]:
    from falco.backbones.dcgan import load_dcgan

    gen = load_dcgan()
    with torch.no_grad():
        return dcgan_faces_uint8(gen.synthesize(gen.sample(n, seed)))


def measure(images: list[np.ndarray], models) -> np.ndarray:
    images = images + [np.ascontiguousarray(im[:, ::-1]) for im in images]  # and their mirrors
    found = [f for f in (mtcnn_in_chip(img, *models) for img in images) if f is not None]
    print(f"  both detectors agreed on {len(found)} of {len(images)} images")
    return np.stack(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dcgan", type=int, default=150, help="number of DCGAN faces")
    args = parser.parse_args()
    torch.set_num_threads(2)
    models = (*dlib_models(), MTCNN(keep_all=True))
    groups = {"astronaut": measure(astronaut_variants(), models), "lfw": measure(lfw_faces(), models),
              "dcgan": measure(dcgan_faces(args.dcgan), models)}
    for name, pts in groups.items():
        print(f"{name}: {len(pts)} faces, mean\n{pts.mean(0).round(4)}\n  std {pts.std(0).round(4).tolist()}")
    real = np.concatenate([groups["astronaut"], groups["lfw"]])
    template = (real.mean(0) + groups["dcgan"].mean(0)) / 2
    print("MTCNN_TEMPLATE = torch.tensor([")
    for x, y in template:
        print(f"    [{x:.4f}, {y:.4f}],")
    print("], dtype=torch.float64)")


if __name__ == "__main__":
    main()
