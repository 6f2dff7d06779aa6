"""WebDataset shards written inside executors, in the layout open_clip's and img2dataset's readers use.

One sample per image: `<key>.jpg|png|webp` (the stored bytes where a loader decodes them to the pixels the
pipeline used, else re-encoded upright: see `image_member`; open_clip's loader renames
"jpg;png;jpeg;webp" to the image), `<key>.txt`
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


_KEPT_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}
# Re-encoding a JPEG that only needs turning: high quality, so the one extra generation costs little.
_REENCODE_JPEG_QUALITY = 95


def image_member(data: bytes) -> tuple[str, bytes]:
    """(extension, bytes) for the sample's image: pixels a trainer's loader shows as the pipeline saw them.

    webdataset / open_clip loaders call PIL's `convert("RGB")` and do NOT apply EXIF orientation, so the
    stored bytes are kept only when that gives what `udfs.pixels.decode_rgb` gives (the pixels that were
    hashed and embedded): a JPEG, PNG or WebP, upright (orientation 1), in a mode Pillow converts right
    and without transparency. Anything else is re-encoded from decode_rgb's upright 8-bit RGB: a JPEG as
    JPEG (quality 95), the rest as PNG, with no EXIF orientation left to apply twice.
    """
    from PIL import Image

    from udfs.pixels import LOADER_SAFE_MODES, decode_rgb, orientation_of

    with Image.open(io.BytesIO(data)) as image:
        fmt, mode = image.format, image.mode
        kept = _KEPT_EXTENSIONS.get(fmt)
        if kept and orientation_of(image) == 1 and mode in LOADER_SAFE_MODES and "transparency" not in image.info:
            return kept, data
    out = io.BytesIO()
    if kept == "jpg":
        decode_rgb(data).save(out, "JPEG", quality=_REENCODE_JPEG_QUALITY)
        return "jpg", out.getvalue()
    decode_rgb(data).save(out, "PNG")
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
    # pandas hands a missing text over as NaN (a float), not None: _value maps both to None.
    caption = _value(row[caption_col])
    meta = {"key": key, "url": row["raw_image_url"], "caption": caption}
    meta.update({name: _value(row[name]) for name in row if name not in ("image_bytes", "shard")})
    return [(f"{key}.{extension}", image), (f"{key}.txt", (caption or "").encode("utf-8")),
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
