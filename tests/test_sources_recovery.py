"""Archive recovery and bounded decompression (issues 10 and 15): fixtures generated here, small on disk."""
from __future__ import annotations

import gzip
import io
import subprocess
import sys
import textwrap
import zlib

from realsyn_spark.sources import SourceError
from realsyn_spark.sources.warc import parse_warc
from tests.source_fixtures import page_html, split, warc_record


def pages(n: int) -> list[bytes]:
    return [warc_record(f"http://s.example/p{i}.html",
                        page_html(f"P{i}", f"<p>Page number {i} shows a busy harbour at sunset today.</p>"),
                        "text/html") for i in range(n)]


def test_whole_file_gzip_stream_is_read_streaming():
    records = pages(3)
    data = gzip.compress(b"".join(records), mtime=0)
    docs, _, errors = split(parse_warc("x.warc.gz", io.BytesIO(data), "warc"))
    assert errors == []
    assert [d.url for d in docs] == [f"http://s.example/p{i}.html" for i in range(3)]
    # offsets: the member's offset (0) plus the record's position in the inflated stream; stable per run
    assert [d.record_offset for d in docs] == [0, len(records[0]), len(records[0]) + len(records[1])]


def test_whole_file_gzip_stream_after_per_record_members():
    records = pages(4)
    head = gzip.compress(records[0], mtime=0)
    data = head + gzip.compress(b"".join(records[1:]), mtime=0)
    docs, _, errors = split(parse_warc("x.warc.gz", io.BytesIO(data), "warc"))
    assert errors == []
    assert [d.record_offset for d in docs] == [0, len(head), len(head) + len(records[1]),
                                               len(head) + len(records[1]) + len(records[2])]


def test_record_split_across_gzip_members_is_recovered():
    records = pages(3)
    cut = records[1].index(b"\r\n\r\n") + 4  # WARC headers in one member, the block in the next
    members = [gzip.compress(records[0], mtime=0), gzip.compress(records[1][:cut], mtime=0),
               gzip.compress(records[1][cut:], mtime=0), gzip.compress(records[2], mtime=0)]
    data = b"".join(members)
    docs, _, errors = split(parse_warc("x.warc.gz", io.BytesIO(data), "warc"))
    assert errors == []
    assert [d.url for d in docs] == [f"http://s.example/p{i}.html" for i in range(3)]
    offsets = [0, len(members[0]), len(members[0]) + len(members[1]) + len(members[2])]
    assert [d.record_offset for d in docs] == offsets  # the same offsets a per-record file gives


def test_single_stream_gzip_in_splits_reads_every_record_once():
    data = gzip.compress(b"".join(pages(6)), mtime=0)
    whole = [d.url for d in split(parse_warc("x.warc.gz", io.BytesIO(data), "warc"))[0]]
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for start, end in zip(cuts, cuts[1:]):
        parts += [d.url for d in split(parse_warc("x.warc.gz", io.BytesIO(data), "warc", start, end))[0]]
    assert parts == whole and len(whole) == 6


# ---------------------------------------------------------------------------------------------------
# Decompression bombs: each shape parsed in a subprocess whose peak RSS (VmHWM) is read from /proc
# ---------------------------------------------------------------------------------------------------

BOMB_BYTES = 1 << 30          # what each bomb inflates to
CAP = 8 << 20                 # ingest.max_document_bytes for the parse
PEAK_BOUND_KIB = 400 * 1024   # far below the 1 GiB a bomb inflates to


