"""PDF -> one Document (text blocks and images in reading order) plus a Blob per image.

PyMuPDF's `get_text("dict")` gives the text and image blocks of a page; `reading_order` puts them in
column-aware order (bands between full-width blocks, each read column by column, top to bottom), since
a plain top-to-bottom sort reads a two-column page across the columns. Image blocks carry the image
bytes in their stored format (including inline images, which have no xref), so no second pass over
the page's image list is needed. Bytes that are not a plain RGB/grey PNG or JPEG (CMYK, JPX, JBIG2,
images with a soft mask) are re-encoded as PNG so that every consumer can decode them.

MuPDF repairs damaged files on open and reports what it could not read as warnings; those become
SourceErrors (for the file, or for the page that lost content) while whatever it recovered is still
yielded.

Large PDFs are read in parts (page ranges, `parse_pdf_file`): each part opens the file from local disk
and reads only its pages; the ingest stage joins the parts' nodes back into one document.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import BinaryIO, Iterator, Optional, Union

import pymupdf

from . import Blob, Document, Node, SourceError

Parsed = Union[Document, Blob, SourceError]

_PASSTHROUGH_FORMATS = {"png", "jpeg", "jpg"}
_PASSTHROUGH_COLOR_COMPONENTS = {1, 3}  # grey, RGB; CMYK (4) JPEGs decode inverted in many readers
_URL_HASH_CHARS = 16
_REASON_CHARS = 300
_PAGE_DAMAGE = re.compile(r"cannot|error|failed|missing|not a stream|broken", re.IGNORECASE)
# MuPDF notes that cost no text and no image pixels: a broken colour profile (MuPDF falls back to the
# device colour space; lcms reports it in two more lines), a substituted font. They contain damage
# words ("broken", "failed") but are not damage.
_BENIGN_WARNING = re.compile(r"icc|lcms|cms[A-Z]\w*|non-embedded font|substitut", re.IGNORECASE)
# Decoded bytes one embedded image may take when no ingest.max_document_bytes is given.
_DEFAULT_MAX_IMAGE_BYTES = 1 << 30
_METADATA_KEYS = ("author", "subject", "keywords", "creator", "producer", "creationDate", "format")


# ---------------------------------------------------------------------------------------------------
# MuPDF diagnostics
# ---------------------------------------------------------------------------------------------------

def _take_mupdf_warnings() -> str:
    """MuPDF's accumulated warnings since the last call (it keeps them in a global buffer)."""
    return (pymupdf.TOOLS.mupdf_warnings(reset=True) or "").strip()


def _summary(warnings: str) -> str:
    lines = [line for line in dict.fromkeys(warnings.splitlines()) if line.strip()]
    return "; ".join(lines)[:_REASON_CHARS]


class _QuietMuPDF:
    """Stop MuPDF printing every repair step to stderr; the warnings are reported as SourceErrors."""

    def __enter__(self):
        self._previous = pymupdf.TOOLS.mupdf_display_errors()
        pymupdf.TOOLS.mupdf_display_errors(False)
        _take_mupdf_warnings()
        return self

    def __exit__(self, *exc_info):
        pymupdf.TOOLS.mupdf_display_errors(self._previous)
        return False


# ---------------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------------

def _to_rgb(pixmap: pymupdf.Pixmap) -> pymupdf.Pixmap:
    colour_components = pixmap.n - pixmap.alpha
    if pixmap.colorspace is None or colour_components not in _PASSTHROUGH_COLOR_COMPONENTS:
        return pymupdf.Pixmap(pymupdf.csRGB, pixmap)
    return pixmap


def _with_soft_mask(pixmap: pymupdf.Pixmap, mask_bytes: Optional[bytes]) -> pymupdf.Pixmap:
    if not mask_bytes:
        return pixmap
    mask = pymupdf.Pixmap(mask_bytes)
    if pixmap.alpha:  # already has its own alpha channel
        return pixmap
    if (mask.width, mask.height) != (pixmap.width, pixmap.height) or mask.n != 1:
        # MuPDF combines only same-size single-channel masks; a mismatched mask is dropped, not fatal
        return pixmap
    return pymupdf.Pixmap(pixmap, mask)


def standard_image_bytes(block: dict) -> bytes:
    """Bytes of an image block as PNG or JPEG, RGB or grey, with its soft mask applied as alpha."""
    data, ext = block["image"], (block.get("ext") or "").lower()
    mask_bytes = block.get("mask")
    if ext in _PASSTHROUGH_FORMATS and block.get("colorspace") in _PASSTHROUGH_COLOR_COMPONENTS and not mask_bytes:
        return data
    pixmap = _with_soft_mask(_to_rgb(pymupdf.Pixmap(data)), mask_bytes)
    return pixmap.tobytes("png")


