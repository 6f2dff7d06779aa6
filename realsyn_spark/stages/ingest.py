"""Stage 1a: ingest raw files (WARC/ARC, PDF, OBELICS JSONL/Parquet, HTML) into Delta.

Writes `documents` (ordered text/image nodes), `image_blobs` (image bytes that arrive inside the
sources) and `ingest_errors` (quarantine). Files already listed in `ingested_sources` with the same
size and modification time are skipped, and every write is a MERGE on a deterministic key, so a rerun
(also after a crash half-way) adds nothing twice.

Reading at scale: the driver lists files through `os.scandir` / `pyarrow.fs` (`sources.inputs`: path,
length, mtime; no content read, any file name; unsupported suffixes and unreadable entries are
quarantined as `unsupported_file` / `unreadable_file`) and cuts every
large file into splits of about `ingest.split_bytes` (`sources.splits`: WARC by gzip member/record,
PDF by page range, .jsonl by line, Parquet by row group). Executors stream their split straight from
storage (`sources.fileio`: local, s3://, gs://, abfss://, hdfs://) and hand results to Spark in small
chunks, so a task's memory follows one record, not the file. Each split ends with a `split_done`
marker; a file is recorded in `ingested_sources` only when all its splits reported done, after the
documents, blobs and errors of the run were written. The parts of a PDF read by several splits are
joined back into one document, in page order.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Iterator

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from realsyn_spark.ids import stable_id
from realsyn_spark.runlog import StageContext, StageRun
from realsyn_spark.sources import Blob, Document
from realsyn_spark.sources.inputs import InputFile, Rejected, scan_inputs
from realsyn_spark.sparkutil import parallelism
from realsyn_spark.sources.splits import Split, count_split_lines, pack_splits, plan_splits, with_first_rows
from realsyn_spark.tables import DOCUMENTS, IMAGE_BLOBS, INGEST_ERRORS, INGESTED_SOURCES, NODE

# One parsed record of any kind; the three tables are projections of it.
PARSED = T.StructType([
    T.StructField("record_type", T.StringType(), False),   # document | blob | error | split_done
    T.StructField("source_uri", T.StringType(), False),
    T.StructField("source_kind", T.StringType(), True),
    T.StructField("doc_id", T.StringType(), True),
    T.StructField("record_offset", T.LongType(), True),
    T.StructField("url", T.StringType(), True),
    T.StructField("title", T.StringType(), True),
    T.StructField("nodes", T.ArrayType(NODE), True),
    T.StructField("metadata", T.StringType(), True),
    T.StructField("image_url", T.StringType(), True),
    T.StructField("image_bytes", T.BinaryType(), True),
    T.StructField("origin", T.StringType(), True),
    T.StructField("location", T.StringType(), True),
    T.StructField("error_kind", T.StringType(), True),
    T.StructField("reason", T.StringType(), True),
    T.StructField("part", T.IntegerType(), True),          # document part (PDF page-range split), else 0
    T.StructField("split_index", T.IntegerType(), True),
    T.StructField("split_count", T.IntegerType(), True),
])

# The split descriptors handed to executors (sources.splits.Split, in field order).
SPLITS = T.StructType([
    T.StructField("path", T.StringType(), False),
    T.StructField("kind", T.StringType(), False),
    T.StructField("size", T.LongType(), False),
    T.StructField("split_index", T.IntegerType(), False),
    T.StructField("split_count", T.IntegerType(), False),
    T.StructField("start", T.LongType(), False),
    T.StructField("end", T.LongType(), False),
    T.StructField("first_row", T.LongType(), False),
])

# A task hands its output to Spark every this many rows or bytes (image bytes + text), so memory
# follows one chunk of records, not a whole split.
FLUSH_ROWS = 256
FLUSH_BYTES = 32 << 20
# Spark's own file packing (spark.sql.files.openCostInBytes default): a split costs at least this much
# when small files are packed into tasks.
OPEN_COST_BYTES = 4 << 20


def document_id(doc: Document) -> str:
    return stable_id(doc.source_uri, doc.record_offset, doc.url)


_COLUMNS = [f.name for f in PARSED.fields]


def _record_row(rec, split: Split) -> dict:
    """One PARSED row; every column present (None, never NaN) so Arrow sees clean object columns."""
    part = split.index if split.kind == "pdf" else 0
    return {**dict.fromkeys(_COLUMNS), "source_uri": split.path, "part": part, "split_index": split.index,
            "split_count": split.count, **_fields(rec)}


def _fields(rec) -> dict:
    if isinstance(rec, Document):
        nodes = [{"position": n.position, "kind": n.kind, "text": n.text, "image_url": n.image_url,
                  "alt": n.alt, "page": n.page} for n in rec.nodes]
        return {"record_type": "document", "source_uri": rec.source_uri, "source_kind": rec.source_kind,
                "doc_id": document_id(rec), "record_offset": rec.record_offset, "url": rec.url,
                "title": rec.title, "nodes": nodes,
                "metadata": json.dumps(rec.metadata, default=str) if rec.metadata is not None else None}
    if isinstance(rec, Blob):
        return {"record_type": "blob", "image_url": rec.image_url, "image_bytes": rec.data, "origin": rec.origin}
    return {"record_type": "error", "source_uri": rec.source_uri, "location": rec.location,
            "error_kind": rec.kind, "reason": rec.reason}


def _weight(rec) -> int:
    """Rough bytes a parsed record holds, for chunking the task's output."""
    if isinstance(rec, Blob):
        return len(rec.data)
    if isinstance(rec, Document):
        return sum(len(n.text or "") + len(n.image_url or "") for n in rec.nodes) + 256
    return 256


