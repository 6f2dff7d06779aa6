"""Trainer-side readers of the Parquet export: a plain `torch.utils.data.IterableDataset` (pyarrow only).

Why not petastorm: petastorm 0.13.1 (its latest) needs pyarrow 14, which pyspark 4's pandas UDFs refuse,
so it cannot share this environment; `deploy/trainer/` builds a separate petastorm environment for
trainers that want it. This reader needs nothing beyond pyarrow and torch, runs without Spark or any
executor, and reads local paths or object stores through `pyarrow.fs`.

Work is split by row group (Spark writes one or more per file): piece i of the sorted (file, row group)
list goes to global worker i mod (world_size x num_workers), global worker = rank x num_workers +
worker id, so every row is read exactly once per epoch across ranks and DataLoader workers. Pieces are
shuffled per epoch by a seed (`set_epoch`), rows inside a piece too. Images are decoded with the
pipeline's own helper (`udfs.pixels.decode_rgb`: EXIF-upright 8-bit RGB, transparency on white), so a
trainer sees the pixels that were embedded; rows whose bytes do not decode are skipped and counted.
"""
from __future__ import annotations

import os
import random
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

TEXT_COLUMNS = ("text1", "text2", "text3", "syn_text")


def _filesystem(uri: str):
    from pyarrow import fs as pafs

    from realsyn_spark.sources import fileio

    local = fileio._local_path(uri)
    if local is not None:
        return pafs.LocalFileSystem(), os.path.abspath(local)
    return fileio._remote(uri)


def parquet_files(uri: str) -> tuple[object, list[str]]:
    """(filesystem, sorted Parquet file paths) of a file or folder (Spark's _SUCCESS and .crc skipped)."""
    from pyarrow import fs as pafs

    filesystem, path = _filesystem(uri)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.File:
        return filesystem, [path]
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")
                   and not os.path.basename(i.path).startswith(("_", ".")))
    return filesystem, files


def _rank_world(rank: Optional[int], world_size: Optional[int]) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ParquetImageText(IterableDataset):
    """(image, text) samples from the Parquet export, like open_clip's WebDataset loader gives them.

    `text`: a column name, or "random" for one of text1..3/syn_text drawn per sample (the paper trains on
    a text sampled from the three realistic texts and the synthetic one). `transform` maps the PIL image
    (e.g. open_clip's preprocess), `tokenizer` the text (e.g. open_clip's; its first row is kept)."""

    def __init__(self, uri: str, text: str = "text1", transform: Optional[Callable] = None,
                 tokenizer: Optional[Callable] = None, shuffle: bool = True, seed: int = 0,
                 rank: Optional[int] = None, world_size: Optional[int] = None,
                 extra_columns: Sequence[str] = ()):
        self.uri, self.text, self.transform, self.tokenizer = uri, text, transform, tokenizer
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.extra_columns = tuple(extra_columns)
        self.undecodable = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def pieces(self) -> list[tuple[str, int]]:
        import pyarrow.parquet as pq

        filesystem, files = parquet_files(self.uri)
        out = []
        for path in files:
            with filesystem.open_input_file(path) as handle:
                out += [(path, g) for g in range(pq.ParquetFile(handle).num_row_groups)]
        return out

    def my_pieces(self) -> list[tuple[str, int]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        pieces = self.pieces()
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(pieces)
        total, me = self.world_size * workers, self.rank * workers + worker
        return [p for i, p in enumerate(pieces) if i % total == me]

    def _columns(self) -> list[str]:
        texts = list(TEXT_COLUMNS) if self.text == "random" else [self.text]
        return list(dict.fromkeys(["image_id", "image_bytes", *texts, *self.extra_columns]))

    def __iter__(self) -> Iterator:
        import pyarrow.parquet as pq

        from udfs.pixels import decode_rgb

        filesystem, _ = _filesystem(self.uri)
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.rank}")
        for path, group in self.my_pieces():
            with filesystem.open_input_file(path) as handle:
                table = pq.ParquetFile(handle).read_row_group(group, columns=self._columns())
            rows = table.to_pylist()
            if self.shuffle:
                rng.shuffle(rows)
            for row in rows:
                if not row["image_bytes"]:
                    self.undecodable += 1
                    continue
                try:
                    image = decode_rgb(row["image_bytes"])
                except Exception:  # noqa: BLE001 - a bad image is skipped, the epoch goes on
                    self.undecodable += 1
                    continue
                yield self._sample(row, image, rng)

    def _sample(self, row: dict, image, rng: random.Random):
        if self.text == "random":
            text = rng.choice([row[c] for c in TEXT_COLUMNS if row.get(c)] or [""])
        else:
            text = row[self.text] or ""
        image = self.transform(image) if self.transform else image
        text = self.tokenizer(text)[0] if self.tokenizer else text
        if self.extra_columns:
            return image, text, {c: row[c] for c in self.extra_columns}
        return image, text
