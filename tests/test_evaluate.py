"""evaluate.py on a real (small) run: metrics present, labelled, and sane on known cases."""

from __future__ import annotations

import json

from hydra import compose, initialize_config_dir

from evaluate import evaluate
from evaluation.make_tables import main as make_tables
from tests.conftest import ROOT
from train import run


def _eval(run_dir, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return evaluate(compose("evaluate", overrides=[f"run_dir={run_dir}", "logger=csv", *overrides]))


def test_evaluate_run_baselines_and_tables(fast_cfg, tmp_path):
    out = tmp_path / "run"
    run(fast_cfg("data.identities=6", "method.steps=20"), str(out))
    falco = _eval(out)
    m = falco["metrics"]
    assert m["reid_top1@dlib_resnet"]["white_box"] is True  # the loss's own recognizer
    for key in ("reid_top5@dlib_resnet", "reid_native@dlib_resnet", "false_match_unrelated@dlib_resnet",
                "detection", "landmark_nme", "gender_agreement", "age_mae"):
        assert key in m and m[key]["value"] is not None, key
    assert (out / "eval" / "falco" / "summary.json").is_file()
    assert list((out / "eval" / "falco").rglob("metrics.csv"))  # logged through the CSV logger

    # Originals judged against themselves: every one is identified.
    same = _eval(out, "baseline=original")
    assert same["metrics"]["reid_top1@dlib_resnet"]["value"] == 1.0
    assert same["metrics"]["reid_top1@dlib_resnet"]["white_box"] is False  # no loss involved
    blur = _eval(out, "baseline=blur")
    assert blur["metrics"]["reid_top1@dlib_resnet"]["value"] >= falco["metrics"]["reid_top1@dlib_resnet"]["value"]

    written = make_tables([str(tmp_path / "tables"), str(out)])
    main_md = written["main.md"].read_text()
    assert "falco" in main_md and "blur" in main_md
    assert written["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "eval" / "original" / "summary.json").read_text())["method"] == "original"