def _frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=_COLUMNS, dtype=object)


def split_records(split: Split, html_base_url: str, max_record_bytes: int,
                  flush_rows: int = FLUSH_ROWS, flush_bytes: int = FLUSH_BYTES) -> Iterator[pd.DataFrame]:
    """Parse one split into PARSED frames of bounded size, ending with its `split_done` marker."""
    from realsyn_spark.sources.splits import parse_split

    rows: list[dict] = []
    pending = 0
    for rec in parse_split(split, html_base_url, max_record_bytes):
        rows.append(_record_row(rec, split))
        pending += _weight(rec)
        if len(rows) >= flush_rows or pending >= flush_bytes:
            yield _frame(rows)
            rows, pending = [], 0
    rows.append({**dict.fromkeys(_COLUMNS), "record_type": "split_done", "source_uri": split.path,
                 "source_kind": split.kind, "split_index": split.index, "split_count": split.count})
    yield _frame(rows)


def parse_splits(html_base_url: str, max_record_bytes: int):
    """mapInPandas body: split descriptors (SPLITS) -> parsed records (PARSED), streamed per split."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            for row in frame.itertuples(index=False):
                split = Split(row.path, row.kind, int(row.size), int(row.split_index), int(row.split_count),
                              int(row.start), int(row.end), int(row.first_row))
                yield from split_records(split, html_base_url, max_record_bytes)
    return run


LISTING = "path string, length long, modificationTime timestamp"


def list_input_files(spark: SparkSession, paths: list[str]) -> DataFrame:
    """Input files of the kinds we can parse, with size and mtime (`inputs.scan_inputs`), as a DataFrame
    (path, length, modificationTime, source_kind, modified_ms). Zero-length files are included (they
    become `empty_file` errors); files of other kinds are in `scan_inputs(...).rejected`."""
    return listing_frame(spark, scan_inputs(paths).files)


def listing_frame(spark: SparkSession, files: list[InputFile]) -> DataFrame:
    rows = [(f.uri, f.size, dt.datetime.fromtimestamp(f.modified_ms / 1000), f.kind, f.modified_ms) for f in files]
    return spark.createDataFrame(rows, LISTING + ", source_kind string, modified_ms long")


def rejected_errors(spark: SparkSession, rejected: list[Rejected], run_id: str, now) -> DataFrame:
    """Quarantine rows (INGEST_ERRORS) for inputs that were listed but cannot be ingested."""
    rows = [(r.uri, r.kind, r.reason) for r in rejected]
    frame = spark.createDataFrame(rows, "source_uri string, kind string, reason string")
    return frame.select(
        F.sha2(F.concat_ws("\u001f", "source_uri", F.lit(""), "kind", "reason"), 256).substr(1, 24).alias("error_id"),
        F.lit("ingest").alias("stage"), "source_uri", F.lit(None).cast("string").alias("location"), "kind", "reason",
        F.lit(run_id).alias("run_id"), now.alias("recorded_at"))


def _count_lines(splits: list[tuple]):
    """mapInPandas body over spark.range ids: (path, split_index, lines) of the JSONL splits with those
    ids; the descriptors travel in the closure (Connect has no parallelize)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            counted = [count_split_lines(splits[int(i)]) for i in frame["id"]]
            yield pd.DataFrame(counted, columns=["path", "split_index", "lines"])
    return run


