"""Parsers for raw interleaved documents. Pure Python, no Spark: executors call them inside mapInPandas.

Contract: `parse_source(source_uri, stream, kind, options)` yields `Document`, `Blob` and `SourceError`
records and never raises for bad input: a corrupt record becomes a `SourceError` naming the file, the
offset or page and the reason, and every good record of the same file is still yielded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class Node:
    position: int                      # 0-based reading order within the document
    kind: str                          # "text" | "image"
    text: Optional[str] = None         # paragraph text (text nodes)
    image_url: Optional[str] = None    # absolute URL, or pdf://... / warc reference (image nodes)
    alt: Optional[str] = None
    page: Optional[int] = None         # 1-based PDF page


@dataclass
class Document:
    source_uri: str
    source_kind: str                   # "warc" | "arc" | "pdf" | "obelics" | "html"
    record_offset: Optional[int]       # byte offset of the WARC record, row index of OBELICS, None for PDF/HTML
    url: Optional[str]
    title: Optional[str]
    nodes: list[Node] = field(default_factory=list)
    metadata: Optional[dict[str, Any]] = None


@dataclass
class Blob:
    """Image bytes that arrive inside the source itself (WARC image record, PDF image, inline OBELICS bytes)."""
    image_url: str
    data: bytes
    origin: str                        # "warc" | "pdf" | "inline"


@dataclass
class SourceError:
    source_uri: str
    location: Optional[str]            # "offset=1234", "page=3", "row=17", or None for the whole file
    kind: str                          # short machine-readable class, e.g. "corrupt_gzip", "truncated_pdf"
    reason: str                        # human-readable explanation

    def __post_init__(self):
        # error_id hashes the reason: a memory address in it (an exception quoting a stream object,
        # "<_io.BytesIO object at 0x7f...>") would change per run and break idempotence
        self.reason = stable_reason(self.reason)


_MEMORY_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|\b0x[0-9a-fA-F]{8,}\b")


def stable_reason(reason: str) -> str:
    """`reason` without memory addresses (object reprs, pointers), the same on every run."""
    return _MEMORY_ADDRESS.sub("", reason)
