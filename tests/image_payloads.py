"""Image payloads built in memory for the image and fetcher tests (tests/test_images.py,
tests/fetcher/, tests/test_ingest_fetch.py): encoded images, an EXIF-rotated JPEG and a
decompression-bomb PNG. Pure PIL and zlib, no files, no network."""
from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def noisy_rgb(width: int, height: int) -> Image.Image:
    # Noise does not compress, so a JPEG of it is long enough to cut in the middle of the scan data.
    return Image.effect_noise((width, height), 64).convert("RGB")


def exif_rotated_jpeg(width: int = 60, height: int = 30, orientation: int = 6) -> bytes:
    """A red JPEG stored width x height with an EXIF orientation tag; 6 rotates 90 degrees, so the
    default stored 60x30 displays as 30x60."""
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
