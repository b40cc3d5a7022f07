"""Face alignment as similarity transforms, expressed as `affine_grid` thetas.

Points are continuous pixel coordinates (x, y): pixel i spans [i, i+1). Landmark order is
MTCNN's: left eye, right eye, nose tip, left mouth corner, right mouth corner (left/right as
seen in the image). A *template* gives the same 5 points in a crop's unit coordinates
([0, 1] x [0, 1], origin top-left), so one template serves every output size.
"""

from __future__ import annotations

import numpy as np
import torch


def fit_similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection).

    src, dst: (N, K, 2). Returns A (N, 2, 3) with dst ~= src @ A[:, :, :2].T + A[:, :, 2].
    """
    src = src.double()
    dst = dst.double()
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    s, d = src - mu_s, dst - mu_d
    # Closed form for the 2-D similarity: [a -b; b a] minimizing sum |A s + t - d|^2.
    denom = (s**2).sum((1, 2)).clamp_min(1e-12)
    a = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(1) / denom
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1) / denom
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (N,2,2)
    t = mu_d.squeeze(1) - (rot @ mu_s.squeeze(1).unsqueeze(-1)).squeeze(-1)
    return torch.cat([rot, t.unsqueeze(-1)], -1).float()


def theta_from_landmarks(landmarks: torch.Tensor, image_hw: tuple[int, int],
                         template: torch.Tensor) -> torch.Tensor:
    """Theta (N,2,3) for `affine_grid` that crops the template's frame out of the image.

    landmarks: (N, K, 2) pixels in an image of size image_hw = (H, W).
    template: (K, 2) the same points in the crop's unit coordinates.
    """
    n = landmarks.shape[0]
    tpl = template.to(landmarks).unsqueeze(0).expand(n, -1, -1)
    unit_to_px = fit_similarity(tpl, landmarks)  # crop unit coords -> image pixels
    h, w = image_hw
    # Crop output normalized u in [-1,1] -> unit c = (u + 1) / 2; image pixel p -> x = 2p/W - 1.
    on = {"dtype": torch.float64, "device": landmarks.device}
    pre = torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]], **on)
    post = torch.tensor([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0]], **on)
    full = torch.cat([unit_to_px.double(), torch.tensor([[[0.0, 0.0, 1.0]]], **on).expand(n, -1, -1)], 1)
    return (post @ full @ pre).float()


def map_points(points: torch.Tensor, theta: torch.Tensor, image_hw: tuple[int, int],
               out_size: int) -> torch.Tensor:
    """Where image points (N,K,2, pixels) land in the crop of `out_size` that theta selects."""
    h, w = image_hw
    x = torch.stack([2 * points[..., 0] / w - 1, 2 * points[..., 1] / h - 1], -1).double()
    a, t = theta[:, :, :2].double(), theta[:, :, 2].double()
    u = torch.linalg.solve(a.unsqueeze(1), (x - t.unsqueeze(1)).unsqueeze(-1)).squeeze(-1)
    return ((u + 1) / 2 * out_size).float()


def template_with_padding(template: torch.Tensor, padding: float) -> torch.Tensor:
    """dlib-style padding: the unpadded unit box grows by `padding` on every side."""
    return (template + padding) / (1 + 2 * padding)


def ffhq_theta(landmarks: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """FFHQ-style alignment (the StyleGAN / e4e crop) from 5 points (N,5,2) -> theta (N,2,3).

    FFHQ's recipe only uses the eye centres and the mouth corners, which MTCNN provides: the
    crop is a square centred slightly below the eyes, oriented along the eye-to-eye and
    eye-to-mouth axes, sized max(2 x eye distance, 1.8 x eye-to-mouth distance) per half-side.
    """
    lm = landmarks.double()
    eye_l, eye_r, mouth_l, mouth_r = lm[:, 0], lm[:, 1], lm[:, 3], lm[:, 4]
    eye_avg, eye_to_eye = (eye_l + eye_r) / 2, eye_r - eye_l
    eye_to_mouth = (mouth_l + mouth_r) / 2 - eye_avg
    x = eye_to_eye - torch.stack([-eye_to_mouth[:, 1], eye_to_mouth[:, 0]], -1)
    x = x / x.norm(dim=-1, keepdim=True)
    half = torch.maximum(eye_to_eye.norm(dim=-1) * 2.0, eye_to_mouth.norm(dim=-1) * 1.8)
    x = x * half.unsqueeze(-1)
    y = torch.stack([-x[:, 1], x[:, 0]], -1)
    c = eye_avg + eye_to_mouth * 0.1
    h, w = image_hw
    # Output normalized (U, V) in [-1,1] -> pixel c + U x + V y -> input normalized 2p/size - 1.
    row_x = torch.stack([2 * x[:, 0] / w, 2 * y[:, 0] / w, 2 * c[:, 0] / w - 1], -1)
    row_y = torch.stack([2 * x[:, 1] / h, 2 * y[:, 1] / h, 2 * c[:, 1] / h - 1], -1)
    return torch.stack([row_x, row_y], 1).float()


# Typical MTCNN landmarks inside its own box (fractions of the box's width and height), from
# 42 detections (48 synthetic faces + skimage's astronaut), symmetrized: used to align a face
# whose landmarks are implausible when `stages.alignment_failure=box`.
BOX_LANDMARKS = torch.tensor([[0.282, 0.38], [0.718, 0.38], [0.5, 0.59], [0.313, 0.77], [0.687, 0.77]])


def box_landmarks(box: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(5,2) pixel landmarks placed by BOX_LANDMARKS in a detector box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return BOX_LANDMARKS * torch.tensor([x1 - x0, y1 - y0]) + torch.tensor([x0, y0])


def implausible_landmarks(landmarks: np.ndarray | torch.Tensor, box: np.ndarray | torch.Tensor) -> str | None:
    """Why 5 landmarks (eyes, nose, mouth corners) cannot align a face, or None when they can.

    Rejected: a point far outside the box, eyes closer than 15% of the box width, or a mouth
    that is not below the eyes in the face's own frame (eye-to-mouth vector more than 60
    degrees off the eye line's normal, or shorter than 0.4 / longer than 3 eye distances).
    """
    lm = torch.as_tensor(np.asarray(landmarks, dtype=np.float64))
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    if not torch.isfinite(lm).all() or w <= 0 or h <= 0:
        return "non-finite landmarks or empty box"
    inside = ((lm[:, 0] > x0 - 0.25 * w) & (lm[:, 0] < x1 + 0.25 * w)
              & (lm[:, 1] > y0 - 0.25 * h) & (lm[:, 1] < y1 + 0.25 * h))
    if not bool(inside.all()):
        return "landmarks outside the face box"
    eye_vec = lm[1] - lm[0]
    eye_dist = float(eye_vec.norm())
    if eye_dist < 0.15 * w:
        return f"eyes {eye_dist:.1f} px apart in a {w:.0f} px box"
    down = torch.stack([-eye_vec[1], eye_vec[0]]) / eye_dist  # the eye line's normal, pointing to the mouth
    mouth_vec = (lm[3] + lm[4]) / 2 - (lm[0] + lm[1]) / 2
    length = float(mouth_vec.norm())
    if not 0.4 * eye_dist <= length <= 3 * eye_dist or float(mouth_vec @ down) < 0.5 * length:
        return "mouth not below the eyes"
    return None