# ---------------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------------

def _line_text(line: dict) -> str:
    return "".join(span.get("text", "") for span in line.get("spans", []))


def paragraph_text(block: dict) -> str:
    """A text block's lines joined into one paragraph, undoing end-of-line hyphenation."""
    text = ""
    for line in block.get("lines", []):
        piece = " ".join(_line_text(line).split())
        if not piece:
            continue
        if text.endswith("-") and piece[:1].islower():
            text = text[:-1] + piece  # "exam-" + "ple" -> "example"
        else:
            text = f"{text} {piece}" if text else piece
    return text


# Column detection: a left edge (rounded to _EDGE_ROUND points) shared by at least _COLUMN_MIN_BLOCKS
# blocks starts a column; a block reaching more than _EDGE_TOLERANCE past the next column's left edge
# spans the columns (title, abstract, wide figure) and closes a band.
_EDGE_ROUND = 5.0
_EDGE_TOLERANCE = 5.0
_COLUMN_MIN_BLOCKS = 2


def _column_starts(blocks: list[dict]) -> list[float]:
    counts: dict[float, int] = {}
    for block in blocks:
        edge = round(block["bbox"][0] / _EDGE_ROUND) * _EDGE_ROUND
        counts[edge] = counts.get(edge, 0) + 1
    return sorted(edge for edge, n in counts.items() if n >= _COLUMN_MIN_BLOCKS)


def _column_of(block: dict, starts: list[float]) -> tuple[int, bool]:
    """(column index, spans into the next column)."""
    x0, _, x1, _ = block["bbox"]
    index = max([i for i, start in enumerate(starts) if start <= x0 + _EDGE_TOLERANCE], default=0)
    spans = any(x0 < start - _EDGE_TOLERANCE and x1 > start + _EDGE_TOLERANCE for start in starts[index:])
    return index, spans


def reading_order(blocks: list[dict]) -> list[dict]:
    """Column-aware reading order of a page's blocks.

    Columns start at left edges shared by several blocks. Blocks are taken top to bottom; one that
    crosses a column's left edge spans the columns and closes a band; inside a band, blocks are read
    column by column (left to right), each column top to bottom. A single-column page has one column:
    plain top-to-bottom order.
    """
    placed = [b for b in blocks if b.get("bbox")]
    starts = _column_starts(placed)
    ordered: list[dict] = []
    band: list[tuple[int, dict]] = []

    def close_band() -> None:
        ordered.extend(block for _, block in sorted(band, key=lambda cb: (cb[0], cb[1]["bbox"][1])))
        band.clear()

    for block in sorted(placed, key=lambda b: (b["bbox"][1], b["bbox"][0])):
        column, spans = _column_of(block, starts)
        if spans:
            close_band()
            ordered.append(block)
        else:
            band.append((column, block))
    close_band()
    return ordered


# Colour components by the name `Page.get_images(full=True)` reports; others (ICCBased, Indexed,
# Separation, ...) count as 4, the most a decoded pixel takes before RGB conversion.
_COLOUR_COMPONENTS = {"DeviceGray": 1, "CalGray": 1, "DeviceRGB": 3, "CalRGB": 3, "Lab": 3, "DeviceCMYK": 4}


def _declared_image_bytes(width: int, height: int, colour_space: str) -> int:
    """What MuPDF allocates to decode an image: a pixmap of 8 bits per component (1-bit images too)."""
    return max(width, 0) * max(height, 0) * _COLOUR_COMPONENTS.get(colour_space, 4)


def image_bombs(page: pymupdf.Page, cap: int) -> dict[int, int]:
    """{xref: declared decoded bytes} of the page's image XObjects over `cap`, read from their
    dictionaries (Width, Height, ColorSpace) before anything is decoded: a few KB of Flate can declare
    and inflate to gigabytes, and MuPDF decodes every image of a page in `get_text("dict")`."""
    bombs = {}
    for xref, smask, width, height, _bpc, colour_space, *_ in page.get_images(full=True):
        # a soft mask is decoded with its image, and has its own Width and Height
        size = _declared_image_bytes(width, height, colour_space) + (_mask_bytes(page.parent, smask) if smask else 0)
        if size > cap:
            bombs[xref] = size
    return bombs


def _mask_bytes(document: pymupdf.Document, xref: int) -> int:
    def number(key: str) -> int:
        kind, value = document.xref_get_key(xref, key)
        return int(value) if kind == "int" else 0

    return _declared_image_bytes(number("Width"), number("Height"), "DeviceGray")


