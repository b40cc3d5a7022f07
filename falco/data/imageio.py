"""Image files in and out: robust decoding to RGB, the [-1, 1] tensor convention, and
atomic, metadata-free writes.

Reading (`read_rgb`) turns every valid image into uint8 RGB, HxWx3, as it would be displayed:
- EXIF orientation is applied (a phone photo stored sideways comes out upright);
- greyscale, bilevel, palette, CMYK and YCbCr are converted to RGB;
- 16-bit greyscale is scaled to 8 bits as round(v / 257) (Pillow's own conversion clips it);
  16-bit RGB(A) PNGs are reduced by Pillow to their high byte (floor(v / 256), within one grey
  level of that);
- transparency (RGBA, LA, palette with tRNS) is composited on a WHITE background by default,
  what an image viewer or a web page shows; `background=` changes it.
Colour profiles (ICC) are not applied: pixel values are read as stored, like the datasets'
reference code does.

Everything unusable raises `SkipImage` with a reason, never a library traceback. Size limits
are checked from the header, before any pixel is decoded: more than `max_pixels` is refused
as a decompression bomb, a side below `min_side` as too small.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from falco.data.items import SkipImage

# 150 megapixels: above any camera in common use (108 MP phones, 100 MP medium format); a
# decoded RGB image of that size is 450 MB. Anything larger is treated as a bomb.
DEFAULT_MAX_PIXELS = 150_000_000
# Smallest accepted side in pixels; no face detector finds a face in fewer.
DEFAULT_MIN_SIDE = 16
WHITE = (255, 255, 255)
# Formats Pillow may try; others (EPS would run Ghostscript, fonts, icons) are not images here.
# Only those registered in this Pillow build are passed (init() loads every plugin).
Image.init()
FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM") if f in Image.OPEN)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def read_rgb(
    path: str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    background: tuple[int, int, int] = WHITE,
) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3), upright; raise SkipImage if unusable."""
    path = Path(path)
    _check_regular_file(path)
    _allow_pillow_up_to(max_pixels)
    try:
        with _open(path) as handle:
            image = _open_image(handle, path)
            _check_size(image, path, max_pixels=max_pixels, min_side=min_side)
            image = _decode(image, path)
    except OSError as err:  # open() itself, or a read error while decoding
        raise SkipImage("unreadable", f"{path}: {err}") from err
    return _to_rgb_array(image, path, background)


def _open(path: Path) -> IO[bytes]:
    # One place that opens files, so tests can simulate an unreadable one even as root.
    return open(path, "rb")


def _check_regular_file(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError as err:
        raise SkipImage("missing", f"{path}: file not found (or a dangling link)") from err
    except OSError as err:
        raise SkipImage("unreadable", f"{path}: {err}") from err
    if not stat.S_ISREG(info.st_mode):  # a directory or a FIFO named .jpg would hang or fail
        raise SkipImage("unreadable", f"{path}: not a regular file")
    if info.st_size == 0:
        raise SkipImage("empty_file", f"{path}: file is empty (0 bytes)")


def _allow_pillow_up_to(max_pixels: int) -> None:
    """Raise Pillow's global bomb limit so our own, configured `max_pixels` is what decides.

    Pillow refuses more than 2 * MAX_IMAGE_PIXELS at open time; when the configured limit is
    higher, raise Pillow's (never lower it: other code in the process may rely on it).
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and current < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _open_image(handle: IO[bytes], path: Path) -> Image.Image:
    """Parse the header only (Pillow decodes lazily)."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it; _check_size decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(handle, formats=FORMATS)
    except Image.DecompressionBombError as err:
        raise SkipImage("decompression_bomb", f"{path}: {err}") from err
    except UnidentifiedImageError as err:
        raise SkipImage("not_an_image", f"{path}: not a {'/'.join(FORMATS)} image") from err
    except (SyntaxError, ValueError, EOFError) as err:  # a plugin choked on the header
        raise SkipImage("corrupt", f"{path}: bad image header: {err}") from err


def _check_size(image: Image.Image, path: Path, *, max_pixels: int, min_side: int) -> None:
    width, height = image.size
    if width * height > max_pixels:
        raise SkipImage(
            "decompression_bomb",
            f"{path}: header claims {width}x{height} = {width * height} pixels, "
            f"more than the configured limit of {max_pixels}; refused before decoding",
        )
    if min(width, height) < min_side:
        raise SkipImage(
            "too_small", f"{path}: {width}x{height}, a side below the configured minimum {min_side}"
        )


def _decode(image: Image.Image, path: Path) -> Image.Image:
    """Decode the pixels and apply EXIF orientation; map decoder failures to SkipImage."""
    try:
        image.load()
    except MemoryError as err:
        raise SkipImage("out_of_memory", f"{path}: out of memory while decoding") from err
    except Image.DecompressionBombError as err:  # e.g. a GIF frame larger than its header says
        raise SkipImage("decompression_bomb", f"{path}: {err}") from err
    except EOFError as err:
        raise SkipImage("truncated", f"{path}: data ends early ({err})") from err
    except OSError as err:
        reason = "truncated" if "truncated" in str(err).lower() else "corrupt"
        raise SkipImage(reason, f"{path}: {err}") from err
    except Exception as err:  # noqa: BLE001 - any decoder failure is bad input, not a bug
        raise SkipImage("corrupt", f"{path}: {type(err).__name__}: {err}") from err
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - malformed EXIF: keep the image as stored
        return image


def _to_rgb_array(image: Image.Image, path: Path, background: tuple[int, int, int]) -> np.ndarray:
    mode = image.mode
    try:
        if mode in _SIXTEEN_BIT_MODES:
            return _grey16_to_rgb(np.asarray(image))
        if mode in ("P", "L", "RGB") and "transparency" in image.info:  # tRNS colour key
            image, mode = image.convert("RGBA"), "RGBA"
        if mode in _ALPHA_MODES:
            return _composite(np.asarray(image.convert("RGBA")), background)
        if mode == "F":
            raise SkipImage("unsupported_mode", f"{path}: floating-point pixels (mode F) have no RGB scale")
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))
    except (ValueError, OSError) as err:  # Pillow has no conversion for this mode
        raise SkipImage("unsupported_mode", f"{path}: cannot convert mode {mode} to RGB: {err}") from err
    except MemoryError as err:
        raise SkipImage("out_of_memory", f"{path}: out of memory while converting to RGB") from err


