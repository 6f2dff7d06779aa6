"""WARC and ARC parsing (no Spark): pages become documents, image records blobs, and damage is reported
at its record offset while later records are kept."""
from __future__ import annotations

import gzip
import io

from PIL import Image

from realsyn_spark.sources import SourceError
from realsyn_spark.sources.warc import parse_warc
from tests.source_fixtures import (Unseekable, arc_file_header, arc_record, corrupt, doc_page, image_bytes, member,
                                   page_html, sample_warc, split, warc_record)


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
