"""Face alignment as similarity transforms, expressed as `affine_grid` thetas.

Points are continuous pixel coordinates (x, y): pixel i spans [i, i+1). Landmark order is
MTCNN's: left eye, right eye, nose tip, left mouth corner, right mouth corner (left/right as
seen in the image). A *template* gives the same 5 points in a crop's unit coordinates
([0, 1] x [0, 1], origin top-left), so one template serves every output size.
"""

from __future__ import annotations

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
    pre = torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    post = torch.tensor([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0]], dtype=torch.float64)
    full = torch.cat([unit_to_px.double(), torch.tensor([[[0.0, 0.0, 1.0]]]).double().expand(n, -1, -1)], 1)
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
