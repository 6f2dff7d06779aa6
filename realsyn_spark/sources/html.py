"""A plain HTML file -> one Document. Extraction is shared with the WARC parser (htmlextract)."""
from __future__ import annotations

import posixpath
import re
from typing import Iterator, Union
from urllib.parse import quote, unquote, urljoin, urlsplit

from . import Document, SourceError
from .htmlextract import extract_html

Parsed = Union[Document, SourceError]

_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: "C:\\" is a drive


def page_url_for(source_uri: str, base_url: str) -> str:
    """The URL a local HTML file stands for: its file name resolved against `base_url`.

    Relative image links in the page then resolve as they would on the site the files came from.
    """
    # Spark lists files as URIs ("file:/data/my%20page.html"); plain paths are taken as they are.
    path = unquote(urlsplit(source_uri).path) if _HAS_SCHEME.match(source_uri) else source_uri
    file_name = posixpath.basename(path.replace("\\", "/"))
    base = base_url if base_url.endswith("/") else base_url + "/"
    return urljoin(base, quote(file_name))


def parse_html(source_uri: str, data: bytes, base_url: str = "http://localhost/") -> Iterator[Parsed]:
    """Parse one HTML file (bytes, charset from <meta> or detection). Never raises for bad input.

    Binary garbage and pages with no text or image are a SourceError instead of a Document; a page
    that decodes only with replacement characters is a Document plus a `lossy_decoding` SourceError.
    """
    if not data:
        yield SourceError(source_uri, None, "empty_file", "file has no bytes")
        return
    url = page_url_for(source_uri, base_url)
    result = extract_html(data, url)
    if result.problem is not None:
        yield SourceError(source_uri, None, *result.problem)
    if result.keep:
        yield Document(
            source_uri=source_uri, source_kind="html", record_offset=None, url=url, title=result.title,
            nodes=result.nodes, metadata={"charset": result.encoding,
                                          **({"images_dropped": result.images_dropped} if result.images_dropped else {})},
        )
