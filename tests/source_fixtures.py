"""Builders for the source parsers' test inputs (WARC/ARC records, HTML pages, PDFs, OBELICS rows) and
the split-read comparison, shared by tests/test_sources*.py and tests/test_ingest*.py.

Every fixture is built here with warcio, PyMuPDF and PIL; no Spark, no network.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json

import pymupdf
from PIL import Image
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from realsyn_spark.sources import Blob, Document, SourceError, fileio
from realsyn_spark.sources.splits import Split, count_split_lines, parse_split, plan_splits, with_first_rows


# ---------------------------------------------------------------------------------------------------
# Outputs and common payloads
# ---------------------------------------------------------------------------------------------------


def split(outputs):
    outputs = list(outputs)
    docs = [o for o in outputs if isinstance(o, Document)]
    blobs = [o for o in outputs if isinstance(o, Blob)]
    errors = [o for o in outputs if isinstance(o, SourceError)]
    assert len(docs) + len(blobs) + len(errors) == len(outputs)
    return docs, blobs, errors


def image_bytes(size=(160, 120), mode="RGB", fmt="PNG", colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, fmt)
    return buffer.getvalue()


def page_html(title: str, body: str, head: str = "") -> bytes:
    return (f"<html><head>{head}<title>{title}</title></head><body><article><h1>{title}</h1>{body}</article>"
            "<footer><p>Copyright notice for the whole site.</p></footer></body></html>").encode("utf-8")


ARTICLE = (
    "<p>A young girl is flying a red kite on a quiet beach in the early morning.</p>"
    '<img src="images/kite.jpg" alt="girl with a kite" width="300" height="200">'
    "<p>Later the wind grows stronger and the kite climbs high above the water.</p>"
    '<img src="/shared/sea.png" alt="the sea">'
    '<img src="https://tracker.example.net/p.gif" width="1" height="1">'
    "<ul><li>The beach is quiet before the shops open.</li><li>Two horses are grazing on the wet grass.</li></ul>"
)


def warc_record(uri: str, body: bytes, content_type: str, record_type: str = "response",
                status: str = "200 OK", extra=()) -> bytes:
    """One record, uncompressed."""
    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=False)
    if record_type == "response":
        headers = StatusAndHeaders(status, [("Content-Type", content_type), *extra], protocol="HTTP/1.1")
        record = writer.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=headers)
    else:
        record = writer.create_warc_record(uri, record_type, payload=io.BytesIO(body), warc_content_type=content_type)
    writer.write_record(record)
    return buffer.getvalue()


def member(record: bytes) -> bytes:
    return gzip.compress(record, mtime=0)


def corrupt(gzip_member: bytes) -> bytes:
    damaged = bytearray(gzip_member)
    middle = len(damaged) // 2
    damaged[middle - 16: middle + 16] = b"\xff" * 32
    return bytes(damaged)


class Unseekable(io.RawIOBase):
    """A network-like stream: readable, not seekable."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, buffer):
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def doc_page(n: int) -> bytes:
    return member(warc_record(f"http://site.example/p{n}.html",
                              page_html(f"Page {n}", f"<p>Page number {n} shows a busy harbour at sunset.</p>"),
                              "text/html; charset=utf-8"))


# ---------------------------------------------------------------------------------------------------
# WARC / ARC
# ---------------------------------------------------------------------------------------------------


def sample_warc() -> tuple[bytes, list[int]]:
    """Page, its two images, a windows-1252 page, a redirect; returns (bytes, member offsets)."""
    french = ("<p>Le café sert une crème brûlée à un touriste naïf venu de Zürich pour la fête.</p>"
              .encode("cp1252"))
    members = [
        member(warc_record("http://site.example/blog/post.html", page_html("Kite day", ARTICLE), "text/html")),
        member(warc_record("http://site.example/blog/images/kite.jpg", image_bytes(fmt="JPEG"), "image/jpeg")),
        member(warc_record("http://site.example/shared/sea.png", image_bytes(), "image/png")),
        member(warc_record("http://site.example/fr.html", b"<html><body>" + french + b"</body></html>",
                           "text/html; charset=windows-1252")),
        member(warc_record("http://site.example/old", b"", "text/html", status="301 Moved Permanently",
                           extra=[("Location", "http://site.example/fr.html")])),
    ]
    offsets, position = [], 0
    for m in members:
        offsets.append(position)
        position += len(m)
    return b"".join(members), offsets


def arc_file_header() -> bytes:
    block = b"1 0 InternetArchive\nURL IP-address Archive-date Content-type Archive-length\n"
    return b"filedesc://test.arc 0.0.0.0 20240101000000 text/plain %d\n" % len(block) + block + b"\n"


def arc_record(url: str, body: bytes, content_type: str = "text/html") -> bytes:
    http = b"HTTP/1.0 200 OK\r\nContent-Type: " + content_type.encode() + b"\r\n\r\n" + body
    return b"%s 10.1.2.3 20240101000000 %s %d\n" % (url.encode(), content_type.encode(), len(http)) + http + b"\n"


# ---------------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------------


