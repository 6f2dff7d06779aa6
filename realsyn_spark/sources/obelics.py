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


def _json_array_rows(source_uri: str, content: BinaryIO) -> Iterator[Parsed]:
    """A `.json` file holding one array of records instead of one record per line."""
    try:
        rows = json.loads(content.read().decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        yield SourceError(source_uri, None, "malformed_json", str(exc)[:_REASON_CHARS])
        return
    if not isinstance(rows, list):
        rows = [rows]
    for index, row in enumerate(rows):
        yield from _safe_record_outputs(source_uri, index, row)


def _jsonl_rows(source_uri: str, content: BinaryIO) -> Iterator[Parsed]:
    index = 0
    try:
        for index, line in enumerate(content):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8-sig"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                yield SourceError(source_uri, f"row={index}", "malformed_json", str(exc)[:_REASON_CHARS])
                continue
            yield from _safe_record_outputs(source_uri, index, row)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        yield SourceError(source_uri, f"row={index + 1}", "corrupt_gzip", f"{type(exc).__name__}: {exc}"[:_REASON_CHARS])


def parse_obelics_jsonl(source_uri: str, stream: BinaryIO) -> Iterator[Parsed]:
    """OBELICS records, one JSON object per line (gzip or plain; a JSON array also works).

    `record_offset` and error locations use the 0-based line number.
    """
    try:
        head, content = _open_maybe_gzip(stream)
    except (OSError, EOFError, zlib.error) as exc:
        yield SourceError(source_uri, None, "corrupt_gzip", f"{type(exc).__name__}: {exc}"[:_REASON_CHARS])
        return
    if not head.strip():
        yield SourceError(source_uri, None, "empty_file", "file has no records")
        return
    if _first_non_space(head) == b"[":
        yield from _json_array_rows(source_uri, content)
    else:
        yield from _jsonl_rows(source_uri, content)


# ---------------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------------

def _parquet_file(stream: BinaryIO):
    import pyarrow.parquet as pq  # imported here: the JSONL path should not pay for pyarrow

    seekable = getattr(stream, "seekable", lambda: False)()
    return pq.ParquetFile(stream if seekable else io.BytesIO(stream.read()))


def parse_obelics_parquet(source_uri: str, stream: BinaryIO) -> Iterator[Parsed]:
    """OBELICS records from a Parquet file, read one row group at a time.

    `record_offset` is the 0-based row index in the file. A row group that cannot be decoded is
    reported at its first row and skipped; the others are still read.
    """
    try:
        parquet = _parquet_file(stream)
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for anything that is not Parquet
        kind = "empty_file" if "size is 0" in str(exc) else "corrupt_parquet"
        yield SourceError(source_uri, None, kind, f"{type(exc).__name__}: {exc}"[:_REASON_CHARS])
        return
    first_row = 0
    for group in range(parquet.metadata.num_row_groups):
        group_rows = parquet.metadata.row_group(group).num_rows
        try:
            rows = parquet.read_row_group(group).to_pylist()
        except Exception as exc:
            yield SourceError(source_uri, f"row={first_row}", "corrupt_parquet",
                              f"row group {group} ({group_rows} rows): {type(exc).__name__}: {exc}"[:_REASON_CHARS])
            rows = []
        for offset, row in enumerate(rows):
            yield from _safe_record_outputs(source_uri, first_row + offset, row)
        first_row += group_rows
