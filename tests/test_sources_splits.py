"""Splits (no Spark): every record is read by exactly one split, with the same ids as a whole-file read."""
from __future__ import annotations

import gzip
import hashlib
import io
import json

import pymupdf
import pytest

from realsyn_spark.sources import Document
from realsyn_spark.sources.obelics import count_line_starts
from realsyn_spark.sources.pdf import page_range
from realsyn_spark.sources.splits import Split, pack_splits, parse_split, plan_splits
from tests.source_fixtures import (ARTICLE, arc_file_header, arc_record, assert_same_records, corrupt, doc_page,
                                   image_bytes, jsonl, member, obelics_row, page_html, read_in_splits, read_whole,
                                   sample_pdf, sample_warc, split, warc_record, write, write_obelics_parquet)


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
    path = tmp_path / "o.parquet"
    write_obelics_parquet(path, 9)
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
