"""OBELICS-style interleaved records (JSONL, gzip JSONL, JSON array, Parquet) -> Documents and Blobs.

A record holds aligned lists `texts` and `images`: at each index exactly one is set, and the index
order is the reading order. `metadata` (per-node, OBELICS stores a JSON string of a list) and
`general_metadata` (per-page, a JSON string of a dict with the page `url`) are optional, and so is an
aligned `image_bytes` list (base64 text in JSON, binary in Parquet) that carries the images inline.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import zlib
from typing import Any, BinaryIO, Iterator, Optional, Union

from . import Blob, Document, Node, SourceError

Parsed = Union[Document, Blob, SourceError]

_INLINE_HASH_CHARS = 24
_REASON_CHARS = 300
_URL_KEYS = ("url", "document_url", "page_url")
_ALT_KEYS = ("alt_text", "alt")
_IMAGE_DICT_URL_KEYS = ("url", "src", "path")


class MalformedRecord(ValueError):
    """A record that does not have the OBELICS shape; reported as a SourceError for its row."""


# ---------------------------------------------------------------------------------------------------
# Record -> Document
# ---------------------------------------------------------------------------------------------------

def _json_value(value: Any, field: str) -> Any:
    """OBELICS stores metadata as JSON strings; other producers store the object itself."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise MalformedRecord(f"{field} is not valid JSON: {exc}") from exc
    return value


def _aligned_list(row: dict, field: str, length: Optional[int]) -> list:
    values = row.get(field)
    if values is None:
        return [None] * length if length is not None else []
    if not isinstance(values, (list, tuple)):
        raise MalformedRecord(f"{field} is {type(values).__name__}, not a list")
    if length is not None and len(values) != length:
        raise MalformedRecord(f"{field} has {len(values)} entries, texts has {length}")
    return list(values)


def _document_metadata(general: Any, per_node: Any) -> dict:
    """Page-level fields at the top; OBELICS' per-node list (not a dict) kept whole under node_metadata."""
    metadata: dict = {}
    for value, name in ((general, "general_metadata"), (per_node, "node_metadata")):
        if isinstance(value, dict):
            metadata.update(value)
        elif value is not None:
            metadata[name] = value
    return metadata


def _page_url(general: Any, per_node: Any) -> Optional[str]:
    candidates = [general, per_node]
    if isinstance(per_node, list):
        candidates += [entry for entry in per_node if isinstance(entry, dict)]
    for candidate in candidates:
        if isinstance(candidate, dict):
            for key in _URL_KEYS:
                if isinstance(candidate.get(key), str) and candidate[key].strip():
                    return candidate[key].strip()
    return None


def _node_alt(per_node: Any, index: int) -> Optional[str]:
    if isinstance(per_node, list) and index < len(per_node) and isinstance(per_node[index], dict):
        for key in _ALT_KEYS:
            alt = per_node[index].get(key)
            if isinstance(alt, str) and alt.strip():
                return alt.strip()
    return None


def _image_reference(image: Any) -> tuple[Optional[str], Any]:
    """(url, embedded bytes) of an `images` entry: a URL string, or a HF Image-style dict."""
    if image is None:
        return None, None
    if isinstance(image, str):
        return (image.strip() or None), None
    if isinstance(image, dict):
        url = next((image[key] for key in _IMAGE_DICT_URL_KEYS if isinstance(image.get(key), str) and image[key]), None)
        return url, image.get("bytes")
    raise MalformedRecord(f"image entry is {type(image).__name__}")


