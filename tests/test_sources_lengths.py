"""Content-Length off by a few bytes (issue 10 item 2): records whose payload is intact are kept with a
`record_length_mismatch` warning; truncated payloads and lengths that swallow the next record are not."""
from __future__ import annotations

import gzip
import io
import re

import pytest

from realsyn_spark.sources.warc import parse_warc
from tests.source_fixtures import arc_file_header, arc_record, page_html, split, warc_record


def page(i: int) -> bytes:
    return page_html(f"P{i}", f"<p>Page number {i} shows a busy harbour at sunset today.</p>")


def warc(i: int, delta: int = 0) -> bytes:
    """A WARC record whose declared Content-Length is off by `delta` (negative: block longer than declared)."""
    record = warc_record(f"http://s.example/p{i}.html", page(i), "text/html")
    return re.sub(rb"Content-Length: (\d+)", lambda m: b"Content-Length: %d" % (int(m.group(1)) + delta), record, 1)


def arc(i: int, delta: int = 0) -> bytes:
    record = arc_record(f"http://s.example/p{i}.html", page(i))
    line, rest = record.split(b"\n", 1)
    head, length = line.rsplit(b" ", 1)
    return head + b" %d\n" % (int(length) + delta) + rest


def archive(kind: str, records: list[bytes], gz: bool) -> bytes:
    if kind == "arc":
        records = [arc_file_header(), *records]
    return b"".join(gzip.compress(r, mtime=0) for r in records) if gz else b"".join(records)


def parse(kind: str, data: bytes, gz: bool):
    name = f"x.{kind}{'.gz' if gz else ''}"
    docs, _, errors = split(parse_warc(name, io.BytesIO(data), kind))
    return [d.url for d in docs], [e.kind for e in errors]


URLS = [f"http://s.example/p{i}.html" for i in range(3)]
CASES = [(kind, gz) for kind in ("warc", "arc") for gz in (False, True)]


@pytest.mark.parametrize("kind,gz", CASES)
def test_block_longer_than_declared_is_kept_with_warning(kind, gz):
    make = warc if kind == "warc" else arc
    data = archive(kind, [make(0), make(1, -2), make(2)], gz)  # the middle block is 2 bytes longer
    urls, kinds = parse(kind, data, gz)
    assert urls == URLS and kinds == ["record_length_mismatch"]


@pytest.mark.parametrize("kind,gz", CASES)
def test_record_ending_before_declared_length_at_end_of_file_is_kept(kind, gz):
    make = warc if kind == "warc" else arc
    data = archive(kind, [make(0), make(1), make(2, 12)], gz)  # the last record ends 12 bytes short
    urls, kinds = parse(kind, data, gz)
    assert urls == URLS and kinds == ["record_length_mismatch"]


@pytest.mark.parametrize("kind", ["warc", "arc"])
def test_gzip_member_ending_before_declared_length_mid_file_is_kept(kind):
    make = warc if kind == "warc" else arc
    data = archive(kind, [make(0), make(1, 12), make(2)], True)  # not a record going on in the next member
    urls, kinds = parse(kind, data, True)
    assert urls == URLS and kinds == ["record_length_mismatch"]


@pytest.mark.parametrize("kind,gz", CASES)
def test_payload_cut_mid_way_is_still_truncated(kind, gz):
    make = warc if kind == "warc" else arc
    last = make(2)
    cut = last.rindex(b"</body>")  # only a few bytes missing, but the page does not close
    records = [make(0), make(1), last[:cut]]
    data = archive(kind, records, gz)
    urls, kinds = parse(kind, data, gz)
    assert urls == URLS[:2] and kinds in (["truncated_record"], ["truncated_gzip"])


@pytest.mark.parametrize("kind,gz", CASES)
def test_length_that_swallows_the_next_record_is_not_merged(kind, gz):
    make = warc if kind == "warc" else arc
    records = [make(0), make(1, 40), make(2)]  # 40 bytes into the next record's header
    if gz:  # one gzip stream for the file: no member boundary marks where the record really ends
        data = gzip.compress(archive(kind, records, False), mtime=0)
    else:
        data = archive(kind, records, False)
    urls, kinds = parse(kind, data, gz)
    assert kinds == ["bad_record_length"]  # reported as damage, not kept as a warning
    assert urls[0] == URLS[0] and URLS[1] not in urls
    if not gz:
        assert urls == [URLS[0], URLS[2]]  # the swallowed record is found again inside the bad block
        cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]  # and splits agree with one pass
        in_splits = [d.url for a, b in zip(cuts, cuts[1:])
                     for d in split(parse_warc("x", io.BytesIO(data), kind, a, b))[0]]
        assert in_splits == urls


def with_length_delta(record: bytes, delta: int) -> bytes:
    return re.sub(rb"Content-Length: (\d+)", lambda m: b"Content-Length: %d" % (int(m.group(1)) + delta), record, 1)


@pytest.mark.parametrize("gz", [False, True])
def test_gzip_encoded_body_longer_than_declared_is_kept_when_it_inflates_fully(gz):
    body = gzip.compress(page(1), mtime=0)
    assert b"\n" not in body[-2:]
    bad = with_length_delta(warc_record(URLS[1], body, "text/html", extra=[("Content-Encoding", "gzip")]), -2)
    urls, kinds = parse("warc", archive("warc", [warc(0), bad, warc(2)], gz), gz)
    assert urls == URLS and kinds == ["record_length_mismatch"]


@pytest.mark.parametrize("gz", [False, True])
def test_stray_bytes_without_a_complete_payload_stay_bad_record_length(gz):
    unclosed = b"<html><body><article><p>A page that never closes its body or html element.</p>"
    bad = with_length_delta(warc_record(URLS[1], unclosed, "text/html"), -2)
    urls, kinds = parse("warc", archive("warc", [warc(0), bad, warc(2)], gz), gz)
    assert kinds == ["bad_record_length"] and URLS[1] not in urls
