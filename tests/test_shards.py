"""WebDataset shard writing inside executors (udfs/shards.py), without Spark."""
import io
import json
import tarfile

import pandas as pd
import pytest
from PIL import Image

from udfs.shards import image_member, shard_writer


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (120, 110), "teal").save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt,extension,kept", [("JPEG", "jpg", True), ("PNG", "png", True), ("WEBP", "webp", True),
                                                 ("GIF", "png", False), ("BMP", "png", False)])
def test_image_member_keeps_what_loaders_decode_and_converts_the_rest(fmt, extension, kept):
    data = _encoded(fmt, "P" if fmt == "GIF" else "RGB")
    got_extension, got = image_member(data)
    assert got_extension == extension and (got == data) == kept
    with Image.open(io.BytesIO(got)) as image:
        assert image.size == (120, 110)


def _rows(n: int, shards: int) -> pd.DataFrame:
    rows = [{"image_id": f"{i:024x}", "raw_image_url": f"https://example.org/{i}.jpg", "image_bytes": _encoded("JPEG"),
             "text1": f"first text {i}", "text2": None, "score1": 0.5, "score2": float("nan"),
             "syn_text": f"synthetic {i}", "scales": [20, 35], "shard": i % shards} for i in range(n)]
    return pd.DataFrame(rows).sort_values(["shard", "image_id"])


def _write(folder, frame: pd.DataFrame, caption="text1") -> pd.DataFrame:
    halves = [frame.iloc[: len(frame) // 2], frame.iloc[len(frame) // 2:]]   # a shard spans two Arrow batches
    return pd.concat(list(shard_writer(str(folder), caption)(iter(halves))))


def test_one_tar_per_shard_with_image_caption_and_metadata(tmp_path):
    written = _write(tmp_path, _rows(9, 3), caption="syn_text")
    assert sorted(written.name) == ["00000.tar", "00001.tar", "00002.tar"] and written.samples.tolist() == [3, 3, 3]
    with tarfile.open(tmp_path / "00001.tar") as tar:
        names = tar.getnames()
        assert names[:3] == [f"{1:024x}.jpg", f"{1:024x}.txt", f"{1:024x}.json"] and len(names) == 9
        assert tar.extractfile(names[1]).read().decode() == "synthetic 1"
        meta = json.loads(tar.extractfile(names[2]).read())
    assert meta["key"] == f"{1:024x}" and meta["caption"] == "synthetic 1" and meta["text1"] == "first text 1"
    assert meta["text2"] is None and meta["score2"] is None and meta["scales"] == [20, 35]
    assert "image_bytes" not in meta and "shard" not in meta


def test_same_rows_give_byte_identical_shards(tmp_path):
    frame = _rows(6, 2)
    _write(tmp_path / "a", frame)
    _write(tmp_path / "b", frame)
    for name in ("00000.tar", "00001.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# -- what a trainer's loader sees: PIL open + convert("RGB"), no EXIF orientation (webdataset / open_clip) --

def _loader_view(data: bytes):
    import numpy as np

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def _photo(width=90, height=60):
    import numpy as np

    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    ramp[: height // 3, :, 1] = 40
    return Image.fromarray(ramp.astype("uint8"))


@pytest.mark.parametrize("orientation", range(2, 9))
def test_rotated_jpeg_is_exported_upright_and_still_a_jpeg(orientation):
    import numpy as np

    from udfs.pixels import apply_orientation, decode_rgb

    inverse = {2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    apply_orientation(_photo(), inverse).save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    extension, got = image_member(buffer.getvalue())
    assert extension == "jpg" and got != buffer.getvalue()
    view = _loader_view(got)
    assert view.shape == (60, 90, 3)
    assert np.abs(view - np.asarray(decode_rgb(buffer.getvalue())).astype(int)).mean() < 2
    with Image.open(io.BytesIO(got)) as image:
        assert image.getexif().get(0x0112) in (None, 1)


def _encoded_image(image, fmt, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def test_modes_a_loader_renders_wrong_are_re_encoded_as_the_pipeline_saw_them():
    import numpy as np

    from udfs.pixels import decode_rgb

    g = (np.arange(60 * 90).reshape(60, 90) * 255 // (60 * 90)).astype(np.uint16)
    sixteen = _encoded_image(Image.frombytes("I;16", (90, 60), (g * 257).astype("<u2").tobytes()), "PNG")
    rgba = np.zeros((60, 90, 4), np.uint8)
    rgba[:, 45:] = (200, 10, 10, 255)                          # left half transparent black
    transparent = _encoded_image(Image.fromarray(rgba, "RGBA"), "PNG")
    palette = _encoded_image(_photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG", transparency=0)
    for data in (sixteen, transparent, palette):
        extension, got = image_member(data)
        assert extension == "png" and got != data
        np.testing.assert_array_equal(_loader_view(got), np.asarray(decode_rgb(data)))
    ramp = _loader_view(image_member(sixteen)[1])
    assert ramp[0, 0].max() < 5 and ramp[-1, -1].min() > 245 and 100 < ramp.mean() < 160  # a ramp, not white
    assert _loader_view(image_member(transparent)[1])[:, 0].min() == 255  # transparent on white


def test_upright_jpeg_with_exif_orientation_1_keeps_its_bytes():
    exif = Image.Exif()
    exif[0x0112] = 1
    data = _encoded_image(_photo(), "JPEG", exif=exif.tobytes())
    assert image_member(data) == ("jpg", data)


def test_a_missing_caption_from_pandas_nan_is_an_empty_text():
    import io

    from PIL import Image

    from udfs.shards import sample_members

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    row = {"image_id": "a", "image_bytes": buf.getvalue(), "raw_image_url": "http://x/a.png",
           "text1": float("nan"), "score1": float("nan")}
    members = dict(sample_members(row, "text1"))
    assert members["a.txt"] == b""
    assert b"NaN" not in members["a.json"] and b'"caption": null' in members["a.json"]
