"""Unit tests for the source parsers (no Spark): every fixture is built here with warcio, PyMuPDF and PIL."""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json

import pymupdf
import pytest
from PIL import Image
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from realsyn_spark.sources import Blob, Document, SourceError
from realsyn_spark.sources import dispatch as dispatch_module
from realsyn_spark.sources.detect import detect_kind
from realsyn_spark.sources.dispatch import parse_source
from realsyn_spark.sources.html import parse_html
from realsyn_spark.sources.htmlextract import decode_html, extract_html_nodes
from realsyn_spark.sources.obelics import parse_obelics_jsonl, parse_obelics_parquet
from realsyn_spark.sources.pdf import parse_pdf
from realsyn_spark.sources.warc import parse_warc

# ---------------------------------------------------------------------------------------------------
# Helpers
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
# detect_kind
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, kind", [
    ("a/b.warc.gz", "warc"), ("x.WARC", "warc"), ("x.arc.gz", "arc"), ("x.arc", "arc"), ("d.pdf", "pdf"),
    ("o.jsonl", "obelics_jsonl"), ("o.jsonl.gz", "obelics_jsonl"), ("o.json", "obelics_jsonl"),
    ("o.parquet", "obelics_parquet"), ("p.html", "html"), ("p.htm", "html"), ("s3://bucket/k/c.warc.gz", "warc"),
    ("image.jpg", None), ("archive.gz", None), ("README", None),
])
def test_detect_kind(path, kind):
    assert detect_kind(path) == kind


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


def test_warc_pages_become_documents_with_interleaved_nodes_and_absolute_urls():
    data, offsets = sample_warc()
    docs, blobs, errors = split(parse_warc("s.warc.gz", io.BytesIO(data), "warc"))
    assert errors == []
    page = docs[0]
    assert (page.source_kind, page.record_offset, page.url, page.title) == (
        "warc", offsets[0], "http://site.example/blog/post.html", "Kite day")
    kinds = [n.kind for n in page.nodes]
    assert [n.position for n in page.nodes] == list(range(len(page.nodes)))
    images = [n for n in page.nodes if n.kind == "image"]
    assert [(n.image_url, n.alt) for n in images] == [
        ("http://site.example/blog/images/kite.jpg", "girl with a kite"),
        ("http://site.example/shared/sea.png", "the sea"),
    ]  # relative and root-relative resolved, tracking pixel dropped
    texts = [n.text for n in page.nodes if n.kind == "text"]
    assert texts[1].startswith("A young girl is flying a red kite")
    assert "The beach is quiet before the shops open." in texts
    assert not any("Copyright" in t for t in texts)  # boilerplate footer is not main content
    first_image = kinds.index("image")
    assert page.nodes[first_image - 1].text.startswith("A young girl")
    assert page.nodes[first_image + 1].text.startswith("Later the wind")


def test_warc_image_records_become_blobs():
    data, _ = sample_warc()
    _, blobs, _ = split(parse_warc("s.warc.gz", io.BytesIO(data), "warc"))
    assert [b.image_url for b in blobs] == ["http://site.example/blog/images/kite.jpg", "http://site.example/shared/sea.png"]
    assert all(b.origin == "warc" for b in blobs)
    assert Image.open(io.BytesIO(blobs[0].data)).format == "JPEG"


def test_warc_windows_1252_page_decoded_from_http_charset():
    data, offsets = sample_warc()
    docs, _, _ = split(parse_warc("s.warc.gz", io.BytesIO(data), "warc"))
    french = docs[1]
    assert french.record_offset == offsets[3]
    assert french.nodes[0].text == "Le café sert une crème brûlée à un touriste naïf venu de Zürich pour la fête."
    assert french.metadata["charset"] == "cp1252"
    assert len(docs) == 2  # the redirect has no content


def test_warc_resource_records():
    data = member(warc_record("file:///notes/a.html", page_html("Notes", "<p>A nurse is reading a folded newspaper.</p>"),
                              "text/html", record_type="resource"))
    data += member(warc_record("file:///notes/a.png", image_bytes(), "image/png", record_type="resource"))
    docs, blobs, errors = split(parse_warc("r.warc.gz", io.BytesIO(data), "warc"))
    assert errors == [] and len(docs) == 1 and [b.image_url for b in blobs] == ["file:///notes/a.png"]
    assert docs[0].nodes[-1].text == "A nurse is reading a folded newspaper."


def test_uncompressed_warc_offsets():
    records = [warc_record(f"http://site.example/p{n}.html", page_html("T", f"<p>Page {n} text here.</p>"), "text/html")
               for n in range(3)]
    docs, _, errors = split(parse_warc("plain.warc", io.BytesIO(b"".join(records)), "warc"))
    assert errors == []
    assert [d.record_offset for d in docs] == [0, len(records[0]), len(records[0]) + len(records[1])]


