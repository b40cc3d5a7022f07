"""End to end on the embedded default: real networks, real configs, small sizes."""

from __future__ import annotations

import csv
import json
import random
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from train import run


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "private" / "records.jsonl").read_text().splitlines()]


def test_four_faces_end_to_end_then_resume(fast_cfg, tmp_path):
    out = tmp_path / "run"
    cfg = fast_cfg("data.identities=4", "method.steps=8", "heldout.enabled=true")
    result = run(cfg, str(out))
    assert result.processed == 4
    images = sorted((out / "release" / "images").glob("*.png"))
    assert len(images) == 4
    for p in images:
        assert len(p.stem) == 16 and set(p.stem) <= set("0123456789abcdef")  # random hex pseudonyms
        im = Image.open(p)
        assert im.size == (64, 64) and not im.info.get("exif") and not im.info.get("icc_profile")
    recs = _records(out)
    assert [r["status"] for r in recs] == ["ok"] * 4
    assert {r["pseudonym"] for r in recs} == {p.stem for p in images}
    with open(out / "private" / "mapping.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    latents = sorted((out / "private" / "latents").rglob("*.pt"))
    assert len(latents) == 4 and all(torch.load(p, weights_only=True).shape == (100,) for p in latents)  # DCGAN z
    s = json.loads((out / "summary.json").read_text())
    assert s["done"] == 4 and s["identity"]["white_box"] is True
    # Held-out figures come first, each labelled; none of their judges is a loss network.
    keys = list(s)
    assert keys.index("heldout") < keys.index("identity") < keys.index("attributes")
    held = s["heldout"]
    assert held["rule"].startswith("held-out") and held["detection"]["selected_inputs"] is False
    assert {"sface", "lightcnn_v4"} <= set(held["identity"])
    for name, j in held["identity"].items():
        assert j["white_box"] is False and name not in ("dlib_resnet", "age_gender")
        assert j["protocol_default"] == "attacker_alignment"
        ident = j["attacker_alignment"]["identification"]
        assert ident["n_evaluated"] == 4 and ident["chance_top1"] == 0.25 and ident["chance_mean_rank"] == 2.5
    assert held["attributes"] and set(held["attributes"]) == set(held["attributes_paired_fake"])
    for name, a in held["attributes"].items():
        assert a["white_box"] is False and a["n"] == 4 and "gender_agreement" in a and name != "age_gender"
    assert "faceapi" in held["attributes"] or "npm" in held["skipped"]["faceapi"]  # no loss uses it here
    assert 0 <= s["detection_rate"] <= 1 and "unrelated_false_match" in s["identity"]
    from benchmarks.preservation import row, table  # the preservation ablation reads these summaries

    r = row(s)
    assert r["n"] == 4 and r["white_box"][0] == "age_gender" and "gender/adience" in r and "top1/sface" in r
    assert table({"default": r}).splitlines()[2].startswith("| default | ")
    # config.yaml holds the numbers the loss used: the recognizer's margin, the attribute weight
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert (written["method"]["margin"], written["method"]["attr_weight"]) == (0.75, 3.0)
    assert written["inversion"]["net"] is None  # the DCGAN default runs no inversion

    # Same run directory again: everything is done, nothing is recomputed or renamed.
    again = run(cfg, str(out))
    assert again.processed == 0 and again.done_before == 4
    assert {r["pseudonym"] for r in _records(out)} == {r["pseudonym"] for r in recs}

    # Lose two records (as if killed before writing them): exactly those two are redone.
    for r in recs[:2]:
        next((out / "private" / "records").rglob(f"*{_slot(r['id'])}.json")).unlink()
    third = run(cfg, str(out))
    assert third.processed == 2 and third.done_before == 2
    assert third.summary["stages_reused"] == {k: True for k in third.summary["stages_reused"]}
    # The inputs' measurements came from the cache (judged_inputs) and give the first run's figures
    # of the inputs (the two redone images are new outputs: their own figures may differ).
    assert third.summary["stages_reused"]["judged_inputs"] and s["stages_reused"]["judged_inputs"] is False
    for inputs_only in ("attributes_paired_fake", "attributes_original_mirrored"):
        assert json.dumps(third.summary["heldout"][inputs_only]) == json.dumps(s["heldout"][inputs_only])
    assert third.summary["identity"]["unrelated_distance_mean"] == s["identity"]["unrelated_distance_mean"]


def _slot(item_id):
    import hashlib

    return hashlib.sha256(item_id.encode()).hexdigest()[:24]


def test_astronaut_photo_and_bad_files(fast_cfg, tmp_path):
    from skimage import data

    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.fromarray(data.astronaut()).save(photos / "astronaut.jpg", quality=95)
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(photos / "sub" / "wall.png")
    (photos / "notes.jpg").write_text("not an image")
    (tmp_path / "labels.csv").write_text("file,Male\nastronaut.jpg,0\nsub/wall.png,1\n")  # her true gender
    out = tmp_path / "run"
    result = run(fast_cfg("data=folder", f"data.root={photos}", f"data.labels={tmp_path / 'labels.csv'}",
                          "method.steps=8"), str(out))
    recs = {r["id"]: r for r in _records(out)}
    assert recs["astronaut.jpg"]["status"] == "ok" and recs["astronaut.jpg"]["labels"] == {"Male": 0}
    truth = result.summary["attributes"]["gender_vs_truth"]  # white-box network against her true gender
    assert (truth["n"], truth["n_women"]) == (1, 1) and truth["originals_right"] in (0.0, 1.0)
    assert recs["sub/wall.png"]["reason"] == "no_face"
    assert recs["notes.jpg"]["reason"] == "not_an_image"
    assert result.summary["done"] == 1 and result.summary["skipped"] == 2
    names = [p.name for p in (out / "release").rglob("*")]
    assert not any("astronaut" in n or "wall" in n for n in names)  # no original names leak


def test_misspelled_key_fails_at_compose_time(fast_cfg):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="marign"):
        fast_cfg("method.marign=0.5")
    with pytest.raises(ConfigCompositionException, match="steps"):
        fast_cfg("method.steps=abc")


