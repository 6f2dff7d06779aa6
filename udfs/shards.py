"""WebDataset shards written inside executors, in the layout open_clip's and img2dataset's readers use.

One sample per image: `<key>.jpg|png|webp` (the stored bytes, re-encoded to PNG only when the format is
none of those three, since open_clip's loader renames "jpg;png;jpeg;webp" to the image), `<key>.txt`
(the caption: `text1` as in the released RealSyn shards, or `syn_text`) and `<key>.json` (every text,
score, cluster, scale and the provenance). The key is the image id (hex: no dots, stable across runs).
Rows arrive sorted by shard, so a task streams one tar at a time: memory is one Arrow batch.
"""
from __future__ import annotations

import io
import json
import tarfile
from typing import Iterator

import pandas as pd

SHARD_NAME = "{:05d}.tar"
SHARD_RESULT_SCHEMA = "shard int, name string, samples long, bytes long"
# Fixed member metadata: the same rows give byte-identical shards on every run.
_MTIME, _MODE = 0, 0o444


def image_member(data: bytes) -> tuple[str, bytes]:
    """(extension, bytes) for the sample's image: JPEG, PNG and WebP as stored, anything else as PNG."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg", data
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png", data
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", data
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGBA" if "A" in image.getbands() else "RGB").save(out, "PNG")
    return "png", out.getvalue()


def _value(value):
    """JSON-ready: numpy scalars and arrays to Python numbers and lists, NaN/None to None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and value != value:
        return None
    return value


def sample_members(row: dict, caption_col: str) -> list[tuple[str, bytes]]:
    key = row["image_id"]
    extension, image = image_member(bytes(row["image_bytes"]))
    meta = {"key": key, "url": row["raw_image_url"], "caption": row[caption_col]}
    meta.update({name: _value(row[name]) for name in row if name not in ("image_bytes", "shard")})
    return [(f"{key}.{extension}", image), (f"{key}.txt", (row[caption_col] or "").encode("utf-8")),
            (f"{key}.json", json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8"))]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), _MTIME, _MODE
    tar.addfile(info, io.BytesIO(data))


class _ShardFile:
    def __init__(self, folder: str, shard: int):
        from realsyn_spark.sources.fileio import open_output

        self.shard, self.name, self.samples = shard, SHARD_NAME.format(shard), 0
        self.stream = open_output(f"{folder.rstrip('/')}/{self.name}")
        self.tar = tarfile.open(fileobj=self.stream, mode="w|", format=tarfile.USTAR_FORMAT)
        self.bytes = 0

    def add(self, members: list[tuple[str, bytes]]) -> None:
        for name, data in members:
            _add(self.tar, name, data)
            self.bytes += len(data)
        self.samples += 1

    def close(self) -> tuple[int, str, int, int]:
        self.tar.close()
        self.stream.close()
        return self.shard, self.name, self.samples, self.bytes


def shard_writer(folder: str, caption_col: str):
    """mapInPandas body over rows sorted by (shard, image_id): writes each shard's tar under `folder`
    and returns one row per shard written (shard, name, samples, bytes)."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        written, current = [], None
        try:
            for batch in batches:
                for row in batch.to_dict("records"):
                    if current is None or current.shard != row["shard"]:
                        if current is not None:
                            written.append(current.close())
                        current = _ShardFile(folder, int(row["shard"]))
                    current.add(sample_members(row, caption_col))
            if current is not None:
                written.append(current.close())
                current = None
        finally:
            if current is not None:   # a failed task leaves a partial tar in the staging folder only
                current.stream.close()
        yield pd.DataFrame(written, columns=["shard", "name", "samples", "bytes"])

    return run