def _grey16_to_rgb(values: np.ndarray) -> np.ndarray:
    """16-bit greyscale (0..65535) to 8-bit RGB: round(v / 257) maps 65535 to 255 exactly."""
    grey = np.rint(np.clip(values.astype(np.float64), 0, 65535) / 257.0).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _composite(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Alpha-composite straight (non-premultiplied) RGBA over a solid background colour."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    back = np.asarray(background, dtype=np.float32)
    out = rgba[..., :3].astype(np.float32) * alpha + back * (1.0 - alpha)
    return np.rint(out).astype(np.uint8)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (1, 3, H, W) in [-1, 1] (0 -> -1, 255 -> 1)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)
    return (tensor.float() / 127.5 - 1.0).unsqueeze(0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float [-1, 1] (3, H, W) -> uint8 (H, W, 3), or (N, 3, H, W) -> (N, H, W, 3).

    Values are rounded to the nearest grey level and clamped; NaN or inf is an error (it
    means the optimization diverged, and writing it as some colour would hide that).
    """
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"expected (3, H, W) or (N, 3, H, W), got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("image tensor contains NaN or inf")
    levels = ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return levels.movedim(-3, -1).cpu().numpy()


def write_png_clean(path: str | os.PathLike, image: np.ndarray, *, compress_level: int = 6) -> None:
    """Write uint8 (H, W, 3) as a PNG with no metadata, atomically.

    The PNG is built from the bare pixel array, so nothing of an original (EXIF, ICC, XMP,
    text chunks, DPI) can travel with it: the file holds only IHDR, IDAT and IEND chunks.
    """
    _write_clean(path, image, format="PNG", compress_level=compress_level)


def write_jpeg_clean(path: str | os.PathLike, image: np.ndarray, *, quality: int = 75) -> None:
    """Write uint8 (H, W, 3) as a JPEG with no metadata (no EXIF, ICC or comment), atomically."""
    _write_clean(path, image, format="JPEG", quality=quality)


def _write_clean(path: str | os.PathLike, image: np.ndarray, **save: Any) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode="RGB").save(buffer, **save)
    atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def _atomic_target(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Yield a file in the destination's directory; on success fsync it and os.replace it
    onto `path`, on any failure remove it. Readers see the old file or the new one, never a
    partial write, even after kill -9. Parent directories are created as needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A hidden temp name (dataset scans skip dot-files); 0o666 so the umask applies as usual.
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with _atomic_target(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save, atomically (load it back with torch.load(..., weights_only=True))."""
    with _atomic_target(path) as handle:
        torch.save(obj, handle)