class _PageReader:
    """Turns the blocks of one page into nodes and blobs; numbering continues across pages."""

    def __init__(self, source_uri: str, file_hash: str, max_image_bytes: int = _DEFAULT_MAX_IMAGE_BYTES):
        self.source_uri = source_uri
        self.file_hash = file_hash
        self.max_image_bytes = max_image_bytes
        self.nodes: list[Node] = []

    def read(self, page: pymupdf.Page) -> Iterator[Union[Blob, SourceError]]:
        number = page.number + 1
        bombs = image_bombs(page, self.max_image_bytes)
        if bombs:
            yield from self._read_with_bombs(page, number, bombs)
            return
        image_index = 0
        for block in reading_order(page.get_text("dict").get("blocks", [])):
            if block.get("type") == 0:
                self._add_text(block, number)
            elif block.get("type") == 1 and block.get("image"):
                yield from self._add_image(block, number, image_index)
                image_index += 1

    def _read_with_bombs(self, page: pymupdf.Page, number: int,
                         bombs: dict[int, int]) -> Iterator[Union[Blob, SourceError]]:
        """A page holding an oversized image: one decompression_bomb row per such image; the text is
        read without decoding images, and the page's other images follow its text, one by one."""
        for xref, size in bombs.items():
            yield SourceError(self.source_uri, f"page={number}", "decompression_bomb",
                              f"image xref {xref} declares {size} decoded bytes, over ingest.max_document_bytes "
                              f"({self.max_image_bytes}); not decoded")
        flags = pymupdf.TEXTFLAGS_DICT & ~pymupdf.TEXT_PRESERVE_IMAGES
        for block in reading_order(page.get_text("dict", flags=flags).get("blocks", [])):
            if block.get("type") == 0:
                self._add_text(block, number)
        image_index = 0
        for xref, smask, *_ in page.get_images(full=True):
            if xref in bombs:
                continue
            extracted = page.parent.extract_image(xref) or {}
            mask = (page.parent.extract_image(smask) or {}).get("image") if smask else None
            block = {"image": extracted.get("image"), "ext": extracted.get("ext"),
                     "colorspace": extracted.get("colorspace"), "mask": mask}
            if block["image"]:
                yield from self._add_image(block, number, image_index)
                image_index += 1

    def _add_text(self, block: dict, page_number: int) -> None:
        text = paragraph_text(block)
        if text:
            self.nodes.append(Node(position=len(self.nodes), kind="text", text=text, page=page_number))

    def _add_image(self, block: dict, page_number: int, index: int) -> Iterator[Union[Blob, SourceError]]:
        url = f"pdf://{self.file_hash}/page{page_number}/img{index}"
        try:
            data = standard_image_bytes(block)
        except Exception as exc:  # one undecodable image (odd filter, broken stream) costs only itself
            yield SourceError(self.source_uri, f"page={page_number}", "bad_pdf_image",
                              f"img{index} ({block.get('ext')}): {exc}"[:_REASON_CHARS])
            return
        self.nodes.append(Node(position=len(self.nodes), kind="image", image_url=url, page=page_number))
        yield Blob(image_url=url, data=data, origin="pdf")


# ---------------------------------------------------------------------------------------------------
# Document
# ---------------------------------------------------------------------------------------------------

def _open(source_uri: str, source) -> tuple[Optional[pymupdf.Document], Optional[SourceError]]:
    """Open from bytes or from a local file name (MuPDF then reads objects from disk on demand)."""
    try:
        if isinstance(source, (bytes, bytearray)):
            document = pymupdf.open(stream=source, filetype="pdf")
        else:
            document = pymupdf.open(source, filetype="pdf")
    except Exception as exc:  # FileDataError and friends: not a PDF MuPDF can repair
        return None, SourceError(source_uri, None, "corrupt_pdf", f"cannot open: {exc}"[:_REASON_CHARS])
    if document.needs_pass and not document.authenticate(""):
        # an empty user password opens owner-only ("permissions") encryption; anything else is locked
        document.close()
        return None, SourceError(source_uri, None, "encrypted_pdf", "PDF needs a password to open")
    if document.page_count == 0:
        document.close()
        return None, SourceError(source_uri, None, "corrupt_pdf", "PDF has no readable pages")
    return document, None


def _repair_error(source_uri: str, document: pymupdf.Document, tail: bytes, warnings: str) -> Optional[SourceError]:
    if not document.is_repaired:
        return None
    # A file cut short loses its trailer (%%EOF); other damage is reported as a repaired file.
    kind = "truncated_pdf" if b"%%EOF" not in tail[-1024:] else "corrupt_pdf"
    return SourceError(source_uri, None, kind, f"MuPDF repaired the file: {_summary(warnings)}")