def test_inversion_start_without_an_inversion_fails_before_any_stage(fast_cfg, tmp_path):
    with pytest.raises(ValueError, match="method.init=inversion .* inversion=none"):
        run(fast_cfg("method.init=inversion"), str(tmp_path / "run"))
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_max_in_flight_splits_batches_and_no_global_seed_matters(fast_cfg, tmp_path, monkeypatch):
    import falco.module

    parts: list[int] = []
    anonymize = falco.module.AnonymizerModule._anonymize

    def spy(self, batch, on_step=None):
        parts.append(len(batch["index"]))
        return anonymize(self, batch, on_step)

    def memory_rule(*args):
        raise AssertionError("max_in_flight is set: the memory rule must not decide")

    monkeypatch.setattr(falco.module.AnonymizerModule, "_anonymize", spy)
    monkeypatch.setattr(falco.module, "images_that_fit", memory_rule)
    overrides = ("data.identities=3", "method.steps=2", "batch_size=3", "max_in_flight=2",
                 "method.batch_invariant=false", "summary=false", "stages.pool_size=64", "stages.frame_samples=16")
    latents = []
    for seed in (0, 1):  # different global random states, separate caches: every stage is recomputed
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        out = tmp_path / f"run{seed}"
        if seed:  # the same secret work order as the first run (each run draws its own): the same images
            # share a part, so batched rounding is alike and any difference comes from the global state
            (out / "private").mkdir(parents=True)
            shutil.copy(tmp_path / "run0" / "private" / "order.key", out / "private" / "order.key")
        run(fast_cfg(*overrides, cache=tmp_path / f"cache{seed}"), str(out))
        latents.append({p.relative_to(out): torch.load(p, weights_only=True)
                        for p in (out / "private" / "latents").rglob("*.pt")})
    assert parts == [2, 1, 2, 1]  # each batch of 3 in parts of at most max_in_flight
    # Nothing draws from the global random state: the same images come out whatever it is.
    assert len(latents[0]) == 3 and latents[0].keys() == latents[1].keys()
    assert all(torch.equal(latents[0][k], latents[1][k]) for k in latents[0])
