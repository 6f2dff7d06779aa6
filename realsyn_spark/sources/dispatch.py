"""One entry point for executors: bytes of any supported file in, parsed records out, never an exception."""
from __future__ import annotations

from typing import BinaryIO, Callable, Iterator, Union

from . import Blob, Document, SourceError
from .html import parse_html
from .obelics import parse_obelics_jsonl, parse_obelics_parquet
from .pdf import parse_pdf
from .warc import parse_warc

Parsed = Union[Document, Blob, SourceError]

_REASON_CHARS = 500


def _parser_output(source_uri: str, stream: BinaryIO, kind: str, html_base_url: str) -> Iterator[Parsed]:
    if kind in ("warc", "arc"):
        return parse_warc(source_uri, stream, kind)
    if kind == "pdf":
        return parse_pdf(source_uri, stream)
    if kind == "obelics_jsonl":
        return parse_obelics_jsonl(source_uri, stream)
    if kind == "obelics_parquet":
        return parse_obelics_parquet(source_uri, stream)
    if kind == "html":
        return parse_html(source_uri, stream.read(), html_base_url)
    return iter([SourceError(source_uri, None, "unsupported_kind", f"no parser for kind {kind!r}")])


def guarded(source_uri: str, produce: Callable[[], Iterator[Parsed]]) -> Iterator[Parsed]:
    """The records of `produce()`; anything it raises becomes one `parser_crash` error after the records
    already yielded."""
    try:
        yield from produce()
    except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
        reason = f"{type(exc).__name__}: {exc}"[:_REASON_CHARS]
        yield SourceError(source_uri, None, "parser_crash", reason)


def parse_source(
    source_uri: str, stream: BinaryIO, kind: str, html_base_url: str = "http://localhost/"
) -> Iterator[Parsed]:
    """Parse one whole file of the given kind (see `detect.detect_kind`) from a stream.

    Parsers report bad input as SourceErrors themselves; anything they raise anyway is a parser bug
    or an unforeseen input, and becomes one `parser_crash` error after the records already yielded,
    so one file can never fail a Spark task. (Executors read files by split: `splits.parse_split`.)
    """
    # Looked up at call time, so tests can swap a parser in this module.
    return guarded(source_uri, lambda: _parser_output(source_uri, stream, kind, html_base_url))
