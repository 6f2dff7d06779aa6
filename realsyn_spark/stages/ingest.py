"""Stage 1a: ingest raw files (WARC/ARC, PDF, OBELICS JSONL/Parquet, HTML) into Delta.

Writes `documents` (ordered text/image nodes), `image_blobs` (image bytes that arrive inside the
sources) and `ingest_errors` (quarantine). Files already listed in `ingested_sources` with the same
size and modification time are skipped, and every write is a MERGE on a deterministic key, so a rerun
(also after a crash half-way) adds nothing twice.
"""
from __future__ import annotations

import datetime as dt
import io
import json
from typing import Iterator

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from realsyn_spark.config import RealSynConfig
from realsyn_spark.ids import stable_id
from realsyn_spark.runlog import StageRun, stage_run
from realsyn_spark.sources import Blob, Document, SourceError
from realsyn_spark.sources.detect import detect_kind
from realsyn_spark.tables import DOCUMENTS, IMAGE_BLOBS, INGEST_ERRORS, INGESTED_SOURCES, NODE, Lake

# One parsed record of any kind; the three tables are projections of it.
PARSED = T.StructType([
    T.StructField("record_type", T.StringType(), False),   # document | blob | error
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
])


def document_id(doc: Document) -> str:
    return stable_id(doc.source_uri, doc.record_offset, doc.url)


_COLUMNS = [f.name for f in PARSED.fields]


def _record_row(rec, path: str) -> dict:
    """One PARSED row; every column present (None, never NaN) so Arrow sees clean object columns."""
    return {**dict.fromkeys(_COLUMNS), "source_uri": path, **_fields(rec)}


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


def parse_files(html_base_url: str, max_bytes: int):
    """mapInPandas body: binaryFile rows (path, length, content) -> parsed records."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from realsyn_spark.sources.dispatch import parse_source

        for frame in batches:
            rows = []
            for path, length, content in zip(frame["path"], frame["length"], frame["content"]):
                if length > max_bytes:
                    rows.append(_record_row(SourceError(path, None, "too_large",
                                                        f"{length} bytes exceeds ingest.max_document_bytes"), path))
                    continue
                for rec in parse_source(path, io.BytesIO(content), detect_kind(path), html_base_url):
                    rows.append(_record_row(rec, path))
            yield pd.DataFrame(rows, columns=_COLUMNS, dtype=object)
    return run


def list_input_files(spark: SparkSession, paths: list[str]) -> DataFrame:
    """Input files with size and mtime (no content read yet), only the kinds we can parse."""
    listing = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
               .load(paths).select("path", "length", "modificationTime"))
    kind = F.udf(detect_kind, T.StringType())
    return (listing.withColumn("source_kind", kind("path")).where(F.col("source_kind").isNotNull())
            .withColumn("modified_ms", (F.col("modificationTime").cast("double") * 1000).cast("long")))


def run(spark: SparkSession, cfg: RealSynConfig, run_id: str) -> StageRun:
    lake = Lake(spark, cfg.lake)
    with stage_run(lake, cfg, run_id, "ingest") as stage:
        files = list_input_files(spark, cfg.ingest.input_paths)
        seen = lake.read(INGESTED_SOURCES).select("source_uri", "size_bytes", "modified_ms")
        new_files = (files.join(seen, (files.path == seen.source_uri) & (files.length == seen.size_bytes)
                                & (files.modified_ms == seen.modified_ms), "left_anti").cache())
        stage.rows_in = new_files.count()
        stage.count("files_skipped_already_ingested", files.count() - stage.rows_in)
        if stage.rows_in == 0:
            stage.rows_out = 0
            return stage

        paths = [r.path for r in new_files.select("path").collect()]
        content = (spark.read.format("binaryFile").load(paths)
                   .repartition(max(1, min(len(paths), spark.sparkContext.defaultParallelism * 2))))
        parsed = content.mapInPandas(parse_files(cfg.ingest.html_base_url, cfg.ingest.max_document_bytes),
                                     PARSED).persist(StorageLevel.MEMORY_AND_DISK)
        now = F.lit(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)).cast("timestamp")

        docs = parsed.where("record_type = 'document'").withColumn("run_id", F.lit(run_id)) \
            .withColumn("ingested_at", now).dropDuplicates(["doc_id"])
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
            F.sum(F.when(F.col("record_type") == "document", 1).otherwise(0)).alias("documents"),
            F.sum(F.when(F.col("record_type") == "error", 1).otherwise(0)).alias("errors"))
        # Recorded last: a crash before this line means the files are parsed again and MERGEd onto themselves.
        sources = (new_files.join(per_file, new_files.path == per_file.source_uri, "left")
                   .select(new_files.path.alias("source_uri"), F.col("length").alias("size_bytes"), "modified_ms",
                           "source_kind", F.coalesce("documents", F.lit(0)).alias("documents"),
                           F.coalesce("errors", F.lit(0)).alias("errors"), F.lit(run_id).alias("run_id"),
                           now.alias("ingested_at")))
        lake.merge_insert(INGESTED_SOURCES, sources)

        counts = {r.record_type: r["count"] for r in parsed.groupBy("record_type").count().collect()}
        for kind_row in parsed.where("record_type = 'error'").groupBy("error_kind").count().collect():
            stage.count(f"error:{kind_row.error_kind}", kind_row["count"])
        stage.count("documents", counts.get("document", 0))
        stage.count("blobs", counts.get("blob", 0))
        stage.rows_out = counts.get("document", 0)
        parsed.unpersist()
        new_files.unpersist()
    return stage
