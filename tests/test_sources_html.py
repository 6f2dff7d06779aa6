"""HTML decoding and extraction (no Spark): charsets, images kept or dropped, broken pages reported."""
from __future__ import annotations

import io

import pytest

from realsyn_spark.sources.html import parse_html
from realsyn_spark.sources.htmlextract import decode_html, extract_html_nodes
from realsyn_spark.sources.warc import parse_warc
from tests.source_fixtures import ARTICLE, doc_page, member, page_html, split, warc_record


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
