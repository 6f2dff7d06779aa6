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
