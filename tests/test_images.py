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
from tests.image_payloads import bomb_png, encode, exif_rotated_jpeg, noisy_rgb, png_chunk

MAX_PIXELS = 89_478_485  # FetchConfig default


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


# -- udfs.pixels.decode_rgb: every pixel consumer's decode (upright, 8-bit RGB, transparency on white) ---

from udfs.phash import phash_views
from udfs.pixels import apply_orientation, decode_rgb, jpeg_header, orientation_of, to_rgb8

np = pytest.importorskip("numpy")

# Stored pixels for orientation o: the upright picture put through the inverse of o's transform (the
# flips and transposes are their own inverse; 6 and 8 are each other's).
_INVERSE = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}


def photo(width: int = 96, height: int = 64, seed: int = 3) -> Image.Image:
    """Smooth, asymmetric, non-square content (a gradient plus blobs): rotations change it a lot."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 255, (4, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    ramp = np.linspace(0, 120, width, dtype=np.float64)[None, :, None] * np.ones((height, 1, 3))
    return Image.fromarray(np.clip(np.asarray(coarse) * 0.6 + ramp, 0, 255).astype(np.uint8))


def stored_with_orientation(upright: Image.Image, orientation: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = apply_orientation(upright, _INVERSE[orientation])
    return encode(stored, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))


def mean_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_decode_applies_every_exif_orientation_to_the_pixels(orientation, fmt):
    upright = photo()
    data = stored_with_orientation(upright, orientation, fmt)
    got = decode_rgb(data)
    assert got.mode == "RGB" and got.size == upright.size == (96, 64)
    info = inspect_image(data, MAX_PIXELS)
    assert (info.width, info.height) == got.size  # sizes and pixels agree
    assert mean_abs(got, upright) < (3 if fmt == "JPEG" else 1e-9 if fmt == "PNG" else 6)
    if fmt == "JPEG":
        assert jpeg_header(data).orientation == orientation
        with Image.open(io.BytesIO(data)) as img:
            assert orientation_of(img) == orientation


def test_rotated_copies_are_perceptual_near_duplicates_through_the_phash_path():
    upright = photo(160, 100, seed=11)
    reference, _ = phash_views(encode(upright, "JPEG", quality=90), 0.8)
    for orientation in range(2, 9):
        data = stored_with_orientation(upright, orientation, "JPEG")
        full, core = phash_views(data, 0.8)
        assert bin((full ^ reference) & (2 ** 64 - 1)).count("1") <= 4, orientation
        # the fixture discriminates: the stored (unrotated) pixels hash far away
        with Image.open(io.BytesIO(data)) as raw:
            from udfs.phash import _phash_int
            stored = _phash_int(raw.convert("RGB"))
        assert bin((stored ^ reference) & (2 ** 64 - 1)).count("1") > 12, orientation


def test_broken_exif_orientation_is_ignored():
    exif = Image.Exif()
    exif[0x0112] = 42
    data = encode(photo(), "JPEG", exif=exif.tobytes())
    assert jpeg_header(data).orientation == 1
    assert decode_rgb(data).size == (96, 64)


# -- modes: a reference rendering per Pillow mode ------------------------------------------------------

def gray_ramp(width: int = 40, height: int = 24) -> np.ndarray:
    return (np.arange(width * height).reshape(height, width) * 255 // (width * height - 1)).astype(np.uint8)


def rgb_of_gray(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[:, :, None], 3, axis=2)


def _gray_modes():
    g = gray_ramp()
    g16 = g.astype(np.uint16) * 257
    size = (g.shape[1], g.shape[0])
    return g, {
        "L": Image.fromarray(g, "L"),
        "1": Image.fromarray(g, "L").convert("1", dither=Image.Dither.NONE),
        "I;16": Image.frombytes("I;16", size, g16.astype("<u2").tobytes()),
        "I;16B": Image.frombytes("I;16B", size, g16.astype(">u2").tobytes()),
        "I;16L": Image.frombytes("I;16L", size, g16.astype("<u2").tobytes()),
        "I (16-bit values)": Image.fromarray(g16.astype(np.int32), "I"),
        "I (8-bit values)": Image.fromarray(g.astype(np.int32), "I"),
        "F (0..1)": Image.fromarray(g.astype(np.float32) / 255.0, "F"),
        "F (0..255)": Image.fromarray(g.astype(np.float32), "F"),
    }


@pytest.mark.parametrize("name", list(_gray_modes()[1]))
def test_grey_and_high_bit_depth_modes_scale_to_8_bits(name):
    g, images = _gray_modes()
    expected = rgb_of_gray((g > 127).astype(np.uint8) * 255 if name == "1" else g)
    got = np.asarray(to_rgb8(images[name]))
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.abs(got.astype(int) - expected).max() <= 1, name


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_files_do_not_turn_white(fmt):
    g = gray_ramp()
    img = Image.frombytes("I;16", (g.shape[1], g.shape[0]), (g.astype(np.uint16) * 257).astype("<u2").tobytes())
    data = encode(img, fmt)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode.startswith("I")          # what Pillow hands over for a 16-bit grey file
        assert np.asarray(raw.convert("RGB")).mean() > 200  # the class of defect: convert("RGB") clips
    got = np.asarray(decode_rgb(data))
    assert np.abs(got.astype(int) - rgb_of_gray(g)).max() <= 1


def _few_colours() -> Image.Image:
    blocks = np.array([[[200, 30, 30], [30, 200, 30], [30, 30, 200]], [[250, 250, 0], [0, 0, 0], [128, 64, 255]]],
                      np.uint8)
    return Image.fromarray(blocks).resize((48, 32), Image.NEAREST)


@pytest.mark.parametrize("mode, tolerance", [("RGB", 0), ("P", 0), ("YCbCr", 3), ("CMYK", 0)])
def test_colour_modes_render_as_the_reference(mode, tolerance):
    reference = _few_colours()
    img = reference.convert(mode, palette=Image.Palette.ADAPTIVE) if mode == "P" else reference.convert(mode)
    assert np.abs(np.asarray(to_rgb8(img)).astype(int) - np.asarray(reference)).max() <= tolerance


def test_cmyk_jpeg_with_adobe_inverted_channels_renders_upright_colours():
    reference = photo(64, 48)
    data = encode(reference.convert("CMYK"), "JPEG", quality=95)
    header = jpeg_header(data)
    assert header.components == 4 and header.adobe_transform is not None  # libjpeg writes Adobe CMYK
    assert not header.tensor_decodable
    assert mean_abs(decode_rgb(data), reference) < 4


def test_rgb_coded_jpeg_goes_to_pillow_and_renders_its_colours():
    reference = photo(64, 48)
    data = encode(reference, "JPEG", quality=95, keep_rgb=True)   # Adobe transform 0: no YCbCr
    header = jpeg_header(data)
    assert header.components == 3 and header.adobe_transform == 0 and not header.tensor_decodable
    assert mean_abs(decode_rgb(data), reference) < 4


def _alpha_reference():
    """RGB content whose transparent pixels store BLACK (as many encoders leave them), an alpha ramp,
    and the expected rendering: composited on white."""
    rgb = np.asarray(_few_colours()).astype(np.float64)
    alpha = np.zeros(rgb.shape[:2], np.float64)
    alpha[:, 16:32], alpha[:, 32:] = 128, 255
    rgb[:, :16] = 0
    expected = rgb * alpha[..., None] / 255 + 255 * (1 - alpha[..., None] / 255)
    return rgb.astype(np.uint8), alpha.astype(np.uint8), expected


def _alpha_images():
    rgb, alpha, expected = _alpha_reference()
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    gray = np.asarray(Image.fromarray(rgb).convert("L")).astype(np.float64)
    gray_expected = gray * alpha / 255 + 255 * (1 - alpha / 255)
    la = Image.fromarray(np.dstack([gray.astype(np.uint8), alpha]), "LA")
    pa = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).convert("PA")
    pa.putalpha(Image.fromarray(alpha))
    return {"RGBA": (rgba, expected), "LA": (la, rgb_of_gray(gray_expected)), "PA": (pa, expected)}


@pytest.mark.parametrize("name", ["RGBA", "LA", "PA"])
def test_alpha_modes_composite_on_white(name):
    img, expected = _alpha_images()[name]
    assert img.mode == name
    got = np.asarray(to_rgb8(img)).astype(np.float64)
    assert np.abs(got - expected).max() <= 1.5
    assert got[:, :16].min() >= 254        # fully transparent: white, not the stored black


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparent_index_composites_on_white(fmt):
    reference = _few_colours()
    pal = reference.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    black = pal.getpixel((24, 20))           # the black block (row 1, column 1) is the transparent entry
    data = encode(pal, fmt, transparency=black)
    with Image.open(io.BytesIO(data)) as raw:
        assert "transparency" in raw.info
        assert np.asarray(raw.convert("RGB"))[20, 24].tolist() == [0, 0, 0]
    got = np.asarray(decode_rgb(data))
    assert got[20, 24].tolist() == [255, 255, 255]
    assert got[5, 5].tolist() == [200, 30, 30]


def test_truecolour_and_grey_png_with_transparent_colour_composite_on_white():
    reference = _few_colours()
    rgb_png = encode(reference, "PNG", transparency=(0, 0, 0))
    assert np.asarray(decode_rgb(rgb_png))[20, 24].tolist() == [255, 255, 255]
    grey = reference.convert("L")
    grey_png = encode(grey, "PNG", transparency=0)
    assert np.asarray(decode_rgb(grey_png))[20, 24].tolist() == [255, 255, 255]
    assert np.asarray(decode_rgb(grey_png))[5, 5].tolist() == [grey.getpixel((5, 5))] * 3


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (30, 20), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
    got = np.asarray(decode_rgb(buf.getvalue()))
    assert got.shape == (20, 30, 3) and abs(int(got[10, 10, 0]) - 250) <= 4 and got[10, 10, 2] <= 4


def test_unaccepted_mode_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="unsupported image mode"):
        to_rgb8(Image.new("LAB", (4, 4)))


def test_large_jpeg_drafts_down_but_stays_at_least_twice_the_input():
    data = encode(photo(1800, 1200), "JPEG", quality=85)
    got = decode_rgb(data, draft_size=224)
    assert 448 <= min(got.size) < 1200


def test_phash_udf_body_groups_rotated_copies_under_one_hash_neighbourhood():
    import pandas as pd

    from udfs.phash import hamming, phash_mapper

    upright = photo(200, 120, seed=5)
    other = photo(200, 120, seed=6)
    images = [stored_with_orientation(upright, o, "JPEG") for o in range(1, 9)] + [encode(other, "JPEG")]
    frame = pd.DataFrame({"sha256": [f"s{i}" for i in range(len(images))], "image_bytes": images})
    out = pd.concat(list(phash_mapper(0.8)(iter([frame.iloc[:4], frame.iloc[4:]]))))
    full = out.phash.to_numpy(dtype=np.int64)
    core = out.phash_core.to_numpy(dtype=np.int64)
    assert hamming(full[:8], np.full(8, full[0])).max() <= 4
    assert hamming(core[:8], np.full(8, core[0])).max() <= 4
    assert hamming(full[8:], full[:1])[0] > 12     # a different photo stays far


@pytest.mark.parametrize("colour_type, channels", [(2, 3), (6, 4)])
def test_16_bit_colour_pngs_scale_to_8_bits(colour_type, channels):
    """16-bit RGB / RGBA PNGs (written by hand: Pillow cannot save them) keep their levels."""
    height, width = 8, 12
    levels = (np.arange(height * width * channels).reshape(height, width, channels) * 997 % 256).astype(np.uint16)
    if channels == 4:
        levels[..., 3] = 255                      # opaque: the colour must come through unchanged
    samples = (levels * 257).astype(">u2")
    raw = b"".join(b"\x00" + samples[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw)) + \
        png_chunk(b"IEND", b"")
    got = np.asarray(decode_rgb(data)).astype(int)
    assert np.abs(got - levels[..., :3]).max() <= 1