def _document_metadata(document: pymupdf.Document) -> dict:
    metadata = {key: value for key, value in (document.metadata or {}).items() if key in _METADATA_KEYS and value}
    metadata["page_count"] = document.page_count
    return metadata


def page_range(page_count: int, part: int, parts: int) -> range:
    """The pages (0-based) that part `part` of `parts` reads: contiguous, disjoint, covering every page."""
    return range(page_count * part // parts, page_count * (part + 1) // parts)


def page_damage(warnings: str) -> str:
    """The lines of MuPDF's warnings for one page that mean lost content ("" when none do)."""
    lines = [line for line in warnings.splitlines() if line.strip() and not _BENIGN_WARNING.search(line)]
    return "\n".join(line for line in lines if _PAGE_DAMAGE.search(line))


def _read_pages(source_uri: str, document: pymupdf.Document, reader: _PageReader,
                pages: range) -> Iterator[Union[Blob, SourceError]]:
    for page_index in pages:
        location = f"page={page_index + 1}"
        try:
            yield from reader.read(document.load_page(page_index))
        except Exception as exc:
            _take_mupdf_warnings()
            yield SourceError(source_uri, location, "corrupt_pdf_page", f"{type(exc).__name__}: {exc}"[:_REASON_CHARS])
            continue
        damage = page_damage(_take_mupdf_warnings())
        # e.g. "cannot load content stream part 3/5": the page was read only in part. Benign notes
        # (broken ICC profiles, substituted fonts) are common in healthy files and are not reported.
        if damage:
            yield SourceError(source_uri, location, "damaged_pdf_page", _summary(damage))


def _parse(source_uri: str, source, tail: bytes, file_hash: str, part: int, parts: int,
           max_image_bytes: Optional[int] = None) -> Iterator[Parsed]:
    with _QuietMuPDF():
        document, error = _open(source_uri, source)
        if error is not None:
            if part == 0:  # every part sees the same file-level problem; the first reports it
                yield error
            return
        try:
            repair_error = _repair_error(source_uri, document, tail, _take_mupdf_warnings())
            if repair_error is not None and part == 0:
                yield repair_error
            pages = page_range(document.page_count, part, parts)
            if part > 0 and not pages:
                return
            reader = _PageReader(source_uri, file_hash[:_URL_HASH_CHARS], max_image_bytes or _DEFAULT_MAX_IMAGE_BYTES)
            yield from _read_pages(source_uri, document, reader, pages)
            title = ((document.metadata or {}).get("title") or "").strip() or None
            yield Document(
                source_uri=source_uri, source_kind="pdf", record_offset=None, url=None, title=title,
                nodes=reader.nodes, metadata=_document_metadata(document),
            )
        finally:
            document.close()


def parse_pdf(source_uri: str, stream: BinaryIO, part: int = 0, parts: int = 1,
              max_image_bytes: Optional[int] = None) -> Iterator[Parsed]:
    """Parse a PDF (all of it read into memory) into one Document and its image Blobs. Never raises
    for bad input. With `parts` > 1 only the pages of `part` are read (see `parse_pdf_file`). An image
    declaring more than `max_image_bytes` decoded bytes (ingest.max_document_bytes) is not decoded:
    see `image_bombs`."""
    data = stream.read()
    if not data:
        if part == 0:
            yield SourceError(source_uri, None, "empty_file", "file has no bytes")
        return
    yield from _parse(source_uri, data, data[-1024:], hashlib.sha256(data).hexdigest(), part, parts,
                      max_image_bytes)


def parse_pdf_file(source_uri: str, local_path: str, file_hash: str, part: int = 0,
                   parts: int = 1, max_image_bytes: Optional[int] = None) -> Iterator[Parsed]:
    """Parse part `part` of `parts` of a PDF on local disk, page range by page range.

    MuPDF opens the file by name and loads pages on demand, so memory follows the pages read, not the
    file size. Part k reads pages [k*P/parts, (k+1)*P/parts) and yields a Document holding only their
    nodes (positions from 0); `stages.ingest` joins the parts of one file in part order into the one
    Document a whole-file parse gives. File-level errors (cannot open, encrypted, repaired) come from
    part 0 only. `file_hash` is the sha256 of the whole file, which names its images
    (`pdf://<hash[:16]>/page<n>/img<i>`) identically in every part.
    """
    size = os.path.getsize(local_path)
    if size == 0:
        if part == 0:
            yield SourceError(source_uri, None, "empty_file", "file has no bytes")
        return
    with open(local_path, "rb") as handle:
        handle.seek(max(0, size - 1024))
        tail = handle.read()
    yield from _parse(source_uri, local_path, tail, file_hash, part, parts, max_image_bytes)
