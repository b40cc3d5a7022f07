"""Tests of falco.data, and builders of test images other tests reuse.

`write_image_zoo(folder)` writes one file per unusual-but-valid and per unusable image case
and returns {file name: expected skip reason, or None for an image that must be read}.
Valid cases show a real face (skimage's astronaut), so they can go through a whole run.
`write_fake_celebahq(root)` and `write_fake_lfw(root)` build small trees in the real on-disk
formats (optionally with your own images) and return what a scan must find.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.data import astronaut

EXIF_ORIENTATION = 0x0112


def face(size: int | tuple[int, int] = 64) -> Image.Image:
    """The astronaut photo (a real face) resized to `size` (square side or (width, height))."""
    width, height = (size, size) if isinstance(size, int) else size
    return Image.fromarray(astronaut()).resize((width, height), Image.Resampling.BILINEAR)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_rgb16(values: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one) from uint16 (H, W, 3)."""
    height, width, _ = values.shape
    rows = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds almost no data: a bomb's header."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _with_alpha(image: Image.Image) -> Image.Image:
    """RGBA: left third opaque, middle half-transparent, right third fully transparent."""
    alpha = np.full((image.height, image.width), 255, np.uint8)
    alpha[:, image.width // 3 :] = 128
    alpha[:, 2 * image.width // 3 :] = 0
    rgba = image.convert("RGBA")
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def _exif_rotated(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored sideways: display rotated 90 degrees clockwise
    return encoded(image, "JPEG", exif=exif.tobytes(), quality=95)


def _make_unreadable(path: Path) -> None:
    """chmod 000 where that blocks reads; as root (where it does not) a FIFO named .jpg."""
    if os.geteuid() != 0:
        path.write_bytes(encoded(face(32), "JPEG"))
        path.chmod(0)
    else:
        os.mkfifo(path)


def write_image_zoo(
    folder: Path, size: int = 64, large: tuple[int, int] = (3000, 2000)
) -> dict[str, str | None]:
    """Write every unusual (valid) and unusable image case into `folder`; see module doc."""
    folder.mkdir(parents=True, exist_ok=True)
    img = face(size)
    grey16 = (np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    rgb16 = np.asarray(img, dtype=np.uint16) * 257
    jpeg = encoded(img, "JPEG", quality=90)
    valid = {
        "plain.jpg": jpeg,
        "alpha.png": encoded(_with_alpha(img), "PNG"),
        "grey_alpha.png": encoded(_with_alpha(img).convert("LA"), "PNG"),
        "palette.png": encoded(img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG"),
        "palette_transparent.png": encoded(
            img.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG", transparency=0
        ),
        "grey16.png": encoded(Image.fromarray(grey16), "PNG"),
        "rgb16.png": png_rgb16(rgb16),
        "cmyk.jpg": encoded(img.convert("CMYK"), "JPEG", quality=95),
        "grey.jpg": encoded(img.convert("L"), "JPEG", quality=95),
        "bilevel.png": encoded(img.convert("1"), "PNG"),
        "exif_rotated.jpg": _exif_rotated(img.resize((size, size * 3 // 4))),
        "lossless.webp": encoded(img, "WEBP", lossless=True),
        "plain.bmp": encoded(img, "BMP"),
        "large.jpg": encoded(face(large), "JPEG", quality=85),
        "Zoë_Ångström_名前.png": encoded(img, "PNG"),
        "UPPER_CASE.JPG": jpeg,
    }
    bad: dict[str, tuple[bytes, str]] = {
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "text.jpg": (b"this is a text file, not a JPEG\n" * 4, "not_an_image"),
        "empty.jpg": (b"", "empty_file"),
        "bomb.png": (png_claiming(100_000, 100_000), "decompression_bomb"),
        "tiny.png": (encoded(img.resize((1, 1)), "PNG"), "too_small"),
    }
    for name, data in valid.items():
        (folder / name).write_bytes(data)
    for name, (data, _) in bad.items():
        (folder / name).write_bytes(data)
    _make_unreadable(folder / "unreadable.jpg")
    expected: dict[str, str | None] = dict.fromkeys(valid)
    expected.update({name: reason for name, (_, reason) in bad.items()})
    expected["unreadable.jpg"] = "unreadable"
    return expected


# CelebA numbers of the fake CelebA-HQ images (HQ index -> CelebA file number) with their
# CelebA split (train < 162771 <= val < 182638 <= test), as in the real partition.
FAKE_CELEBA = {0: 119614, 1: 99095, 2: 200122, 3: 81060, 10: 170001, 11: 190002}


def celeba_split(number: int) -> int:
    return 0 if number < 162771 else 1 if number < 182638 else 2


def write_fake_celebahq(
    root: Path,
    images: list[Image.Image] | None = None,
    partition_at: str | None = "celeba/Eval/list_eval_partition.txt",
    identity_at: str | None = "celeba/Anno/identity_CelebA.txt",
) -> dict[str, dict]:
    """A CelebAMask-HQ tree with the 6 FAKE_CELEBA images, and CelebA's partition and
    identity files where given (None: not written). Returns {item id: {split, identity,
    labels}}. Attribute k of HQ image i is 1 when (i + k) % 3 == 0, else -1 (stored 0)."""
    from falco.data.celebahq import ATTRIBUTE_NAMES

    (root / "CelebA-HQ-img").mkdir(parents=True, exist_ok=True)
    images = images or [face(32)] * len(FAKE_CELEBA)
    rows, mapping, expected = [], ["idx         orig_idx    orig_file"], {}
    for (index, number), image in zip(FAKE_CELEBA.items(), images, strict=False):
        image.convert("RGB").save(root / "CelebA-HQ-img" / f"{index}.jpg", quality=95)
        values = [1 if (index + k) % 3 == 0 else -1 for k in range(40)]
        rows.append(f"{index}.jpg  " + " ".join(map(str, values)))
        # Some copies of the mapping file pad the CelebA name, some do not: write both.
        orig = f"{number:06d}.jpg" if index % 2 else f"{number}.jpg"
        mapping.append(f"{index:<11} {number - 1:<11} {orig}")
        labels = {n: int(v == 1) for n, v in zip(ATTRIBUTE_NAMES, values, strict=True)}
        identity = str(1000 + index % 3) if identity_at else None
        expected[f"CelebA-HQ-img/{index}.jpg"] = {
            "split": ("train", "val", "test")[celeba_split(number)],
            "identity": identity,
            "labels": labels,
        }
    header = [str(len(rows)), " ".join(ATTRIBUTE_NAMES)]
    (root / "CelebAMask-HQ-attribute-anno.txt").write_text("\n".join(header + rows) + "\n")
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(mapping) + "\n")
    others = [1, 2, 162771, 182638, 202599]  # CelebA images that are not in CelebA-HQ
    numbers = sorted([*FAKE_CELEBA.values(), *others])
    if partition_at:
        _write_lines(root / partition_at, [f"{n:06d}.jpg {celeba_split(n)}" for n in numbers])
    if identity_at:
        hq = {number: index for index, number in FAKE_CELEBA.items()}
        _write_lines(root / identity_at, [f"{n:06d}.jpg {1000 + hq.get(n, 7) % 3}" for n in numbers])
    return expected


def write_fake_lfw(root: Path, image: Image.Image | None = None) -> dict[str, str]:
    """LFW people folders (Ann_A: 3 images, Bob_B: 2, Cid_C: 1) and a pairs.txt of one fold
    with 2 same and 2 different pairs. Returns {item id: identity}."""
    people = {"Ann_A": 3, "Bob_B": 2, "Cid_C": 1}
    image = image or face(32)
    expected = {}
    for name, count in people.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(1, count + 1):
            image.convert("RGB").save(root / name / f"{name}_{number:04d}.jpg")
            expected[f"{name}/{name}_{number:04d}.jpg"] = name
    pairs = ["1\t2", "Ann_A\t1\t2", "Bob_B\t1\t2", "Ann_A\t1\tBob_B\t2", "Ann_A\t3\tCid_C\t1"]
    _write_lines(root / "pairs.txt", pairs)
    return expected


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
