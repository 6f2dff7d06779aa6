"""Cross-format source tests (no Spark): kind detection by file name and dispatch to the parsers.

The per-format parsers are tested in tests/test_sources_<format>.py, their inputs built in
tests/source_fixtures.py.
"""
from __future__ import annotations

import io

import pytest

from realsyn_spark.sources import Blob
from realsyn_spark.sources import dispatch as dispatch_module
from realsyn_spark.sources.detect import detect_kind
from realsyn_spark.sources.dispatch import parse_source
from tests.source_fixtures import ARTICLE, jsonl, obelics_row, page_html, sample_pdf, sample_warc, split


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
