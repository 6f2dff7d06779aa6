"""Stage 6b: export the dataset — one row per image with its realistic and synthetic texts.

The Delta table `dataset` is rewritten in one commit from the stage tables (it is a view of them: a
rerun gives the same rows). Files for trainers are written beside it: Parquet with the released
RealSyn columns (`raw_image_url`, `text1..3`, `syn_text`) plus ids, scores, bytes, scale flags and
provenance (`source_doc_ids`, `source_image_urls`: every occurrence the kept image stands for, so a
takedown request against any duplicate's URL or page finds the row), and WebDataset shards
(`udfs/shards.py`) for open_clip. Each file export is replaced whole: WebDataset shards are written to a
staging folder and moved into place once every shard and `sizes.json` exist, so a crash leaves the
previous export readable and a rerun writes the same bytes.

Files are written per scale in `export.scales` (realsyn_spark/scales.py: each a filter on the cluster
ranks; `all` at the top level, others in subfolders), then the dataset card (realsyn_spark/card.py).
"""
from __future__ import annotations

import io
import json
import math
import tarfile

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from realsyn_spark import hadoopfs, scales
from realsyn_spark.config import ExportConfig, RealSynConfig
from realsyn_spark.dedup import image_sources
from realsyn_spark.runlog import StageContext, StageRun
from realsyn_spark.sources.fileio import open_output
from realsyn_spark.sparkutil import arrow_batch_rows
from realsyn_spark.tables import BALANCED, DATASET, IMAGE_BLOBS, IMAGES, RETRIEVALS, SENTENCES, SYNTHETIC_TEXTS, Lake
from udfs.shards import SHARD_NAME, SHARD_RESULT_SCHEMA, shard_writer


def realistic_texts(lake: Lake, texts_per_image: int) -> DataFrame:
    """Pivot the top retrievals into text1..N / score1..N / sentence_id1..N columns."""
    ranked = (lake.read(RETRIEVALS).where(F.col("rank") <= texts_per_image)
              .join(lake.read(SENTENCES).select("sentence_id", "text"), "sentence_id"))
    columns = []
    for r in range(1, texts_per_image + 1):
        at_rank = F.col("rank") == r
        columns += [F.max(F.when(at_rank, F.col("text"))).alias(f"text{r}"),
                    F.max(F.when(at_rank, F.col("score"))).alias(f"score{r}"),
                    F.max(F.when(at_rank, F.col("sentence_id"))).alias(f"sentence_id{r}")]
    return ranked.groupBy("image_id").agg(*columns)


def dataset_rows(lake: Lake, cfg: RealSynConfig, run_id: str) -> DataFrame:
    caps = sorted(cfg.balance.caps)
    balanced = lake.read(BALANCED).where("drop_reason IS NULL")
    images = lake.read(IMAGES).select("image_id", F.col("image_url").alias("raw_image_url"), "image_url")
    blobs = lake.read(IMAGE_BLOBS).select("image_url", "image_bytes")
    scales = F.filter(F.array(*[F.lit(c) for c in caps]), lambda cap: F.col("cluster_rank") <= cap)
    rows = (balanced.join(images, "image_id").join(blobs, "image_url", "left")
            .join(realistic_texts(lake, cfg.export.texts_per_image), "image_id", "left")
            .join(lake.read(SYNTHETIC_TEXTS).select("image_id", "syn_text"), "image_id", "left")
            .join(image_sources(lake).select("image_id", F.col("doc_ids").alias("source_doc_ids"),
                                             F.col("image_urls").alias("source_image_urls")), "image_id", "left")
            .withColumn("scales", scales).withColumn("run_id", F.lit(run_id)))
    for r in range(cfg.export.texts_per_image + 1, 4):  # the table always has text1..3 columns
        rows = rows.withColumn(f"text{r}", F.lit(None).cast("string")).withColumn(f"score{r}", F.lit(None).cast("float")) \
            .withColumn(f"sentence_id{r}", F.lit(None).cast("string"))
    return rows


def _empty_tar() -> bytes:
    buffer = io.BytesIO()
    tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT).close()
    return buffer.getvalue()


