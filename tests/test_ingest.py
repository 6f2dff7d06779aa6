"""The ingest stage on Spark: every source kind lands, every bad-input kind is quarantined without a job
failure, split reads equal whole-file reads, reruns add nothing, and only new files are read.

Inputs are written here (no network); the session's local[2] Spark with Delta is shared (conftest).
"""
from __future__ import annotations

import base64
import gzip
import io

import pymupdf
import pytest
from pyspark.sql import functions as F

from realsyn_spark.config import load_config
from realsyn_spark.pipeline import SPECS, run_stage
from realsyn_spark.stages import extract, ingest
from realsyn_spark.tables import DOCUMENTS, IMAGE_BLOBS, IMAGES, INGEST_ERRORS, INGESTED_SOURCES, SENTENCES, Lake
from tests.source_fixtures import (ARTICLE, arc_file_header, arc_record, corrupt, doc_page, image_bytes, jsonl,
                                   member, obelics_row, page_html, warc_record)

SPLIT_BYTES = 8192  # the good WARC, JSONL, Parquet and PDF files are each read in several splits


def write(root, relative: str, data: bytes) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def pdf_with_pages(pages: int) -> bytes:
    document = pymupdf.open()
    for n in range(pages):
        page = document.new_page()
        page.insert_textbox(pymupdf.Rect(72, 60, 520, 120), f"Page {n + 1}: a farmer is planting tulips in a long row.")
        page.insert_image(pymupdf.Rect(72, 140, 232, 260),
                          stream=image_bytes((160, 120), fmt="JPEG", colour=(n * 30 % 255, 90, 40)))
    document.set_metadata({"title": "Garden notes"})
    return document.tobytes()


