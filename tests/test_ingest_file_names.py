"""Any file name ingests (issue 15), unsupported suffixes are quarantined as `unsupported_file` and
entries that cannot be read as `unreadable_file` (issue 10 item 4): never a stage failure, never silent."""
from __future__ import annotations

import os

from realsyn_spark.pipeline import run_stage
from realsyn_spark.sources.fileio import open_input
from realsyn_spark.sources.inputs import local_uri, scan_inputs
from realsyn_spark.tables import DOCUMENTS, INGEST_ERRORS, INGESTED_SOURCES, Lake
from tests.test_ingest import config, jsonl, obelics_row

HOSTILE = ["file with spaces", "per%20cent", "hash#tag", "question?mark", "co:lon", "semi;colon", "com,ma",
           "back\\slash", "new\nline", "emoji \U0001F600", " leading space", "%41percent-hex", "plus+eq=amp&"]


def test_every_hostile_name_round_trips_through_its_uri(tmp_path):
    for name in HOSTILE + [os.fsdecode(b"latin1-\xe9")]:   # the last is not valid UTF-8
        path = tmp_path / (name + ".jsonl")
        path.write_bytes(name.encode("utf-8", "surrogateescape"))
        with open_input(local_uri(str(path))) as stream:
            assert stream.read() == name.encode("utf-8", "surrogateescape")
    assert local_uri("/data/x.warc.gz") == "file:/data/x.warc.gz"   # ordinary names: Hadoop's form


def test_hostile_names_ingest_next_to_good_files_and_odd_entries_are_quarantined(spark, tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    names = HOSTILE + ["good"]
    for i, name in enumerate(names):
        (corpus / f"{name}.jsonl").write_bytes(jsonl([obelics_row(f"https://n.example/{i}")]))
    (corpus / "crawl.warc.gz.bad").write_bytes(b"whatever")
    (corpus / "notes.txt").write_bytes(b"")
    (corpus / "page_files").mkdir()                               # a saved page's own images and styles
    (corpus / "page_files" / "Photo.JPG").write_bytes(b"\xff\xd8")
    (corpus / "page_files" / "site.css").write_bytes(b"body{}")
    (corpus / "_SUCCESS").write_bytes(b"")                       # hidden, as Spark's file sources hide it
    os.symlink(corpus / "gone.jsonl", corpus / "dangling.jsonl")  # cannot be stat'ed
    lake_root = tmp_path / "lake"
    cfg = config(lake_root, corpus)

    stage = run_stage(spark, cfg, "ingest", "r1")

    lake = Lake(spark, cfg.lake)
    sources = {r.source_uri for r in lake.read(INGESTED_SOURCES).collect()}
    assert sources == {local_uri(str(corpus / f"{n}.jsonl")) for n in names}
    assert lake.read(DOCUMENTS).count() == len(names)
    errors = {(os.path.basename(r.source_uri), r.kind) for r in lake.read(INGEST_ERRORS).collect()}
    assert errors == {("crawl.warc.gz.bad", "unsupported_file"), ("notes.txt", "unsupported_file"),
                      ("dangling.jsonl", "unreadable_file")}
    assert stage.counters["files_unsupported_file"] == 2 and stage.counters["files_unreadable_file"] == 1
    assert stage.counters["files_page_resources"] == 2              # counted, not quarantined

    again = run_stage(spark, cfg, "ingest", "r2")   # rerun: nothing twice, the quarantine rows are not repeated
    assert again.rows_in == 0 and lake.read(INGEST_ERRORS).count() == 3 and lake.read(DOCUMENTS).count() == len(names)


def test_zero_length_files_are_listed(tmp_path):
    (tmp_path / "empty.warc.gz").write_bytes(b"")
    scan = scan_inputs([str(tmp_path)])
    assert [(os.path.basename(f.uri), f.size, f.kind) for f in scan.files] == [("empty.warc.gz", 0, "warc")]


def test_a_folder_of_good_and_hostile_files_keeps_every_good_record(spark, tmp_path):
    """Issue 15's 'done when': good files beside a hostile name and one file of each WARC bomb shape; the
    stage finishes, every good record is there, and each hostile file gives exactly one quarantine row."""
    import gzip

    from tests.source_fixtures import warc_record
    from tests.test_sources_recovery import BOMB_BYTES, good_members, pages, zeros_gzip

    corpus = tmp_path / "in"
    corpus.mkdir()
    for i, name in enumerate(["good", "file with spaces"]):
        (corpus / f"{name}.jsonl").write_bytes(jsonl([obelics_row(f"https://n.example/{i}")]))
    small = pages(1)[0].replace(b"p0.html", b"bomb.html")
    encoded = warc_record("http://s.example/bomb.html", zeros_gzip(b"<html><body><p>", BOMB_BYTES, b"</p></body></html>"),
                          "text/html", extra=[("Content-Encoding", "gzip")])
    # Each file: good records before and after the bomb. The member bomb's own small record is whole (the
    # zeros come after it in its gzip member), so it is kept too.
    bombs = {
        "member-bomb.warc.gz": good_members(1) + zeros_gzip(small, BOMB_BYTES) + good_members(1, first=1),
        "encoding-bomb.warc.gz": good_members(1) + gzip.compress(encoded, mtime=0) + good_members(1, first=1),
        "trailing-bomb.warc.gz": zeros_gzip(b"".join(pages(2)), BOMB_BYTES),
    }
    for name, data in bombs.items():
        (corpus / name).write_bytes(data)
    cfg = config(tmp_path / "lake", corpus, "ingest.max_document_bytes=8000000")

    run_stage(spark, cfg, "ingest", "r1")

    lake = Lake(spark, cfg.lake)
    urls = sorted(r.url for r in lake.read(DOCUMENTS).select("url").collect())
    assert urls == sorted(["https://n.example/0", "https://n.example/1"]
                          + ["http://s.example/p0.html", "http://s.example/p1.html"] * len(bombs)
                          + ["http://s.example/bomb.html"])
    errors = sorted((os.path.basename(r.source_uri), r.kind) for r in lake.read(INGEST_ERRORS).collect())
    assert errors == sorted((name, "decompression_bomb") for name in bombs)
    assert lake.read(INGESTED_SOURCES).count() == 2 + len(bombs)
