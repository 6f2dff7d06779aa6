"""The one way encoded image bytes become pixels: 8-bit RGB, upright (EXIF orientation applied).

Everything that looks at pixels (pHash, the CLIP embedding on both decode paths, the captioner, the
WebDataset export) decodes through `decode_rgb` (PIL) or reads `jpeg_header` (tensor path), so a
rotated copy of a photo hashes, embeds and exports like the upright one, and every Pillow mode maps to
8-bit RGB the same way:

* transparency (RGBA, LA, PA, La/RGBa, P or L/RGB with a `transparency` entry) is composited on WHITE:
  `convert("RGB")` drops alpha and shows whatever colour the transparent pixels store (often black);
* 16-bit integer modes (I;16, I;16L, I;16B, I;16N) are scaled by 255/65535: `convert("RGB")` clips them
  at 255, so almost every pixel turns white;
* I (32-bit int) carries no bit depth: values above 255 mean 16-bit data (Pillow's PNG/TIFF decoders put
  16-bit samples here), so the scale is 255/65535 then, 1 otherwise; negatives clip to 0;
* F (float) is scaled by 255 when its values lie in [0, 1] (float TIFFs), clipped to [0, 255] otherwise;
* 1, L, P, RGB, CMYK (Pillow already undoes Adobe's inverted CMYK JPEGs), YCbCr: Pillow's conversion.
Any other mode (LAB, HSV, ...) raises ValueError: the caller treats the image as undecodable.
Multi-frame files (animated GIF/WebP/PNG, MPO) give their first frame, which is what Image.open shows.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Optional

import numpy as np

EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientations 5-8 store the picture turned by 90 or 270 degrees: width and height swap.
TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_UINT16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_PILLOW_RGB_MODES = frozenset({"1", "L", "P", "RGB", "CMYK", "YCbCr"})
# Modes whose pixels Pillow's own convert("RGB") (what webdataset / open_clip loaders call) renders as
# decode_rgb does; anything else must be re-encoded before it leaves the pipeline.
LOADER_SAFE_MODES = _PILLOW_RGB_MODES


def orientation_of(img) -> int:
    """EXIF orientation 1..8 of an opened PIL image (1 when absent or unreadable)."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - a broken EXIF block does not make the pixels unusable
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def _pil_transpose_methods() -> dict:
    from PIL import Image

    T = Image.Transpose
    # The same table as PIL.ImageOps.exif_transpose.
    return {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE,
            6: T.ROTATE_270, 7: T.TRANSVERSE, 8: T.ROTATE_90}


def apply_orientation(img, orientation: int):
    """PIL image turned upright for an EXIF orientation (1: unchanged)."""
    method = _pil_transpose_methods().get(orientation)
    return img if method is None else img.transpose(method)


def _on_white(rgba):
    from PIL import Image

    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _from_gray_array(gray: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), "L").convert("RGB")


def to_rgb8(img):
    """An opened PIL image as 8-bit RGB, by the rules in the module docstring."""
    mode = img.mode
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        return _on_white(img.convert("RGBA"))
    if mode in _UINT16_MODES:
        return _from_gray_array(np.asarray(img).astype(np.float64) * (255.0 / 65535.0))
    if mode == "I":
        values = np.asarray(img).astype(np.float64)
        scale = 255.0 / 65535.0 if values.size and values.max() > 255 else 1.0
        return _from_gray_array(values * scale)
    if mode == "F":
        values = np.nan_to_num(np.asarray(img).astype(np.float64))
        in_unit = values.size and values.min() >= 0.0 and values.max() <= 1.0
        return _from_gray_array(values * (255.0 if in_unit else 1.0))
    if mode in _PILLOW_RGB_MODES:
        return img.convert("RGB")
    raise ValueError(f"unsupported image mode {mode}")


def decode_rgb(data: bytes, draft_size: Optional[int] = None):
    """Encoded bytes -> upright 8-bit RGB PIL image (raises on undecodable bytes).

    draft_size: a JPEG at least 4x that on both sides is decoded at a reduced DCT scale that still
    leaves it 2x the size or more (a model's antialiased resize then makes the final reduction), so a
    huge photo never expands to full size in memory.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        orientation = orientation_of(img)
        if draft_size and img.format in ("JPEG", "MPO"):
            img.draft(None, (2 * draft_size, 2 * draft_size))
        rgb = to_rgb8(img)
    return apply_orientation(rgb, orientation)


# -- JPEG header scan (tensor decode path): orientation and what nvJPEG can take, without Pillow --------

@dataclass(frozen=True)
class JpegHeader:
    orientation: int = 1
    sof: Optional[int] = None          # the SOFn marker byte (0xC0 baseline, 0xC2 progressive, ...)
    precision: int = 8
    components: int = 0
    adobe_transform: Optional[int] = None
    width: int = 0
    height: int = 0

    @property
    def tensor_decodable(self) -> bool:
        """Huffman baseline/extended/progressive, 8-bit, grey or YCbCr: what torchvision's libjpeg and
        nvJPEG decoders turn into RGB correctly. CMYK/YCCK (4 components, Adobe inverted), RGB-coded
        (Adobe transform 0), 12-bit, lossless and arithmetic-coded JPEGs go to the PIL path."""
        return self.sof in (0xC0, 0xC1, 0xC2) and self.precision == 8 and self.components in (1, 3) \
            and self.adobe_transform in (None, 1) and self.width > 0 and self.height > 0


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def jpeg_header(data: bytes) -> Optional[JpegHeader]:
    """Markers of a JPEG up to its first scan; None when `data` is not a JPEG or the header is cut."""
    if data[:3] != b"\xff\xd8\xff":
        return None
    fields: dict = {}
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:        # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        body = data[pos + 4:pos + 2 + length]
        if marker == 0xDA or marker == 0xD9:
            break
        if marker == 0xE1 and body[:6] == b"Exif\x00\x00" and "orientation" not in fields:
            fields["orientation"] = _tiff_orientation(body[6:])
        elif marker == 0xEE and body[:5] == b"Adobe" and len(body) >= 12:
            fields["adobe_transform"] = body[11]
        elif marker in _SOF_MARKERS and "sof" not in fields and len(body) >= 6:
            precision, height, width, components = struct.unpack(">BHHB", body[:6])
            fields.update(sof=marker, precision=precision, height=height, width=width, components=components)
        pos += 2 + length
    else:
        return None
    return JpegHeader(**fields)


def _tiff_orientation(tiff: bytes) -> int:
    """Orientation tag of IFD0 in a TIFF/EXIF block (1 when absent or malformed)."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == EXIF_ORIENTATION_TAG:
                fmt = order + ("H" if kind == 3 else "I")
                value = struct.unpack(fmt, entry[8:8 + struct.calcsize(fmt)])[0]
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error, IndexError):
        pass
    return 1