def inline_image_page(document) -> None:
    """A page whose content stream draws a 2x2 RGB inline image (BI ... ID ... EI, no xref)."""
    page = document.new_page()
    page.insert_text((72, 72), "Page three has an inline image below this line.")
    xref = page.get_contents()[0]
    pixels = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 0])
    inline = b"\nq 100 0 0 100 72 120 cm BI /W 2 /H 2 /CS /RGB /BPC 8 ID " + pixels + b"\nEI Q\n"
    document.update_stream(xref, document.xref_stream(xref) + inline)


def sample_pdf() -> bytes:
    document = pymupdf.open()
    first = document.new_page()
    first.insert_textbox(pymupdf.Rect(72, 60, 520, 140), "The fisherman is repairing an old fishing net at the harbour. "
                         "Two children are building a sandcastle on a quiet beach.")
    first.insert_image(pymupdf.Rect(72, 150, 232, 270), stream=image_bytes((160, 120), fmt="PNG"))
    first.insert_textbox(pymupdf.Rect(72, 290, 520, 330), "A grey cat is sleeping in a patch of sunlight.")
    first.insert_image(pymupdf.Rect(72, 340, 172, 440), stream=image_bytes((100, 100), "CMYK", "JPEG", (0, 255, 255, 0)))
    second = document.new_page()
    second.insert_textbox(pymupdf.Rect(72, 60, 520, 100), "The second page starts with text.")
    second.insert_image(pymupdf.Rect(72, 120, 162, 210), stream=image_bytes((90, 90), "RGBA", "PNG", (0, 0, 255, 128)))
    inline_image_page(document)
    document.set_metadata({"title": "Harbour notes"})
    return document.tobytes()


# ---------------------------------------------------------------------------------------------------
# OBELICS
# ---------------------------------------------------------------------------------------------------


PNG = image_bytes((150, 150))
JPEG = image_bytes((200, 120), fmt="JPEG", colour=(10, 120, 30))


def obelics_row(url="https://site.example/article"):
    return {
        "texts": ["A tourist with a map is waiting for the morning bus.", None, "First paragraph.\n\nSecond paragraph.", None, None],
        "images": [None, "https://cdn.example/a.png", None, "http://10.0.0.5/a.jpg", None],
        "image_bytes": [None, base64.b64encode(PNG).decode(), None, None, base64.b64encode(JPEG).decode()],
        "metadata": json.dumps([None, {"alt_text": "a bus stop", "src": "https://cdn.example/a.png"}, None, None, None]),
        "general_metadata": json.dumps({"url": url, "warc_record_offset": 123}),
    }


def jsonl(rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def write_obelics_parquet(path, rows: int) -> None:
    """`rows` OBELICS rows (urls https://s/0, https://s/1, ...) with inline image bytes, two rows a row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = [obelics_row(f"https://s/{i}") for i in range(rows)]
    for row in table:
        row["image_bytes"] = [base64.b64decode(b) if b else None for b in row["image_bytes"]]
    pq.write_table(pa.Table.from_pylist(table), path, row_group_size=2)


# ---------------------------------------------------------------------------------------------------
# Splits: a whole-file read against split reads
# ---------------------------------------------------------------------------------------------------


def output_key(o):
    if isinstance(o, Document):
        nodes = tuple((n.kind, n.text, n.image_url, n.alt, n.page) for n in o.nodes)
        return ("doc", o.source_uri, o.source_kind, o.record_offset, o.url, o.title, nodes)
    if isinstance(o, Blob):
        return ("blob", o.image_url, hashlib.sha256(o.data).hexdigest())
    return ("error", o.source_uri, o.location, o.kind)


def read_whole(path: str, kind: str, **options) -> list:
    size = fileio.file_size(path)
    return list(parse_split(Split(path, kind, size, 0, 1, 0, size), **options))


def read_in_splits(path: str, kind: str, split_bytes: int, **options) -> list:
    """All splits' outputs in split order; a document's parts (PDF) are joined as the ingest stage does."""
    size = fileio.file_size(path)
    splits = plan_splits(path, kind, size, split_bytes)
    if kind == "obelics_jsonl" and len(splits) > 1:
        counted = [count_split_lines(tuple(s)) for s in splits]
        splits = with_first_rows(splits, {(p, i): n for p, i, n in counted})
    outputs, document = [], None
    for s in splits:
        for o in parse_split(s, **options):
            if isinstance(o, Document) and kind == "pdf":
                if document is None:
                    document = o
                else:
                    document.nodes.extend(o.nodes)
            else:
                outputs.append(o)
    if document is not None:
        outputs.append(document)
    return outputs


def assert_same_records(path: str, kind: str, split_sizes, records_only: bool = False, **options):
    """Split reads give exactly the whole-file read's outputs (with `records_only`, its documents and
    blobs, and at least its file-level errors)."""
    whole = sorted(map(output_key, read_whole(path, kind, **options)), key=repr)
    assert whole
    for split_bytes in split_sizes:
        parts = sorted(map(output_key, read_in_splits(path, kind, split_bytes, **options)), key=repr)
        if records_only:
            assert [k for k in parts if k[0] != "error"] == [k for k in whole if k[0] != "error"], split_bytes
            assert {k for k in whole if k[0] == "error" and k[2] is None} <= set(parts)
        else:
            assert parts == whole, split_bytes  # sorted lists: a record read twice would show
    return whole


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)
