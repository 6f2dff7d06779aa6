"""Bounded decompression in PDFs (issue 15): an embedded image whose few-KB Flate stream declares and
inflates to far more than ingest.max_document_bytes is one quarantine row, never decoded; the rest of
the PDF is read. Peak memory of the parsing subprocess is read from /proc (VmHWM), as a bound."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

from tests.test_sources_recovery import zeros_gzip

SIDE = 12_000                  # a 12000 x 12000 grey image: 144 MB decoded
CAP = 8 << 20                  # ingest.max_document_bytes for the parse
PEAK_BOUND_KIB = 120 * 1024    # the interpreter and MuPDF take ~60 MB; one decode of the bomb 144 MB more


def png(colour) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buffer, "PNG")
    return buffer.getvalue()


def bomb_pdf() -> bytes:
    import pymupdf

    document = pymupdf.open()
    page = document.new_page()
    page.insert_text((72, 72), "A young girl is flying a red kite on a quiet beach.")
    page.insert_image(pymupdf.Rect(72, 100, 200, 200), stream=png((200, 40, 40)))
    xref = page.get_images()[0][0]
    # the image stream: SIDE*SIDE zero bytes, Flate (zlib) compressed to ~140 KB, stored as is
    document.update_stream(xref, zeros_gzip(b"", SIDE * SIDE, wbits=15), compress=False)
    for key, value in (("Filter", "/FlateDecode"), ("Width", str(SIDE)), ("Height", str(SIDE)),
                       ("ColorSpace", "/DeviceGray"), ("BitsPerComponent", "8"), ("DecodeParms", "null"),
                       ("SMask", "null")):
        document.xref_set_key(xref, key, value)
    page.insert_text((72, 300), "Later the wind grows stronger and the kite climbs high.")
    page.insert_image(pymupdf.Rect(72, 320, 200, 420), stream=png((40, 40, 200)))  # a good image, same page
    page = document.new_page()
    page.insert_text((72, 72), "Three goats are grazing on the wet grass near the barn.")
    page.insert_image(pymupdf.Rect(72, 100, 200, 200), stream=png((40, 200, 40)))
    return document.tobytes()


def parse_in_subprocess(data: bytes, tmp_path) -> tuple[list, int]:
    path = tmp_path / "bomb.pdf"
    path.write_bytes(data)
    assert path.stat().st_size < 1 << 20
    script = textwrap.dedent(f"""
        import json
        from realsyn_spark.sources import Blob, Document, SourceError
        from realsyn_spark.sources.pdf import parse_pdf
        out = []
        with open({str(path)!r}, "rb") as f:
            for o in parse_pdf("bomb.pdf", f, max_image_bytes={CAP}):
                if isinstance(o, SourceError):
                    out.append(["error", o.kind, o.location])
                elif isinstance(o, Document):
                    out.append(["doc", [(n.kind, n.page) for n in o.nodes], None])
                else:
                    out.append(["blob", len(o.data), None])
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
        print(json.dumps([out, int(hwm)]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_pdf_image_bomb_is_one_row_and_memory_stays_bounded(tmp_path):
    out, hwm = parse_in_subprocess(bomb_pdf(), tmp_path)
    assert [o[1:] for o in out if o[0] == "error"] == [["decompression_bomb", "page=1"]]
    nodes = [tuple(n) for o in out if o[0] == "doc" for n in o[1]]
    assert nodes == [("text", 1), ("text", 1), ("image", 1), ("text", 2), ("image", 2)]
    assert sum(o[0] == "blob" for o in out) == 2
    assert hwm < PEAK_BOUND_KIB, hwm


def test_pdf_content_stream_bomb_keeps_memory_bounded(tmp_path):
    """A page content stream of ~200 KB inflating to 200 MB: MuPDF interprets content streams as they
    inflate (never whole), so the page text is read and memory stays at the interpreter's."""
    import pymupdf

    document = pymupdf.open()
    page = document.new_page()
    page.insert_text((72, 72), "A grey cat is sleeping in a patch of sunlight.")
    xref = page.get_contents()[0]
    document.update_stream(xref, zeros_gzip(document.xref_stream(xref) + b"\n", 200 << 20, wbits=15),
                           compress=False)
    document.xref_set_key(xref, "Filter", "/FlateDecode")
    document.new_page().insert_text((72, 72), "Three goats are grazing on the wet grass near the barn.")
    out, hwm = parse_in_subprocess(document.tobytes(), tmp_path)
    assert [o for o in out if o[0] != "doc"] == []
    assert [tuple(n) for o in out for n in o[1]] == [("text", 1), ("text", 2)]
    assert hwm < PEAK_BOUND_KIB, hwm


def test_pdf_split_applies_ingest_max_document_bytes(tmp_path):
    from realsyn_spark.sources import SourceError
    from realsyn_spark.sources.splits import Split, parse_split

    path = tmp_path / "bomb.pdf"
    path.write_bytes(bomb_pdf())
    size = path.stat().st_size
    outputs = list(parse_split(Split(str(path), "pdf", size, 0, 1, 0, size), max_record_bytes=CAP))
    assert [(o.kind, o.location) for o in outputs if isinstance(o, SourceError)] == [("decompression_bomb", "page=1")]


def test_pdf_soft_mask_bomb_is_caught_with_its_image(tmp_path):
    import pymupdf
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (32, 24), (200, 40, 40, 128)).save(buffer, "PNG")
    document = pymupdf.open()
    page = document.new_page()
    page.insert_text((72, 72), "A young girl is flying a red kite on a quiet beach.")
    page.insert_image(pymupdf.Rect(72, 100, 200, 200), stream=buffer.getvalue())
    smask = page.get_images(full=True)[0][1]
    assert smask
    document.update_stream(smask, zeros_gzip(b"", SIDE * SIDE, wbits=15), compress=False)
    for key, value in (("Filter", "/FlateDecode"), ("Width", str(SIDE)), ("Height", str(SIDE)),
                       ("DecodeParms", "null")):
        document.xref_set_key(smask, key, value)
    out, hwm = parse_in_subprocess(document.tobytes(), tmp_path)
    assert [o[1:] for o in out if o[0] == "error"] == [["decompression_bomb", "page=1"]]
    assert [tuple(n) for o in out if o[0] == "doc" for n in o[1]] == [("text", 1)]
    assert hwm < PEAK_BOUND_KIB, hwm