def test_corrupt_gzip_member_after_good_records():
    good = [doc_page(n) for n in range(3)]
    bad = corrupt(member(warc_record("http://site.example/bad.html", b"<p>x</p>" * 200, "text/html")))
    after = doc_page(3)
    data = b"".join(good) + bad + after
    docs, _, errors = split(parse_warc("b.warc.gz", io.BytesIO(data), "warc"))
    assert [d.url for d in docs] == [f"http://site.example/p{n}.html" for n in (0, 1, 2, 3)]
    assert len(errors) == 1
    assert errors[0].kind == "corrupt_gzip"
    assert errors[0].location == f"offset={sum(map(len, good))}"
    assert errors[0].source_uri == "b.warc.gz"


def test_corruption_on_unseekable_stream_yields_records_before_then_one_error():
    good = [doc_page(n) for n in range(2)]
    bad = corrupt(member(warc_record("http://site.example/bad.html", b"<p>x</p>" * 200, "text/html")))
    data = b"".join(good) + bad + doc_page(9)
    docs, _, errors = split(parse_warc("b.warc.gz", Unseekable(data), "warc"))
    assert [d.url for d in docs] == ["http://site.example/p0.html", "http://site.example/p1.html"]
    assert len(errors) == 1 and errors[0].location == f"offset={sum(map(len, good))}"


def test_truncated_record_in_uncompressed_warc():
    records = [warc_record(f"http://site.example/p{n}.html", page_html("T", f"<p>Page {n} text.</p>"), "text/html")
               for n in range(2)]
    data = b"".join(records)[:-30]
    docs, _, errors = split(parse_warc("t.warc", io.BytesIO(data), "warc"))
    assert [d.url for d in docs] == ["http://site.example/p0.html"]
    assert [(e.kind, e.location) for e in errors] == [("truncated_record", f"offset={len(records[0])}")]