def zeros_gzip(prefix: bytes, zero_bytes: int, suffix: bytes = b"", wbits: int = 31) -> bytes:
    """A gzip (or zlib) stream of prefix + zero_bytes zeros + suffix, compressed chunk by chunk."""
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = [packer.compress(prefix)]
    chunk = bytes(1 << 22)
    for _ in range(zero_bytes // len(chunk)):
        out.append(packer.compress(chunk))
    out.append(packer.compress(suffix))
    out.append(packer.flush())
    return b"".join(out)


def run_bomb(data: bytes, tmp_path) -> tuple[list[tuple[str, str]], list[str], int]:
    path = tmp_path / "bomb.warc.gz"
    path.write_bytes(data)
    script = textwrap.dedent(f"""
        import json
        from realsyn_spark.sources import Document, SourceError
        from realsyn_spark.sources.warc import parse_warc
        out = []
        with open({str(path)!r}, "rb") as f:
            for o in parse_warc("bomb.warc.gz", f, "warc", max_record_bytes={CAP}):
                if isinstance(o, SourceError):
                    out.append(["error", o.kind, o.location])
                elif isinstance(o, Document):
                    out.append(["doc", o.url, None])
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
        print(json.dumps([out, int(hwm)]))
    """)
    import json
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    outputs, hwm = json.loads(result.stdout.strip().splitlines()[-1])
    errors = [(kind, loc) for typ, kind, loc in outputs if typ == "error"]
    docs = [url for typ, url, _ in outputs if typ == "doc"]
    return errors, docs, hwm


def good_members(n: int, first: int = 0) -> bytes:
    return b"".join(gzip.compress(r, mtime=0) for r in pages(first + n)[first:])


def test_bomb_member_declaring_a_small_record(tmp_path):
    small = pages(1)[0].replace(b"p0.html", b"bomb.html")
    bomb = zeros_gzip(small, BOMB_BYTES)  # a small record, then 1 GiB of zeros in the same member
    head = good_members(1)
    data = head + bomb + good_members(1, first=1)
    assert len(data) < 4 << 20
    errors, docs, hwm = run_bomb(data, tmp_path)
    assert ("decompression_bomb", f"offset={len(head)}") in errors
    assert "http://s.example/p0.html" in docs and "http://s.example/p1.html" in docs
    assert hwm < PEAK_BOUND_KIB, hwm


def test_bomb_http_content_encoding_gzip_body(tmp_path):
    body = zeros_gzip(b"<html><body><p>", BOMB_BYTES, b"</p></body></html>")
    record = warc_record("http://s.example/bomb.html", body, "text/html", extra=[("Content-Encoding", "gzip")])
    head = good_members(1)
    data = head + gzip.compress(record, mtime=0) + good_members(1, first=1)
    errors, docs, hwm = run_bomb(data, tmp_path)
    assert errors == [("decompression_bomb", f"offset={len(head)}")]
    assert docs == ["http://s.example/p0.html", "http://s.example/p1.html"]
    assert hwm < PEAK_BOUND_KIB, hwm


def test_bomb_single_stream_with_huge_trailing_payload(tmp_path):
    # a whole-file gzip stream (read inflated) whose records are followed by 1 GiB without a newline
    data = zeros_gzip(b"".join(pages(2)), BOMB_BYTES)
    errors, docs, hwm = run_bomb(data, tmp_path)
    assert docs == ["http://s.example/p0.html", "http://s.example/p1.html"]
    assert [kind for kind, _ in errors] == ["decompression_bomb"]
    assert hwm < PEAK_BOUND_KIB, hwm


# ---------------------------------------------------------------------------------------------------
# PDF: benign MuPDF warnings are not damage; reasons are stable
# ---------------------------------------------------------------------------------------------------

def pdf_with_broken_icc_profile() -> bytes:
    import pymupdf
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, "JPEG")
    document = pymupdf.open()
    page = document.new_page()
    page.insert_text((72, 72), "A young girl is flying a red kite on a quiet beach.")
    page.insert_image(pymupdf.Rect(72, 100, 200, 200), stream=buffer.getvalue())
    image_xref = page.get_images()[0][0]
    icc = document.get_new_xref()
    document.update_object(icc, "<< /N 3 >>")
    document.update_stream(icc, b"this is not an ICC profile at all" * 10)
    document.xref_set_key(image_xref, "ColorSpace", f"[/ICCBased {icc} 0 R]")
    return document.tobytes()


def test_broken_icc_profile_is_not_a_damaged_page():
    from realsyn_spark.sources.pdf import parse_pdf

    docs, blobs, errors = split(parse_pdf("icc.pdf", io.BytesIO(pdf_with_broken_icc_profile())))
    assert errors == []
    assert [n.kind for n in docs[0].nodes] == ["text", "image"] and len(blobs) == 1


def test_page_damage_keeps_damage_lines_only():
    from realsyn_spark.sources.pdf import page_damage

    icc = ("lcms: not an ICC profile, invalid signature.\nformat error: cmsOpenProfileFromMem failed\n"
           "ignoring broken ICC profile")
    assert page_damage(icc) == ""
    assert page_damage(icc + "\ncannot load content stream part 3/5") == "cannot load content stream part 3/5"


def test_error_reasons_carry_no_memory_addresses():
    import pymupdf

    reasons = []
    for _ in range(2):
        try:
            pymupdf.open(io.BytesIO(b"%PDF-1.4 garbage"), filetype="pdf")
        except Exception as exc:  # the real message quotes the stream object's repr
            assert " at 0x" in str(exc)
            reasons.append(SourceError("x.pdf", None, "corrupt_pdf", f"cannot open: {exc}").reason)
    assert reasons[0] == reasons[1] and "0x" not in reasons[0]


def test_bomb_jsonl_gz_line(tmp_path):
    import json

    good = json.dumps({"texts": ["A grey cat is sleeping in a patch of sunlight.", None],
                       "images": [None, "http://x.example/cat.jpg"]}).encode()
    data = zeros_gzip(good + b"\n" + b'{"texts": ["', BOMB_BYTES, b'"]}\n' + good + b"\n")
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(data)
    script = textwrap.dedent(f"""
        import json
        from realsyn_spark.sources import SourceError
        from realsyn_spark.sources.obelics import parse_obelics_jsonl
        with open({str(path)!r}, "rb") as f:
            out = [o.kind if isinstance(o, SourceError) else type(o).__name__
                   for o in parse_obelics_jsonl("b.jsonl.gz", f, max_line_bytes={CAP})]
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
        print(json.dumps([out, int(hwm)]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out, hwm = json.loads(result.stdout.strip().splitlines()[-1])
    assert out.count("Document") == 2 and out.count("too_large") == 1
    assert hwm < PEAK_BOUND_KIB, hwm
