"""Fake CelebA-HQ and LFW trees in their real on-disk formats, with faces from the embedded
generator, anonymized end to end: labels and pairs reach the release keyed by pseudonyms."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from falco.backbones.dcgan import load_dcgan
from falco.data.celebahq import ATTRIBUTE_NAMES
from falco.data.sources import synthetic
from tests.conftest import FAST, compose_train
from tests.data import write_fake_celebahq, write_fake_lfw
from train import run


@pytest.fixture(scope="module")
def generated_faces() -> list[Image.Image]:
    """Six MTCNN-detectable faces from the DCGAN (128 px photos)."""
    source = synthetic(load_dcgan(), identities=6)
    return [Image.fromarray(source.read(item)) for item in source.items]


def _csv(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_celebahq_tree_test_split_with_attributes(generated_faces, tmp_path):
    expected = write_fake_celebahq(tmp_path / "CelebAMask-HQ", images=generated_faces)
    cfg = compose_train([*FAST, f"cache_dir={tmp_path / 'cache'}", "data=celebahq",
                         f"data.root={tmp_path / 'CelebAMask-HQ'}", "data.split=test", "method.steps=2"])
    result = run(cfg, str(tmp_path / "run"))
    test_ids = {k for k, v in expected.items() if v["split"] == "test"}
    assert result.processed == len(test_ids) == 2 and result.skipped == 0
    mapping = {r["pseudonym"]: r["id"] for r in _csv(tmp_path / "run" / "private" / "mapping.csv")}
    assert set(mapping.values()) == test_ids
    labels = _csv(tmp_path / "run" / "release" / "labels.csv")
    assert len(labels) == 2 and set(labels[0]) == {"pseudonym", *ATTRIBUTE_NAMES}
    for row in labels:
        truth = expected[mapping[row["pseudonym"]]]["labels"]
        assert {k: int(v) for k, v in row.items() if k != "pseudonym"} == truth
    assert not (tmp_path / "run" / "release" / "pairs.csv").exists()


def test_lfw_tree_keyed_pairs_rekeyed(generated_faces, tmp_path, monkeypatch):
    ids = write_fake_lfw(tmp_path / "lfw")
    for k, item_id in enumerate(sorted(ids)):  # a different generated face per file
        generated_faces[k % len(generated_faces)].save(tmp_path / "lfw" / item_id, quality=95)
    monkeypatch.setenv("TEST_TREE_KEY", "8f1e" * 16)
    keyed = ["method=keyed", "method.key_env=TEST_TREE_KEY", "method.center_samples=64", "method.candidates=8",
             "inversion=none"]
    cfg = compose_train([*(o for o in FAST if not o.startswith("inversion")), f"cache_dir={tmp_path / 'cache'}",
                         "data=lfw", f"data.root={tmp_path / 'lfw'}", "method.steps=2", *keyed])
    result = run(cfg, str(tmp_path / "run"))
    assert result.processed == 6 and result.skipped == 0
    name = {r["id"]: r["pseudonym"] for r in _csv(tmp_path / "run" / "private" / "mapping.csv")}
    pairs = _csv(tmp_path / "run" / "release" / "pairs.csv")
    # pairs.txt of the fake tree: Ann 1-2 same, Bob 1-2 same, Ann 1 - Bob 2, Ann 3 - Cid 1 different;
    # released in pseudonym order (each row's two sorted, rows sorted), not in pairs.txt's order
    truth = [("Ann_A/Ann_A_0001.jpg", "Ann_A/Ann_A_0002.jpg", "1"),
             ("Bob_B/Bob_B_0001.jpg", "Bob_B/Bob_B_0002.jpg", "1"),
             ("Ann_A/Ann_A_0001.jpg", "Bob_B/Bob_B_0002.jpg", "0"),
             ("Ann_A/Ann_A_0003.jpg", "Cid_C/Cid_C_0001.jpg", "0")]
    rows = sorted((*sorted((name[a], name[b])), same) for a, b, same in truth)
    assert pairs == [{"pseudonym_a": a, "pseudonym_b": b, "same": same} for a, b, same in rows]
    assert "Ann_A" not in (tmp_path / "run" / "release" / "pairs.csv").read_text()
