"""Which parser a file needs, from its name alone (executors see paths before they read bytes)."""
from __future__ import annotations

import posixpath
from typing import Optional
from urllib.parse import urlsplit

# Longest suffixes first so ".warc.gz" is not mistaken for something ending in ".gz".
_SUFFIX_KINDS = (
    (".warc.gz", "warc"),
    (".arc.gz", "arc"),
    (".jsonl.gz", "obelics_jsonl"),
    (".warc", "warc"),
    (".arc", "arc"),
    (".pdf", "pdf"),
    (".jsonl", "obelics_jsonl"),
    (".json", "obelics_jsonl"),
    (".parquet", "obelics_parquet"),
    (".html", "html"),
    (".htm", "html"),
)

SUFFIXES = tuple(suffix for suffix, _ in _SUFFIX_KINDS)


def detect_kind(path: str) -> Optional[str]:
    """"warc", "arc", "pdf", "obelics_jsonl", "obelics_parquet", "html", or None for anything else.

    Works on local paths and URIs (s3://bucket/x.warc.gz, file:///...); case-insensitive.
    """
    name = posixpath.basename(urlsplit(path).path if "://" in path else path).lower()
    for suffix, kind in _SUFFIX_KINDS:
        if name.endswith(suffix):
            return kind
    return None
