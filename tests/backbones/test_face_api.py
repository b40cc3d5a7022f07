"""The face-api.js age/gender port equals TensorFlow.js running the package's own AgeGenderNet
(tests/fixtures/face_api/expected.json, made by reference.mjs there), and the attribute ensemble
weighs its members equally."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from falco.backbones import face_api as fa
from falco.backbones.base import AttributeEncoder
from falco.backbones.checkpoints import MissingWeights
from falco.backbones.ensemble import AttributeEnsemble

FIXTURE = Path(__file__).parents[1] / "fixtures" / "face_api" / "expected.json"


def _manifest() -> Path:
    try:
        return fa.npm_package_file(fa.NPM_PACKAGE, fa.MANIFEST, "face-api.js age/gender network")
    except MissingWeights:
        pytest.skip("npm package @vladmandic/face-api not unpacked: npm missing at set-up")


def lcg_input(spec: dict) -> torch.Tensor:
    """The fixture's input, rebuilt with the generator reference.mjs used: (N,3,S,S) in 0..255."""
    g = spec["lcg"]
    n, s = spec["n"], spec["size"]
    seed, out = g["seed"], np.empty(n * s * s * 3, np.float32)
    for i in range(len(out)):
        seed = (seed * g["a"] + g["c"]) % g["m"]
        out[i] = np.floor(seed / g["m"] * 256)
    return torch.from_numpy(out.reshape(n, s, s, 3)).permute(0, 3, 1, 2)


def test_port_equals_tensorflow_js():
    ref = json.loads(FIXTURE.read_text())
    net = fa.AgeGenderNet(fa.read_tfjs(_manifest()))
    with torch.no_grad():
        age, gender, pooled = net(lcg_input(ref["input"]))
    torch.testing.assert_close(age, torch.tensor(ref["age"]), rtol=0, atol=1e-3)  # years
    torch.testing.assert_close(gender.flatten(), torch.tensor(ref["gender_logits"]), rtol=0, atol=1e-4)
    torch.testing.assert_close(pooled.flatten(), torch.tensor(ref["pooled"]), rtol=0, atol=1e-4)


def test_read_tfjs_refuses_a_short_file(tmp_path):
    manifest = _manifest()
    (tmp_path / "m.json").write_text(manifest.read_text())
    data = (manifest.parent / "age_gender_model.bin").read_bytes()
    (tmp_path / "age_gender_model.bin").write_bytes(data + b"\0")
    with pytest.raises(ValueError, match="left over"):
        fa.read_tfjs(tmp_path / "m.json")


def test_encoder_reads_the_astronaut_as_a_woman():
    import skimage.data

    from falco.detect import FaceDetector

    image = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    det = FaceDetector().detect_tensor(image)[0]
    lm = torch.as_tensor(det.landmarks, dtype=torch.float32)[None]
    enc = fa.load_face_api(str(_manifest()))
    with torch.no_grad():
        p = enc.predict(image, enc.crop_thetas(lm, image.shape[-2:]))
        f = enc.features(image, enc.crop_thetas(lm, image.shape[-2:]))
    assert float(p["male"]) < 0.5 and 20 < float(p["age"]) < 60
    assert f.shape == (1, 768)


class _Const(AttributeEncoder):
    def __init__(self, name: str, crop: str, width: int, value: float) -> None:
        super().__init__()
        self.name, self.crops, self.width, self.value = name, (crop,), width, value

    def features(self, image, thetas=None):
        return torch.full((image.shape[0], self.width), self.value) * image.mean((1, 2, 3))[:, None]

    def crop_thetas(self, landmarks, image_hw):
        return {self.crops[0]: torch.zeros(len(landmarks), 2, 3)}


def test_ensemble_weighs_members_equally():
    a, b = _Const("a", "ca", 768, 1.0), _Const("b", "cb", 16, 3.0)
    ens = AttributeEnsemble([a, b])
    x = torch.full((2, 3, 8, 8), 0.5)
    f = ens.features(x, ens.crop_thetas(torch.zeros(2, 5, 2), (8, 8)))
    assert f.shape == (2, 1536)
    assert torch.equal(f[:, 768:], torch.full((2, 768), 1.5))  # b's 16 values stretched to 768
    assert ens.name == "a+b" and set(ens.crop_thetas(torch.zeros(1, 5, 2), (8, 8))) == {"ca", "cb"}
    with pytest.raises(ValueError, match="collide"):
        AttributeEnsemble([a, _Const("c", "ca", 8, 1.0)])


def test_optional_member_left_out_when_its_weights_are_missing(capsys):
    from omegaconf import OmegaConf

    from falco.backbones.ensemble import load_ensemble

    members = [OmegaConf.create({"_target_": "falco.backbones.age_gender.load_age_gender"}),
               OmegaConf.create({"_target_": "falco.backbones.face_api.load_face_api",
                                 "manifest": "/nonexistent/manifest.json"})]
    with pytest.raises(Exception, match="load_face_api"):
        load_ensemble(members)  # not optional: the run fails, naming the loader
    enc = load_ensemble(members, optional=[1])
    assert enc.name == "age_gender" and "left out of the loss" in capsys.readouterr().out


def test_square_box_crop_frames_the_box():
    # a white square box on black: the crop of exactly that box is all white; of a box twice as
    # wide (a square twice the side, centred) has the white square in its middle half
    img = torch.zeros(1, 1, 40, 40)
    img[:, :, 10:20, 10:20] = 1.0
    inner = fa.square_box_crop(img, torch.tensor([[10.0, 10.0, 20.0, 20.0]]), 8)
    assert torch.all(inner == 1.0)
    wide = fa.square_box_crop(img, torch.tensor([[5.0, 12.0, 25.0, 18.0]]), 8)[0, 0]
    assert torch.all(wide[2:6, 2:6] == 1.0) and float(wide[0].max()) == 0.0 and float(wide[:, 0].max()) == 0.0
    off = fa.square_box_crop(img, torch.tensor([[-40.0, 0.0, -20.0, 20.0]]), 8)  # outside: black
    assert float(off.abs().max()) == 0.0


def test_judge_reads_the_astronaut_as_a_woman_from_the_attackers_box():
    import skimage.data

    from falco.backbones.yunet import load_yunet

    image = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    box = torch.as_tensor(load_yunet().detect_tensor(image)[0].box, dtype=torch.float32)[None]
    judge = fa.load_face_api_judge(str(_manifest()))
    assert judge.name == "faceapi" and not any(p.requires_grad for p in judge.parameters())
    with torch.no_grad():
        p = judge.predict(image, box)
        mirrored = judge.predict(image.flip(-1), box[:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1, -1, 1]) + torch.tensor(
            [image.shape[-1], 0.0, image.shape[-1], 0]))
    assert float(p["male"]) < 0.2 and float(mirrored["male"]) < 0.2  # she is a woman, both ways round
    assert 25 < float(p["age"]) < 60 and abs(float(p["age"]) - float(mirrored["age"])) < 8
