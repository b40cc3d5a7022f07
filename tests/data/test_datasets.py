"""Dataset scans on fake trees in the real on-disk formats: folder, CelebA-HQ, LFW."""

from __future__ import annotations

import re

import pytest

from falco.data.celebahq import ATTRIBUTE_NAMES, scan_celebahq
from falco.data.folder import scan_folder
from falco.data.imageio import read_rgb
from falco.data.items import DatasetError, SkipImage
from falco.data.lfw import read_pairs, scan_lfw
from tests.data import face, write_fake_celebahq, write_fake_lfw

ANNO = "CelebAMask-HQ-attribute-anno.txt"
MAPPING = "CelebA-HQ-to-CelebA-mapping.txt"


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# --- any folder ---------------------------------------------------------------------------


def test_folder_recursive_sorted_case_insensitive(tmp_path):
    for rel in ["b/z.JPG", "a.png", "b/c/d.Jpeg", "b/a.webp", "x.bmp", "é/ü.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        face(16).save(tmp_path / rel, format="BMP")  # content does not matter to the scan
    for rel in ["notes.txt", ".hidden.jpg", "._a.jpg", ".cache/e.png", "b/.x.jpg.1234.tmp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "b" / "loop").symlink_to(tmp_path / "b")  # a cycle must not hang the scan
    items = scan_folder(tmp_path)
    ids = [item.id for item in items]
    assert ids == ["a.png", "b/a.webp", "b/c/d.Jpeg", "b/z.JPG", "x.bmp", "é/ü.png"]
    assert all(item.path == tmp_path / item.id and item.identity is None for item in items)
    assert [item.id for item in scan_folder(tmp_path, limit=2)] == ids[:2]


def test_folder_errors(tmp_path):
    assert "not found" in error_of(scan_folder, tmp_path / "absent")
    (tmp_path / "file.jpg").write_bytes(b"x")
    assert "not a folder" in error_of(scan_folder, tmp_path / "file.jpg")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    assert "no image files" in error_of(scan_folder, tmp_path / "empty")
    assert "limit" in error_of(scan_folder, tmp_path, limit=0)


def test_folder_labels_from_a_csv_file(tmp_path):
    from falco.data.sources import folder

    for rel in ["a.png", "sub/b.png", "c.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        face(16).save(tmp_path / rel)
    labels = tmp_path / "labels.csv"
    labels.write_text("file,Male,age,note\na.png,1,31.5,\nsub/b.png,0,,glasses\n")
    items = {i.id: i.labels for i in scan_folder(tmp_path, labels=labels)}
    # numbers are read as numbers, an empty cell is no label, an image without a row has none
    assert items == {"a.png": {"Male": 1, "age": 31.5}, "sub/b.png": {"Male": 0, "note": "glasses"}, "c.png": {}}
    # the labels are part of the source's fingerprint: new labels, new cached entries
    fp = lambda: folder(None, str(tmp_path), labels=str(labels)).fingerprint()  # noqa: E731
    before = fp()
    labels.write_text("file,Male\na.png,0\n")
    assert fp() != before
    assert fp()["files"] != folder(None, str(tmp_path)).fingerprint()["files"]


@pytest.mark.parametrize(("text", "message"), [
    (None, "labels file not found"),
    ("name,Male\na.png,1\n", "first line must be the header `file,<label>"),
    ("file\na.png\n", "first line must be the header"),
    ("file,Male\nz.png,1\n", "line 2: 'z.png' is not an image under"),
    ("file,Male\na.png,1\na.png,0\n", "line 3: 'a.png' is listed twice"),
    ("file,Male\na.png,1,2\n", "line 2: 3 cells, the header has 2"),
    ("file,Male\na.png,M\n", "line 2: Male must be 1 (man) or 0 (woman), not 'M'"),
])
def test_folder_labels_errors_name_the_file_and_line(tmp_path, text, message):
    face(16).save(tmp_path / "a.png")
    labels = tmp_path / "labels.csv"
    if text is not None:
        labels.write_text(text)
    assert message in error_of(scan_folder, tmp_path, labels=labels)


# --- CelebA-HQ ----------------------------------------------------------------------------


def test_celebahq_all_with_attributes_and_identities(tmp_path):
    expected = write_fake_celebahq(tmp_path)
    items = scan_celebahq(tmp_path)
    assert [i.id for i in items] == list(expected)  # ordered by HQ index: 0 1 2 3 10 11
    for item in items:
        assert item.path == tmp_path / item.id and item.path.is_file()
        assert item.identity == expected[item.id]["identity"]
        assert item.labels == expected[item.id]["labels"]
        assert list(item.labels) == list(ATTRIBUTE_NAMES)
    assert len(ATTRIBUTE_NAMES) == 40 == len(set(ATTRIBUTE_NAMES))
    assert [i.id for i in scan_celebahq(tmp_path, limit=4)] == list(expected)[:4]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_celebahq_splits_through_the_mapping(tmp_path, split):
    expected = write_fake_celebahq(tmp_path)
    ids = [item.id for item in scan_celebahq(tmp_path, split=split, require_identity=True)]
    assert ids == [i for i, info in expected.items() if info["split"] == split]
    assert ids  # every split has images in the fake tree


def test_celebahq_celeba_files_in_root_or_given_explicitly(tmp_path):
    write_fake_celebahq(
        tmp_path / "a", partition_at="list_eval_partition.txt", identity_at="identity_CelebA.txt"
    )
    assert len(scan_celebahq(tmp_path / "a", split="test", require_identity=True)) == 2
    write_fake_celebahq(tmp_path / "b", partition_at="my/split.txt", identity_at="my/ids.txt")
    assert scan_celebahq(tmp_path / "b")[0].identity is None  # not found where we look
    items = scan_celebahq(
        tmp_path / "b", split="val", partition_file="my/split.txt", identity_file=tmp_path / "b/my/ids.txt"
    )
    assert [(i.id, i.identity) for i in items] == [("CelebA-HQ-img/10.jpg", "1001")]


def test_celebahq_missing_celeba_files_are_named(tmp_path):
    write_fake_celebahq(tmp_path, partition_at=None, identity_at=None)
    assert all(item.identity is None for item in scan_celebahq(tmp_path))
    message = error_of(scan_celebahq, tmp_path, split="train")
    assert "list_eval_partition.txt" in message and "expected format" in message
    assert "celeba/Eval/list_eval_partition.txt" in message  # says where it looked
    message = error_of(scan_celebahq, tmp_path, require_identity=True)
    assert "identity_CelebA.txt" in message and "expected format" in message
    assert "not found" in error_of(scan_celebahq, tmp_path, identity_file="nope.txt")
    assert "unknown CelebA-HQ split" in error_of(scan_celebahq, tmp_path, split="dev")


def edit_line(path, number, new_line) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = new_line
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "line, new_line, needle",
    [
        (1, "six", "line 1: expected the image count"),
        (2, "Smiling Young", "line 2: expected the 40 CelebA attribute names"),
        (4, "1.jpg " + "1 " * 39, "line 4: expected `<i>.jpg` followed by 40 values"),
        (5, "2.jpg " + "1 " * 39 + "2", "line 5: expected `<i>.jpg` followed by 40 values"),
        (6, "face.jpg " + "1 " * 40, "line 6: expected `<i>.jpg`"),
    ],
)
def test_celebahq_malformed_attribute_file_is_named(tmp_path, line, new_line, needle):
    write_fake_celebahq(tmp_path)
    edit_line(tmp_path / ANNO, line, new_line)
    message = error_of(scan_celebahq, tmp_path)
    assert str(tmp_path / ANNO) in message and needle in message


def test_celebahq_other_malformed_files_are_named(tmp_path):
    write_fake_celebahq(tmp_path)
    anno = tmp_path / ANNO
    anno.write_text(anno.read_text().replace("6\n", "7\n", 1))
    assert re.search(r"announces 7 images, the file lists 6", error_of(scan_celebahq, tmp_path))
    anno.write_text(anno.read_text().replace("7\n", "6\n", 1))
    edit_line(tmp_path / MAPPING, 3, "1 99094")
    message = error_of(scan_celebahq, tmp_path, split="train")
    assert f"{tmp_path / MAPPING}, line 3: expected `<hq index> <celeba index> <celeba file>`" in message
    edit_line(tmp_path / MAPPING, 3, "7 99094 099095.jpg")  # HQ image 1 no longer mapped
    assert "no row for CelebA-HQ image 1.jpg" in error_of(scan_celebahq, tmp_path, split="train")
    edit_line(tmp_path / MAPPING, 3, "1 99094 099095.jpg")
    partition = tmp_path / "celeba/Eval/list_eval_partition.txt"
    edit_line(partition, 2, "000002.jpg 3")
    message = error_of(scan_celebahq, tmp_path, split="val")
    assert f"{partition}, line 2: expected `<celeba file> <0|1|2>`" in message
    edit_line(partition, 2, "000003.jpg 0")
    edit_line(partition, 3, "000004.jpg 0")  # drops CelebA 81060 (HQ image 3)
    assert "no row for CelebA file 081060.jpg" in error_of(scan_celebahq, tmp_path, split="val")


def test_celebahq_missing_image_stays_listed_and_reads_as_missing(tmp_path):
    write_fake_celebahq(tmp_path)
    (tmp_path / "CelebA-HQ-img" / "2.jpg").unlink()
    item = {i.id: i for i in scan_celebahq(tmp_path)}["CelebA-HQ-img/2.jpg"]
    with pytest.raises(SkipImage) as caught:
        read_rgb(item.path)
    assert caught.value.reason == "missing"
    (tmp_path / "CelebA-HQ-img" / "0.jpg").rename(tmp_path / "moved.jpg")
    for path in (tmp_path / "CelebA-HQ-img").iterdir():
        path.unlink()
    (tmp_path / "CelebA-HQ-img").rmdir()
    assert "CelebA-HQ image folder not found" in error_of(scan_celebahq, tmp_path)


# --- LFW ----------------------------------------------------------------------------------


def test_lfw_people_folders_and_pairs(tmp_path):
    expected = write_fake_lfw(tmp_path / "lfw")
    items = scan_lfw(tmp_path / "lfw")
    assert {i.id: i.identity for i in items} == expected
    assert [i.id for i in items] == sorted(expected)
    assert all(i.path == tmp_path / "lfw" / i.id and i.path.is_file() for i in items)
    assert len(scan_lfw(tmp_path / "lfw", limit=3)) == 3
    pairs = read_pairs(tmp_path / "lfw" / "pairs.txt")
    assert pairs == [
        ("Ann_A/Ann_A_0001.jpg", "Ann_A/Ann_A_0002.jpg", True),
        ("Bob_B/Bob_B_0001.jpg", "Bob_B/Bob_B_0002.jpg", True),
        ("Ann_A/Ann_A_0001.jpg", "Bob_B/Bob_B_0002.jpg", False),
        ("Ann_A/Ann_A_0003.jpg", "Cid_C/Cid_C_0001.jpg", False),
    ]
    assert {a for a, _, _ in pairs} | {b for _, b, _ in pairs} <= set(expected)
    single_header = tmp_path / "pairsDevTest.txt"
    single_header.write_text("1\nAnn_A 1 3\nBob_B 1 Cid_C 1\n")
    assert [same for _, _, same in read_pairs(single_header)] == [True, False]


def test_lfw_root_errors(tmp_path):
    write_fake_lfw(tmp_path / "lfw")
    assert "is it the parent of the lfw/ folder?" in error_of(scan_lfw, tmp_path)
    assert "not found" in error_of(scan_lfw, tmp_path / "absent")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty"),
        ("ten\nAnn_A 1 2\nAnn_A 1 Bob_B 1\n", "line 1: expected a header"),
        ("1\nAnn_A 1 2 3 4\nAnn_A 1 Bob_B 1\n", "line 2: expected `name i j` or `name1 i name2 j`"),
        ("1\nAnn_A 1 2\nAnn_A one Bob_B 1\n", "line 3: expected `name i j`"),
        ("1\nAnn_A 0 2\nAnn_A 1 Bob_B 1\n", "line 2: expected `name i j`"),
        ("1\nAnn_A 1 2\n", "announces 2 pairs, the file lists 1"),
        ("10 300\nAnn_A 1 2\nAnn_A 1 Bob_B 1\n", "announces 6000 pairs"),
    ],
)
def test_lfw_malformed_pairs_named_with_line(tmp_path, text, needle):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    message = error_of(read_pairs, path)
    assert str(path) in message and needle in message


def test_lfw_missing_pairs_file(tmp_path):
    message = error_of(read_pairs, tmp_path / "pairs.txt")
    assert "pairs.txt" in message and "expected format" in message
