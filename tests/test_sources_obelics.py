"""OBELICS JSONL and Parquet parsing (no Spark): interleaved nodes, inline bytes, malformed rows reported."""
from __future__ import annotations

import gzip
import hashlib
import io
import json

from realsyn_spark.sources.obelics import parse_obelics_jsonl, parse_obelics_parquet
from tests.source_fixtures import JPEG, PNG, jsonl, obelics_row, split, write_obelics_parquet


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
    path = tmp_path / "o.parquet"
    write_obelics_parquet(path, 5)
    with open(path, "rb") as handle:
        docs, blobs, errors = split(parse_obelics_parquet(str(path), handle))
    assert errors == []
    assert [(d.record_offset, d.url) for d in docs] == [(i, f"https://s/{i}") for i in range(5)]
    assert blobs[0].data == PNG and blobs[1].data == JPEG
    outputs = list(parse_obelics_parquet("bad.parquet", io.BytesIO(b"PAR1 definitely not parquet PAR1")))
    assert [(o.kind, o.location) for o in outputs] == [("corrupt_parquet", None)]
