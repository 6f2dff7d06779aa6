"""PDF parsing (no Spark): reading order, image conversion, encryption and damaged files."""
from __future__ import annotations

import hashlib
import io

import pymupdf
import pytest
from PIL import Image

from realsyn_spark.sources.pdf import parse_pdf
from tests.source_fixtures import sample_pdf, split


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
