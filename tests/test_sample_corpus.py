"""The sample corpus: reproducible, summarised truthfully, and covering every case the pipeline handles."""
from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from realsyn_spark.sample_corpus import BLOCKED_IMAGE_URLS, generate_sample_corpus
from realsyn_spark.sources import Blob, Document, SourceError
from realsyn_spark.sources.detect import detect_kind
from realsyn_spark.sources.dispatch import parse_source
from realsyn_spark.text import count_words, has_emoji, has_url, split_sentences

# Which summary bucket each file's documents are counted in.
SOURCE_OF_FILE = {
    "warc/sample.warc.gz": "warc", "warc/broken.warc.gz": "warc_broken", "pdf/sample.pdf": "pdf",
    "obelics/sample.jsonl": "obelics", "html/page1.html": "html", "html/page2.html": "html", "html/page3.html": "html",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    summary = generate_sample_corpus(str(out), seed=0, scale=1)
    return out, summary


@pytest.fixture(scope="module")
def parsed(corpus):
    """Every source file parsed: {relative path: (documents, blobs, errors)}."""
    root, _ = corpus
    results = {}
    for path in sorted(root.rglob("*")):
        kind = detect_kind(str(path))
        if kind is None:
            continue
        with open(path, "rb") as handle:
            outputs = list(parse_source(str(path), handle, kind))
        results[path.relative_to(root).as_posix()] = (
            [o for o in outputs if isinstance(o, Document)],
            [o for o in outputs if isinstance(o, Blob)],
            [o for o in outputs if isinstance(o, SourceError)],
        )
    return results


def file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(corpus, tmp_path):
    root, summary = corpus
    again = generate_sample_corpus(str(tmp_path), seed=0, scale=1)
    assert again == summary
    assert file_bytes(tmp_path) == file_bytes(root)


def test_other_seed_gives_other_content(corpus, tmp_path):
    root, _ = corpus
    generate_sample_corpus(str(tmp_path), seed=1, scale=1)
    assert file_bytes(tmp_path)["obelics/sample.jsonl"] != file_bytes(root)["obelics/sample.jsonl"]


def test_summary_lists_the_files_written(corpus):
    root, summary = corpus
    assert summary["files"] == sorted(file_bytes(root))
    kinds = {detect_kind(f) for f in summary["files"]}
    assert {"warc", "pdf", "obelics_jsonl", "html"} <= kinds


def test_sizes_at_scale_one(corpus):
    _, summary = corpus
    assert 50 <= summary["documents"]["total"] <= 70
    assert 200 <= summary["image_occurrences"]["total"] <= 300
    assert 1000 <= summary["sentences"]["total"] <= 2000
    assert summary["sentences"]["distinct"] >= 300


def test_document_and_image_counts_match_what_parsers_read(corpus, parsed):
    _, summary = corpus
    documents, images = Counter(), Counter()
    for path, source in SOURCE_OF_FILE.items():
        docs, _, _ = parsed[path]
        documents[source] += len(docs)
        images[source] += sum(n.kind == "image" for d in docs for n in d.nodes)
    assert {k: v for k, v in summary["documents"].items() if k != "total"} == dict(documents)
    assert {k: v for k, v in summary["image_occurrences"].items() if k != "total"} == dict(images)


def test_sentence_count_matches_extracted_text(corpus, parsed):
    """Paragraph sentences plus one heading per web page: boilerplate (nav, footer) is not extracted."""
    _, summary = corpus
    extracted = [s for path in SOURCE_OF_FILE for d in parsed[path][0] for n in d.nodes if n.kind == "text"
                 for s in split_sentences(n.text)]
    assert len(extracted) == summary["sentences"]["total"] + summary["headings"]


def test_every_sentence_rule_has_something_to_drop(corpus, parsed):
    _, summary = corpus
    sentences = [s for path in SOURCE_OF_FILE for d in parsed[path][0] for n in d.nodes if n.kind == "text"
                 for s in split_sentences(n.text)]
    assert any(has_emoji(s) for s in sentences)
    assert any(has_url(s) for s in sentences)
    assert any(count_words(s) < 3 for s in sentences)
    assert any(count_words(s) > 81 for s in sentences)
    repeated = [s for s, n in Counter(sentences).items() if n > 1]
    assert repeated
    for case in ("emoji", "url", "short", "long", "boilerplate", "windows_1252"):
        assert summary["sentences"][case] > 0, case


def test_windows_1252_page_reads_right(parsed):
    docs, _, _ = parsed["warc/sample.warc.gz"]
    texts = " ".join(n.text for d in docs for n in d.nodes if n.kind == "text")
    assert "crème brûlée" in texts and "Zürich" in texts and "château \u2014 built" in texts


def test_every_image_kind_and_filter_case_appears(corpus, parsed):
    _, summary = corpus
    formats = Counter()
    sizes = []
    for path, (_, blobs, _) in parsed.items():
        for blob in blobs:
            try:
                with Image.open(io.BytesIO(blob.data)) as image:
                    formats[image.format] += 1
                    sizes.append(image.size)
            except Exception:
                formats["undecodable"] += 1
    assert formats["JPEG"] and formats["PNG"] and formats["undecodable"]
    assert any(min(s) < 100 for s in sizes)
    assert any(w / h > 3 for w, h in sizes) and any(w / h < 1 / 3 for w, h in sizes)
    by_hash = Counter(blob.data for _, blobs, _ in parsed.values() for blob in blobs)
    assert any(n > 1 for n in by_hash.values())  # exact duplicate bytes under different URLs
    for case in ("small", "wide", "tall", "duplicate", "near_duplicate", "undecodable", "blocked_host"):
        assert summary["image_cases"][case] > 0, case
    assert summary["image_formats"]["jpeg"] and summary["image_formats"]["png"]


def test_url_only_images_point_at_hosts_the_fetcher_must_refuse(parsed):
    docs, blobs, _ = parsed["obelics/sample.jsonl"]
    with_bytes = {b.image_url for b in blobs}
    url_only = {n.image_url for d in docs for n in d.nodes if n.kind == "image"} - with_bytes
    assert url_only == set(BLOCKED_IMAGE_URLS)
    assert any(url.startswith("inline://") for url in with_bytes)


def test_damaged_files_give_errors_and_keep_good_records(corpus, parsed):
    _, summary = corpus
    docs, _, errors = parsed["warc/broken.warc.gz"]
    assert len(docs) == summary["damaged"]["warc/broken.warc.gz"]["good_pages"]
    assert len(errors) == summary["damaged"]["warc/broken.warc.gz"]["bad_members"]
    assert parsed["pdf/truncated.pdf"][2]
    jsonl_errors = parsed["obelics/sample.jsonl"][2]
    assert [e.location for e in jsonl_errors] == [f"row={i}" for i in summary["damaged"]["obelics/sample.jsonl"]["malformed_lines"]]
    assert all(not errors for path, (_, _, errors) in parsed.items()
               if path in ("warc/sample.warc.gz", "pdf/sample.pdf") or path.startswith("html/"))


def test_html_images_are_written_next_to_the_pages(corpus, parsed):
    root, _ = corpus
    for path in ("html/page1.html", "html/page2.html", "html/page3.html"):
        for node in (n for d in parsed[path][0] for n in d.nodes if n.kind == "image"):
            assert node.image_url.startswith("http://localhost/images/")
            assert os.path.exists(root / "html" / "images" / node.image_url.rsplit("/", 1)[-1])


def test_scale_multiplies_documents(tmp_path):
    summary = generate_sample_corpus(str(tmp_path), seed=0, scale=2)
    assert summary["documents"]["warc"] == 48 and summary["documents"]["obelics"] == 56
    assert summary["documents"]["pdf"] == 2 and summary["documents"]["html"] == 6
    assert summary["documents"]["warc_broken"] == 4