def test_gzip_member_cut_short_at_end_of_file():
    good = [doc_page(n) for n in range(2)]
    cut = doc_page(2)
    docs, _, errors = split(parse_warc("t.warc.gz", io.BytesIO(b"".join(good) + cut[: len(cut) // 2]), "warc"))
    assert len(docs) == 2
    assert len(errors) == 1 and errors[0].kind in ("truncated_gzip", "truncated_record")
    assert errors[0].location == f"offset={sum(map(len, good))}"


def test_garbage_between_uncompressed_records_is_skipped():
    first = warc_record("http://site.example/a.html", page_html("A", "<p>First page text.</p>"), "text/html")
    second = warc_record("http://site.example/b.html", page_html("B", "<p>Second page text.</p>"), "text/html")
    docs, _, errors = split(parse_warc("g.warc", io.BytesIO(first + b"NOT A RECORD\r\n\r\n" + second), "warc"))
    assert [d.url for d in docs] == ["http://site.example/a.html", "http://site.example/b.html"]
    assert [e.kind for e in errors] == ["malformed_record"]


def test_empty_warc():
    assert list(parse_warc("e.warc.gz", io.BytesIO(b""), "warc")) == [
        SourceError("e.warc.gz", None, "empty_file", "file has no bytes")]


def arc_file_header() -> bytes:
    block = b"1 0 InternetArchive\nURL IP-address Archive-date Content-type Archive-length\n"
    return b"filedesc://test.arc 0.0.0.0 20240101000000 text/plain %d\n" % len(block) + block + b"\n"


def arc_record(url: str, body: bytes, content_type: str = "text/html") -> bytes:
    http = b"HTTP/1.0 200 OK\r\nContent-Type: " + content_type.encode() + b"\r\n\r\n" + body
    return b"%s 10.1.2.3 20240101000000 %s %d\n" % (url.encode(), content_type.encode(), len(http)) + http + b"\n"


def test_arc_records_become_documents_and_blobs():
    page = arc_record("http://old.example/index.html", page_html("Old", '<p>An old man is sweeping the front steps.</p><img src="pic.png" alt="steps">'))
    data = arc_file_header() + page + arc_record("http://old.example/pic.png", image_bytes(), "image/png")
    docs, blobs, errors = split(parse_warc("x.arc", io.BytesIO(data), "arc"))
    assert errors == []
    assert docs[0].source_kind == "arc" and docs[0].record_offset == len(arc_file_header())
    assert [n.image_url for n in docs[0].nodes if n.kind == "image"] == ["http://old.example/pic.png"]
    assert [b.image_url for b in blobs] == ["http://old.example/pic.png"]
    gz = gzip.compress(arc_file_header(), mtime=0) + gzip.compress(page, mtime=0)
    assert len(split(parse_warc("x.arc.gz", io.BytesIO(gz), "arc"))[0]) == 1


def test_bad_arc_header_is_reported_and_next_record_recovered():
    broken = b"http://old.example/a.html 10.1.2.3\n<p>no proper header</p>\n"
    good = arc_record("http://old.example/b.html", page_html("B", "<p>A grey cat is sleeping in a patch of sunlight.</p>"))
    docs, _, errors = split(parse_warc("x.arc", io.BytesIO(arc_file_header() + broken + good), "arc"))
    assert [d.url for d in docs] == ["http://old.example/b.html"]
    assert [(e.kind, e.location) for e in errors] == [("bad_arc_header", f"offset={len(arc_file_header())}")]


def test_arc_record_with_wrong_length_is_reported():
    http = b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<p>A longer body than declared.</p>"
    bad = b"http://old.example/a.html 10.1.2.3 20240101000000 text/html 20\n" + http + b"\n"
    good = arc_record("http://old.example/c.html", page_html("C", "<p>Three goats are grazing on the wet grass.</p>"))
    docs, _, errors = split(parse_warc("x.arc", io.BytesIO(arc_file_header() + bad + good), "arc"))
    assert [d.url for d in docs] == ["http://old.example/c.html"]
    assert errors and errors[0].location == f"offset={len(arc_file_header())}"


def test_not_an_archive():
    docs, blobs, errors = split(parse_warc("n.warc", io.BytesIO(b"this is not an archive at all"), "warc"))
    assert docs == [] and blobs == [] and len(errors) == 1 and errors[0].location == "offset=0"


# ---------------------------------------------------------------------------------------------------
# HTML extraction
# ---------------------------------------------------------------------------------------------------


def test_decode_html_charset_order():
    text = "Garçon, un café crème, s’il vous plaît — déjà très élégant."
    cp = f"<p>{text}</p>".encode("cp1252")
    assert decode_html(cp, "text/html; charset=windows-1252") == (f"<p>{text}</p>", "cp1252")
    assert decode_html(b'<meta charset="windows-1252">' + cp)[0].endswith(f"<p>{text}</p>")
    assert decode_html(cp)[0] == f"<p>{text}</p>"  # undeclared: utf-8 fails, detection picks cp1252
    utf8 = f"<p>{text}</p>".encode("utf-8")
    assert decode_html(utf8, "text/html; charset=iso-8859-1")[0] != f"<p>{text}</p>"  # a declared charset wins
    assert decode_html(utf8) == (f"<p>{text}</p>", "utf-8")
    assert decode_html(utf8, "text/html; charset=no-such-charset")[1] == "utf-8"
    # mostly UTF-8 with a stray byte: UTF-8 with one replacement character, not a legacy-code-page guess
    assert decode_html(utf8 + b"<p>\x81 stray</p>") == (f"<p>{text}</p><p>\ufffd stray</p>", "utf-8")


def test_short_page_keeps_its_image():
    title, nodes = extract_html_nodes('<html><body><p>Tiny note.</p><img src="a.jpg" alt="a"></body></html>',
                                      "http://x.example/dir/page.html")
    assert [(n.kind, n.text or n.image_url) for n in nodes] == [("text", "Tiny note."), ("image", "http://x.example/dir/a.jpg")]


def test_lazy_images_base_href_and_pixels():
    html = ('<html><head><base href="http://cdn.example/static/"></head><body><div>'
            '<p>A woman in a red coat is holding a bright blue umbrella.</p>'
            '<img src="data:image/gif;base64,R0lGOD" data-src="lazy.jpg" alt="lazy">'
            '<img src="http://t.example/1x1.gif"><img src="spacer.gif" style="width:1px;height:1px">'
            '<img src="javascript:void(0)"></div></body></html>')
    _, nodes = extract_html_nodes(html, "http://site.example/a.html")
    assert [n.image_url for n in nodes if n.kind == "image"] == ["http://cdn.example/static/lazy.jpg"]


@pytest.mark.parametrize("garbage, kinds, kept", [
    (b"\x00\x01\x02<<<>>>&&&\xff\xfe", ["binary_content"], False),
    (bytes(range(256)) * 4, ["binary_content"], False),
    (b"<html><body><p>unclosed <b><i>tags", [], True),
    (b"<?xml version='1.0' encoding='utf-8'?><html><body><p>xml declared</p></body></html>", [], True),
    (b"   ", ["no_content"], False),
    (b"<html><head><script>var x = 1;</script></head><body><div id=app></div><script>x()</script></body></html>",
     ["no_content"], False),
    ("<p>Un café, une crème brûlée et un croissant chaud pour le petit déjeuner.</p>".encode("utf-8")
     + b"<p>\x81\x8d broken \xe9\xff bytes</p>", ["lossy_decoding"], True),
])
def test_broken_html_is_reported_and_never_raises(garbage, kinds, kept):
    docs, blobs, errors = split(parse_html("g.html", garbage, "http://localhost/"))
    assert [e.kind for e in errors] == kinds and all(e.location is None for e in errors)
    assert len(docs) == (1 if kept else 0) and blobs == []


def test_broken_html_in_a_warc_is_reported_at_its_offset():
    first = doc_page(0)
    data = first + member(warc_record("http://site.example/bin.html", bytes(range(256)) * 4, "text/html")) + doc_page(1)
    docs, _, errors = split(parse_warc("h.warc.gz", io.BytesIO(data), "warc"))
    assert len(docs) == 2 and [(e.kind, e.location) for e in errors] == [("binary_content", f"offset={len(first)}")]


def test_parse_html_file():
    html = page_html("Local", ARTICLE, head='<meta charset="utf-8">')
    docs, _, errors = split(parse_html("/data/html/page1.html", html, "http://localhost/"))
    doc = docs[0]
    assert errors == [] and (doc.url, doc.source_kind, doc.record_offset, doc.title) == (
        "http://localhost/page1.html", "html", None, "Local")
    assert [n.image_url for n in doc.nodes if n.kind == "image"] == [
        "http://localhost/images/kite.jpg", "http://localhost/shared/sea.png"]
    assert list(parse_html("e.html", b"", "http://localhost/"))[0].kind == "empty_file"
    spark_uri = next(parse_html("file:/data/html/my%20page.html", html, "http://localhost/site"))
    assert spark_uri.url == "http://localhost/site/my%20page.html"


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


def test_pdf_nodes_in_reading_order_with_pages():
    data = sample_pdf()
    docs, blobs, errors = split(parse_pdf("r.pdf", io.BytesIO(data)))
    assert errors == [] and len(docs) == 1
    doc = docs[0]
    assert (doc.source_kind, doc.record_offset, doc.url, doc.title) == ("pdf", None, None, "Harbour notes")
    assert doc.metadata["page_count"] == 3
    layout = [(n.kind, n.page) for n in doc.nodes]
    assert layout == [("text", 1), ("image", 1), ("text", 1), ("image", 1), ("text", 2), ("image", 2),
                      ("text", 3), ("image", 3)]
    assert doc.nodes[0].text == ("The fisherman is repairing an old fishing net at the harbour. "
                                 "Two children are building a sandcastle on a quiet beach.")
    assert [n.position for n in doc.nodes] == list(range(8))
    prefix = f"pdf://{hashlib.sha256(data).hexdigest()[:16]}/"
    assert [n.image_url for n in doc.nodes if n.kind == "image"] == [
        prefix + "page1/img0", prefix + "page1/img1", prefix + "page2/img0", prefix + "page3/img0"]
    assert [b.image_url for b in blobs] == [n.image_url for n in doc.nodes if n.kind == "image"]
    assert all(b.origin == "pdf" for b in blobs)


def test_pdf_images_are_standard_rgb_with_alpha_kept():
    _, blobs, _ = split(parse_pdf("r.pdf", io.BytesIO(sample_pdf())))
    decoded = [Image.open(io.BytesIO(b.data)) for b in blobs]
    assert all(im.format in ("PNG", "JPEG") for im in decoded)
    plain, cmyk, alpha, inline = decoded
    assert plain.size == (160, 120) and plain.convert("RGB").getpixel((5, 5)) == (200, 40, 40)
    assert cmyk.mode == "RGB"  # converted from CMYK
    red, green, blue = cmyk.getpixel((50, 50))
    assert red > 200 and green < 80 and blue < 80  # CMYK (0, 255, 255, 0) is red
    assert alpha.mode == "RGBA" and alpha.getpixel((10, 10))[3] == 128  # soft mask applied
    assert inline.size == (2, 2) and inline.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_encrypted_pdf():
    document = pymupdf.open()
    document.new_page().insert_text((72, 72), "secret")
    data = document.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="user", owner_pw="owner")
    assert [(e.kind, e.location) for e in parse_pdf("e.pdf", io.BytesIO(data))] == [("encrypted_pdf", None)]


def test_owner_password_only_pdf_opens():
    document = pymupdf.open()
    document.new_page().insert_text((72, 72), "A baker is loading crates onto a truck.")
    data = document.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="", owner_pw="owner")
    docs, _, errors = split(parse_pdf("o.pdf", io.BytesIO(data)))
    assert errors == [] and docs[0].nodes[0].text == "A baker is loading crates onto a truck."


def test_truncated_pdf_reports_errors_and_keeps_what_is_recoverable():
    data = sample_pdf()
    docs, blobs, errors = split(parse_pdf("t.pdf", io.BytesIO(data[: len(data) // 2])))
    assert errors and errors[0].kind == "truncated_pdf" and errors[0].location is None
    assert all(e.location is None or e.location.startswith("page=") for e in errors)
    assert len(docs) <= 1


@pytest.mark.parametrize("data, kind", [
    (b"", "empty_file"), (b"%PDF-1.4\n" + bytes(range(256)) * 8, "corrupt_pdf"), (b"plain text, not a pdf", "corrupt_pdf"),
])
def test_unreadable_pdfs(data, kind):
    outputs = list(parse_pdf("x.pdf", io.BytesIO(data)))
    assert [(o.kind, o.location) for o in outputs] == [(kind, None)]


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


def test_obelics_jsonl_record():
    docs, blobs, errors = split(parse_obelics_jsonl("o.jsonl", io.BytesIO(jsonl([obelics_row()]))))
    assert errors == []
    doc = docs[0]
    assert (doc.source_kind, doc.record_offset, doc.url) == ("obelics", 0, "https://site.example/article")
    assert doc.metadata["warc_record_offset"] == 123 and doc.metadata["node_metadata"][1]["alt_text"] == "a bus stop"
    inline_url = "inline://" + hashlib.sha256(JPEG).hexdigest()[:24]
    assert [(n.kind, n.text or n.image_url) for n in doc.nodes] == [
        ("text", "A tourist with a map is waiting for the morning bus."),
        ("image", "https://cdn.example/a.png"),
        ("text", "First paragraph."), ("text", "Second paragraph."),
        ("image", "http://10.0.0.5/a.jpg"),   # URL only: left to the fetcher
        ("image", inline_url),                  # bytes only: named by content hash
    ]
    assert doc.nodes[1].alt == "a bus stop"
    assert [(b.image_url, b.data, b.origin) for b in blobs] == [
        ("https://cdn.example/a.png", PNG, "inline"), (inline_url, JPEG, "inline")]


def test_obelics_malformed_lines_are_reported_and_skipped():
    rows = [obelics_row("https://s/0"), b'{"texts": ["cut', b"", obelics_row("https://s/3"),
            {"texts": ["a", None], "images": [None]}, {"texts": ["a"], "images": ["http://x/y.jpg"]}, [1, 2],
            obelics_row("https://s/7")]
    docs, _, errors = split(parse_obelics_jsonl("o.jsonl", io.BytesIO(jsonl(rows))))
    assert [(d.record_offset, d.url) for d in docs] == [(0, "https://s/0"), (3, "https://s/3"), (7, "https://s/7")]
    assert [(e.location, e.kind) for e in errors] == [
        ("row=1", "malformed_json"), ("row=4", "malformed_record"), ("row=5", "malformed_record"),
        ("row=6", "malformed_record")]


def test_obelics_bad_base64_keeps_the_document():
    row = obelics_row()
    row["image_bytes"][1] = "***not base64***"
    docs, blobs, errors = split(parse_obelics_jsonl("o.jsonl", io.BytesIO(jsonl([row]))))
    assert [(e.kind, e.location) for e in errors] == [("bad_image_bytes", "row=0")]
    assert "https://cdn.example/a.png" in [n.image_url for n in docs[0].nodes]  # still fetchable by URL
    assert len(blobs) == 1


def test_obelics_gzip_jsonl_and_json_array():
    gz = gzip.compress(jsonl([obelics_row(), obelics_row()]), mtime=0)
    assert len(split(parse_obelics_jsonl("o.jsonl.gz", io.BytesIO(gz)))[0]) == 2
    array = json.dumps([obelics_row(), obelics_row()]).encode()
    assert [d.record_offset for d in split(parse_obelics_jsonl("o.json", io.BytesIO(array)))[0]] == [0, 1]
    docs, _, errors = split(parse_obelics_jsonl("o.jsonl.gz", io.BytesIO(gz[: len(gz) // 2])))
    assert errors and errors[-1].kind == "corrupt_gzip"
    assert [e.kind for e in parse_obelics_jsonl("e.jsonl", io.BytesIO(b""))] == ["empty_file"]


def test_obelics_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [obelics_row(f"https://s/{i}") for i in range(5)]
    for row in rows:
        row["image_bytes"] = [base64.b64decode(b) if b else None for b in row["image_bytes"]]
    path = tmp_path / "o.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    with open(path, "rb") as handle:
        docs, blobs, errors = split(parse_obelics_parquet(str(path), handle))
    assert errors == []
    assert [(d.record_offset, d.url) for d in docs] == [(i, f"https://s/{i}") for i in range(5)]
    assert blobs[0].data == PNG and blobs[1].data == JPEG
    outputs = list(parse_obelics_parquet("bad.parquet", io.BytesIO(b"PAR1 definitely not parquet PAR1")))
    assert [(o.kind, o.location) for o in outputs] == [("corrupt_parquet", None)]


# ---------------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------------


def test_parse_source_dispatches_on_kind():
    data, _ = sample_warc()
    assert len(split(parse_source("s.warc.gz", io.BytesIO(data), "warc"))[0]) == 2
    assert len(split(parse_source("p.pdf", io.BytesIO(sample_pdf()), "pdf"))[0]) == 1
    assert len(split(parse_source("o.jsonl", io.BytesIO(jsonl([obelics_row()])), "obelics_jsonl"))[0]) == 1
    docs = split(parse_source("/x/page.html", io.BytesIO(page_html("T", ARTICLE)), "html", "http://h.example/base/"))[0]
    assert docs[0].url == "http://h.example/base/page.html"
    assert [e.kind for e in parse_source("x.bin", io.BytesIO(b"x"), "zip")] == ["unsupported_kind"]


def test_parser_crash_becomes_an_error_after_the_records_already_yielded(monkeypatch):
    def crashing_parser(source_uri, stream):
        yield Blob("pdf://x/page1/img0", b"data", "pdf")
        raise RuntimeError("boom")

    monkeypatch.setattr(dispatch_module, "parse_pdf", crashing_parser)
    outputs = list(parse_source("c.pdf", io.BytesIO(b"%PDF"), "pdf"))
    assert isinstance(outputs[0], Blob)
    assert (outputs[1].kind, outputs[1].reason) == ("parser_crash", "RuntimeError: boom")


# ---------------------------------------------------------------------------------------------------
# Splits: every record read by exactly one split, with the same ids as a whole-file read
# ---------------------------------------------------------------------------------------------------

from realsyn_spark.sources import fileio
from realsyn_spark.sources.obelics import count_line_starts
from realsyn_spark.sources.pdf import page_range
from realsyn_spark.sources.splits import (Split, count_split_lines, pack_splits, parse_split,
                                          plan_splits, with_first_rows)


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


def test_plan_splits_cover_the_file_and_only_splittable_kinds_split():
    splits = plan_splits("a.warc.gz", "warc", 1000, 300)
    assert [(s.index, s.count, s.start, s.end) for s in splits] == [(0, 4, 0, 250), (1, 4, 250, 500),
                                                                   (2, 4, 500, 750), (3, 4, 750, 1000)]
    assert len(plan_splits("a.jsonl", "obelics_jsonl", 1000, 300)) == 4
    for path, kind in (("a.jsonl.gz", "obelics_jsonl"), ("a.json", "obelics_jsonl"), ("a.html", "html")):
        assert [(s.start, s.end) for s in plan_splits(path, kind, 1000, 300)] == [(0, 1000)]
    assert [(s.start, s.end) for s in plan_splits("e.pdf", "pdf", 0, 300)] == [(0, 0)]


def test_pack_splits_gives_big_splits_a_task_each_and_groups_small_files():
    big = plan_splits("big.warc.gz", "warc", 1000, 250)
    small = [Split(f"s{i}.html", "html", 10, 0, 1, 0, 10) for i in range(6)]
    tasks = pack_splits(big + small, target_bytes=250, open_cost_bytes=50)
    assert sorted(s for task in tasks for s in task) == sorted(big + small)
    assert [len(t) for t in tasks] == [1, 1, 1, 1, 5, 1]


def test_gzip_warc_every_split_size_reads_each_record_once(tmp_path):
    data, _ = sample_warc()
    path = write(tmp_path, "s.warc.gz", data)
    whole = assert_same_records(path, "warc", [1, 3, 97, 1000, 4096, len(data) // 2])
    assert [k[0] for k in whole].count("doc") == 2


def test_broken_gzip_warc_splits_agree_on_errors_too(tmp_path):
    good = [doc_page(n) for n in range(3)]
    bad = corrupt(member(warc_record("http://site.example/bad.html", b"<p>x</p>" * 200, "text/html")))
    cut = doc_page(5)
    data = b"".join(good) + bad + doc_page(3) + b"garbage between members" + doc_page(4) + cut[: len(cut) // 2]
    path = write(tmp_path, "b.warc.gz", data)
    whole = assert_same_records(path, "warc", [1, 50, 333, 1024, 3000])
    assert [k[3] for k in whole if k[0] == "error"] and len([k for k in whole if k[0] == "doc"]) == 5


def test_uncompressed_warc_splits(tmp_path):
    records = [warc_record(f"http://site.example/p{n}.html", page_html("T", f"<p>Page {n} text here.</p>"), "text/html")
               for n in range(4)]
    records.append(warc_record("http://site.example/i.png", image_bytes(), "image/png"))
    no_length = b"WARC/1.0\r\nWARC-Type: response\r\nno: length\r\n\r\n<p>would swallow the rest</p>\r\n\r\n"
    body = b"".join(records[:2]) + b"NOT A RECORD\r\n\r\n" + records[2] + no_length + b"".join(records[3:])
    path = write(tmp_path, "plain.warc", body + records[0][:-40])
    whole = assert_same_records(path, "warc", [1, 64, 500, 2048])
    assert sorted(k[3] for k in whole if k[0] == "error") == ["malformed_record", "malformed_record", "truncated_record"]
    assert len([k for k in whole if k[0] == "doc"]) == 4  # the record after the one without a length survives


def crawl_record(n: int) -> bytes:
    """A record with Common Crawl's header order: Content-Length is not the last header."""
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + page_html(f"P{n}", f"<p>Crawled page {n} text.</p>")
    headers = (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Date: 2024-03-01T12:00:00Z\r\n"
               b"WARC-Record-ID: <urn:uuid:00000000-0000-4000-8000-%012d>\r\nContent-Length: %d\r\n"
               b"Content-Type: application/http; msgtype=response\r\nWARC-Target-URI: http://cc.example/%d\r\n\r\n"
               % (n, len(http), n))
    return headers + http + b"\r\n\r\n"


@pytest.mark.parametrize("compressed", [False, True])
def test_splits_find_records_whatever_the_header_order(tmp_path, compressed):
    records = [crawl_record(n) for n in range(5)]
    data = b"".join(member(r) for r in records) if compressed else b"".join(records)
    path = write(tmp_path, "cc.warc.gz" if compressed else "cc.warc", data)
    whole = assert_same_records(path, "warc", [1, 150, 700])
    assert len([k for k in whole if k[0] == "doc"]) == 5


def test_payload_quoting_a_warc_header_line_does_not_start_a_split(tmp_path):
    quoted = page_html("WARC", "<pre>\nWARC/1.0\r\nthis line only looks like a record\n</pre><p>Quoted text.</p>")
    records = [warc_record(f"http://site.example/q{n}.html", quoted, "text/html") for n in range(3)]
    path = write(tmp_path, "q.warc", b"".join(records))
    assert_same_records(path, "warc", [1, 100, 700])


def test_arc_splits_plain_and_gzip(tmp_path):
    pages = [arc_record(f"http://old.example/{n}.html", page_html("Old", f"<p>An old man number {n} sweeps.</p>"))
             for n in range(3)]
    broken = b"http://old.example/a.html 10.1.2.3\n<p>no proper header</p>\n"
    plain = arc_file_header() + pages[0] + broken + pages[1] + arc_record("http://old.example/p.png", image_bytes(), "image/png") + pages[2]
    assert_same_records(write(tmp_path, "x.arc", plain), "arc", [1, 90, 400])
    gz = b"".join(gzip.compress(part, mtime=0) for part in (arc_file_header(), *pages))
    assert_same_records(write(tmp_path, "x.arc.gz", gz), "arc", [1, 200, 700])


def test_record_over_the_size_limit_is_reported_not_read(tmp_path):
    big = member(warc_record("http://site.example/huge.png", b"\x89PNG" + bytes(range(256)) * 40, "image/png"))
    first = doc_page(0)
    outputs = read_whole(write(tmp_path, "l.warc.gz", first + big + doc_page(1)), "warc", max_record_bytes=2000)
    docs, blobs, errors = split(outputs)
    assert len(docs) == 2 and blobs == []
    assert [(e.kind, e.location) for e in errors] == [("too_large", f"offset={len(first)}")]


def test_pdf_page_range_parts_join_into_the_whole_document(tmp_path):
    data = sample_pdf()
    path = write(tmp_path, "r.pdf", data)
    whole = assert_same_records(path, "pdf", [len(data) // 3, len(data) // 2, 100])
    assert [k[0] for k in whole].count("doc") == 1
    prefix = f"pdf://{hashlib.sha256(data).hexdigest()[:16]}/"
    assert all(k[1].startswith(prefix) for k in whole if k[0] == "blob")  # same names in every part
    assert [list(page_range(5, part, 3)) for part in range(3)] == [[0], [1, 2], [3, 4]]


def test_pdf_parts_report_file_errors_once(tmp_path):
    document = pymupdf.open()
    document.new_page().insert_text((72, 72), "secret")
    path = write(tmp_path, "e.pdf", document.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o"))
    assert [(e.kind, e.location) for e in read_in_splits(path, "pdf", 100)] == [("encrypted_pdf", None)]
    truncated = sample_pdf()
    path = write(tmp_path, "t.pdf", truncated[: len(truncated) // 2])
    # MuPDF reports a broken shared object on the first page that touches it, so each part may name
    # one more damaged page than a whole-file read; the recovered content is the same.
    assert_same_records(path, "pdf", [200, 1000], records_only=True)


def test_jsonl_splits_keep_row_numbers(tmp_path):
    rows = [obelics_row(f"https://s/{i}") for i in range(7)]
    lines = jsonl(rows[:2]) + b"\n" + b'{"texts": ["cut' + b"\n" + jsonl(rows[2:5]) + b'{"long": "' + b"x" * 5000 + b'"}\n'
    lines += jsonl(rows[5:]).rstrip(b"\n")  # no final newline
    path = write(tmp_path, "o.jsonl", lines)
    whole = assert_same_records(path, "obelics_jsonl", [1, 50, 700, 3000], max_record_bytes=4000)
    assert sorted(k[3] for k in whole if k[0] == "doc") == [0, 1, 4, 5, 6, 8, 9]
    assert sorted((k[2], k[3]) for k in whole if k[0] == "error") == [("row=3", "malformed_json"), ("row=7", "too_large")]


def test_count_line_starts_matches_python_lines():
    for data in (b"a\nb\n", b"a\nb", b"\n\n\nx", b"", b"single", b"a\n\nb\n\n"):
        stream = io.BytesIO(data)
        expected = len(data.splitlines()) if not data.endswith(b"\n") else len(data[:-1].split(b"\n"))
        expected = 0 if not data else expected
        for step in range(1, len(data) + 2):
            bounds = list(range(0, len(data), step)) + [len(data)]
            total = sum(count_line_starts(stream, a, b) for a, b in zip(bounds, bounds[1:]))
            assert total == expected, (data, step)


def test_gzip_or_array_named_jsonl_is_read_by_the_first_split_only(tmp_path):
    gz = gzip.compress(jsonl([obelics_row() for _ in range(20)]), mtime=0)
    path = write(tmp_path, "z.jsonl", gz)
    assert len([o for o in read_in_splits(path, "obelics_jsonl", 200) if isinstance(o, Document)]) == 20
    array = json.dumps([obelics_row() for _ in range(10)]).encode()
    path = write(tmp_path, "a.jsonl", array)
    assert len([o for o in read_in_splits(path, "obelics_jsonl", 300) if isinstance(o, Document)]) == 10


def test_parquet_row_group_splits(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [obelics_row(f"https://s/{i}") for i in range(9)]
    for row in rows:
        row["image_bytes"] = [base64.b64decode(b) if b else None for b in row["image_bytes"]]
    path = tmp_path / "o.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    whole = assert_same_records(str(path), "obelics_parquet", [1, 500, 2000, 6000])
    assert sorted(k[3] for k in whole if k[0] == "doc") == list(range(9))
    corrupt_path = write(tmp_path, "bad.parquet", b"PAR1 definitely not parquet PAR1" * 50)
    assert [(o.kind, o.location) for o in read_in_splits(corrupt_path, "obelics_parquet", 400)] == [
        ("corrupt_parquet", None)]


def test_html_split_and_limits(tmp_path):
    path = write(tmp_path, "my page.html", page_html("Local", ARTICLE))
    docs = [o for o in read_whole("file:" + path.replace(" ", "%20"), "html",
                                  html_base_url="http://h.example/") if isinstance(o, Document)]
    assert docs[0].url == "http://h.example/my%20page.html"
    errors = read_whole(path, "html", max_record_bytes=100)
    assert [(e.kind, e.location) for e in errors] == [("too_large", None)]


def test_missing_file_is_one_error_from_the_first_split(tmp_path):
    gone = str(tmp_path / "gone.warc.gz")
    outputs = [list(parse_split(s)) for s in plan_splits(gone, "warc", 1000, 300)]
    assert [[(e.kind, e.location) for e in o] for o in outputs] == [[("unreadable_file", None)], [], [], []]
    pdf = [list(parse_split(s)) for s in plan_splits(str(tmp_path / "gone.pdf"), "pdf", 1000, 600)]
    assert [[e.kind for e in o] for o in pdf] == [["unreadable_file"], []]


def test_fileio_opens_local_paths_and_file_uris(tmp_path):
    path = write(tmp_path, "a b.bin", b"0123456789")
    for uri in (path, "file:" + path.replace(" ", "%20"), "file://" + path.replace(" ", "%20")):
        with fileio.open_input(uri) as stream:
            stream.seek(3)
            assert stream.read(4) == b"3456"
        assert fileio.file_size(uri) == 10
        with fileio.local_file(uri) as local:
            assert local == path
    assert fileio.is_local("dbfs:/mnt/x") and not fileio.is_local("s3a://bucket/key")


@pytest.mark.parametrize("uri, scheme, path", [
    ("s3a://bucket/dir/a%20b.warc.gz", "s3", "bucket/dir/a b.warc.gz"),
    ("gs://bucket/k.pdf", "gs", "bucket/k.pdf"),
    ("abfss://container@account.dfs.core.windows.net/dir/x.warc", "abfss", "container/dir/x.warc"),
    ("hdfs://namenode:8020/data/x.jsonl", "hdfs", "/data/x.jsonl"),
])
def test_fileio_maps_hadoop_uris_to_pyarrow_paths(uri, scheme, path):
    from urllib.parse import urlsplit  # no filesystem is created: that would contact the store

    parts = urlsplit(uri)
    assert fileio._path_in(fileio._SCHEME_ALIASES.get(parts.scheme, parts.scheme), parts) == path
    assert fileio._SCHEME_ALIASES.get(parts.scheme, parts.scheme) == scheme
