"""Every unusual-input case through `python train.py data=folder`: each valid image (a real face
in an unusual encoding) anonymized, each unusable file skipped with its reason, nothing else
lost, a summary at the end and exit code 3 (some skipped)."""

from __future__ import annotations

import json

from PIL import Image

from tests.conftest import FAST
from tests.data import EXIF_ORIENTATION, encoded, face, write_image_zoo
from tests.scale import assert_each_image_once, train_cli
from train import EXIT_SKIPPED


def test_image_zoo_end_to_end(tmp_path):
    # 512 px: the astronaut's face is ~120 px wide; MTCNN finds it even in the dithered 1-bit
    # version (at 256 px the dithering hides it: a no_face skip, not a reading failure)
    expected = write_image_zoo(tmp_path / "zoo", size=512, large=(1500, 1000))
    # The zoo's EXIF case stores an upright face tagged "rotate to view", which displays sideways
    # (MTCNN then finds no face); a camera stores the pixels sideways instead. Use that here, so
    # the face is found only if the reader applies the orientation.
    (tmp_path / "zoo" / "exif_rotated.jpg").write_bytes(_phone_photo(512))
    out = tmp_path / "run"
    proc = train_cli(*FAST, "data=folder", f"data.root={tmp_path / 'zoo'}", "method.steps=4",
                     f"cache_dir={tmp_path / 'cache'}", f"run_dir={out}")
    assert proc.returncode == EXIT_SKIPPED, proc.stderr[-3000:]
    recs = assert_each_image_once(out)
    assert sorted(recs) == sorted(expected)  # every file has its record: nothing lost
    for name, reason in expected.items():
        r = recs[name]
        assert (r["status"], r["reason"]) == (("ok", None) if reason is None else ("skipped", reason)), name
        if reason is not None:
            assert r["message"] and r["pseudonym"] is None
    summary = json.loads((out / "summary.json").read_text())
    bad = sum(reason is not None for reason in expected.values())
    assert (summary["done"], summary["skipped"]) == (len(expected) - bad, bad)
    assert f"skipped: {bad}" in proc.stdout  # the summary is printed at the end of the run


def _phone_photo(size: int) -> bytes:
    """A JPEG as phones write it: pixels stored sideways, EXIF orientation 6 (turn 90° clockwise)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return encoded(face(size).transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes(), quality=95)
