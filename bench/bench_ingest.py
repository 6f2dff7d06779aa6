"""Ingestion throughput and memory on a generated WARC (and PDF), against plain warcio iteration.

    python bench/bench_ingest.py                       # 20,000 pages, every measurement
    python bench/bench_ingest.py --pages 5000 --skip-spark --workdir /tmp/bi

Measurements (each parse runs in a fresh subprocess so that its peak RSS is its own):

1. baseline: warcio ArchiveIterator only, one process: decompress every record of the WARC and read
   its content stream; pages/s.
2. our parser, one process, the whole file as one split (`sources.splits.parse_split`: streaming from
   the path, HTML main-content extraction, charset detection, image records as blobs): documents/s,
   ratio to the baseline, and peak RSS.
3. the same parse of a file 10x smaller (pages/10): peak RSS at 1x vs 10x file size -- flat when
   nothing holds the file; for contrast, the peak RSS of reading the 10x file into memory whole (what
   Spark's binaryFile content column did before).
4. PDF: the same for a PDF of --pdf-pages and 10x that many pages, each page with text and an image.
5. Spark (local[--cores]): the executor-side parse of the WARC in splits of --split-mb (the ingest
   stage's own mapInPandas body, output to the noop sink) -> documents/s per core and the peak RSS
   of the Python workers; then the whole ingest stage with its Delta writes -> documents/s per core.

The WARC holds, per page, an HTML response (5-9 paragraphs, 2-4 <img>, nav/footer boilerplate and a
tracking pixel) followed by one image record (a JPEG from a pool of 64), each record its own gzip
member, as in Common Crawl. Everything derives from --seed.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

# ---------------------------------------------------------------------------------------------------
# Input generation
# ---------------------------------------------------------------------------------------------------


def _jpeg_pool(rng: random.Random, n: int = 64) -> list[bytes]:
    from PIL import Image

    pool = []
    for _ in range(n):
        image = Image.frombytes("RGB", (160, 120), rng.randbytes(160 * 120 * 3))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=70)
        pool.append(buffer.getvalue())
    return pool


def _record(uri: str, body: bytes, content_type: str, record_id: int) -> bytes:
    http = (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    headers = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {uri}\r\nWARC-Date: 2024-03-01T12:00:00Z\r\n"
               f"WARC-Record-ID: <urn:uuid:00000000-0000-4000-8000-{record_id:012d}>\r\n"
               f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n").encode()
    return gzip.compress(headers + http + b"\r\n\r\n", compresslevel=6, mtime=0)


def _page(rng: random.Random, words, n: int) -> tuple[str, bytes, list[str]]:
    site = f"https://site{n % 97}.example.org"
    url = f"{site}/articles/{n:06d}.html"
    images = [f"{site}/img/{n:06d}-{k}.jpg" for k in range(rng.randint(2, 4))]
    blocks = []
    for p in range(rng.randint(5, 9)):
        blocks.append("<p>" + " ".join(words.sentence() for _ in range(rng.randint(2, 5))) + "</p>")
        if p % 2 == 1 and images:
            src = images.pop(0)
            blocks.append(f'<img src="{src}" alt="photo {p}" width="640" height="480">')
    html = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>Article %d</title></head><body>"
            '<header><nav><a href="/">Home</a> | <a href="/about">About</a></nav></header><main><article>'
            "<h1>Article %d</h1>%s</article></main><footer><p>Copyright 2024. All rights reserved.</p></footer>"
            '<img src="https://stats.example.net/pixel.gif" width=1 height=1></body></html>') % (n, n, "".join(blocks))
    first_image = f"{site}/img/{n:06d}-0.jpg"
    return url, html.encode(), [first_image]


def write_warc(path: Path, pages: int, seed: int) -> int:
    """Write `pages` pages (plus one image record each); returns the number of records."""
    from realsyn_spark.sample_corpus import SentenceMaker

    rng = random.Random(seed)
    words = SentenceMaker(rng)
    pool = _jpeg_pool(rng)
    records = 0
    with open(path, "wb") as out:
        for n in range(pages):
            url, html, image_urls = _page(rng, words, n)
            out.write(_record(url, html, "text/html; charset=utf-8", records))
            records += 1
            for image_url in image_urls:
                out.write(_record(image_url, pool[(n * 7) % len(pool)], "image/jpeg", records))
                records += 1
    return records


def write_pdf(path: Path, pages: int, seed: int) -> None:
    import pymupdf

    from realsyn_spark.sample_corpus import SentenceMaker

    rng = random.Random(seed)
    words = SentenceMaker(rng)
    document = pymupdf.open()
    for _ in range(pages):  # a distinct image per page, so the file grows with the pages
        page = document.new_page()
        page.insert_textbox(pymupdf.Rect(56, 56, 540, 400), " ".join(words.sentence() for _ in range(12)), fontsize=10)
        page.insert_image(pymupdf.Rect(56, 420, 376, 660), stream=_jpeg_pool(rng, 1)[0])
    document.save(str(path), garbage=3, deflate=True)
    document.close()


# ---------------------------------------------------------------------------------------------------
# Single-process measurements (run as `python bench_ingest.py --child ...` in a fresh process)
# ---------------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child_warcio(path: str) -> dict:
    from warcio.archiveiterator import ArchiveIterator

    start, cpu = time.perf_counter(), time.process_time()
    records = pages = content_bytes = 0
    with open(path, "rb") as handle:
        for record in ArchiveIterator(handle):
            data = record.content_stream().read()
            records += 1
            content_bytes += len(data)
            if record.http_headers is not None and "html" in (record.http_headers.get_header("Content-Type") or ""):
                pages += 1
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu, "records": records,
            "pages": pages, "content_bytes": content_bytes, "peak_rss_mb": _peak_rss_mb()}


def child_parse(path: str, kind: str) -> dict:
    from realsyn_spark.sources import Blob, Document, SourceError
    from realsyn_spark.sources.splits import Split, parse_split

    import_rss = _peak_rss_mb()
    size = os.path.getsize(path)
    start, cpu = time.perf_counter(), time.process_time()
    counts = {"documents": 0, "blobs": 0, "errors": 0, "nodes": 0}
    for record in parse_split(Split(path, kind, size, 0, 1, 0, size), max_record_bytes=50_000_000):
        if isinstance(record, Document):
            counts["documents"] += 1
            counts["nodes"] += len(record.nodes)
        elif isinstance(record, Blob):
            counts["blobs"] += 1
        elif isinstance(record, SourceError):
            counts["errors"] += 1
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu, **counts,
            "rss_after_imports_mb": import_rss,
            "peak_rss_mb": _peak_rss_mb(), "file_mb": size / 2**20}


def child_read_whole(path: str) -> dict:
    import_rss = _peak_rss_mb()
    with open(path, "rb") as handle:
        data = handle.read()
    stream = io.BytesIO(data)  # what parse_files did with binaryFile's content column
    return {"bytes": len(stream.getvalue()), "rss_before_mb": import_rss, "peak_rss_mb": _peak_rss_mb()}


def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------
# Spark
# ---------------------------------------------------------------------------------------------------


def spark_measurements(warc: Path, pages: int, cores: int, split_mb: int, workdir: Path) -> None:
    import pandas as pd
    from pyspark.sql import types as T

    from realsyn_spark.config import load_config
    from realsyn_spark.session import local_session_builder
    from realsyn_spark.pipeline import run_stage
    from realsyn_spark.stages import ingest

    lake = workdir / "lake"
    subprocess.run(["rm", "-rf", str(lake)], check=True)
    cfg = load_config(overrides=[f"lake.root={lake}", f"ingest.input_paths=[{warc}]",
                                 f"ingest.split_bytes={split_mb * 2**20}", f"spark.shuffle_partitions={cores * 2}"])
    spark = (local_session_builder(cfg, master=f"local[{cores}]").config("spark.driver.memory", "4g")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    size = warc.stat().st_size
    splits = ingest.plan_input_splits(spark, [(str(warc), "warc", size)], cfg.ingest.split_bytes)
    frame, tasks = ingest.split_frame(spark, splits, cfg.ingest.split_bytes)
    body = ingest.parse_splits(cfg.ingest.html_base_url, cfg.ingest.max_document_bytes)

    def parse_and_report(batches):
        import resource as _resource

        cpu = time.process_time()
        documents = 0
        for out in body(batches):
            documents += int((out["record_type"] == "document").sum())
        yield pd.DataFrame({"documents": [documents], "cpu_seconds": [time.process_time() - cpu],
                            "peak_rss_mb": [_resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024],
                            "pid": [os.getpid()]})

    schema = T.StructType([T.StructField("documents", T.LongType()), T.StructField("cpu_seconds", T.DoubleType()),
                           T.StructField("peak_rss_mb", T.DoubleType()), T.StructField("pid", T.LongType())])
    start = time.perf_counter()
    rows = frame.mapInPandas(parse_and_report, schema).collect()
    seconds = time.perf_counter() - start
    documents, task_cpu = sum(r.documents for r in rows), sum(r.cpu_seconds for r in rows)
    print(f"spark executor parse   local[{cores}], {len(splits)} splits of {split_mb} MiB in {tasks} tasks: "
          f"{documents} documents in {seconds:.1f} s wall = {documents / seconds / cores:.1f} documents/s per core "
          f"(wall); {documents / task_cpu:.1f} documents per CPU-second of the Python tasks; Python worker peak RSS "
          f"max {max(r.peak_rss_mb for r in rows):.0f} MiB (per task: {sorted(round(r.peak_rss_mb) for r in rows)})")

    cpu_before = _tree_cpu_seconds()
    start = time.perf_counter()
    stage = run_stage(spark, cfg, "ingest", "bench")
    seconds = time.perf_counter() - start
    cpu = _tree_cpu_seconds() - cpu_before if cpu_before is not None else None
    per_cpu = f"; {stage.rows_out / cpu:.1f} documents per CPU-second of all processes (driver, JVM, workers)" \
        if cpu else ""
    print(f"spark ingest stage     local[{cores}] with Delta writes: {stage.rows_out} documents, "
          f"{stage.counters.get('blobs', 0)} blobs in {seconds:.1f} s wall = {stage.rows_out / seconds / cores:.1f} "
          f"documents/s per core (wall){per_cpu} (splits={stage.counters.get('splits')}, "
          f"tasks={stage.counters.get('tasks')})")
    spark.stop()


def _tree_cpu_seconds():
    """CPU seconds used so far by this process and all its live descendants (the JVM, Python workers)."""
    try:
        import psutil
    except ImportError:
        return None
    me = psutil.Process()
    total = 0.0
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        what, *rest = sys.argv[2:]
        result = {"warcio": child_warcio, "parse": child_parse, "read_whole": child_read_whole}[what](*rest)
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=20000, help="pages in the 10x WARC (the 1x one has pages/10)")
    parser.add_argument("--pdf-pages", type=int, default=100, help="pages in the 1x PDF (the 10x one has 10x)")
    parser.add_argument("--cores", type=int, default=2, help="Spark local[N]")
    parser.add_argument("--split-mb", type=int, default=16, help="ingest.split_bytes for the Spark runs, MiB")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where inputs and the lake go (default: a temp dir)")
    parser.add_argument("--skip-spark", action="store_true")
    parser.add_argument("--skip-pdf", action="store_true")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ingest_"))
    workdir.mkdir(parents=True, exist_ok=True)
    big, small = workdir / f"pages{args.pages}.warc.gz", workdir / f"pages{args.pages // 10}.warc.gz"
    for path, pages in ((big, args.pages), (small, args.pages // 10)):
        if not path.exists():
            start = time.perf_counter()
            records = write_warc(path, pages, args.seed)
            print(f"generated {path.name}: {pages} pages, {records} records, {path.stat().st_size / 2**20:.1f} MiB "
                  f"in {time.perf_counter() - start:.1f} s")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          "(CPU-second rates do not depend on other load; wall rates do)")

    base = run_child("warcio", str(big))
    base_rate = base["pages"] / base["cpu_seconds"]
    print(f"warcio only (1 process)  {base['records']} records, {base['pages']} pages in {base['seconds']:.1f} s wall, "
          f"{base['cpu_seconds']:.1f} s CPU = {base_rate:.0f} pages per CPU-second "
          f"({base['pages'] / base['seconds']:.0f} pages/s wall), peak RSS {base['peak_rss_mb']:.0f} MiB")
    ours = run_child("parse", str(big), "warc")
    rate = ours["documents"] / ours["cpu_seconds"]
    print(f"parse_split (1 process)  {ours['documents']} documents, {ours['blobs']} blobs, {ours['errors']} errors "
          f"in {ours['seconds']:.1f} s wall, {ours['cpu_seconds']:.1f} s CPU = {rate:.1f} documents per CPU-second "
          f"({ours['documents'] / ours['seconds']:.1f}/s wall) = {rate / base_rate:.3f} x warcio-only "
          f"({base_rate / rate:.1f}x slower)")
    small_run = run_child("parse", str(small), "warc")
    whole = run_child("read_whole", str(big))
    print(f"memory, WARC            peak RSS {small_run['peak_rss_mb']:.0f} MiB for {small_run['file_mb']:.1f} MiB "
          f"(1x), {ours['peak_rss_mb']:.0f} MiB for {ours['file_mb']:.1f} MiB (10x); after imports "
          f"{ours['rss_after_imports_mb']:.0f} MiB; for contrast, reading the 10x file whole (as binaryFile's "
          f"content column did) adds {whole['peak_rss_mb'] - whole['rss_before_mb']:.0f} MiB")

    if not args.skip_pdf:
        pdf1, pdf10 = workdir / f"pdf{args.pdf_pages}.pdf", workdir / f"pdf{args.pdf_pages * 10}.pdf"
        for path, pages in ((pdf1, args.pdf_pages), (pdf10, args.pdf_pages * 10)):
            if not path.exists():
                write_pdf(path, pages, args.seed)
        one, ten = run_child("parse", str(pdf1), "pdf"), run_child("parse", str(pdf10), "pdf")
        print(f"memory, PDF             peak RSS {one['peak_rss_mb']:.0f} MiB for {one['file_mb']:.1f} MiB / "
              f"{args.pdf_pages} pages (1x), {ten['peak_rss_mb']:.0f} MiB for {ten['file_mb']:.1f} MiB / "
              f"{args.pdf_pages * 10} pages (10x); {ten['nodes'] / ten['seconds']:.0f} nodes/s")

    if not args.skip_spark:
        spark_measurements(big, args.pages, args.cores, args.split_mb, workdir)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