def build_corpus(root) -> dict[str, set[str]]:
    """Good files of every source kind and one file per bad-input kind; returns the error kinds
    each bad file must produce, by file name."""
    # -- good -------------------------------------------------------------------------------------
    pages = [member(warc_record(f"http://site.example/p{n}.html", page_html(f"Page {n}", ARTICLE), "text/html"))
             for n in range(30)]
    images = [member(warc_record("http://site.example/blog/images/kite.jpg", image_bytes((300, 200), fmt="JPEG"), "image/jpeg")),
              member(warc_record("http://site.example/shared/sea.png", image_bytes((320, 240)), "image/png")),
              member(warc_record("http://site.example/bad.jpg", b"\xff\xd8\xff" + bytes(range(256)) * 8, "image/jpeg"))]
    write(root, "warc/good.warc.gz", b"".join(pages[:3] + images + pages[3:]))
    write(root, "html/good.html", page_html("Local page", ARTICLE, head='<meta charset="utf-8">'))
    write(root, "pdf/good.pdf", pdf_with_pages(6))
    rows = [obelics_row(f"https://s.example/{i}") for i in range(12)]
    write(root, "obelics/good.jsonl", jsonl(rows[:3]) + b'{"texts": ["cut off' + b"\n" + jsonl(rows[3:]))
    import pyarrow as pa
    import pyarrow.parquet as pq
    table_rows = [obelics_row(f"https://p.example/{i}") for i in range(9)]
    for row in table_rows:
        row["image_bytes"] = [base64.b64decode(b) if b else None for b in row["image_bytes"]]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(table_rows), buffer, row_group_size=2)
    write(root, "obelics/good.parquet", buffer.getvalue())

    # -- bad --------------------------------------------------------------------------------------
    bad_member = corrupt(member(warc_record("http://site.example/lost.html", b"<p>lost</p>" * 200, "text/html")))
    write(root, "warc/corrupt.warc.gz", doc_page(1) + bad_member + doc_page(2))
    plain = [warc_record(f"http://site.example/t{n}.html", page_html("T", f"<p>Plain page {n} text.</p>"), "text/html")
             for n in range(3)]
    write(root, "warc/truncated.warc", plain[0] + plain[1][:-50])
    write(root, "warc/malformed.warc", plain[0] + b"WARC/1.0\r\nthis is: not\r\na header block\r\n\r\n" + plain[2])
    write(root, "warc/cut.warc.gz", doc_page(3) + doc_page(4)[:60])
    broken_arc = b"http://old.example/a.html 10.1.2.3\n<p>no proper header</p>\n"
    write(root, "arc/bad_header.arc", arc_file_header() + broken_arc
          + arc_record("http://old.example/b.html", page_html("B", "<p>A grey cat is sleeping in the sun.</p>")))
    for name in ("empty/e.warc.gz", "empty/e.pdf", "empty/e.jsonl", "empty/e.html", "empty/e.arc"):
        write(root, name, b"")
    write(root, "html/binary.html", bytes(range(256)) * 8)
    write(root, "html/script_only.html", b"<html><body><div id=app></div><script>run()</script></body></html>")
    write(root, "html/lossy.html", "<p>Le café sert une crème brûlée à un touriste naïf.</p>".encode("utf-8")
          + b"<p>Then \x81\x8d bytes that fit no charset at all.</p>")
    locked = pymupdf.open()
    locked.new_page().insert_text((72, 72), "secret")
    write(root, "pdf/encrypted.pdf", locked.tobytes(encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="u", owner_pw="o"))
    whole_pdf = pdf_with_pages(3)
    write(root, "pdf/truncated.pdf", whole_pdf[: len(whole_pdf) // 2])
    write(root, "pdf/garbled.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 8)
    write(root, "obelics/corrupt.parquet", b"PAR1 definitely not parquet PAR1" * 40)
    write(root, "obelics/corrupt.jsonl.gz", gzip.compress(jsonl(rows), mtime=0)[:-40])
    return {
        "corrupt.warc.gz": {"corrupt_gzip"}, "truncated.warc": {"truncated_record"},
        "malformed.warc": {"malformed_record"}, "cut.warc.gz": {"truncated_gzip", "truncated_record"},
        "bad_header.arc": {"bad_arc_header"}, "e.warc.gz": {"empty_file"}, "e.pdf": {"empty_file"},
        "e.jsonl": {"empty_file"}, "e.html": {"empty_file"}, "e.arc": {"empty_file"},
        "binary.html": {"binary_content"}, "script_only.html": {"no_content"}, "lossy.html": {"lossy_decoding"},
        "encrypted.pdf": {"encrypted_pdf"}, "truncated.pdf": {"truncated_pdf"}, "garbled.pdf": {"corrupt_pdf"},
        "good.jsonl": {"malformed_json"}, "corrupt.parquet": {"corrupt_parquet"},
        "corrupt.jsonl.gz": {"corrupt_gzip"},
    }


def config(lake_root, corpus, *overrides: str):
    return load_config(overrides=[f"lake.root={lake_root}", f"ingest.input_paths=[{corpus}]",  # comma-separated
                                  "spark.shuffle_partitions=4", "fetch.enabled=false", *overrides])


def table_counts(lake: Lake) -> dict[str, int]:
    return {spec.name: lake.read(spec).count() for spec in (DOCUMENTS, IMAGE_BLOBS, INGEST_ERRORS, INGESTED_SOURCES)}


def file_name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest_corpus")
    expected = build_corpus(root)
    return root, expected


@pytest.fixture(scope="module")
def split_lake(spark, corpus, tmp_path_factory):
    """Ingest (split reads) + fetch (decode check only) + extraction of new documents; ingest again
    (nothing new); then a file dropped into a second input directory, and ingest once more."""
    root, _ = corpus
    later = tmp_path_factory.mktemp("ingest_later")
    write(later, "placeholder.txt", b"not an input kind: listed, never read")
    cfg = config(tmp_path_factory.mktemp("lake_split"), f"{root},{later}", f"ingest.split_bytes={SPLIT_BYTES}")
    lake = Lake(spark, cfg.lake)
    first = run_stage(spark, cfg, "ingest", "run-1")
    run_stage(spark, cfg, "fetch", "run-1")
    for table in SPECS["extract"].writes:   # what the runner does before extract runs
        lake.ensure(table)
    extract.extract_new(lake, "run-1", False)
    counts = table_counts(lake)
    second = run_stage(spark, cfg, "ingest", "run-2")
    counts_second = table_counts(lake)
    write(later, "new.jsonl", jsonl([obelics_row("https://n.example/1"), obelics_row("https://n.example/2")]))
    third = run_stage(spark, cfg, "ingest", "run-3")
    return cfg, lake, first, (second, counts_second, third), counts


@pytest.fixture(scope="module")
def whole_lake(spark, corpus, tmp_path_factory):
    root, _ = corpus
    cfg = config(tmp_path_factory.mktemp("lake_whole"), root)
    run_stage(spark, cfg, "ingest", "run-1")
    return Lake(spark, cfg.lake)


def test_files_were_split_and_every_file_recorded(split_lake, corpus):
    _, lake, first, _, counts = split_lake
    root, _ = corpus
    n_files = sum(1 for p in root.rglob("*") if p.is_file())
    assert first.rows_in == n_files
    assert first.counters["splits"] > n_files  # several files were read in more than one split
    assert first.counters["files_ingested"] == n_files and first.counters["files_incomplete"] == 0
    assert counts["ingested_sources"] == n_files


def test_every_source_kind_lands_in_documents_images_and_sentences(split_lake):
    _, lake, *_ = split_lake
    docs = lake.read(DOCUMENTS)
    by_file = {file_name(r.source_uri): r["count"] for r in docs.groupBy("source_uri").count().collect()}
    assert by_file["good.warc.gz"] == 30 and by_file["good.html"] == 1 and by_file["good.pdf"] == 1
    assert by_file["good.jsonl"] == 12 and by_file["good.parquet"] == 9
    kinds = {r.source_kind for r in docs.select("source_kind").distinct().collect()}
    assert {"warc", "arc", "html", "pdf", "obelics"} <= kinds
    with_content = (docs.select("doc_id", "source_kind")
                    .join(lake.read(IMAGES).select("doc_id").distinct(), "doc_id")
                    .join(lake.read(SENTENCES).select("doc_id").distinct(), "doc_id"))
    assert {r.source_kind for r in with_content.select("source_kind").distinct().collect()} >= {
        "warc", "html", "pdf", "obelics"}


def test_pdf_read_in_parts_is_one_document_in_page_order(split_lake):
    _, lake, *_ = split_lake
    pdf = lake.read(DOCUMENTS).where(F.col("source_uri").endswith("good.pdf")).first()
    assert [n.position for n in pdf.nodes] == list(range(len(pdf.nodes)))
    assert [n.page for n in pdf.nodes] == sorted(n.page for n in pdf.nodes) and pdf.nodes[-1].page == 6
    assert [n.kind for n in pdf.nodes] == ["text", "image"] * 6 and pdf.title == "Garden notes"


def test_each_bad_input_kind_is_quarantined_and_good_records_survive(split_lake, corpus):
    _, lake, *_ = split_lake
    _, expected = corpus
    errors = lake.read(INGEST_ERRORS).where("stage = 'ingest'").collect()
    found: dict[str, set[str]] = {}
    for error in errors:
        found.setdefault(file_name(error.source_uri), set()).add(error.kind)
        assert error.reason
    for name, kinds in expected.items():
        assert found.get(name, set()) & kinds, (name, found.get(name))
    located = {file_name(e.source_uri): e.location for e in errors if e.kind in ("corrupt_gzip", "bad_arc_header")}
    assert located["corrupt.warc.gz"].startswith("offset=") and located["bad_header.arc"].startswith("offset=")
    docs = {file_name(r.source_uri): r["count"] for r in lake.read(DOCUMENTS).groupBy("source_uri").count().collect()}
    for name, survivors in (("corrupt.warc.gz", 2), ("truncated.warc", 1), ("malformed.warc", 2), ("cut.warc.gz", 1),
                            ("bad_header.arc", 1), ("lossy.html", 1), ("good.jsonl", 12)):
        assert docs.get(name) == survivors, (name, docs.get(name))
    assert not any(name in docs for name in ("binary.html", "script_only.html", "encrypted.pdf", "garbled.pdf"))


def test_undecodable_image_is_a_blob_status_and_an_error(split_lake):
    _, lake, *_ = split_lake
    blob = lake.read(IMAGE_BLOBS).where("image_url = 'http://site.example/bad.jpg'").first()
    assert blob.status == "decode_error" and blob.image_bytes is None and blob.error
    fetch_errors = lake.read(INGEST_ERRORS).where("stage = 'fetch'")
    assert fetch_errors.where("source_uri = 'http://site.example/bad.jpg' AND kind = 'decode_error'").count() == 1
    good = lake.read(IMAGE_BLOBS).where("image_url = 'http://site.example/blog/images/kite.jpg'").first()
    assert (good.status, good.width, good.height, good.format) == ("ok", 300, 200, "JPEG")


def test_rerun_adds_nothing_and_only_new_files_are_read_later(split_lake):
    _, lake, _, (second, counts_second, third), counts = split_lake
    assert second.rows_in == 0 and second.counters["files_skipped_already_ingested"] == counts["ingested_sources"]
    assert counts_second == counts
    assert (third.rows_in, third.rows_out) == (1, 2)
    assert third.counters["files_skipped_already_ingested"] == counts["ingested_sources"]
    assert lake.read(DOCUMENTS).count() == counts["documents"] + 2


def test_split_reads_equal_whole_file_reads(split_lake, whole_lake):
    _, split, *_ = split_lake

    def documents(lake):  # the split lake also read a later file from another directory: left out here
        return {r.doc_id: (r.source_uri, r.record_offset, r.url, r.title, [tuple(n) for n in r.nodes], r.metadata)
                for r in lake.read(DOCUMENTS).collect() if "ingest_later" not in r.source_uri}

    assert documents(split) == documents(whole_lake)
    urls = lambda lake: {r.image_url for r in lake.read(IMAGE_BLOBS).select("image_url").collect()}  # noqa: E731
    assert urls(split) == urls(whole_lake)
    kinds = lambda lake: {(file_name(r.source_uri), r.kind) for r in lake.read(INGEST_ERRORS)  # noqa: E731
                          .where("stage = 'ingest'").collect() if "ingest_later" not in r.source_uri}
    assert kinds(split) == kinds(whole_lake)


def test_listing_reads_no_content_so_files_over_2gb_list(spark, tmp_path):
    big = tmp_path / "huge.warc.gz"
    with open(big, "wb") as handle:
        handle.truncate(3 * 1024 ** 3)  # sparse: no disk used; binaryFile content would fail at 2 GB
    rows = ingest.list_input_files(spark, [str(tmp_path)]).collect()
    assert [(file_name(r.path), r.length, r.source_kind) for r in rows] == [("huge.warc.gz", 3 * 1024 ** 3, "warc")]


def test_a_split_streams_its_output_in_bounded_chunks_ending_with_its_marker(tmp_path):
    from realsyn_spark.sources.splits import plan_splits

    write(tmp_path, "w.warc.gz", b"".join(doc_page(n) for n in range(7)))
    path = str(tmp_path / "w.warc.gz")
    split = plan_splits(path, "warc", (tmp_path / "w.warc.gz").stat().st_size, 1 << 20)[0]
    frames = list(ingest.split_records(split, "http://localhost/", 1000, flush_rows=3))
    assert [len(f) for f in frames] == [3, 3, 2]
    assert list(frames[-1]["record_type"])[-1] == "split_done"
    assert sum((f["record_type"] == "document").sum() for f in frames) == 7
