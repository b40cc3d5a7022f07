"""read_rgb on every unusual and unusable image case; tensors; atomic, metadata-free writes."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageFile, PngImagePlugin

from falco.data import imageio
from falco.data.folder import scan_folder
from falco.data.imageio import (
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    read_rgb,
    to_tensor,
    to_uint8,
    write_png_clean,
)
from falco.data.items import SkipImage
from tests.data import EXIF_ORIENTATION, encoded, face, png_claiming, png_rgb16, write_image_zoo


def skip_reason(path, **limits) -> str:
    with pytest.raises(SkipImage) as caught:
        read_rgb(path, **limits)
    return caught.value.reason


def decoded_as_stored(path) -> np.ndarray:
    """Pillow's own decode, no orientation or alpha handling: the reference for lossy files."""
    return np.asarray(Image.open(path).convert("RGB"))


def test_zoo_every_case_read_or_skipped_with_its_reason(tmp_path):
    expected = write_image_zoo(tmp_path, size=48, large=(400, 300))
    outcome = {}
    for item in scan_folder(tmp_path):  # the scan lists every case, the read sorts them out
        try:
            image = read_rgb(item.path)
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            outcome[item.id] = None
        except SkipImage as skip:
            assert str(item.path) in skip.message
            outcome[item.id] = skip.reason
    assert outcome == expected


def test_plain_formats_exact(tmp_path):
    img = face(40)
    for name, fmt, options in [
        ("a.png", "PNG", {}),
        ("a.webp", "WEBP", {"lossless": True}),
        ("a.bmp", "BMP", {}),
    ]:
        (tmp_path / name).write_bytes(encoded(img, fmt, **options))
        np.testing.assert_array_equal(read_rgb(tmp_path / name), np.asarray(img))


def test_alpha_composited_on_white(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = (200, 40, 0)
    rgba[:, :10, 3], rgba[:, 10:20, 3], rgba[:, 20:, 3] = 255, 128, 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = read_rgb(tmp_path / "a.png").astype(int)
    a = 128 / 255
    np.testing.assert_array_equal(out[0, 0], (200, 40, 0))
    np.testing.assert_array_equal(out[0, 15], np.rint(np.array([200, 40, 0]) * a + 255 * (1 - a)))
    np.testing.assert_array_equal(out[0, 25], (255, 255, 255))
    black = read_rgb(tmp_path / "a.png", background=(0, 0, 0))
    np.testing.assert_array_equal(black[0, 25], (0, 0, 0))


def test_grey_alpha_and_transparent_palette(tmp_path):
    la = Image.merge("LA", [Image.new("L", (20, 20), 100), Image.new("L", (20, 20), 0)])
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "la.png"), np.full((20, 20, 3), 255))
    pal = Image.new("P", (20, 20), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.paste(0, (0, 0, 10, 20))  # left half: index 0, declared transparent
    pal.save(tmp_path / "p.png", transparency=0)
    out = read_rgb(tmp_path / "p.png")
    np.testing.assert_array_equal(out[:, :10], np.full((20, 10, 3), 255))
    np.testing.assert_array_equal(out[:, 10:], np.broadcast_to((10, 20, 30), (20, 10, 3)))
    pal.convert("RGB").save(tmp_path / "key.png", transparency=(0, 0, 0))  # RGB tRNS colour key
    np.testing.assert_array_equal(read_rgb(tmp_path / "key.png"), out)


def test_palette_greyscale_and_bilevel(tmp_path):
    img = face(32)
    palette = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))
    grey = np.asarray(img.convert("L"))
    Image.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "g.png"), np.stack([grey] * 3, axis=2))
    img.convert("1").save(tmp_path / "b.png")
    assert set(np.unique(read_rgb(tmp_path / "b.png"))) <= {0, 255}


def test_16bit_scaled_to_8bit(tmp_path):
    grey = np.array([[0, 257, 32896, 65535, 384, 383] * 3] * 18, np.uint16)  # 18x18
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = read_rgb(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[0, :6, 0], [0, 1, 128, 255, 1, 1])  # round(v / 257)
    assert (out[..., 0] == out[..., 2]).all()
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (16, 16, 3)).astype(np.uint16)
    (tmp_path / "rgb16.png").write_bytes(png_rgb16(levels * 257))
    np.testing.assert_array_equal(read_rgb(tmp_path / "rgb16.png"), levels)
    values = rng.integers(0, 65536, (16, 16, 3)).astype(np.uint16)
    (tmp_path / "any16.png").write_bytes(png_rgb16(values))
    assert np.abs(read_rgb(tmp_path / "any16.png") - values / 257).max() <= 1


def test_cmyk_jpeg_matches_the_rgb_original(tmp_path):
    img = face(64)
    (tmp_path / "c.jpg").write_bytes(encoded(img.convert("CMYK"), "JPEG", quality=95))
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    out = read_rgb(tmp_path / "c.jpg").astype(int)
    assert np.abs(out - np.asarray(img, int)).mean() < 4  # JPEG loss only, no inverted channels


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, orientation):
    stored = np.asarray(face((24, 16)))  # lossless PNG with an eXIf chunk: exact comparison
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(stored).save(tmp_path / "o.png", exif=exif.tobytes())
    shown = {
        1: stored,
        2: stored[:, ::-1],
        3: stored[::-1, ::-1],
        4: stored[::-1],
        5: stored.transpose(1, 0, 2),
        6: np.rot90(stored, -1),
        7: np.rot90(stored, 2).transpose(1, 0, 2),
        8: np.rot90(stored, 1),
    }[orientation]
    np.testing.assert_array_equal(read_rgb(tmp_path / "o.png"), shown)


