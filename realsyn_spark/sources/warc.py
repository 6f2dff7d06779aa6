"""WARC / ARC (optionally gzip) -> Documents for HTML pages, Blobs for image records, SourceErrors.

warcio stops for good at the first corrupt record (its generator is dead after raising). On a seekable
stream this parser resynchronises: it scans forward for the next record start (`is_record_start`: a
gzip member that inflates to a record header, or a `WARC/1.x` / ARC header line with a well-formed
header) and restarts warcio there, so one bad gzip member costs one record, not the rest of the file.
On an unseekable stream it reports the error and stops. A WARC record without WARC-Type or a numeric
Content-Length is reported as malformed instead of being read to the end of the file.

A declared length is never trusted past what bounds it (issue 21): in a plain file, the end of the file
(checked before the block is read, so a length of 10^12 costs nothing); in a .gz, the end of the record's
gzip member, unless the next member is the rest of the same record (it begins no record). A length past
either bound while a record begins there is `length_past_end`; one that ends anywhere but at the next
record (inside its header, a few stray bytes before it, or after skipping a too-large block) is
`bad_record_length`. Either way parsing goes on at the first record start after the bad record's offset,
so records its claimed block swallowed are read again. Inside a gzip member (a whole-file gzip stream)
that means inflating the member again up to there (`_reopened_after`). Only a length in the last record,
with no record after it, ends as `truncated_record`.

Splits (Hadoop-style, so one large file is read by many tasks and every record by exactly one of them):
`parse_warc(..., start, end)` reads the records that *begin* in the byte range [start, end). A split
with start > 0 begins at the first record start at or after `start`: for .gz, the first gzip member
whose inflated bytes begin a record (`WARC/1.x` or an ARC header line); uncompressed, the first
`WARC/1.x` line (or ARC header line) at a line start followed by a well-formed header block. It reads
on past `end` to finish its last record and stops at the first record start at or after `end`, which
is exactly where the next split begins. Record offsets (and so document ids) are absolute file
offsets: the same whether a record was read in a split or in one pass over the whole file.
"""
from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator, Optional, Union

from warcio.archiveiterator import ArchiveIterator
from warcio.bufferedreaders import BufferedReader, ChunkedDataReader, DecompressingBufferedReader
from warcio.exceptions import ArchiveLoadFailed
from warcio.statusandheaders import StatusAndHeadersParserException

from . import Blob, Document, SourceError
from .htmlextract import extract_html

Parsed = Union[Document, Blob, SourceError]

_HTML_MIME_TYPES = {"text/html", "application/xhtml+xml"}
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_HTML_SNIFF = re.compile(rb"^\s*(<!doctype html|<html|<head|<body)", re.IGNORECASE)
_TRAILING_PEEK_BYTES = 4096
_SCAN_CHUNK_BYTES = 1 << 20
# Each false candidate (e.g. gzip magic bytes inside compressed data) costs a tiny parse; cap them so
# a hostile file cannot make resynchronisation quadratic.
_MAX_RESYNC_CANDIDATES = 10_000
# Resynchronising inside a gzip member re-inflates it from its start (a zlib stream cannot be entered
# in the middle): past this many in one file, the rest of a bad member is skipped as before, so a
# whole-file gzip stream full of bad lengths costs at most this many re-inflations.
_MAX_IN_MEMBER_RESYNCS = 32

