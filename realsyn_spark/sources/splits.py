"""Input splits: a large file is read by many tasks, each streaming its own part of it from storage.

    splits = plan_splits(path, kind, size, split_bytes)        # on the driver, from the listing only
    for record in parse_split(split, html_base_url, max_record_bytes):   # on an executor
        ...

A split owns the records that *begin* in its byte range [start, end) (Hadoop semantics), so every
record is read by exactly one split; how each format finds its first record is in its parser:

* WARC/ARC (.gz or plain): byte ranges; a split starts at the first gzip member (or, uncompressed, the
  first `WARC/1.x` / ARC header line) that begins a record at or after `start` (`sources.warc`).
* PDF: the k-th of n splits reads pages [k*P/n, (k+1)*P/n) of the P pages (`sources.pdf`); the
  ingest stage joins the parts back into one document.
* JSONL (plain `.jsonl` only): byte ranges on line boundaries. Row numbers (record offsets) are the
  same as in a whole-file read: `first_row` is the number of lines before the split, counted by a
  cheap pre-pass (`count_line_starts`) only for files that are split at all.
* Parquet: the row groups whose data begins in [start, end) (`sources.obelics`).
* HTML, `.json` arrays, `.jsonl.gz`: not splittable; one split per file.

Record offsets, and so document ids, depend only on the file and the record, never on the split.
Files are opened by URI with `sources.fileio` (local, file:, s3://, gs://, abfss://, hdfs://).
"""
from __future__ import annotations

import posixpath
from typing import Iterator, NamedTuple, Optional
from urllib.parse import urlsplit

from . import SourceError
from . import fileio
from .dispatch import Parsed, guarded

# Kinds whose files can be cut into several splits (plain .jsonl only: see _is_splittable).
_SPLITTABLE_KINDS = frozenset({"warc", "arc", "pdf", "obelics_jsonl", "obelics_parquet"})


class Split(NamedTuple):
    path: str              # the file's URI as listed (also the documents' source_uri)
    kind: str              # detect.detect_kind of the path
    size: int              # file size in bytes at listing time
    index: int             # 0-based split number within the file
    count: int             # splits of this file
    start: int             # byte range [start, end) whose records this split owns
    end: int
    first_row: int = 0     # JSONL: row number of the first line owned (see count_line_starts)

    @property
    def length(self) -> int:
        return self.end - self.start


def _file_name(path: str) -> str:
    return posixpath.basename(urlsplit(path).path if "://" in path else path).lower()


def is_splittable(path: str, kind: str) -> bool:
    if kind not in _SPLITTABLE_KINDS:
        return False
    if kind == "obelics_jsonl":
        return _file_name(path).endswith(".jsonl")  # not .jsonl.gz (gzip) nor .json (may be an array)
    return True