def plan_input_splits(spark: SparkSession, files: list[tuple[str, str, int]], split_bytes: int) -> list[Split]:
    """Splits of every (path, kind, size); the row numbers of split JSONL files come from a line count
    over their splits on the executors (only files that are split at all pay for it)."""
    splits = [s for path, kind, size in files for s in plan_splits(path, kind, size, split_bytes)]
    jsonl = [tuple(s) for s in splits if s.kind == "obelics_jsonl" and s.count > 1]
    if jsonl:
        slices = max(1, min(len(jsonl), parallelism(spark) * 2))
        counted = (spark.range(0, len(jsonl), 1, slices)
                   .mapInPandas(_count_lines(jsonl), "path string, split_index int, lines long").collect())
        splits = with_first_rows(splits, {(r.path, r.split_index): r.lines for r in counted})
    return splits


def _task_splits(tasks: list[list[tuple]]):
    """mapInPandas body over spark.range(n, numPartitions=n): task id -> its split descriptors (SPLITS)."""
    names = [f.name for f in SPLITS.fields]

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            rows = [split for i in frame["id"] for split in tasks[int(i)]]
            yield pd.DataFrame(rows, columns=names)
    return run


def split_frame(spark: SparkSession, splits: list[Split], split_bytes: int) -> tuple[DataFrame, int]:
    """The splits as a DataFrame with one partition per packed task, and the number of tasks.

    A task reads at most about `split_bytes`: every split of a large file is a task of its own, and
    small files are packed together as Spark packs file partitions, up to
    min(split_bytes, max(open cost, total / parallelism)) with each file costing at least the open
    cost (4 MiB, or split_bytes when smaller), so that a small input still uses every core.
    `spark.range(n, numPartitions=n)` puts exactly one task id in each partition; the descriptors
    travel in the closure (no parallelize under Spark Connect)."""
    open_cost = min(OPEN_COST_BYTES, split_bytes)
    total = sum(max(s.length, open_cost) for s in splits)
    target = min(split_bytes, max(open_cost, total // max(1, parallelism(spark))))
    tasks = [[tuple(s) for s in task] for task in pack_splits(splits, target, open_cost)]
    return spark.range(0, len(tasks), 1, len(tasks)).mapInPandas(_task_splits(tasks), SPLITS), len(tasks)


_MERGE_PARTS = """
    filter(parts, (p, i) -> i = 0 OR p.part != parts[i - 1].part)
"""
_NODES = """
    transform(flatten(transform(parts, p -> p.nodes)),
              (n, i) -> named_struct('position', i, 'kind', n.kind, 'text', n.text, 'image_url', n.image_url,
                                     'alt', n.alt, 'page', n.page))
"""


def merged_documents(parsed: DataFrame) -> DataFrame:
    """One row per doc_id: the parts of a document read by several splits (PDF page ranges) joined in
    part order with positions renumbered; a part seen twice is kept once."""
    parts = (parsed.where("record_type = 'document'")
             .select("doc_id", F.struct("part", "source_uri", "source_kind", "record_offset", "url", "title",
                                        "metadata", "nodes").alias("p"))
             .groupBy("doc_id").agg(F.collect_list("p").alias("parts"))
             .withColumn("parts", F.expr("array_sort(parts, (l, r) -> CASE WHEN l.part < r.part THEN -1 "
                                         "WHEN l.part > r.part THEN 1 ELSE 0 END)"))
             .withColumn("parts", F.expr(_MERGE_PARTS)))
    first = F.col("parts")[0]
    return parts.select("doc_id", first["source_uri"].alias("source_uri"), first["source_kind"].alias("source_kind"),
                        first["record_offset"].alias("record_offset"), first["url"].alias("url"),
                        first["title"].alias("title"), F.expr(_NODES).cast(T.ArrayType(NODE)).alias("nodes"),
                        first["metadata"].alias("metadata"))


def run(ctx: StageContext) -> StageRun:
    spark, cfg, lake, run_id = ctx.spark, ctx.cfg, ctx.lake, ctx.run_id
    with ctx.stage as stage:
        scan = scan_inputs(cfg.ingest.input_paths)
        now = F.lit(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)).cast("timestamp")
        # Listed but not ingestable (unsupported suffix, unreadable entry): quarantined, never silent.
        for kind in sorted({r.kind for r in scan.rejected}):
            stage.count(f"files_{kind}", sum(r.kind == kind for r in scan.rejected))
        if scan.rejected:
            lake.merge_insert(INGEST_ERRORS, rejected_errors(spark, scan.rejected, run_id, now))
        if scan.page_resources:
            stage.count("files_page_resources", scan.page_resources)
        files = listing_frame(spark, scan.files).cache()
        seen = lake.read(INGESTED_SOURCES).select("source_uri", "size_bytes", "modified_ms")
        new_files = (files.join(seen, (files.path == seen.source_uri) & (files.length == seen.size_bytes)
                                & (files.modified_ms == seen.modified_ms), "left_anti").cache())
        stage.rows_in = new_files.count()
        stage.count("files_skipped_already_ingested", files.count() - stage.rows_in)
        if stage.rows_in == 0:
            stage.rows_out = 0
            new_files.unpersist()
            files.unpersist()
            return stage

        listing = [(r.path, r.source_kind, r.length) for r in new_files.select("path", "source_kind", "length").collect()]
        splits = plan_input_splits(spark, listing, cfg.ingest.split_bytes)
        split_rows, tasks = split_frame(spark, splits, cfg.ingest.split_bytes)
        stage.count("splits", len(splits))
        stage.count("tasks", tasks)
        parsed = (split_rows.mapInPandas(parse_splits(cfg.ingest.html_base_url, cfg.ingest.max_document_bytes), PARSED)
                  .persist(StorageLevel.MEMORY_AND_DISK))

        docs = merged_documents(parsed).withColumn("run_id", F.lit(run_id)).withColumn("ingested_at", now)
        lake.merge_insert(DOCUMENTS, docs)
        blobs = (parsed.where("record_type = 'blob'").dropDuplicates(["image_url"])
                 .select("image_url", F.lit("pending").alias("status"), "image_bytes",
                         F.lit(None).cast("string").alias("sha256"), F.lit(None).cast("int").alias("width"),
                         F.lit(None).cast("int").alias("height"), F.lit(None).cast("string").alias("format"),
                         "origin", F.lit(None).cast("string").alias("error"), F.lit(run_id).alias("run_id"),
                         now.alias("stored_at")))
        lake.merge_insert(IMAGE_BLOBS, blobs)
        errors = parsed.where("record_type = 'error'").select(
            F.sha2(F.concat_ws("\u001f", "source_uri", F.coalesce("location", F.lit("")), "error_kind",
                               "reason"), 256).substr(1, 24).alias("error_id"),
            F.lit("ingest").alias("stage"), "source_uri", "location", F.col("error_kind").alias("kind"),
            "reason", F.lit(run_id).alias("run_id"), now.alias("recorded_at"))
        lake.merge_insert(INGEST_ERRORS, errors)

        per_file = parsed.groupBy("source_uri").agg(
            F.countDistinct(F.when(F.col("record_type") == "document", F.col("doc_id"))).alias("documents"),
            F.sum(F.when(F.col("record_type") == "error", 1).otherwise(0)).alias("errors"),
            F.countDistinct(F.when(F.col("record_type") == "split_done", F.col("split_index"))).alias("splits_done"),
            F.max(F.when(F.col("record_type") == "split_done", F.col("split_count"))).alias("splits")).cache()
        complete = per_file.where("splits_done = splits")
        # Recorded last, and only for files whose every split finished: a crash before this line means
        # the files are parsed again and MERGEd onto themselves.
        sources = (new_files.join(complete, new_files.path == complete.source_uri, "inner")
                   .select(new_files.path.alias("source_uri"), F.col("length").alias("size_bytes"), "modified_ms",
                           "source_kind", "documents", "errors", F.lit(run_id).alias("run_id"),
                           now.alias("ingested_at")))
        lake.merge_insert(INGESTED_SOURCES, sources)

        documents, files_done = per_file.agg(F.sum("documents"), F.count(F.when(F.col("splits_done") == F.col("splits"), 1))).first()
        dropped_images = F.sum(F.get_json_object("metadata", "$.images_dropped").cast("long"))
        for row in parsed.groupBy("record_type", "error_kind").agg(
                F.count(F.lit(1)).alias("count"), dropped_images.alias("images_dropped")).collect():
            if row.record_type == "document":  # navigation images and icons the HTML extractor dropped
                stage.count("html_images_dropped", row.images_dropped or 0)
            if row.record_type == "error":
                stage.count(f"error:{row.error_kind}", row["count"])
            elif row.record_type == "blob":
                stage.count("blobs", row["count"])
        stage.count("documents", documents or 0)
        stage.count("files_ingested", files_done or 0)
        stage.count("files_incomplete", stage.rows_in - (files_done or 0))
        stage.rows_out = documents or 0
        per_file.unpersist()
        parsed.unpersist()
        new_files.unpersist()
        files.unpersist()
    return stage
