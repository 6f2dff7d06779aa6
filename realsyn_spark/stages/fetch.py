"""Stage 1b: make every image URL of the documents an `image_blobs` row with bytes and a status.

- Blobs that arrived inside the sources (status `pending`) are decode-checked: sha256, width, height,
  format, or a decode error.
- URLs that only appear as image nodes are downloaded by the safe fetcher (SSRF guard, size and pixel
  limits, retries) inside `mapInPandas`, each distinct URL once. A URL that already has a row is never
  fetched again, except `deferred` ones: a task stops starting URLs when its `fetch.task_budget_s` runs
  out, stores the rest as `deferred`, and the next run fetches them. Failures keep their status in
  `image_blobs` and a row in `ingest_errors`.
"""
from __future__ import annotations

import datetime as dt
import time
from typing import Iterator

import pandas as pd
from pyspark.sql import functions as F

from realsyn_spark.config import FetchConfig, RealSynConfig
from realsyn_spark.runlog import StageContext, StageRun
from realsyn_spark.sparkutil import arrow_batch_rows
from realsyn_spark.tables import DOCUMENTS, IMAGE_BLOBS, INGEST_ERRORS

_INSPECTED_COLUMNS = ["status", "image_bytes", "sha256", "width", "height", "format", "error"]


def _inspected(info, data: bytes | None) -> dict:
    return {"status": info.status, "image_bytes": data if info.status == "ok" else None,
            "sha256": info.sha256, "width": info.width, "height": info.height, "format": info.format,
            "error": info.error}


def inspect_blobs(max_pixels: int):
    """mapInPandas body: pending blobs -> decode-checked blobs (bytes dropped when not decodable)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from realsyn_spark.images import inspect_image

        for frame in batches:
            rows = [_inspected(inspect_image(data, max_pixels), data) for data in frame["image_bytes"]]
            out = pd.DataFrame(rows, columns=_INSPECTED_COLUMNS, dtype=object)
            out.insert(0, "image_url", frame["image_url"].to_numpy())
            yield out
    return run


def fetch_urls(cfg: FetchConfig):
    """mapInPandas body: distinct URLs -> downloaded, decode-checked blobs (the typed section travels in
    the closure as it is: pydantic models pickle)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from realsyn_spark.fetcher import ImageFetcher

        # The budget counts from the task's first batch, so a task of slow hosts ends in bounded time.
        stop_at = time.monotonic() + cfg.task_budget_s
        # One fetcher per task: its connection pool and DNS answers are reused across Arrow batches.
        with ImageFetcher(cfg, per_host_limit=cfg.per_host_limit) as fetcher:
            for frame in batches:
                rows = []
                for result in fetcher.fetch_many(frame["image_url"].tolist(), stop_at=stop_at):
                    if result.ok:  # the fetcher already decode-checked the bytes
                        rows.append(_inspected(result.image, result.data))
                    else:
                        rows.append({"status": result.status, "image_bytes": None, "sha256": None, "width": None,
                                     "height": None, "format": None, "error": result.error})
                out = pd.DataFrame(rows, columns=_INSPECTED_COLUMNS, dtype=object)
                out.insert(0, "image_url", frame["image_url"].to_numpy())
                yield out
    return run


_BLOB_FIELDS = "image_url string, status string, image_bytes binary, sha256 string, width int, height int, " \
               "format string, error string"


_URLS_PER_TASK = 64
_NOT_ERRORS = "('ok', 'pending', 'deferred')"  # statuses that are not failures of the URL


def fetch_task_count(urls: int, cfg: RealSynConfig) -> int:
    """Tasks for `urls` downloads, from data and config only (Spark Connect has no defaultParallelism)."""
    return max(1, min(cfg.spark.shuffle_partitions * 4, urls // _URLS_PER_TASK + 1))


def run(ctx: StageContext) -> StageRun:
    spark, cfg, lake, run_id = ctx.spark, ctx.cfg, ctx.lake, ctx.run_id
    now = F.lit(dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)).cast("timestamp")
    with ctx.stage as stage:
        blobs = lake.read(IMAGE_BLOBS)
        pending = blobs.where("status = 'pending'").select("image_url", "image_bytes", "origin")
        inspected = (pending.mapInPandas(inspect_blobs(cfg.fetch.max_pixels), _BLOB_FIELDS)
                     .join(pending.select("image_url", "origin"), "image_url")
                     .withColumn("run_id", F.lit(run_id)).withColumn("stored_at", now))
        with arrow_batch_rows(spark, 256):
            lake.upsert(IMAGE_BLOBS, inspected, update_columns=_INSPECTED_COLUMNS + ["run_id", "stored_at"])

        image_urls = (lake.read(DOCUMENTS).select(F.explode("nodes").alias("n"))
                      .where("n.kind = 'image' AND n.image_url IS NOT NULL")
                      .select(F.col("n.image_url").alias("image_url")).distinct())
        settled = lake.read(IMAGE_BLOBS).where("status <> 'deferred'").select("image_url")
        missing = image_urls.join(settled, "image_url", "left_anti").cache()
        stage.rows_in = missing.count()
        if cfg.fetch.enabled and stage.rows_in:
            tasks = fetch_task_count(stage.rows_in, cfg)
            fetched = (missing.repartition(tasks)
                       .mapInPandas(fetch_urls(cfg.fetch), _BLOB_FIELDS)
                       .withColumn("origin", F.lit("http")).withColumn("run_id", F.lit(run_id))
                       .withColumn("stored_at", now))
            # Small Arrow batches: a batch of downloaded images is held in memory at once.
            # upsert, not insert-only: a URL deferred last run now gets its real status.
            with arrow_batch_rows(spark, 256):
                lake.upsert(IMAGE_BLOBS, fetched, update_columns=_INSPECTED_COLUMNS + ["origin", "run_id", "stored_at"])
        missing.unpersist()

        failed = (lake.read(IMAGE_BLOBS).where(f"status NOT IN {_NOT_ERRORS}")
                  .select(F.sha2(F.concat_ws("\u001f", F.lit("fetch"), "image_url"), 256).substr(1, 24)
                          .alias("error_id"), F.lit("fetch").alias("stage"), F.col("image_url").alias("source_uri"),
                          F.lit(None).cast("string").alias("location"), F.col("status").alias("kind"),
                          F.coalesce("error", "status").alias("reason"), F.lit(run_id).alias("run_id"),
                          now.alias("recorded_at")))
        lake.merge_insert(INGEST_ERRORS, failed)
        for row in lake.read(IMAGE_BLOBS).groupBy("status").count().collect():
            stage.count(f"status:{row.status}", row["count"])
        stage.rows_out = stage.counters.get("status:ok", 0)
    return stage