def plan_splits(path: str, kind: str, size: int, split_bytes: int) -> list[Split]:
    """The splits of one file: ceil(size / split_bytes) equal byte ranges for splittable kinds, else one."""
    if split_bytes < 1:
        raise ValueError("split_bytes must be positive")
    count = max(1, -(-size // split_bytes)) if is_splittable(path, kind) else 1
    bounds = [size * i // count for i in range(count + 1)]
    return [Split(path, kind, size, i, count, bounds[i], bounds[i + 1]) for i in range(count)]


def count_split_lines(split: tuple) -> tuple[str, int, int]:
    """(path, split index, lines beginning in the split): the JSONL pre-pass, run on executors."""
    from .obelics import count_line_starts

    split = Split(*split)
    with fileio.open_input(split.path) as stream:
        return split.path, split.index, count_line_starts(stream, split.start, split.end)


def with_first_rows(splits: list[Split], line_counts: dict[tuple[str, int], int]) -> list[Split]:
    """Set each JSONL split's first_row from the line counts of the splits before it in its file."""
    result, running = [], {}
    for split in sorted(splits, key=lambda s: (s.path, s.index)):
        if (split.path, split.index) in line_counts:
            first = running.get(split.path, 0)
            running[split.path] = first + line_counts[(split.path, split.index)]
            split = split._replace(first_row=first)
        result.append(split)
    return result


def pack_splits(splits: list[Split], target_bytes: int, open_cost_bytes: int = 4 << 20) -> list[list[Split]]:
    """Group splits into tasks of about `target_bytes` (each split costs at least `open_cost_bytes`),
    largest first, as Spark packs files into partitions: big splits get a task each, small files share."""
    tasks: list[list[Split]] = []
    current: list[Split] = []
    current_bytes = 0
    for split in sorted(splits, key=lambda s: (-s.length, s.path, s.index)):
        cost = max(split.length, open_cost_bytes)
        if current and current_bytes + cost > target_bytes:
            tasks.append(current)
            current, current_bytes = [], 0
        current.append(split)
        current_bytes += cost
    if current:
        tasks.append(current)
    return tasks


def _unreadable(split: Split, exc: OSError) -> Iterator[Parsed]:
    if split.index == 0:  # every split of a missing file fails alike; the first one reports it
        yield SourceError(split.path, None, "unreadable_file", f"{type(exc).__name__}: {exc}"[:300])


def parse_split(split: Split, html_base_url: str = "http://localhost/",
                max_record_bytes: Optional[int] = None) -> Iterator[Parsed]:
    """Documents, Blobs and SourceErrors of one split, streamed from storage. Never raises for bad
    input: a file that vanished or may not be read is one `unreadable_file` error (from split 0), and
    a parser failure a `parser_crash` error. Other errors while *opening* the file (a flaky object
    store, missing credentials) propagate, so that Spark retries the task and, if they persist, the
    file is not recorded as ingested."""
    try:
        if split.kind == "pdf":
            yield from _pdf_split(split, max_record_bytes)
            return
        with fileio.open_input(split.path) as stream:
            yield from guarded(split.path, lambda: _stream_split(split, stream, html_base_url,
                                                                                       max_record_bytes))
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        yield from _unreadable(split, exc)


def _stream_split(split: Split, stream, html_base_url: str, max_record_bytes: Optional[int]) -> Iterator[Parsed]:
    from .html import parse_html
    from .obelics import parse_obelics_jsonl, parse_obelics_parquet
    from .warc import parse_warc

    whole = split.count == 1
    end = None if whole else split.end
    if split.kind in ("warc", "arc"):
        return parse_warc(split.path, stream, split.kind, split.start, end, max_record_bytes)
    if split.kind == "obelics_jsonl":
        return parse_obelics_jsonl(split.path, stream, split.start, end, split.first_row, max_record_bytes)
    if split.kind == "obelics_parquet":
        return parse_obelics_parquet(split.path, stream, split.start, end)
    if split.kind == "html":
        return _html(split, stream, html_base_url, max_record_bytes, parse_html)
    return iter([SourceError(split.path, None, "unsupported_kind", f"no parser for kind {split.kind!r}")])


def _html(split: Split, stream, html_base_url: str, max_record_bytes: Optional[int], parse_html) -> Iterator[Parsed]:
    if max_record_bytes is not None and split.size > max_record_bytes:
        yield SourceError(split.path, None, "too_large",
                          f"{split.size} bytes exceeds ingest.max_document_bytes ({max_record_bytes})")
        return
    yield from parse_html(split.path, stream.read(), html_base_url)


def _pdf_split(split: Split, max_record_bytes: Optional[int]) -> Iterator[Parsed]:
    from .pdf import parse_pdf_file

    with fileio.local_file(split.path) as local_path:
        with open(local_path, "rb") as handle:
            file_hash = fileio.sha256_of(handle)
        yield from guarded(
            split.path, lambda: parse_pdf_file(split.path, local_path, file_hash, split.index, split.count,
                                       max_record_bytes))
