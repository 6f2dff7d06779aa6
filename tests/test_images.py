"""inspect_image and sniff_image_format: content sniffing, decompression-bomb guard, truncation, EXIF."""
from __future__ import annotations

import hashlib
import io
import struct
import time
import warnings
import zlib

import pytest
from PIL import Image, ImageFile

from realsyn_spark.images import inspect_image, sniff_image_format

MAX_PIXELS = 89_478_485  # FetchConfig default


# -- image builders (kept local: tests/ has no shared helper module) -------------------------------------

def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def noisy_rgb(width: int, height: int) -> Image.Image:
    # Noise does not compress, so a JPEG of it is long enough to cut in the middle of the scan data.
    return Image.effect_noise((width, height), 64).convert("RGB")


def exif_rotated_jpeg(width: int, height: int, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.new("RGB", (width, height), "red"), "JPEG", exif=exif.tobytes())


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of width x height all-black pixels: ~50 kB on the wire for
    20000x20000, yet 400 M pixels once decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def huge_bomb() -> bytes:
    return bomb_png(20000, 20000)


# -- sniffing -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, params", [("JPEG", {}), ("PNG", {}), ("GIF", {}), ("WEBP", {}), ("BMP", {}),
                                         ("TIFF", {}), ("AVIF", {})])
def test_sniff_recognises_encoded_formats(fmt, params):
    if fmt == "AVIF" and "AVIF" not in Image.SAVE:
        pytest.skip("Pillow built without AVIF")
    data = encode(Image.new("RGB", (8, 8), "blue"), fmt, **params)
    assert sniff_image_format(data[:32]) == fmt


@pytest.mark.parametrize("head", [b"", b"<!doctype html><html>", b"%PDF-1.7\n", b"GIF88a....",
                                  b"BMW is a car maker", b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00",
                                  b"RIFF\x00\x00\x00\x00WAVEfmt "])
def test_sniff_rejects_non_images(head):
    assert sniff_image_format(head) is None


def test_sniff_heic_brand():
    assert sniff_image_format(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic") == "HEIF"


# -- inspect_image: good images -------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_ok_images_report_size_format_and_hash(fmt):
    data = encode(Image.new("RGB", (30, 20), "green"), fmt)
    info = inspect_image(data, MAX_PIXELS)
    assert info.status == "ok" and info.ok
    assert (info.width, info.height, info.format) == (30, 20, fmt)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.error is None


@pytest.mark.parametrize("orientation, expected", [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))])
def test_exif_orientation_applies_to_dimensions(orientation, expected):
    info = inspect_image(exif_rotated_jpeg(40, 20, orientation), MAX_PIXELS)
    assert info.status == "ok"
    assert (info.width, info.height) == expected


# -- inspect_image: bad input ---------------------------------------------------------------------------

def test_empty_bytes():
    info = inspect_image(b"", MAX_PIXELS)
    assert info.status == "empty" and info.sha256 is None


def test_garbage_is_decode_error():
    data = b"<html><body>Not found</body></html>"
    info = inspect_image(data, MAX_PIXELS)
    assert info.status == "decode_error"
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.error


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_is_decode_error(fmt):
    data = encode(noisy_rgb(64, 64), fmt)
    info = inspect_image(data[: len(data) // 2], MAX_PIXELS)
    assert info.status == "decode_error"
    assert "truncated" in info.error.lower() or "broken" in info.error.lower()


def test_pillow_still_refuses_truncated_files():
    # inspect_image relies on Pillow's process-wide default; a module that flips it would hide truncation.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_format_outside_the_web_list_is_refused():
    # Pillow can read PPM, but it is not a web image format; only the allow-listed plugins are tried.
    data = encode(Image.new("RGB", (8, 8)), "PPM")
    assert inspect_image(data, MAX_PIXELS).status == "decode_error"


def test_pixel_limit_uses_header_dimensions():
    data = encode(Image.new("RGB", (100, 50)), "PNG")
    info = inspect_image(data, max_pixels=4999)
    assert info.status == "too_many_pixels"
    assert (info.width, info.height, info.format) == (100, 50, "PNG")
    assert inspect_image(data, max_pixels=5000).status == "ok"


def test_decompression_bomb_refused_without_decoding(huge_bomb, monkeypatch):
    assert len(huge_bomb) < 200_000  # tiny on the wire ...
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self) or None)
    start = time.perf_counter()
    info = inspect_image(huge_bomb, MAX_PIXELS)  # ... 400 M pixels: over Pillow's own hard limit too
    assert info.status == "too_many_pixels"
    assert decoded == []
    assert time.perf_counter() - start < 1.0


def test_bomb_between_our_limit_and_pillows_reports_dimensions(monkeypatch):
    data = bomb_png(12000, 12000)  # 144 M pixels: Pillow only warns, our own check refuses
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels were decoded"))
    info = inspect_image(data, MAX_PIXELS)
    assert info.status == "too_many_pixels"
    assert (info.width, info.height) == (12000, 12000)


def test_no_global_pillow_state_changes_or_leaked_warnings():
    before = Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any DecompressionBombWarning escaping would raise here
        info = inspect_image(bomb_png(12000, 12000), MAX_PIXELS)
    assert info.status == "too_many_pixels"
    assert Image.MAX_IMAGE_PIXELS == before
    assert list(warnings.filters) == filters_before
