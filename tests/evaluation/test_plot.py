"""The privacy-utility plot is a valid PNG and uses every run that has both metrics."""

import math

import pytest

from evaluation.plot import plot_sweep, privacy_utility_points

pytest.importorskip("matplotlib")

REID, UTIL = "reid_top1@facenet_vggface2", "attr_agreement_mean@celeba_resnet18"


def _run(name, method, reid, util, params):
    return {"run": name, "method": method, "dataset": "celebahq", "params": params,
            "metrics": {REID: {"value": reid, "judge": "facenet_vggface2", "white_box": False},
                        UTIL: {"value": util, "judge": "celeba_resnet18", "white_box": None}}}


SWEEP = [_run(f"falco_m{m}", "falco", 0.01 + m / 10, 0.8 + m / 10, {"margin": m}) for m in (0.0, 0.5, 1.0)]
SWEEP += [_run("blur_s8", "blur", 0.2, 0.6, {"sigma": 8}), _run("broken", "falco", math.nan, 0.9, {})]


def test_points_follow_the_sweep_and_skip_incomplete_runs():
    points = privacy_utility_points(SWEEP, reid_metric=REID, utility_metric=UTIL)
    assert [p["run"] for p in points] == ["falco_m0.0", "falco_m0.5", "falco_m1.0", "blur_s8"]
    assert points[1]["param"] == 0.5 and points[3]["param"] is None


def test_plot_is_a_valid_png(tmp_path):
    out = tmp_path / "plots" / "privacy_utility.png"
    path = plot_sweep(SWEEP, out, reid_metric=REID, utility_metric=UTIL)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
        assert im.size == (720, 540)


def test_plot_without_points_explains(tmp_path):
    with pytest.raises(ValueError, match="no points"):
        plot_sweep(SWEEP, tmp_path / "x.png", reid_metric="nope", utility_metric=UTIL)
