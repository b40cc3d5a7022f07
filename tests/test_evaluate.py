"""evaluate.py on a real (small) run: metrics present, labelled, and sane on known cases."""

from __future__ import annotations

import json

from hydra import compose, initialize_config_dir

from evaluate import evaluate
from evaluation.attribute_classifier import AttributeClassifier, ClassifierConfig, save_classifier
from evaluation.make_tables import main as make_tables
from falco.detect import FaceDetector
from tests.conftest import ROOT
from train import run


def _eval(run_dir, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return evaluate(compose("evaluate", overrides=[f"run_dir={run_dir}", "logger=csv", *overrides]))


def test_evaluate_run_baselines_and_tables(fast_cfg, tmp_path):
    out = tmp_path / "run"
    run(fast_cfg("data.identities=6", "method.steps=20"), str(out))
    names = ("Smiling", "Male")  # an (untrained) attribute classifier: the hook, not its skill
    clf = save_classifier(AttributeClassifier(ClassifierConfig("small_cnn", 32, names, 8)), tmp_path / "clf.pt")
    falco = _eval(out, f"attribute_classifier={clf}")
    m = falco["metrics"]
    assert m["reid_top1@dlib_resnet"]["white_box"] is True  # the loss's own recognizer
    # the run's config.yaml holds the loss's numbers, so the evaluation labels the run with them
    assert falco["params"] == {"margin": 0.75, "id_weight": 10.0, "attr_weight": 3.0}
    for key in ("reid_top5@dlib_resnet", "reid_native@dlib_resnet", "false_match_unrelated@dlib_resnet",
                "detection", "landmark_nme", "gender_agreement", "age_mae", "attr_agreement_mean@clf",
                "attr_agreement.Smiling@clf"):
        assert key in m and m[key]["value"] is not None, key
    assert "attr_accuracy_mean@clf" not in m  # synthetic faces carry no attribute labels
    assert all(v["white_box"] is not None for k, v in m.items() if k.startswith(("reid", "false_match")))
    # The held-out protocol comes first, labelled held-out, with chance beside re-ID.
    first = list(m)[0]
    assert first.startswith("heldout_")
    assert all(v["white_box"] is False for k, v in m.items() if k.startswith("heldout"))
    for key in ("heldout_reid_top1@sface", "heldout_chance_top1@sface", "heldout_mean_rank@lightcnn_v4",
                "heldout_diversity_collisions@sface", "heldout_gender_agreement@adience",
                "heldout_age_abs_diff@adience", "heldout_detection@yunet"):
        assert m[key]["value"] is not None, key
    assert m["heldout_chance_top1@sface"]["value"] == 1 / 6
    assert 0 < m["heldout_reid_top1_p@sface"]["value"] <= 1  # top-1 tested against chance
    assert falco["details"]["heldout"]["identity"]["sface"]["protocol_default"] == "attacker_alignment"
    assert (out / "eval" / "falco" / "summary.json").is_file()
    logged = next((out / "eval" / "falco").rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    assert {f"eval/{k}" for k, v in m.items() if v["value"] is not None} <= set(logged)  # every metric logged

    # Originals judged against themselves: every one is identified.
    same = _eval(out, "baseline=original")
    assert same["metrics"]["reid_top1@dlib_resnet"]["value"] == 1.0
    assert same["metrics"]["heldout_reid_top1@sface"]["value"] == 1.0  # held-out judges re-identify them too
    assert same["metrics"]["heldout_gender_agreement@adience"]["value"] == 1.0
    assert same["metrics"]["reid_top1@dlib_resnet"]["white_box"] is False  # no loss involved
    blur = _eval(out, "baseline=blur")
    assert blur["metrics"]["gender_agreement"]["white_box"] is False  # no loss used the network on a baseline
    # Blur keeps identity that FALCO removes: strictly more of the blurred faces are re-identified.
    blur_top1, falco_top1 = (r["metrics"]["reid_top1@dlib_resnet"]["value"] for r in (blur, falco))
    assert blur_top1 > falco_top1, (blur_top1, falco_top1)

    written = make_tables([str(tmp_path / "tables"), str(out)])
    main_md = written["main.md"].read_text()
    assert "falco" in main_md and "blur" in main_md
    assert written["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "eval" / "original" / "summary.json").read_text())["method"] == "original"



def test_summary_and_evaluate_report_the_same_detection_rate(fast_cfg, tmp_path, monkeypatch):
    """One reader (falco/rundir.py) and one MTCNN wrapper (falco/detect.py): summary.json and
    evaluate.py count the same faces on the same release images. The wrapper is patched to drop
    the faces of images read from files (8-bit pixels; the stages' generator samples are not)
    whose pixel sum is odd: a figure computed by other detector code, or on other pixels, would
    not follow that rule."""
    real = FaceDetector.detect_tensor

    def detect_tensor(self, images, chunk=64):
        pixels = (images.float() + 1) * 127.5
        read_back = bool(((pixels - pixels.round()).abs() < 1e-3).all())
        odd = (pixels.round().sum(dim=(1, 2, 3)).long() % 2 == 1) & read_back
        return [None if o else d for d, o in zip(real(self, images, chunk), odd.tolist(), strict=True)]

    monkeypatch.setattr(FaceDetector, "detect_tensor", detect_tensor)
    out = tmp_path / "run"
    run(fast_cfg("data.identities=8", "method.steps=6", "detector.min_prob=0.85"), str(out))
    summary = json.loads((out / "summary.json").read_text())
    # evaluate.py's detection_threshold defaults to the run's own detector.min_prob
    ev = _eval(out, "heldout.enabled=false", "judges.dlib_resnet.enabled=false")
    detection = ev["details"]["detection"]
    assert detection["n_images"] == summary["done"] == 8 and detection["min_prob"] == 0.85
    assert detection["n_detected"] < 8  # the patch took effect (odd sums: 1 in 2 images)
    assert ev["metrics"]["detection"]["value"] == summary["detection_rate"]
    assert detection["n_detected"] == round(summary["detection_rate"] * summary["done"])
    # the landmark error is measured on the faces found
    assert ev["details"]["landmarks"]["n_missing_anonymized"] == 8 - detection["n_detected"]