def write_webdataset(spark: SparkSession, dataset: DataFrame, folder: str, cfg: ExportConfig) -> dict[str, int]:
    """Shards 00000.tar .. (n-1).tar and sizes.json (shard name -> samples, as open_clip's
    get_dataset_size reads it) under `folder`, replacing what was there; returns sizes.json's content."""
    rows = dataset.where(F.col("image_bytes").isNotNull()).drop("run_id")
    n_shards = max(1, math.ceil(rows.count() / cfg.samples_per_shard))
    staging = hadoopfs.qualified(spark, f"{folder}._staging")
    hadoopfs.delete(spark, staging)   # leftovers of a crashed export
    sharded = (rows.withColumn("shard", F.pmod(F.xxhash64("image_id"), F.lit(n_shards)).cast("int"))
               .repartition(n_shards, "shard").sortWithinPartitions("shard", "image_id"))
    with arrow_batch_rows(spark, 256):   # rows carry image bytes
        written = sharded.mapInPandas(shard_writer(staging, cfg.webdataset_caption), SHARD_RESULT_SCHEMA).collect()
    sizes = {SHARD_NAME.format(i): 0 for i in range(n_shards)}
    sizes.update({r.name: int(r.samples) for r in written})
    # Written like the shards (pyarrow.fs), so the folder holds nothing but what a reader expects.
    extra = {name: _empty_tar() for name in set(sizes) - {r.name for r in written}}  # keep the brace range whole
    extra["sizes.json"] = json.dumps(sizes, indent=1, sort_keys=True).encode()
    for name, data in extra.items():
        with open_output(f"{staging}/{name}") as out:
            out.write(data)
    hadoopfs.delete(spark, folder)
    hadoopfs.rename(spark, staging, folder)
    return sizes


def write_files(spark: SparkSession, dataset: DataFrame, folder: str, cfg: ExportConfig, stage: StageRun,
                prefix: str = "") -> None:
    """One scale's files: Parquet (released columns first) and/or WebDataset shards under `folder`."""
    extra = [c for c in dataset.columns if c not in ("raw_image_url", "text1", "text2", "text3", "syn_text")]
    released_first = dataset.select("raw_image_url", "text1", "text2", "text3", "syn_text", *extra)
    if "parquet" in cfg.formats:
        released_first.write.mode("overwrite").parquet(f"{folder}/parquet")
        stage.count(f"{prefix}parquet_rows", spark.read.parquet(f"{folder}/parquet").count())
    if "webdataset" in cfg.formats:
        sizes = write_webdataset(spark, dataset, f"{folder}/webdataset", cfg)
        stage.count(f"{prefix}webdataset_shards", len(sizes))
        stage.count(f"{prefix}webdataset_samples", sum(sizes.values()))


def scale_folder(out_dir: str, scale: scales.Scale) -> str:
    """`all` keeps the export's top level (parquet/, webdataset/); every other scale gets a subfolder."""
    return out_dir if scale.name == "all" else f"{out_dir}/{scale.name}"


def run(ctx: StageContext) -> StageRun:
    spark, cfg, lake, run_id = ctx.spark, ctx.cfg, ctx.lake, ctx.run_id
    with ctx.stage as stage:
        lake.overwrite(DATASET, dataset_rows(lake, cfg, run_id))
        dataset = lake.read(DATASET)
        stage.rows_in = dataset.count()
        out_dir = cfg.export.output_dir or f"{lake.root}/export"
        histogram = scales.size_histogram(lake.read(BALANCED))
        chosen = [scales.resolve(histogram, spec) for spec in cfg.export.scales]
        for scale in chosen:
            prefix = "" if scale.name == "all" else f"{scale.name}:"
            stage.count(f"{prefix}scale_rows", scale.rows)
            if scale.cap is not None:
                stage.count(f"{prefix}scale_cap", scale.cap)
            if scale.target is not None:
                print(f"export: scale {scale.name} = cap {scale.cap}: {scale.rows} images (asked {scale.target})")
            write_files(spark, scales.capped(dataset, scale.cap), scale_folder(out_dir, scale), cfg.export, stage,
                        prefix)
        for cap in cfg.balance.caps:
            stage.count(f"scale_cap_{cap}", scales.rows_at_cap(histogram, cap))
        if cfg.export.card:
            from realsyn_spark import card

            figures = card.write_card(lake, cfg, run_id, dataset, histogram, chosen, f"{out_dir}/card")
            stage.count("card_figures", figures)
        stage.rows_out = stage.rows_in
    return stage
