"""benchmarks/real_faces.py keeps exactly the faces that pass its probability and size rules, as
square crops centred on each box."""

from __future__ import annotations

import numpy as np
from PIL import Image

from benchmarks import real_faces as rf


class _Boxes:
    def __init__(self, boxes, probs) -> None:
        self.boxes, self.probs = np.array(boxes, dtype=np.float64), np.array(probs)

    def detect(self, image):
        return self.boxes, self.probs


def test_only_confident_large_faces_are_cut_square_about_their_box():
    image = np.zeros((600, 600, 3), np.uint8)
    image[200:300, 100:200] = 255  # the first face's box, white
    det = _Boxes([[100, 200, 200, 300], [400, 400, 500, 500], [10, 10, 50, 50]], [0.999, 0.9, 0.999])
    faces = rf.faces_of(Image.fromarray(image), det)  # 2nd: unsure, 3rd: too small
    assert len(faces) == 1 and faces[0].size == (rf.SIZE, rf.SIZE)
    crop = np.asarray(faces[0])
    inner = rf.SIZE / rf.CROP  # the box's side inside the crop
    lo, hi = int(rf.SIZE / 2 - inner / 2) + 3, int(rf.SIZE / 2 + inner / 2) - 3
    assert crop[lo:hi, lo:hi].min() > 230 and crop[:lo - 6].max() < 25 and crop[:, hi + 6:].max() < 25  # LANCZOS rings
    assert rf.faces_of(Image.fromarray(image), _Boxes(np.zeros((0, 4)), [])) == []


def test_group_photo_faces_are_ordered_left_to_right_for_their_labels():
    """The group photo's true genders are listed left to right: the crops must come in that order,
    whatever order the detector gives, and its own lower probability floor applies."""
    image = np.zeros((600, 900, 3), np.uint8)
    image[200:300, 600:700] = 255  # the right face is white, the left one black
    det = _Boxes([[600, 200, 700, 300], [100, 200, 200, 300]], [0.999, 0.96])
    assert len(rf.faces_of(Image.fromarray(image), det)) == 1  # 0.96 < the default floor
    faces = rf.faces_of(Image.fromarray(image), det, min_prob=rf.GROUP_MIN_PROB, left_to_right=True)
    assert [int(np.asarray(f).mean() > 20) for f in faces] == [0, 1]
    assert len(rf.GROUP_MALE) == 6 and sum(rf.GROUP_MALE) == 3


def test_a_missing_sdist_photo_says_how_to_get_it(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setattr(rf.sys, "prefix", str(tmp_path))
    with pytest.raises(SystemExit, match=r"face_recognition==1\.3\.0 is missing .*requirements/sdist\.txt"):
        rf.sdist_file(rf.SDIST, rf.PORTRAITS[0])
    (tmp_path / "share" / "pypi" / rf.SDIST / "tests" / "test_images").mkdir(parents=True)
    (tmp_path / "share" / "pypi" / rf.SDIST / rf.PORTRAITS[0]).write_bytes(b"x")
    assert rf.sdist_file(rf.SDIST, rf.PORTRAITS[0]).read_bytes() == b"x"