def _image_bytes(value: Any) -> Optional[bytes]:
    """Binary columns hold the bytes themselves; JSON (and some Parquet writers) hold base64 text."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value) or None
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True) or None
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"image bytes are not valid base64: {exc}") from exc
    raise ValueError(f"image bytes are {type(value).__name__}")


def inline_image_url(data: bytes) -> str:
    return f"inline://{hashlib.sha256(data).hexdigest()[:_INLINE_HASH_CHARS]}"


def _text_paragraphs(text: Any) -> list[str]:
    """OBELICS text entries can hold several paragraphs separated by blank lines."""
    if not isinstance(text, str):
        raise MalformedRecord(f"text entry is {type(text).__name__}")
    return [" ".join(part.split()) for part in text.split("\n\n") if part.strip()]


class _RecordReader:
    """Builds the nodes and blobs of one record."""

    def __init__(self, source_uri: str, row_index: int):
        self.source_uri = source_uri
        self.location = f"row={row_index}"
        self.nodes: list[Node] = []
        self.outputs: list[Union[Blob, SourceError]] = []

    def add_text(self, text: Any) -> None:
        for paragraph in _text_paragraphs(text):
            self.nodes.append(Node(position=len(self.nodes), kind="text", text=paragraph))

    def add_image(self, image: Any, raw_bytes: Any, alt: Optional[str], index: int) -> None:
        url, embedded = _image_reference(image)
        try:
            data = _image_bytes(raw_bytes if raw_bytes is not None else embedded)
        except ValueError as exc:
            # the image can still be fetched by URL; only its inline copy is lost
            self.outputs.append(SourceError(self.source_uri, self.location, "bad_image_bytes", f"images[{index}]: {exc}"))
            data = None
        if data is not None:
            url = url or inline_image_url(data)
            self.outputs.append(Blob(image_url=url, data=data, origin="inline"))
        if url:
            self.nodes.append(Node(position=len(self.nodes), kind="image", image_url=url, alt=alt))


def record_outputs(source_uri: str, row_index: int, row: Any) -> list[Parsed]:
    """The Blobs, SourceErrors and Document of one record; raises MalformedRecord for a bad shape."""
    if not isinstance(row, dict):
        raise MalformedRecord(f"record is {type(row).__name__}, not an object")
    texts = _aligned_list(row, "texts", None)
    images = _aligned_list(row, "images", len(texts))
    image_bytes = _aligned_list(row, "image_bytes", len(texts))
    general = _json_value(row.get("general_metadata"), "general_metadata")
    per_node = _json_value(row.get("metadata"), "metadata")
    reader = _RecordReader(source_uri, row_index)
    for index, (text, image, raw_bytes) in enumerate(zip(texts, images, image_bytes)):
        if text is not None and (image is not None or raw_bytes is not None):
            raise MalformedRecord(f"index {index} has both a text and an image")
        if text is not None:
            reader.add_text(text)
        elif image is not None or raw_bytes is not None:
            reader.add_image(image, raw_bytes, _node_alt(per_node, index), index)
    title = row.get("title") if isinstance(row.get("title"), str) else None
    document = Document(
        source_uri=source_uri, source_kind="obelics", record_offset=row_index,
        url=_page_url(general, per_node), title=title, nodes=reader.nodes,
        metadata=_document_metadata(general, per_node) or None,
    )
    return [*reader.outputs, document]


def _safe_record_outputs(source_uri: str, row_index: int, row: Any) -> list[Parsed]:
    try:
        return record_outputs(source_uri, row_index, row)
    except MalformedRecord as exc:
        return [SourceError(source_uri, f"row={row_index}", "malformed_record", str(exc)[:_REASON_CHARS])]


# ---------------------------------------------------------------------------------------------------
# JSONL
# ---------------------------------------------------------------------------------------------------

def _open_maybe_gzip(stream: BinaryIO) -> tuple[bytes, BinaryIO]:
    """(first bytes of the decompressed content, a readable stream of it from the start)."""
    buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]
    if buffered.peek(2)[:2] == b"\x1f\x8b":
        buffered = io.BufferedReader(gzip.GzipFile(fileobj=buffered))  # type: ignore[arg-type]
    return buffered.peek(64)[:64], buffered


def _first_non_space(head: bytes) -> bytes:
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return stripped[:1]


def _json_array_rows(source_uri: str, content: BinaryIO, max_bytes: Optional[int] = None) -> Iterator[Parsed]:
    """A `.json` file holding one array of records instead of one record per line (read whole)."""
    data = content.read() if max_bytes is None else content.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        yield SourceError(source_uri, None, "too_large",
                          f"JSON array file exceeds ingest.max_document_bytes ({max_bytes})")
        return
    try:
        rows = json.loads(data.decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        yield SourceError(source_uri, None, "malformed_json", str(exc)[:_REASON_CHARS])
        return
    if not isinstance(rows, list):
        rows = [rows]
    for index, row in enumerate(rows):
        yield from _safe_record_outputs(source_uri, index, row)


_SKIP_CHUNK_BYTES = 1 << 20


def _read_line(content: BinaryIO, limit: Optional[int]) -> tuple[Optional[bytes], int]:
    """(the next line, bytes consumed); the line is None when it is longer than `limit` (it is skipped
    without being held in memory). (b"", 0) at the end of the stream."""
    if limit is None:
        line = content.readline()
        return line, len(line)
    line = content.readline(limit + 1)
    if len(line) <= limit or line.endswith(b"\n"):
        return line, len(line)
    consumed = len(line)
    while not line.endswith(b"\n"):
        line = content.readline(_SKIP_CHUNK_BYTES)
        if not line:
            break
        consumed += len(line)
    return None, consumed


def _jsonl_rows(source_uri: str, content: BinaryIO, first_row: int = 0, position: int = 0,
                end: Optional[int] = None, max_line_bytes: Optional[int] = None) -> Iterator[Parsed]:
    """Records of the lines that begin before `end` (all when None), numbered from `first_row`."""
    index = first_row
    try:
        while end is None or position < end:
            line, consumed = _read_line(content, max_line_bytes)
            if not consumed:
                break
            position += consumed
            row, index = index, index + 1
            if line is None:
                yield SourceError(source_uri, f"row={row}", "too_large",
                                  f"line of {consumed} bytes exceeds ingest.max_document_bytes ({max_line_bytes})")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8-sig"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield SourceError(source_uri, f"row={row}", "malformed_json", str(exc)[:_REASON_CHARS])
                continue
            yield from _safe_record_outputs(source_uri, row, record)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        yield SourceError(source_uri, f"row={index}", "corrupt_gzip", f"{type(exc).__name__}: {exc}"[:_REASON_CHARS])


def count_line_starts(stream: BinaryIO, start: int, end: int) -> int:
    """How many lines begin in [start, end) of a plain file (end <= file size): the lines a JSONL split owns.

    A line begins at offset 0 and after every newline that is not the file's last byte. Summed over
    the splits before it, this is the row number of a split's first line, so rows (and document ids)
    are the same whether a file is read whole or in splits.
    """
    low, high = max(start - 1, 0), end - 1  # a newline at p begins a line at p + 1, owned if in [start, end)
    count = 1 if start == 0 and end > 0 else 0
    stream.seek(low)
    remaining = high - low
    while remaining > 0:
        chunk = stream.read(min(remaining, _SKIP_CHUNK_BYTES))
        if not chunk:
            break
        remaining -= len(chunk)
        count += chunk.count(b"\n")
    return count


def _split_lines(source_uri: str, stream: BinaryIO, start: int, end: Optional[int], first_row: int,
                 max_line_bytes: Optional[int]) -> Iterator[Parsed]:
    """The lines of a plain JSONL file that begin in [start, end): a split begins after the first
    newline at or after start - 1 and reads on past `end` to finish the line it is in."""
    stream.seek(0)
    head = stream.read(64)
    if head[:2] == b"\x1f\x8b" or _first_non_space(head) == b"[":
        # gzip or a JSON array under a .jsonl name: cannot be split, the first split reads it whole
        if start == 0:
            stream.seek(0)
            yield from parse_obelics_jsonl(source_uri, stream, max_line_bytes=max_line_bytes)
        return
    position = start
    if start > 0:
        stream.seek(start - 1)
        if stream.read(1) != b"\n":  # inside a line that the previous split owns: skip to its end
            _, consumed = _read_line(stream, 0)
            position += consumed
    elif not head.strip():
        yield SourceError(source_uri, None, "empty_file", "file has no records")
        return
    stream.seek(position)
    yield from _jsonl_rows(source_uri, stream, first_row, position, end, max_line_bytes)


def parse_obelics_jsonl(source_uri: str, stream: BinaryIO, start: int = 0, end: Optional[int] = None,
                        first_row: int = 0, max_line_bytes: Optional[int] = None) -> Iterator[Parsed]:
    """OBELICS records, one JSON object per line (gzip or plain; a JSON array also works).

    `record_offset` and error locations use the 0-based line number. With `start`/`end` (a split of a
    plain file, seekable stream) only the lines beginning in [start, end) are read, numbered from
    `first_row` (see `count_line_starts`). Lines longer than `max_line_bytes` are reported `too_large`.
    """
    if start > 0 or end is not None:
        yield from _split_lines(source_uri, stream, start, end, first_row, max_line_bytes)
        return
    try:
        head, content = _open_maybe_gzip(stream)
    except (OSError, EOFError, zlib.error) as exc:
        yield SourceError(source_uri, None, "corrupt_gzip", f"{type(exc).__name__}: {exc}"[:_REASON_CHARS])
        return
    if not head.strip():
        yield SourceError(source_uri, None, "empty_file", "file has no records")
        return
    if _first_non_space(head) == b"[":
        yield from _json_array_rows(source_uri, content, max_line_bytes)
    else:
        yield from _jsonl_rows(source_uri, content, max_line_bytes=max_line_bytes)


# ---------------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------------

def _parquet_file(stream: BinaryIO):
    import pyarrow.parquet as pq  # imported here: the JSONL path should not pay for pyarrow

    seekable = getattr(stream, "seekable", lambda: False)()
    return pq.ParquetFile(stream if seekable else io.BytesIO(stream.read()))


_PARQUET_BATCH_ROWS = 64  # rows decoded at a time: a row group of inline images is never held whole


def row_group_start(parquet, group: int) -> int:
    """Byte offset where a row group's data begins (its first column chunk): a split owns the row
    groups that begin inside its byte range, as Spark's own Parquet reader decides."""
    meta = parquet.metadata.row_group(group)
    starts = []
    for index in range(meta.num_columns):
        column = meta.column(index)
        offset = column.dictionary_page_offset if column.has_dictionary_page else None
        starts.append(offset if offset else column.data_page_offset)
    return min(starts) if starts else 0