def test_exif_rotated_jpeg(tmp_path):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    (tmp_path / "r.jpg").write_bytes(encoded(face((48, 32)), "JPEG", exif=exif.tobytes()))
    out = read_rgb(tmp_path / "r.jpg")
    assert out.shape == (48, 32, 3)
    np.testing.assert_array_equal(out, np.rot90(decoded_as_stored(tmp_path / "r.jpg"), -1))


def test_large_photo_and_non_ascii_name(tmp_path):
    path = tmp_path / "Zoë_Ångström_名前.jpg"
    Image.new("RGB", (6000, 4000), (10, 200, 30)).save(path, quality=90)
    start = time.perf_counter()
    out = read_rgb(path)
    assert out.shape == (4000, 6000, 3) and abs(int(out[2000, 3000, 1]) - 200) <= 2
    assert time.perf_counter() - start < 10


def test_configured_limit_decides_not_pillows(tmp_path, monkeypatch):
    face(64).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow alone would refuse 4096 px
    assert read_rgb(tmp_path / "a.png").shape == (64, 64, 3)
    assert skip_reason(tmp_path / "a.png", max_pixels=4095) == "decompression_bomb"


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    (tmp_path / "huge.png").write_bytes(png_claiming(100_000, 100_000))  # Pillow's own refusal
    (tmp_path / "big.png").write_bytes(png_claiming(20_000, 10_000))  # ours (2e8 > 1.5e8)
    assert skip_reason(tmp_path / "huge.png") == "decompression_bomb"
    assert skip_reason(tmp_path / "big.png") == "decompression_bomb"
    assert skip_reason(tmp_path / "big.png", max_pixels=10**9, min_side=10**5) == "too_small"


def test_unusable_files(tmp_path):
    jpeg = encoded(face(64), "JPEG")
    png = encoded(face(64), "PNG")
    cases = {
        "cut.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "cut.png": (png[: len(png) // 2], "truncated"),
        "text.jpg": (b"hello, not an image\n", "not_an_image"),
        "empty.jpg": (b"", "empty_file"),
        "one.png": (encoded(face(1), "PNG"), "too_small"),
        "thin.png": (encoded(face((300, 8)), "PNG"), "too_small"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert skip_reason(tmp_path / name) == reason, name
    assert skip_reason(tmp_path / "absent.jpg") == "missing"
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert skip_reason(tmp_path / "dangling.jpg") == "missing"
    (tmp_path / "folder.jpg").mkdir()
    assert skip_reason(tmp_path / "folder.jpg") == "unreadable"
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it would block forever
    assert skip_reason(tmp_path / "pipe.jpg") == "unreadable"


def test_permission_denied(tmp_path, monkeypatch):
    path = tmp_path / "locked.jpg"
    path.write_bytes(encoded(face(32), "JPEG"))
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads through chmod 000: simulate the refusal at the one place files open

        def denied(p):
            raise PermissionError(13, "Permission denied", str(p))

        monkeypatch.setattr(imageio, "_open", denied)
    assert skip_reason(path) == "unreadable"


def test_tensor_conversions_round_trip():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    tensor = to_tensor(levels)
    assert tensor.shape == (1, 3, 16, 16) and tensor.dtype == torch.float32
    assert tensor.min() == -1 and tensor.max() == 1
    np.testing.assert_array_equal(to_uint8(tensor[0]), levels)
    assert to_uint8(tensor).shape == (1, 16, 16, 3)
    nudged = to_uint8(
        torch.tensor([-2.0, -1.0 + 0.4 / 127.5, 1.0 - 0.6 / 127.5, 3.0]).view(1, 1, 4).repeat(3, 1, 1)
    )
    np.testing.assert_array_equal(nudged[0, :, 0], [0, 0, 254, 255])  # clamped, rounded
    with pytest.raises(ValueError, match="NaN"):
        to_uint8(torch.full((3, 2, 2), float("nan")))


def png_chunk_types(path) -> list[bytes]:
    data = path.read_bytes()[8:]
    kinds = []
    while data:
        length = int.from_bytes(data[:4], "big")
        kinds.append(data[4:8])
        data = data[12 + length :]
    return kinds


def test_write_png_clean_drops_all_metadata(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x8298] = "Owner Name"  # Copyright
    img = face(32)
    img.save(tmp_path / "src.jpg", exif=exif.tobytes(), icc_profile=icc, comment=b"original.jpg")
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "someone")
    text.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>")
    img.save(tmp_path / "src.png", pnginfo=text, icc_profile=icc, exif=exif.tobytes())
    for source in ("src.jpg", "src.png"):
        assert Image.open(tmp_path / source).info.get("icc_profile")  # the sources carry it
        out = tmp_path / "release" / f"{source}.png"
        write_png_clean(out, read_rgb(tmp_path / source))
        assert {k for k in png_chunk_types(out)} == {b"IHDR", b"IDAT", b"IEND"}
        reopened = Image.open(out)
        assert reopened.info == {} and len(reopened.getexif()) == 0
        np.testing.assert_array_equal(np.asarray(reopened), read_rgb(tmp_path / source))
    assert sorted(os.listdir(tmp_path / "release")) == ["src.jpg.png", "src.png.png"]


def test_atomic_writes_replace_and_clean_up(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    atomic_write_bytes(target, b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        atomic_torch_save({"f": lambda: 0}, target)
    assert target.read_bytes() == b"new" and os.listdir(target.parent) == ["x.bin"]
    atomic_write_text(tmp_path / "t.json", '{"é": 1}\n')
    assert (tmp_path / "t.json").read_text(encoding="utf-8") == '{"é": 1}\n'
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "w.pt")
    assert torch.equal(torch.load(tmp_path / "w.pt", weights_only=True)["w"], torch.arange(3))