_GZIP_MEMBER_START = re.compile(rb"\x1f\x8b\x08")
_WARC_RECORD_START = re.compile(rb"(?:^|\n)(WARC/1\.[01]\r?\n)")
_ARC_RECORD_START = re.compile(rb"(?:^|\n)([a-z][a-z0-9+.-]*://\S+ \S+ \d{14} \S+ \d+\r?\n)", re.IGNORECASE)
_ARC_HEADER_LINE = re.compile(rb"^[a-z][a-z0-9+.-]*://\S+ \S+ \d{14} \S+ \d+\r?\n", re.IGNORECASE)
_WARC_VERSION_LINE = re.compile(rb"^WARC/1\.[01]\r?\n")
_WARC_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*\d+[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_WARC_TYPE = re.compile(rb"^warc-type:[ \t]*\S", re.IGNORECASE | re.MULTILINE)
_HEADER_BLOCK_END = re.compile(rb"\r?\n\r?\n")
# How far a record-start check looks: a WARC header block or the first line of an ARC record.
_HEADER_PEEK_BYTES = 32 * 1024
_GZIP_PEEK_BYTES = 16 * 1024
# Slack above ingest.max_document_bytes for a record's WARC and HTTP headers and trailing blank lines,
# so a member may inflate a little past the record cap before it counts as a bomb.
_MEMBER_SLACK_BYTES = 1 << 20
_INFLATE_CHUNK_BYTES = 1 << 16
# A Content-Length off by at most this many bytes is forgiven when the payload is complete (issue 10):
# writers that miscount a line ending or a BOM are off by a few bytes, never by a record header.
_LENGTH_SLACK_BYTES = 64
_DEFAULT_MAX_INFLATED_BYTES = 1 << 30  # when no ingest.max_document_bytes is given


class DecompressionBomb(Exception):
    """Bytes that inflate past the configured cap; raised while inflating, never after."""


# What warcio raises on bad bytes; anything else is a bug and surfaces as dispatch's parser_crash.
_ITERATION_ERRORS = (
    ArchiveLoadFailed, StatusAndHeadersParserException, zlib.error, EOFError, ValueError, IndexError,
    AttributeError, KeyError, OSError, UnicodeDecodeError, TypeError, DecompressionBomb,
)


@dataclass
class _Failure:
    """Where warcio gave up and why."""
    offset: int
    kind: str
    reason: str
    # Records the pass read before failing. A failure right after a record with a wrong Content-Length
    # is fallout already reported. (Resync candidates are checked by `is_record_start` first, so a
    # failure there is a real bad record, not a false candidate.)
    records_seen: int
    follows_bad_length: bool
    # in a pass over inflated members: the inflated position to resynchronise after, inside the members
    position: Optional[int] = None


# ---------------------------------------------------------------------------------------------------
# Record classification
# ---------------------------------------------------------------------------------------------------

def _mime_type(content_type: Optional[str]) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _record_content_type(record) -> Optional[str]:
    if record.rec_type == "response" and record.http_headers is not None:
        return record.http_headers.get_header("Content-Type")
    return record.rec_headers.get_header("Content-Type")


def _http_status_ok(record) -> bool:
    if record.rec_type != "response" or record.http_headers is None:
        return True
    status = record.http_headers.get_statuscode() or ""
    return status.startswith("2")


def _looks_like_image(payload: bytes) -> bool:
    return payload.startswith(_IMAGE_MAGIC) or (payload[:4] == b"RIFF" and payload[8:12] == b"WEBP")


def _classify(mime: str, payload: bytes) -> Optional[str]:
    """'html', 'image' or None (skipped). Servers often send no or a generic type, so sniff those."""
    if mime in _HTML_MIME_TYPES:
        return "html"
    if mime.startswith("image/"):
        return "image"
    if mime in ("", "application/octet-stream", "unk", "no-type", "text/plain"):
        if _looks_like_image(payload):
            return "image"
        if _HTML_SNIFF.match(payload[:1024]):
            return "html"
    return None


def _drain(reader) -> None:
    """Read `reader` to its end without keeping the bytes."""
    while reader.read(_INFLATE_CHUNK_BYTES):
        pass


def _read_capped(reader, cap: int) -> bytes:
    """All of `reader`, in chunks, raising DecompressionBomb as soon as more than `cap` bytes came out."""
    parts, total = [], 0
    while True:
        chunk = reader.read(_INFLATE_CHUNK_BYTES)
        if not chunk:
            return b"".join(parts)
        total += len(chunk)
        if total > cap:
            raise DecompressionBomb(f"HTTP body inflates past {cap} bytes")
        parts.append(chunk)


def _decoded_http_body(record, block: bytes, cap: int = _DEFAULT_MAX_INFLATED_BYTES) -> bytes:
    """The HTTP payload from the raw record block: undo chunked transfer and gzip/deflate/br encoding.

    Mirrors warcio's `content_stream()`, but over bytes already read, so that a broken Content-Encoding
    is told apart from a broken WARC record.
    """
    stream = io.BytesIO(block)
    headers = record.http_headers
    if headers is None:
        return block
    encoding = (headers.get_header("Content-Encoding") or "").strip().lower() or None
    if encoding not in BufferedReader.get_supported_decompressors():
        encoding = None
    if (headers.get_header("Transfer-Encoding") or "").lower() == "chunked":
        return _read_capped(ChunkedDataReader(stream, decomp_type=encoding), cap)
    if encoding:
        return _read_capped(BufferedReader(stream, decomp_type=encoding), cap)
    return block


_CHUNKED_END = re.compile(rb"(?:^|\n)0+[ \t]*(?:;[^\r\n]*)?\r?\n(?:[^\r\n]+\r?\n)*\r?\n?$")
_HTML_END = re.compile(rb"</html\s*>\s*$", re.IGNORECASE)
_IMAGE_ENDS = ((b"\x89PNG", b"IEND\xaeB`\x82"), (b"\xff\xd8", b"\xff\xd9"), (b"GIF8", b";"))


def _inflates_to_end(data: bytes, cap: int) -> bool:
    """Does this gzip/zlib/raw-deflate body reach its end-of-stream (in bounded steps, under `cap`)?"""
    for wbits in (47, -15):  # gzip or zlib (auto), then raw deflate, as warcio's 'deflate' does
        inflater, rest, total = zlib.decompressobj(wbits=wbits), data, 0
        try:
            while True:
                total += len(inflater.decompress(rest, _INFLATE_CHUNK_BYTES))
                rest = inflater.unconsumed_tail
                if total > cap:
                    return False
                if inflater.eof or not rest:
                    break
        except zlib.error:
            continue
        return inflater.eof and not inflater.unused_data.strip()
    return False


def _payload_complete(record, block: bytes, cap: int) -> bool:
    """Is this record block's payload verifiably whole (see `_Pass._length_mismatch`)?"""
    headers = record.http_headers
    if headers is not None:
        if (headers.get_header("Transfer-Encoding") or "").lower() == "chunked" and not _CHUNKED_END.search(block):
            return False
        encoding = (headers.get_header("Content-Encoding") or "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            body = block
            if (headers.get_header("Transfer-Encoding") or "").lower() == "chunked":
                try:
                    body = _read_capped(ChunkedDataReader(io.BytesIO(block)), cap)
                except Exception:
                    return False
            return _inflates_to_end(body, cap)
    try:
        payload = _decoded_http_body(record, block, cap)
    except Exception:
        return False
    if _HTML_END.search(payload[-256:]):
        return True
    return any(payload.startswith(magic) and payload.endswith(end) for magic, end in _IMAGE_ENDS)


# ---------------------------------------------------------------------------------------------------
# Record -> output
# ---------------------------------------------------------------------------------------------------

def _html_outputs(source_uri: str, kind: str, offset: int, record, url: Optional[str], payload: bytes,
                  content_type: Optional[str]) -> Iterator[Parsed]:
    result = extract_html(payload, url, content_type)
    if result.problem is not None:
        problem_kind, reason = result.problem
        yield SourceError(source_uri, f"offset={offset}", problem_kind, _printable(f"{url}: {reason}", 500))
    if not result.keep:
        return
    metadata = {
        "warc_date": record.rec_headers.get_header("WARC-Date"),
        # warcio invents a random WARC-Record-ID for ARC records: only a WARC's own id is kept
        "warc_record_id": record.rec_headers.get_header("WARC-Record-ID") if kind == "warc" else None,
        "content_type": content_type,
        "charset": result.encoding,
        "images_dropped": result.images_dropped or None,  # navigation images and icons (ingest counter)
    }
    yield Document(
        source_uri=source_uri, source_kind=kind, record_offset=offset, url=url, title=result.title,
        nodes=result.nodes, metadata={k: v for k, v in metadata.items() if v is not None},
    )


def _record_outputs(source_uri: str, kind: str, offset: int, record, block: bytes,
                    cap: int = _DEFAULT_MAX_INFLATED_BYTES) -> Iterator[Parsed]:
    if record.rec_type not in ("response", "resource") or not _http_status_ok(record):
        return
    url = record.rec_headers.get_header("WARC-Target-URI")
    content_type = _record_content_type(record)
    try:
        payload = _decoded_http_body(record, block, cap)
    except DecompressionBomb as exc:
        yield SourceError(source_uri, f"offset={offset}", "decompression_bomb",
                          f"{exc} (ingest.max_document_bytes)")
        return
    except Exception as exc:  # a broken Content-Encoding/chunking damages this record only
        yield SourceError(source_uri, f"offset={offset}", "decode_failure", f"HTTP body of {url}: {exc!r}")
        return
    category = _classify(_mime_type(content_type), payload)
    if category == "image" and url and payload:
        yield Blob(image_url=url, data=payload, origin="warc")
    elif category == "html":
        yield from _html_outputs(source_uri, kind, offset, record, url, payload, content_type)


_URI_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _plausible_arc_record(record) -> bool:
    """An ARC header names a URL and a numeric length; warcio converts whatever five words it finds."""
    headers = record.rec_headers
    length = (headers.get_header("Content-Length") or "0").strip()
    return bool(_URI_SCHEME.match(headers.get_header("WARC-Target-URI") or "filedesc:")) and length.isdigit()


def _plausible_warc_record(record) -> bool:
    """The header fields every WARC record has (and `is_record_start` checks for split starts)."""
    headers = record.rec_headers
    length = (headers.get_header("Content-Length") or "").strip()
    return bool((headers.get_header("WARC-Type") or "").strip()) and length.isdigit()


def _truncation_error(source_uri: str, offset: int, record) -> Optional[SourceError]:
    """warcio silently returns a short block when the file ends inside a record; its LimitReader knows."""
    missing = getattr(record.raw_stream, "limit", 0) or 0
    if missing > 0:
        return SourceError(source_uri, f"offset={offset}", "truncated_record",
                           f"record ends {missing} bytes before its Content-Length")
    return None


# ---------------------------------------------------------------------------------------------------
# Iteration with resynchronisation
# ---------------------------------------------------------------------------------------------------

class _StrayCapturingIterator(ArchiveIterator):
    """warcio's iterator, but the bytes it finds after a record's declared block, where blank lines
    should be, are kept (`stray`) instead of written to stderr: with them a record whose Content-Length
    is a few bytes short is still whole (see `_length_mismatch`). Non-blank lines are taken as stray
    while they stay within _LENGTH_SLACK_BYTES and do not begin a record, so a block a few bytes longer
    than declared that holds a newline is recovered too; warcio would fail on those lines anyway."""

    record_kind = "warc"

    def _consume_blanklines(self):
        self.stray, empty_size, blanks = b"", 0, b""
        while True:
            line = self.reader.readline()
            if not line:
                return None, empty_size
            if not line.rstrip():
                blanks += line  # inside the stray bytes if more stray lines follow, else the separator
            elif empty_size == 0:
                self.err_count += 1  # as warcio: the first line after a block is not blank
                self.stray = line
            elif (not self.stray or len(self.stray) + len(blanks) + len(line) > _LENGTH_SLACK_BYTES
                    or _begins_record(line, self.record_kind)):
                return line, empty_size
            else:
                self.stray, blanks = self.stray + blanks + line, b""
            empty_size += len(line)


def _archive_iterator(stream: BinaryIO, kind: str):
    # WARC files are parsed strictly: with arc2warc any five-word line would pass for an ARC header.
    if kind == "arc":
        iterator = _StrayCapturingIterator(stream, arc2warc=True)
    else:
        iterator = _StrayCapturingIterator(stream)
        iterator.known_format = "warc"  # what WARCIterator sets
    iterator.record_kind, iterator.stray = kind, b""
    return iterator


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, zlib.error):
        return "corrupt_gzip"
    if isinstance(exc, EOFError):
        return "truncated_record"
    return "malformed_record"


def _gzip_member_problem(stream: BinaryIO, offset: int) -> Optional[tuple[str, str]]:
    """(kind, reason) when the gzip member at `offset` does not inflate or is cut short, else None.

    warcio reports both as an unreadable record; the member itself says which it is.
    """
    stream.seek(offset)
    inflater = zlib.decompressobj(wbits=31)
    try:
        while not inflater.eof:
            chunk = inflater.unconsumed_tail or stream.read(_SCAN_CHUNK_BYTES)
            if not chunk:
                return "truncated_gzip", "gzip member cut short by the end of the file"
            inflater.decompress(chunk, 1 << 16)
    except zlib.error as exc:
        return "corrupt_gzip", f"gzip member does not inflate: {exc}"
    return None


def _printable(text: str, limit: int = 300) -> str:
    """Error reasons quote warcio messages, which can carry raw binary from the bad record."""
    text = text[:limit]
    return "".join(ch if ch.isprintable() else "?" for ch in text)


class _BoundedMemberReader(DecompressingBufferedReader):
    """warcio's reader, but a gzip member that inflates past `cap` bytes raises DecompressionBomb while
    inflating (in 64 KiB steps), so a small member can never expand to gigabytes in memory."""

    cap = _DEFAULT_MAX_INFLATED_BYTES

    def _decompress(self, data):
        if not self.decompressor or not data or not hasattr(self.decompressor, "unconsumed_tail"):
            return super()._decompress(data)
        try:
            parts = [self.decompressor.decompress(data, _INFLATE_CHUNK_BYTES)]
            total = self.num_block_read + len(parts[0])
            while self.decompressor.unconsumed_tail and not self.decompressor.eof:
                if total > self.cap:
                    break
                parts.append(self.decompressor.decompress(self.decompressor.unconsumed_tail, _INFLATE_CHUNK_BYTES))
                total += len(parts[-1])
            if self.decompressor.eof and self.decompressor.unconsumed_tail and not self.decompressor.unused_data:
                # the member ended just as max_length was reached: zlib leaves the next member's bytes in
                # unconsumed_tail; one more call moves them to unused_data, where warcio looks
                self.decompressor.decompress(self.decompressor.unconsumed_tail)
        except zlib.error:
            if self.num_block_read == 0:  # not gzip after all: warcio's own fallback
                self.decompressor = None
                return data
            raise
        if total > self.cap:
            raise DecompressionBomb(f"gzip member inflates past {self.cap} bytes")
        return b"".join(parts)


class _InflatedMembers(io.RawIOBase):
    """The inflated bytes of consecutive gzip members from compressed offset `start`, streamed in
    bounded steps (never a whole-file inflate). For gzip files that are not one member per record:
    one gzip stream for the whole file, or a record split across members.

    `members` holds (compressed offset, inflated position) of each member start, so a record that
    begins at a member start gets the same offset as in a per-member read. Stops at the end of the
    file, at bytes that are not a gzip member (`stopped_at`, where normal resynchronisation goes on), or
    at a later member that begins a record (`fenced_at`, where a per-member read goes on): no record is
    read across a record start, so a Content-Length that runs past its members is cut at the next
    record (see `_Pass._record_problem`) instead of swallowing the rest of the file.
    A run of more than `cap` inflated bytes without a newline cannot be part of any record the cap
    allows (headers are lines; a block is at most the cap): it raises DecompressionBomb.
    """

    def __init__(self, stream: BinaryIO, start: int, cap: int, kind: str = "warc"):
        stream.seek(start)
        self.kind = kind
        self._raw, self._raw_at = stream, start
        self._pending, self._pending_at = b"", start
        self._inflater = zlib.decompressobj(wbits=31)
        self._out, self._since_newline, self.cap = 0, 0, cap
        self.members: list[tuple[int, int]] = [(start, 0)]
        self.stopped_at: Optional[int] = None
        self.fenced_at: Optional[int] = None
        self._done = False
        # After `_reopened_after`: the inflated position where reading starts, and the bytes from there
        # that the scan for it inflated already.
        self.origin, self._pushback = 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._pushback:
            n = min(len(buffer), len(self._pushback))
            buffer[:n], self._pushback = self._pushback[:n], self._pushback[n:]
            return n
        while not self._done:
            data = self._step(min(len(buffer), _INFLATE_CHUNK_BYTES))
            if data:
                buffer[: len(data)] = data
                return len(data)
        return 0

    def _fill(self) -> bool:
        if not self._pending:
            self._pending, self._pending_at = self._raw.read(_SCAN_CHUNK_BYTES), self._raw_at
            self._raw_at += len(self._pending)
        return bool(self._pending)

    def _step(self, size: int) -> bytes:
        if self._inflater.eof:
            if not self._fill():
                self._done = True
                return b""
            if self._pending[:3] != b"\x1f\x8b\x08":
                self._done, self.stopped_at = True, self._pending_at
                return b""
            if self._begins_record(self._pending_at):
                self._done, self.fenced_at = True, self._pending_at
                return b""
            self._inflater = zlib.decompressobj(wbits=31)
            self.members.append((self._pending_at, self._out))
        if not self._fill():
            raise EOFError("gzip member cut short by the end of the file")
        data, at = self._pending, self._pending_at
        out = self._inflater.decompress(data, size)
        # at the member's end the rest is in unused_data, or in unconsumed_tail when max_length was reached
        self._pending = ((self._inflater.unused_data or self._inflater.unconsumed_tail) if self._inflater.eof
                         else self._inflater.unconsumed_tail)
        self._pending_at = at + len(data) - len(self._pending)
        self._count(out)
        return out

    def _begins_record(self, offset: int) -> bool:
        found = is_record_start(self._raw, offset, True, self.kind)
        self._raw.seek(self._raw_at)  # is_record_start moved the shared stream
        return found

    def _count(self, out: bytes) -> None:
        self._out += len(out)
        newline = out.rfind(b"\n")
        self._since_newline = len(out) - newline - 1 if newline >= 0 else self._since_newline + len(out)
        if self._since_newline > self.cap:
            raise DecompressionBomb(f"gzip data inflates to more than {self.cap} bytes without a record boundary")

    def read_some(self, size: int) -> bytes:
        buffer = bytearray(size)
        return bytes(buffer[: self.readinto(buffer)])

    def start_at(self, position: int, data: bytes) -> None:
        """Begin the reader at inflated `position`, whose first bytes `data` were read already."""
        self.origin, self._pushback = position, data

    def member_start_of(self, position: int) -> tuple[int, int]:
        """(compressed offset, inflated position) of the member holding inflated `position`."""
        found = self.members[0]
        for member in self.members:
            if member[1] > position:
                break
            found = member
        return found

    def member_of(self, position: int) -> int:
        """Compressed offset of the member holding inflated `position` (or the last member read)."""
        found = self.members[0][0]
        for offset, inflated in self.members:
            if inflated > position:
                break
            found = offset
        return found

    def file_offset(self, position: int) -> tuple[int, bool]:
        """(offset to report for the record at inflated `position`, does it begin a member)."""
        member_offset, member_start = self.members[0]
        for offset, inflated in self.members:
            if inflated > position:
                break
            member_offset, member_start = offset, inflated
        # Inside a multi-record member there is no file offset of its own: the member's offset plus the
        # position in its inflated bytes is unique within the member and the same on every run.
        return member_offset + (position - member_start), position == member_start


class _Pass:
    """One warcio run from the stream's current position to its end, its first failure, or the first
    record that starts at or after `end` (the next split's). With `inflated` the run reads that
    stream of inflated gzip members as an uncompressed archive."""

    def __init__(self, source_uri: str, stream: BinaryIO, kind: str, end: Optional[int] = None,
                 max_record_bytes: Optional[int] = None, compressed: bool = False,
                 inflated: Optional[_InflatedMembers] = None, skip_through: int = -1,
                 file_size: Optional[int] = None, may_reopen: bool = True):
        self.source_uri = source_uri
        self.stream = stream
        self.kind = kind
        self.file_size = file_size  # set only for a seekable stream: bounds a plain file's lengths
        self.may_reopen = may_reopen and file_size is not None  # see _MAX_IN_MEMBER_RESYNCS
        self.end = end
        self.max_record_bytes = max_record_bytes
        self.cap = (max_record_bytes or _DEFAULT_MAX_INFLATED_BYTES) + _MEMBER_SLACK_BYTES
        self.inflated = inflated
        self.skip_through = skip_through
        self.compressed = compressed and inflated is None
        self.iterator = _archive_iterator(io.BufferedReader(inflated) if inflated is not None else stream, kind)
        if self.compressed:
            bounded = _BoundedMemberReader(self.iterator.fh, block_size=self.iterator.reader.block_size)
            bounded.cap = self.cap
            self.iterator.reader = bounded
        self.failure: Optional[_Failure] = None
        self.end_offset: Optional[int] = None
        self.reached_split_end = False
        # (member offset, records up to this offset already yielded): read on from there inflated
        self.inflate_from: Optional[tuple[int, int]] = None
        self.last_done = -1  # offset of the last record whose outputs were yielded
        self.bad_length_at: Optional[int] = None  # the record just reported as bad_record_length
        # a record start found after a length that runs past the end of the file: read on from there
        self.resume_at: Optional[int] = None
        # the same inside gzip members read joined: the members reopened at that record (`_reopened_after`)
        self.resume_inflated: Optional[_InflatedMembers] = None
        self.bad_length_position: Optional[int] = None  # inflated position of the bad_record_length record

    def _file_offset(self, position: int) -> tuple[int, bool]:
        if self.inflated is None:
            return position, True
        return self.inflated.file_offset(self._inflated_position(position))

    def _inflated_position(self, position: int) -> int:
        """Position in the joined members' inflated bytes of warcio's `position` (which starts at 0)."""
        return position + (self.inflated.origin if self.inflated is not None else 0)

    def outputs(self) -> Iterator[Parsed]:
        iterator = self.iterator
        seen, previous_bad_length = 0, False
        offset = iterator.offset
        try:
            for record in iterator:
                # start of this record, set when the previous one was finished
                position = iterator.offset
                offset, at_member_start = self._file_offset(position)
                if self.end is not None and offset >= self.end and at_member_start:
                    self.reached_split_end = True  # the next split starts with this record
                    return
                if offset <= self.skip_through:
                    iterator.read_to_end()
                    continue
                if self.kind == "arc" and not _plausible_arc_record(record):
                    # warcio takes any line of five words for an ARC header; stop and resynchronise
                    reason = f"not an ARC record header (URL {record.rec_headers.get_header('WARC-Target-URI')!r})"
                    self.failure = _Failure(offset, "bad_arc_header", _printable(reason), seen, previous_bad_length,
                                            self._inflated_position(position))
                    return
                if self.kind == "warc" and not _plausible_warc_record(record):
                    # without a length warcio would read the rest of the file as this record's block
                    self.failure = _Failure(offset, "malformed_record",
                                            "WARC header block without WARC-Type or a numeric Content-Length",
                                            seen, previous_bad_length, self._inflated_position(position))
                    return
                past_end = self._past_file_end(offset, record)
                if past_end is not None:
                    yield past_end  # and resume_at is set: read on at the next record
                    return
                too_large = self._too_large(offset, record)
                if too_large is not None and self.compressed:
                    _drain(record.raw_stream)  # to its member's end at most: is the record cut there?
                block = b"" if too_large else record.raw_stream.read()
                cut_at = None  # a record start that cuts this record's block short
                if self._split_across_members(record) and not self._whole_at_member_end(record, block):
                    cut_at = self._record_start_after_member()
                    if cut_at is None:  # the next member is no record's start: the record goes on there
                        self.inflate_from = (offset, offset - 1)  # re-read this record over the joined members
                        return
                errors_before = iterator.err_count
                try:
                    iterator.read_to_end()  # skips the block of a too-large record without keeping it
                except DecompressionBomb:
                    # warcio reads the blank lines after a block here: a bomb behind a complete record
                    # spoils what follows, not the record
                    if not too_large and _truncation_error(self.source_uri, offset, record) is None:
                        yield from self._outputs_of(offset, record, block)
                        self.last_done = offset
                    raise
                seen += 1
                mismatch = None if too_large else self._length_mismatch(offset, record, block,
                                                                        iterator.err_count > errors_before)
                if mismatch is not None:
                    warning, block = mismatch
                    yield warning
                    yield from self._outputs_of(offset, record, block)
                    self.last_done, previous_bad_length = offset, False
                    continue
                length_wrong = iterator.err_count > errors_before or self._swallowed_a_record(block, too_large)
                problem = self._record_problem(offset, record, length_wrong, too_large, cut_at)
                if problem is not None and problem.kind == "truncated_record" and not self._plain:
                    problem = self._resync_in_members(offset, record, position) or problem
                previous_bad_length = problem is not None and problem.kind == "bad_record_length"
                self.bad_length_at = self.bad_length_position = None
                if previous_bad_length:  # a real file offset: of the record, or of the member holding it
                    self.bad_length_at = offset if self.inflated is None else self.inflated.member_of(
                        self._inflated_position(position))
                    self.bad_length_position = self._inflated_position(position)
                if problem is not None:
                    yield problem
                    if self.resume_inflated is not None:
                        return
                    if previous_bad_length and not self.compressed:
                        # whole records may lie inside the bad block even when a record follows it:
                        # resynchronise from inside the block (parse_warc), do not read on after it
                        next_at = iterator.offset if iterator.offset is not None else position
                        self.failure = _Failure(self._file_offset(next_at)[0], "bad_record_length", "", seen, True,
                                                self._inflated_position(next_at))
                        return
                    continue
                yield from self._outputs_of(offset, record, block)
                self.last_done = offset
            self.end_offset = iterator.offset
        except _ITERATION_ERRORS as exc:
            if self.compressed and isinstance(exc, ArchiveLoadFailed) and "non-chunked gzip" in str(exc):
                # one gzip member holds several records (a whole-file gzip stream): read it inflated
                self.inflate_from = (offset, offset)
                return
            if isinstance(exc, DecompressionBomb):
                # reported at the member that inflates too far (retried inflated first: see parse_warc)
                at = offset if self.inflated is None else self.inflated.member_of(
                    self._inflated_position(iterator.offset or 0))
                self.failure = _Failure(at, "decompression_bomb", f"{exc} (ingest.max_document_bytes)", seen, False)
                return
            failed_at = iterator.offset if iterator.offset is not None else offset
            position = None
            if self.inflated is not None:
                position = self._inflated_position(failed_at)
                failed_at = self._file_offset(failed_at)[0]
            reason = _printable(f"{type(exc).__name__}: {exc}")
            self.failure = _Failure(failed_at, _failure_kind(exc), reason, seen, previous_bad_length, position)

    @property
    def _plain(self) -> bool:
        return not self.compressed and self.inflated is None

    def _resync_in_members(self, offset: int, record, position: int) -> Optional[SourceError]:
        """A record cut short by the end of its gzip member(s) while a record begins inside its block
        (a whole-file gzip stream whose Content-Length runs past its end): `length_past_end`, with
        `resume_inflated` positioned at that record. None when no record follows: truncated."""
        if not self.may_reopen:
            return None
        if self.inflated is None:  # read per member: this record's member, from its start
            members, position = _InflatedMembers(self.stream, offset, self.cap, self.kind), 0
        else:
            members, position = self.inflated, self._inflated_position(position)
        reopened = _reopened_after(self.stream, members, position, self.kind, self.cap)
        if reopened is None:
            return None
        self.resume_inflated = reopened
        return self._length_past_end(offset, record, "the end of its gzip member",
                                     reopened.file_offset(reopened.origin)[0])

    def _split_across_members(self, record) -> bool:
        """Block cut short at the end of its gzip member while more members follow: the record goes on
        in the next member (headers in one, body in the next)."""
        if not self.compressed or not (getattr(record.raw_stream, "limit", 0) or 0) > 0:
            return False
        decompressor = self.iterator.reader.decompressor
        return bool(decompressor is not None and getattr(decompressor, "unused_data", b""))

    def _whole_at_member_end(self, record, block: bytes) -> bool:
        """A member that ends a few bytes before the declared length with the payload complete holds a
        record whose Content-Length is wrong (`_length_mismatch`), not one going on in the next member."""
        missing = getattr(record.raw_stream, "limit", 0) or 0
        return missing <= _LENGTH_SLACK_BYTES and _payload_complete(record, self._without_separator(block), self.cap)

    def _without_separator(self, block: bytes) -> bytes:
        """A block read on through the blank lines that end its record: they are not payload."""
        separator = b"\r\n\r\n" if self.kind == "warc" else b"\n"
        return block[: -len(separator)] if block.endswith(separator) else block

    def _too_large(self, offset: int, record) -> Optional[SourceError]:
        """A record whose declared length exceeds the limit is reported, and its block never held in memory.
        In a plain file the block is at most what is left of the file: a longer length is not a reason
        to skip the bytes that are there (they end in `truncated_record`)."""
        if self.max_record_bytes is None:
            return None
        length = (record.rec_headers.get_header("Content-Length") or "").strip()
        if not length.isdigit():
            return None
        left = self._bytes_left_in_file()
        if int(length) > self.max_record_bytes and (left is None or left > self.max_record_bytes):
            return SourceError(self.source_uri, f"offset={offset}", "too_large",
                               f"record of {length} bytes exceeds ingest.max_document_bytes ({self.max_record_bytes})")
        return None

    def _bytes_left_in_file(self) -> Optional[int]:
        """Bytes of a plain file after the headers just parsed (None for gzip or an unsized stream)."""
        if not self._plain or self.file_size is None:
            return None
        iterator = self.iterator
        return self.file_size - (iterator.fh.tell() - iterator.reader.rem_length())

    def _past_file_end(self, offset: int, record) -> Optional[SourceError]:
        """A plain file's record whose Content-Length runs past the end of the file while a later record
        begins inside it: its length is wrong (a corrupted digit, a hostile file). It is reported, its
        block never read, and `resume_at` set to that record. With no record after it, the file was cut
        short or the length is wrong in its last record: it is read as far as the file goes and ends as
        `truncated_record` (or is kept with a warning when only a few bytes are missing)."""
        left = self._bytes_left_in_file()
        missing = getattr(record.raw_stream, "limit", 0) or 0
        if left is None or missing <= left:
            return None
        fh = self.iterator.fh
        position = fh.tell()
        resume_at = _next_record_start(self.stream, offset + 1, False, self.kind)
        fh.seek(position)  # the scan moved the stream warcio reads
        if resume_at is None:
            return None
        self.resume_at = resume_at
        return self._length_past_end(offset, record, f"the end of the file ({left} bytes after its headers)",
                                     resume_at)

    def _length_past_end(self, offset: int, record, bound: str, resume_at: int) -> SourceError:
        length = (record.rec_headers.get_header("Content-Length") or "").strip()
        return SourceError(self.source_uri, f"offset={offset}", "length_past_end",
                           f"Content-Length {length} runs past {bound}; record quarantined, the next record "
                           f"begins at offset {resume_at} and is read from there")

    def _record_start_after_member(self) -> Optional[int]:
        """Offset of the gzip member after the current one when it begins a record, else None. Judged
        from the bytes read already when they hold its header (so also on an unseekable stream)."""
        fh, decompressor = self.iterator.fh, self.iterator.reader.decompressor
        if decompressor is None:
            return None
        position, following = fh.tell(), decompressor.unused_data
        next_member = position - len(following)
        head = following[:3] == b"\x1f\x8b\x08" and _inflated_head(following, _HEADER_PEEK_BYTES)
        if head and _starts_record(head, self.kind):
            return next_member
        if len(following) >= _GZIP_PEEK_BYTES or not _is_seekable(fh):
            return None
        found = is_record_start(fh, next_member, True, self.kind)
        fh.seek(position)  # is_record_start moved the stream warcio reads
        return next_member if found else None

    def _outputs_of(self, offset: int, record, block: bytes) -> list[Parsed]:
        # Extraction runs on bytes already read: a failure there spoils this record, not the archive.
        try:
            return list(_record_outputs(self.source_uri, self.kind, offset, record, block, self.cap))
        except Exception as exc:
            return [SourceError(self.source_uri, f"offset={offset}", "record_processing_failed",
                                _printable(f"{type(exc).__name__}: {exc}"))]

    def _length_mismatch(self, offset: int, record, block: bytes,
                         stray_after: bool) -> Optional[tuple[SourceError, bytes]]:
        """(warning, whole block) for a record whose Content-Length is off by at most _LENGTH_SLACK_BYTES
        but whose payload is complete, else None (the caller reports the damage as before).

        The rule: (1) the block is longer than declared by a few stray bytes before the blank lines, or
        it ends (end of file / of its gzip member) a few bytes before its declared length; (2) right
        after it comes the next record's header line, or the end of the file / member (so a length that
        reaches into the next record is never taken as a short block); (3) the payload, with the stray
        bytes, is verifiably complete: a Content-Encoding body inflates to its end (gzip checks its CRC),
        or the decoded payload ends with `</html>` or an image format's end marker.
        """
        iterator = self.iterator
        if iterator.next_line is not None and not _begins_record(iterator.next_line, self.kind):
            return None
        missing = getattr(record.raw_stream, "limit", 0) or 0
        if stray_after and missing == 0 and 0 < len(iterator.stray) <= _LENGTH_SLACK_BYTES:
            stray = iterator.stray[:-2] if iterator.stray.endswith(b"\r\n") else iterator.stray[:-1]
            whole, how = block + stray, f"{len(stray)} bytes longer than"
        elif not stray_after and 0 < missing <= _LENGTH_SLACK_BYTES:
            whole, how = self._without_separator(block), f"{missing} bytes shorter than"
        else:
            return None
        if not _payload_complete(record, whole, self.cap) or self._holds_record_start(whole):
            return None  # (a block that swallowed whole records may end with the last one's `</html>`)
        return SourceError(self.source_uri, f"offset={offset}", "record_length_mismatch",
                           f"warning, record kept: block is {how} its Content-Length, payload complete"), whole

    def _swallowed_a_record(self, block: bytes, too_large: Optional[SourceError]) -> bool:
        """A block followed (after blank lines) by a line that begins no record, which holds a record's
        first line itself: its length ended inside that record (e.g. right after a line of its header),
        so the record is not kept with a piece of the next one appended, and the next one is found again
        inside it. A skipped too-large block that does not end at a record is a wrong length too."""
        next_line = self.iterator.next_line
        if next_line is None or _begins_record(next_line, self.kind):
            return False
        # (the block may end inside that first line, before its "\n": warcio read that as a blank line)
        return too_large is not None or self._holds_record_start(block + b"\n")

    def _holds_record_start(self, block: bytes) -> bool:
        return bool((_ARC_RECORD_START if self.kind == "arc" else _WARC_RECORD_START).search(block))

    def _record_problem(self, offset: int, record, length_warning: bool, too_large: Optional[SourceError] = None,
                        cut_at: Optional[int] = None) -> Optional[SourceError]:
        """What is wrong with a record whose block was read or skipped: cut short by the next record
        (`length_past_end`: its gzip member ended, or the joined members stopped at a record's member),
        by the end of the file (`truncated_record`), a length that ends elsewhere than at the next
        record (`bad_record_length`, also for a too-large length: the bytes skipped were not one record),
        else `too_large` if it was skipped."""
        cut_short = (getattr(record.raw_stream, "limit", 0) or 0) > 0
        if cut_short and cut_at is None and self.inflated is not None:
            cut_at = self.inflated.fenced_at
        if cut_short and cut_at is not None:
            return self._length_past_end(offset, record, "the end of its gzip member", cut_at)
        problem = _truncation_error(self.source_uri, offset, record)
        if problem is None and length_warning:
            problem = SourceError(self.source_uri, f"offset={offset}", "bad_record_length",
                                  "record not followed by a blank line: its Content-Length is wrong")
        return problem or too_large


# ---------------------------------------------------------------------------------------------------
# Record starts: where a split begins and where resynchronisation restarts
# ---------------------------------------------------------------------------------------------------

def _read_at(stream: BinaryIO, offset: int, size: int) -> bytes:
    stream.seek(offset)
    return stream.read(size)


def _at_line_start(stream: BinaryIO, offset: int) -> bool:
    return offset == 0 or _read_at(stream, offset - 1, 1) == b"\n"


def _starts_record(head: bytes, kind: str) -> bool:
    """Do these (inflated) bytes begin a record: a WARC version line and a header block with a type and
    a numeric length, or an ARC header line (URL, IP, 14-digit date, MIME type, length)?"""
    if kind == "arc":
        return bool(_ARC_HEADER_LINE.match(head))
    if not _WARC_VERSION_LINE.match(head):
        return False
    block_end = _HEADER_BLOCK_END.search(head)
    block = head[: block_end.start()] if block_end else head
    return bool(_WARC_TYPE.search(block) and _WARC_CONTENT_LENGTH.search(block))


def _begins_record(line: bytes, kind: str) -> bool:
    """Is this line (all warcio has read of what follows a block) a record's first line?"""
    return bool((_ARC_HEADER_LINE if kind == "arc" else _WARC_VERSION_LINE).match(line))


def _inflated_head(data: bytes, size: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        return inflater.decompress(data, size)
    except zlib.error:
        return b""


def is_record_start(stream: BinaryIO, offset: int, compressed: bool, kind: str) -> bool:
    """The one test of "a record begins here", shared by split starts, split ends and resynchronisation,
    so that neighbouring splits agree on every boundary."""
    if compressed:
        data = _read_at(stream, offset, _GZIP_PEEK_BYTES)
        return data[:3] == b"\x1f\x8b\x08" and _starts_record(_inflated_head(data, _HEADER_PEEK_BYTES), kind)
    if not _at_line_start(stream, offset):
        return False
    return _starts_record(_read_at(stream, offset, _HEADER_PEEK_BYTES), kind)


def _reopened_after(stream: BinaryIO, inflated: _InflatedMembers, position: int, kind: str,
                    cap: int) -> Optional[_InflatedMembers]:
    """The members of `inflated` inflated afresh from the one holding inflated `position`, positioned at
    the first record start (a record's first line at a line start, with a well-formed header: see
    `_starts_record`) after `position` and before the end of the joined members, or None.

    This is resynchronisation inside a gzip member (a whole-file gzip stream, or members read joined):
    a wrong Content-Length there swallows the records after it in the same member, and no member start
    marks where they begin."""
    member_offset, member_start = inflated.member_start_of(position)
    fresh = _InflatedMembers(stream, member_offset, cap, kind)
    after = position - member_start  # in the fresh stream's positions
    pattern = _ARC_RECORD_START if kind == "arc" else _WARC_RECORD_START
    window, window_at, last_checked = b"", 0, after
    try:
        while True:
            chunk = fresh.read_some(_SCAN_CHUNK_BYTES)
            window += chunk
            for match in pattern.finditer(window):
                found = window_at + match.start(1)
                if found <= last_checked:
                    continue
                head = window[found - window_at:]
                if chunk and len(head) < _HEADER_PEEK_BYTES:
                    break  # judge it once its whole header is here
                last_checked = found
                if _starts_record(head[:_HEADER_PEEK_BYTES], kind):
                    fresh.start_at(found, head)
                    return fresh
            if not chunk:
                return None
            # keep a record's first line (with the newline before it) and a header's worth of bytes
            keep = max(len(window) - _HEADER_PEEK_BYTES - 1, 0)
            window, window_at = window[keep:], window_at + keep
    except (zlib.error, EOFError, DecompressionBomb):
        return None


def _next_record_start(stream: BinaryIO, start: int, compressed: bool, kind: str,
                       stop: Optional[int] = None) -> Optional[int]:
    """Offset of the first record start (see `is_record_start`) at or after `start` and before `stop`,
    scanning in chunks, or None."""
    if compressed:
        pattern = _GZIP_MEMBER_START
    else:
        pattern = _ARC_RECORD_START if kind == "arc" else _WARC_RECORD_START
    overlap = 512
    position = start
    previous_tail = b""
    checked, last_checked = 0, start - 1
    while stop is None or position - len(previous_tail) < stop:
        stream.seek(position)
        chunk = stream.read(_SCAN_CHUNK_BYTES)
        if not chunk:
            return None
        window = previous_tail + chunk
        window_start = position - len(previous_tail)
        for match in pattern.finditer(window):
            found = window_start + match.start(match.lastindex or 0)
            if found <= last_checked:  # below start, or seen already in the overlap of the last window
                continue
            last_checked = found
            if stop is not None and found >= stop:
                return None
            checked += 1
            if checked > _MAX_RESYNC_CANDIDATES:
                return None
            if is_record_start(stream, found, compressed, kind):
                return found
        position += len(chunk)
        previous_tail = window[-overlap:]
    return None


def _trailing_bytes_error(source_uri: str, stream: BinaryIO, end_offset: Optional[int]) -> Iterator[SourceError]:
    """Bytes left after warcio's clean end: it silently ignores a record cut inside its gzip member."""
    if end_offset is None:
        return
    stream.seek(end_offset)
    if not stream.read(_TRAILING_PEEK_BYTES).strip():
        return
    stream.seek(0, io.SEEK_END)
    leftover = stream.tell() - end_offset
    yield SourceError(source_uri, f"offset={end_offset}", "truncated_record",
                      f"{leftover} trailing bytes could not be parsed as a record (file cut short?)")


def _size_of(stream: BinaryIO) -> int:
    position = stream.tell()
    size = stream.seek(0, io.SEEK_END)
    stream.seek(position)
    return size


def _is_seekable(stream: BinaryIO) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, ValueError):
        return False


class _PrependedStream(io.RawIOBase):
    """An unseekable stream with the bytes already peeked at put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n], self._head = self._head[:n], self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _peek(stream: BinaryIO, size: int) -> tuple[bytes, BinaryIO]:
    """First bytes of the stream, and a stream that still starts at the beginning."""
    if _is_seekable(stream):
        position = stream.tell()
        head = stream.read(size)
        stream.seek(position)
        return head, stream
    head = stream.read(size)
    return head, io.BufferedReader(_PrependedStream(head, stream))


def _resync_in_members(stream: BinaryIO, kind: str, run: _Pass, failure: _Failure) -> Optional[_InflatedMembers]:
    """After a record that does not parse inside gzip members read joined (a whole-file gzip stream):
    the members reopened at the next record start in the same members, or None (resynchronise at the
    next member as before). After a bad_record_length the search starts inside that record's block."""
    if run.inflated is None or failure.position is None or failure.kind not in (
            "malformed_record", "bad_arc_header", "bad_record_length"):
        return None  # (a zlib error or a cut member would fail the same way when inflated again)
    after = failure.position
    if failure.follows_bad_length and run.bad_length_position is not None:
        after = min(after, run.bad_length_position)
    return _reopened_after(stream, run.inflated, after, kind, run.cap)


def _error_for(source_uri: str, archive_kind: str, stream: BinaryIO, failure: _Failure, compressed: bool,
               seekable: bool) -> SourceError:
    kind, reason = failure.kind, failure.reason
    if compressed and seekable and kind != "decompression_bomb":  # re-inflating a bomb costs GBs of CPU
        kind, reason = _gzip_member_problem(stream, failure.offset) or (kind, reason)
    if kind == "malformed_record" and archive_kind == "arc":
        kind = "bad_arc_header"
    return SourceError(source_uri, f"offset={failure.offset}", kind, reason)


def parse_warc(source_uri: str, stream: BinaryIO, kind: str = "warc", start: int = 0, end: Optional[int] = None,
               max_record_bytes: Optional[int] = None) -> Iterator[Parsed]:
    """Parse a WARC or ARC file (plain or gzip), or the split of it whose records begin in [start, end).

    Never raises for bad input. `kind` is "warc" or "arc"; it becomes `Document.source_kind` and picks
    ARC header handling. A split (start > 0 or end set) needs a seekable stream over the whole file.
    Records whose declared length exceeds `max_record_bytes` are reported as `too_large`, not read.
    A declared length is bounded by the file and by the record's gzip member: one that runs past
    either while a record begins there is reported as `length_past_end`, and reading goes on at that
    record (see `_Pass._past_file_end`, `_Pass._record_problem`).
    """
    if start > 0:
        stream.seek(0)
    head, stream = _peek(stream, 16)
    if not head:
        if start == 0:
            yield SourceError(source_uri, None, "empty_file", "file has no bytes")
        return
    compressed = head.startswith(b"\x1f\x8b")
    seekable = _is_seekable(stream)
    file_size = _size_of(stream) if seekable else None
    if start > 0:
        first = _next_record_start(stream, start, compressed, kind, stop=end)
        if first is None:
            return  # no record begins in this split (e.g. it lies inside one large record)
        stream.seek(first)
    inflated: Optional[_InflatedMembers] = None
    skip_through = -1
    # A gzip member that fails is retried once with the members after it joined (a record split across
    # members); only if that fails too is the first failure reported.
    retried: Optional[_Failure] = None
    reopens = 0  # resynchronisations inside gzip members (_MAX_IN_MEMBER_RESYNCS)
    for _ in range(_MAX_RESYNC_CANDIDATES):
        run = _Pass(source_uri, stream, kind, end, max_record_bytes, compressed, inflated, skip_through, file_size,
                    reopens < _MAX_IN_MEMBER_RESYNCS)
        yield from run.outputs()
        inflated, skip_through = None, -1
        failure = run.failure
        if run.resume_inflated is not None:  # a length past the end of the joined members (see _Pass)
            retried, inflated, reopens = None, run.resume_inflated, reopens + 1
            continue
        # a length that ran past the end of the file (plain) or to a member that begins a record (joined
        # members): the record was reported, reading goes on at the record start found
        resume_at = run.resume_at if run.resume_at is not None else (
            run.inflated.fenced_at if failure is None and run.inflated is not None else None)
        if resume_at is not None:
            retried = None
            if end is not None and resume_at >= end:
                return  # the next split begins there
            stream.seek(resume_at)
            continue
        if run.inflate_from is not None and seekable:
            member_offset, skip_through = run.inflate_from
            inflated = _InflatedMembers(stream, member_offset, run.cap, kind)
            continue
        if run.inflate_from is not None:  # joining members needs a seekable stream
            yield SourceError(source_uri, f"offset={run.inflate_from[0]}", "truncated_record",
                              "record goes on past its gzip member, which cannot be read joined on an "
                              "unseekable stream; the rest of the file is not read")
            return
        # (a member over the cap is retried too: a whole-file gzip stream is one member bigger than any
        # record; read inflated, the cap then holds per record)
        if (failure is not None and run.inflated is None and compressed and seekable
                and not failure.follows_bad_length):
            retried = failure
            done = failure.offset if run.last_done == failure.offset else failure.offset - 1
            inflated, skip_through = _InflatedMembers(stream, failure.offset, run.cap, kind), done
            continue
        if failure is not None and retried is not None and failure.offset == retried.offset:
            failure = retried  # joining members did not help: the member's own damage is the error
        retried = None
        if failure is None and run.inflated is not None and run.inflated.stopped_at is not None:
            failure = _Failure(run.inflated.stopped_at, "malformed_record",
                               "bytes after the last gzip member are not a gzip member", 0, False)
        if failure is None:
            if seekable and not run.reached_split_end and run.inflated is None:
                yield from _trailing_bytes_error(source_uri, stream, run.end_offset)
            return
        if (end is not None and failure.offset >= end and not failure.follows_bad_length
                and is_record_start(stream, failure.offset, compressed, kind)):
            return  # a record start that does not parse: the next split begins there and reports it
        # an offset inside a member read joined is not a gzip member's: its member is not re-inflated
        at_member = run.inflated is None or failure.position is None or run.inflated.file_offset(failure.position)[1]
        if not failure.follows_bad_length:
            yield _error_for(source_uri, kind, stream, failure, compressed and at_member, seekable)
        if not seekable:
            return
        reopened = _resync_in_members(stream, kind, run, failure) if reopens < _MAX_IN_MEMBER_RESYNCS else None
        if reopened is not None:
            inflated, reopens = reopened, reopens + 1
            continue
        resync_from = failure.offset + 1
        if failure.follows_bad_length and run.bad_length_at is not None:
            # a Content-Length that is too long swallowed the start of the next record: look for it
            # inside the bad record's block (no record there was yielded: the failure came right after)
            resync_from = min(resync_from, run.bad_length_at + 1)
        next_start = _next_record_start(stream, resync_from, compressed, kind, stop=end)
        if next_start is None:
            return
        stream.seek(next_start)