def parse_obelics_parquet(source_uri: str, stream: BinaryIO, start: int = 0,
                          end: Optional[int] = None) -> Iterator[Parsed]:
    """OBELICS records from a Parquet file, a few rows at a time.

    `record_offset` is the 0-based row index in the file. With `start`/`end` only the row groups that
    begin in [start, end) are read (file-level errors come from the split at 0 only). A batch that
    cannot be decoded is reported at its first row and the rest of its row group is skipped; the other
    row groups are still read.
    """
    try:
        parquet = _parquet_file(stream)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for anything that is not Parquet
        if start == 0:
            kind = "empty_file" if "size is 0" in str(exc) else "corrupt_parquet"
            yield SourceError(source_uri, None, kind, f"{type(exc).__name__}: {exc}"[:_REASON_CHARS])
        return
    first_row = 0
    for group in range(parquet.metadata.num_row_groups):
        group_rows = parquet.metadata.row_group(group).num_rows
        group_start = row_group_start(parquet, group) if (start > 0 or end is not None) else 0
        if start <= group_start and (end is None or group_start < end):
            yield from _row_group_outputs(source_uri, parquet, group, first_row)
        first_row += group_rows


def _row_group_outputs(source_uri: str, parquet, group: int, first_row: int) -> Iterator[Parsed]:
    row = first_row
    try:
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, row_groups=[group], use_threads=False):
            for record in batch.to_pylist():
                yield from _safe_record_outputs(source_uri, row, record)
                row += 1
    except Exception as exc:
        group_rows = parquet.metadata.row_group(group).num_rows
        yield SourceError(source_uri, f"row={row}", "corrupt_parquet",
                          f"row group {group} ({group_rows} rows) from row {row}: {type(exc).__name__}: {exc}"[:_REASON_CHARS])
