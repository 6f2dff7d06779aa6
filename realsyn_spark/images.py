"""Content sniffing and safe decode checks for downloaded image bytes.

`sniff_image_format` looks only at magic numbers (never a file extension or a Content-Type header), so a
fetcher can reject HTML error pages after the first few bytes. `inspect_image` then proves the bytes are
a whole, decodable image of acceptable size:

1. Pillow parses the header only (`Image.open` is lazy), restricted to a short list of web formats so that
   exotic plugins (EPS runs Ghostscript, for example) are never reached;
2. the pixel count from the header is compared with `max_pixels` BEFORE any pixel is decoded, which is the
   decompression-bomb guard (a 20000x20000 PNG can be a few kB on the wire);
3. `img.load()` decodes every pixel, which catches truncated or corrupt files;
4. EXIF orientation 5-8 (90 or 270 degrees) swaps the reported width and height, so sizes match what a
   viewer sees and what the pipeline's pixels are: pHash, embedding and export all decode through
   `udfs.pixels.decode_rgb`, which applies the orientation to the pixels too.

No global Pillow setting is changed: `Image.MAX_IMAGE_PIXELS` stays as it is and the
DecompressionBombWarning that Pillow raises for large headers is silenced only around our own `open`.
"""
from __future__ import annotations

import hashlib
import io
import threading
import warnings
from dataclasses import dataclass
from typing import Literal, Optional

from PIL import Image

from udfs.pixels import TRANSPOSED_ORIENTATIONS, orientation_of

ImageStatus = Literal["ok", "decode_error", "too_many_pixels", "empty"]

# Pillow format ids we are willing to decode. Anything else Pillow could open (EPS, PSD, PCX, ICNS, ...)
# is a decode_error: those are not web images, and some plugins have a history of parser bugs.
# "JPEG" also covers MPO (multi-picture JPEG from cameras), which Pillow reports as format "MPO".
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "HEIF")

# ISO-BMFF brands (bytes 8..12 after "ftyp") used by AVIF and HEIC/HEIF stills and sequences.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})

# Bytes a caller should buffer before calling sniff_image_format (the longest signature we read is 12).
SNIFF_BYTES = 32

# warnings.catch_warnings swaps the process-wide filter list and restores it on exit; two threads doing
# that at once can restore each other's state and leak a filter. Serialising our own header parses keeps
# the suppression local. Only the lazy header parse runs under the lock, never the pixel decode.
_WARNINGS_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageInfo:
    """What inspect_image learnt about one image. width/height are after EXIF rotation."""

    status: ImageStatus
    width: Optional[int] = None
    height: Optional[int] = None
    format: Optional[str] = None
    sha256: Optional[str] = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def sniff_image_format(head: bytes) -> Optional[str]:
    """Image container named by the magic number at the start of `head`, or None when it is not an image.

    Returns one of JPEG, PNG, GIF, WEBP, BMP, TIFF, AVIF, HEIF. Pass at least SNIFF_BYTES bytes when the
    body is that long; shorter input simply matches fewer signatures.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        return _sniff_bmff_brand(head[8:12])
    if _looks_like_bmp(head):
        return "BMP"
    return None


def _sniff_bmff_brand(brand: bytes) -> Optional[str]:
    if brand in _AVIF_BRANDS:
        return "AVIF"
    if brand in _HEIF_BRANDS:
        return "HEIF"
    return None  # MP4/MOV videos share the ftyp box but are not images


def _looks_like_bmp(head: bytes) -> bool:
    # "BM" alone matches ordinary text ("BMW ..."); also require the two reserved header words to be zero.
    return head[:2] == b"BM" and len(head) >= 10 and head[6:10] == b"\x00\x00\x00\x00"


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Check that `data` is a whole, decodable web image with at most `max_pixels` pixels.

    Never raises for bad input: corrupt, truncated, unsupported or oversized images come back with a
    non-"ok" status and a message in `error`. `sha256` is always the hex digest of the original bytes.
    """
    if not data:
        return ImageInfo(status="empty", error="no bytes")
    digest = hashlib.sha256(data).hexdigest()
    try:
        return _inspect(data, max_pixels, digest)
    except Image.DecompressionBombError as exc:
        # Pillow's own hard limit (2 * Image.MAX_IMAGE_PIXELS) fired inside its header parse; the header
        # is already far beyond any sane max_pixels, so report it the same way as our own check.
        return ImageInfo(status="too_many_pixels", sha256=digest, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "not a usable image"
        return ImageInfo(status="decode_error", sha256=digest, error=f"{type(exc).__name__}: {exc}")


def _inspect(data: bytes, max_pixels: int, digest: str) -> ImageInfo:
    with _open_header(data) as img:
        width, height = img.size
        fmt = img.format
        if width <= 0 or height <= 0:
            return ImageInfo(status="decode_error", format=fmt, sha256=digest, error="zero-sized image")
        if width * height > max_pixels:
            return ImageInfo(status="too_many_pixels", width=width, height=height, format=fmt, sha256=digest,
                             error=f"{width}x{height} = {width * height} pixels > max_pixels {max_pixels}")
        img.load()  # full decode: raises OSError for truncated data, SyntaxError/ValueError for corrupt data
        if _is_transposed(img):
            width, height = height, width
    return ImageInfo(status="ok", width=width, height=height, format=fmt, sha256=digest)


def _open_header(data: bytes) -> Image.Image:
    """Lazily open `data` (header only), limited to DECODABLE_FORMATS, without a DecompressionBombWarning."""
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=_available_formats())


def _available_formats() -> tuple[str, ...]:
    # Image.open raises KeyError for a format id with no plugin (HEIF needs the pillow-heif plugin), so
    # offer only the ids registered in this process.
    Image.init()
    return tuple(fmt for fmt in DECODABLE_FORMATS if fmt in Image.OPEN)


def _is_transposed(img: Image.Image) -> bool:
    # The orientation reader every pixel consumer uses (udfs.pixels), so sizes and pixels agree.
    return orientation_of(img) in TRANSPOSED_ORIENTATIONS
