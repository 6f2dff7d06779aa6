"""Issue 10 (PDF and sentences): column-aware reading order, paragraphs cut by page/block breaks joined,
page numbers and running headers dropped. PDFs are generated with PyMuPDF."""
from __future__ import annotations

import io

import pymupdf

from realsyn_spark import text as textrules
from realsyn_spark.sources.pdf import parse_pdf
from realsyn_spark.sources import Document

LEFT = ["Alpha one. The left column starts with this paragraph about rivers.",
        "Alpha two. It goes on with a second paragraph about the same rivers.",
        "Alpha three. The third paragraph ends the left column."]
RIGHT = ["Beta one. The right column opens with a paragraph about mountains.",
         "Beta two. A second paragraph keeps talking about mountains.",
         "Beta three. The last paragraph closes the page."]


def _doc(pdf: bytes) -> Document:
    return next(r for r in parse_pdf("mem.pdf", io.BytesIO(pdf)) if isinstance(r, Document))


def _two_column_pdf() -> bytes:
    document = pymupdf.open()
    page = document.new_page(width=595, height=842)
    page.insert_textbox(pymupdf.Rect(50, 40, 545, 80), "A title that spans both columns of the page", fontsize=14)
    for i, (left, right) in enumerate(zip(LEFT, RIGHT)):
        top = 100 + i * 120
        page.insert_textbox(pymupdf.Rect(50, top, 285, top + 100), left, fontsize=11)
        page.insert_textbox(pymupdf.Rect(310, top, 545, top + 100), right, fontsize=11)
    page.insert_textbox(pymupdf.Rect(50, 480, 545, 540), "A closing note that spans the whole width again, "
                        "written long enough to wrap across both columns of the page below them.", fontsize=11)
    return document.tobytes()


def test_two_column_page_is_read_column_by_column():
    texts = [n.text for n in _doc(_two_column_pdf()).nodes if n.kind == "text"]
    firsts = [t.split(".")[0].split(",")[0] for t in texts]
    assert firsts == ["A title that spans both columns of the page", "Alpha one", "Alpha two", "Alpha three",
                      "Beta one", "Beta two", "Beta three", "A closing note that spans the whole width again"]


def test_single_column_order_is_top_to_bottom_and_bands_split_columns():
    from realsyn_spark.sources.pdf import reading_order

    block = lambda x0, y0, x1, y1, name: {"bbox": (x0, y0, x1, y1), "name": name}  # noqa: E731
    single = [block(50, 300, 545, 350, "c"), block(50, 100, 545, 150, "a"), block(50, 200, 200, 220, "b")]
    assert [b["name"] for b in reading_order(single)] == ["a", "b", "c"]
    # columns above and below a full-width figure are read per band
    bands = [block(50, 100, 280, 300, "L1"), block(310, 100, 545, 300, "R1"), block(50, 320, 545, 500, "fig"),
             block(50, 520, 280, 700, "L2"), block(310, 520, 545, 700, "R2")]
    assert [b["name"] for b in reading_order(bands)] == ["L1", "R1", "fig", "L2", "R2"]


def _cut_pdf() -> bytes:
    """Three pages with a running header and a page number; a sentence runs from page 1 to page 2 and a
    block break inside page 2 cuts another one."""
    document = pymupdf.open()
    bodies = [["The survey covered every harbour on the coast.", "If you read this text, you will get no"],
              ["information about the tides, which were measured later.", "The second survey counted the",
               "boats in each harbour and their owners."],
              ["A final chapter describes the lighthouses."]]
    for number, paragraphs in enumerate(bodies, start=1):
        page = document.new_page(width=595, height=842)
        page.insert_textbox(pymupdf.Rect(50, 30, 545, 50), "Coastal Survey Report 2021", fontsize=9)
        for i, paragraph in enumerate(paragraphs):
            page.insert_textbox(pymupdf.Rect(50, 100 + i * 60, 545, 150 + i * 60), paragraph, fontsize=11)
        page.insert_textbox(pymupdf.Rect(280, 800, 320, 820), str(number), fontsize=9)
    return document.tobytes()


def _sentences(doc: Document) -> list[str]:
    nodes = [(n.position, n.text, n.page) for n in doc.nodes if n.kind == "text"]
    paragraphs, _, _ = textrules.document_paragraphs(nodes)
    return [s for _, p in paragraphs for s in textrules.split_sentences(p)]


def test_sentences_cut_by_page_and_block_breaks_are_joined_and_page_furniture_dropped():
    sentences = _sentences(_doc(_cut_pdf()))
    assert sentences == [
        "The survey covered every harbour on the coast.",
        "If you read this text, you will get no information about the tides, which were measured later.",
        "The second survey counted the boats in each harbour and their owners.",
        "A final chapter describes the lighthouses."]


def test_document_paragraphs_keeps_headings_lists_and_finished_paragraphs_apart():
    nodes = [(0, "Ingredients", None), (1, "flour and water", None), (2, "salt", None),
             (3, "The dough rests for an hour.", None), (4, "then it is baked.", None),
             (5, "Page 4", None), (6, "12", None), (7, "The oven must be hot for the", None),
             (8, "bread to rise.", None)]
    paragraphs, dropped, joined = textrules.document_paragraphs(nodes)
    assert [t for _, t in paragraphs] == ["Ingredients", "flour and water", "salt", "The dough rests for an hour.",
                                          "then it is baked.", "The oven must be hot for the bread to rise."]
    assert [p for p, _ in paragraphs][-1] == 7 and dropped == 2 and joined == 1
    # a line repeated on one page only is content, not a running header
    one_page = [(0, "Summary of results", 1), (1, "Summary of results", 1), (2, "Details follow here.", 2)]
    assert len(textrules.document_paragraphs(one_page)[0]) == 3


def test_html_paragraph_split_by_br_or_an_inline_image_is_one_sentence():
    from realsyn_spark.sources.htmlextract import extract_html_nodes

    html = ('<html><body><div>The ferry to the island leaves the harbour<br>twice a day in summer.</div>'
            '<div><span>The old lighthouse keeper lives</span><img src="/k.jpg"><span>on the hill above it.</span>'
            '</div></body></html>')
    _, nodes = extract_html_nodes(html, "https://example.org/a.html")
    paragraphs, _, _ = textrules.document_paragraphs([(n.position, n.text, n.page) for n in nodes if n.kind == "text"])
    sentences = [s for _, p in paragraphs for s in textrules.split_sentences(p)]
    assert sentences == ["The ferry to the island leaves the harbour twice a day in summer.",
                         "The old lighthouse keeper lives on the hill above it."]


def test_a_line_that_is_a_pages_only_text_is_content_not_furniture():
    from realsyn_spark.text import document_paragraphs

    # One sentence per page, the same on every page but its number: the pages' content, kept.
    alone = [(i, f"Page {i + 1}: a farmer is planting tulips in a long row.", i) for i in range(4)]
    paragraphs, _, _ = document_paragraphs(alone)
    assert len(paragraphs) == 4
    # The same line framing other text on every page is a running header: dropped.
    framed = [node for i in range(4) for node in (
        (3 * i, "Annual report 2023 · page %d" % (i + 1), i),
        (3 * i + 1, f"Section {i} tells how the harvest of year {i} went in the valley.", i),
        (3 * i + 2, "Acme Farming Cooperative", i))]
    texts = [text for _, text in document_paragraphs(framed)[0]]
    assert texts and not any("Annual report" in t or "Acme" in t for t in texts)
    assert sum("harvest" in t for t in texts) == 4
