"""Stage 2: Real-World Data Extraction — images and sentences out of documents, then the filters.

Extraction appends (MERGE on a deterministic id) the image occurrences and sentences of documents not
yet extracted. The filters then decide `drop_reason` for *every* row from light columns only, and only
rows whose decision changed are rewritten. So a rerun changes nothing, a threshold change needs no
re-ingest, and an incremental run decides exactly as a full rebuild would (exact duplicates keep the
smallest id, whenever it arrived).
"""
from __future__ import annotations

from typing import Iterator

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from realsyn_spark import text as textrules
from realsyn_spark.config import ImageFilterConfig, RealSynConfig, SentenceFilterConfig
from realsyn_spark.runlog import StageRun, stage_run
from realsyn_spark.tables import DOCUMENTS, IMAGE_BLOBS, IMAGES, SENTENCES, Lake


def segment_paragraphs(normalise: bool):
    """mapInPandas body: text nodes -> one row per sentence."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            rows = []
            for doc_id, position, paragraph in zip(frame["doc_id"], frame["position"], frame["text"]):
                for index, sentence in enumerate(textrules.split_sentences(paragraph)):
                    text = textrules.normalise_style(sentence) if normalise else sentence
                    rows.append((doc_id, int(position), index, text, textrules.count_words(text)))
            yield pd.DataFrame(rows, columns=["doc_id", "position", "sentence_index", "text", "n_words"])
    return run


def _first_failing(rules: list[tuple[str, Column]]) -> Column:
    """drop_reason = the name of the first rule that holds, in the paper's order; null when all pass."""
    decision = F.lit(None).cast("string")
    for name, dropped in reversed(rules):
        decision = F.when(dropped, F.lit(name)).otherwise(decision)
    return decision


def image_rules(cfg: ImageFilterConfig) -> list[tuple[str, Column]]:
    short_side = F.least("width", "height")
    ratio = F.col("width") / F.col("height")
    return [
        ("not_fetched", F.col("status").isNull() | (F.col("status") == "pending")),
        ("unavailable", F.col("status") != "ok"),
        ("min_side", short_side < cfg.min_side),
        ("aspect_ratio", (ratio > cfg.max_aspect_ratio) | (ratio < 1.0 / cfg.max_aspect_ratio)),
    ]


def sentence_rules(cfg: SentenceFilterConfig) -> list[tuple[str, Column]]:
    rules = []
    if cfg.drop_emoji:
        rules.append(("emoji", F.col("text").rlike(textrules.EMOJI_PATTERN)))
    if cfg.drop_urls:
        rules.append(("url", F.col("text").rlike(textrules.URL_PATTERN)))
    rules += [("min_words", F.col("n_words") < cfg.min_words), ("max_words", F.col("n_words") > cfg.max_words)]
    return rules


def mark_exact_duplicates(df: DataFrame, id_col: str, key: Column) -> DataFrame:
    """Among rows that passed the rules, every row but the smallest id per key is an exact duplicate."""
    survivors = df.where(F.col("drop_reason").isNull())
    first = Window.partitionBy("_dedup_key").orderBy(id_col)
    ranked = (survivors.withColumn("_dedup_key", key)
              .withColumn("_first", F.first(id_col).over(first))
              .select(id_col, "_first"))
    joined = df.join(ranked, id_col, "left")
    is_dup = F.col("_first").isNotNull() & (F.col("_first") != F.col(id_col))
    return (joined.withColumn("drop_reason", F.when(is_dup, F.lit("exact_duplicate")).otherwise(F.col("drop_reason")))
            .withColumn("duplicate_of", F.when(is_dup, F.col("_first")))
            .drop("_first"))


def extract_new(lake: Lake, run_id: str, normalise: bool) -> int:
    docs = lake.read(DOCUMENTS)
    done = lake.read(IMAGES).select("doc_id").union(lake.read(SENTENCES).select("doc_id")).distinct()
    # Checkpointed, not cached: the MERGE into `images` below would invalidate a cache that reads it,
    # and the recomputed set of "new" documents would then be empty for the sentences.
    new_docs = docs.join(done, "doc_id", "left_anti").localCheckpoint(eager=True)
    n_new = new_docs.count()
    nodes = new_docs.select("doc_id", F.explode("nodes").alias("n")).select("doc_id", "n.*")
    images = nodes.where("kind = 'image' AND image_url IS NOT NULL").select(
        F.sha2(F.concat_ws("\u001f", "doc_id", F.col("position").cast("string")), 256).substr(1, 24).alias("image_id"),
        "doc_id", "position", "image_url", "alt",
        *[F.lit(None).cast(t).alias(c) for c, t in
          [("sha256", "string"), ("width", "int"), ("height", "int"), ("drop_reason", "string"),
           ("duplicate_of", "string")]],
        F.lit(run_id).alias("run_id"))
    sentences = (nodes.where("kind = 'text' AND text IS NOT NULL").select("doc_id", "position", "text")
                 .mapInPandas(segment_paragraphs(normalise),
                              "doc_id string, position int, sentence_index int, text string, n_words int")
                 .select(F.sha2(F.concat_ws("\u001f", "doc_id", F.col("position").cast("string"),
                                            F.col("sentence_index").cast("string")), 256).substr(1, 24)
                         .alias("sentence_id"), "*")
                 .withColumn("drop_reason", F.lit(None).cast("string"))
                 .withColumn("duplicate_of", F.lit(None).cast("string")).withColumn("run_id", F.lit(run_id)))
    lake.merge_insert(IMAGES, images)
    lake.merge_insert(SENTENCES, sentences)
    return n_new


def decide_images(lake: Lake, cfg: ImageFilterConfig) -> DataFrame:
    blobs = lake.read(IMAGE_BLOBS).select("image_url", "status", F.col("sha256").alias("b_sha"),
                                          F.col("width").alias("b_w"), F.col("height").alias("b_h"))
    rows = (lake.read(IMAGES).drop("drop_reason", "duplicate_of", "sha256", "width", "height")
            .join(blobs, "image_url", "left")
            .withColumnRenamed("b_sha", "sha256").withColumnRenamed("b_w", "width").withColumnRenamed("b_h", "height"))
    decided = rows.withColumn("drop_reason", _first_failing(image_rules(cfg)))
    if cfg.exact_dedup:
        decided = mark_exact_duplicates(decided, "image_id", F.col("sha256"))
    else:
        decided = decided.withColumn("duplicate_of", F.lit(None).cast("string"))
    return decided.drop("status")


def decide_sentences(lake: Lake, cfg: SentenceFilterConfig) -> DataFrame:
    rows = lake.read(SENTENCES).drop("drop_reason", "duplicate_of")
    decided = rows.withColumn("drop_reason", _first_failing(sentence_rules(cfg)))
    if cfg.exact_dedup:
        dedup_key = F.trim(F.regexp_replace(F.lower("text"), r"[^\p{L}\p{N}]+", " "))
        return mark_exact_duplicates(decided, "sentence_id", dedup_key)
    return decided.withColumn("duplicate_of", F.lit(None).cast("string"))


def _count_reasons(stage: StageRun, df: DataFrame, prefix: str) -> int:
    kept = 0
    for row in df.groupBy("drop_reason").count().collect():
        if row.drop_reason is None:
            kept = row["count"]
        else:
            stage.count(f"{prefix}:{row.drop_reason}", row["count"])
    stage.count(f"{prefix}:kept", kept)
    return kept


def run(spark: SparkSession, cfg: RealSynConfig, run_id: str) -> StageRun:
    lake = Lake(spark, cfg.lake)
    with stage_run(lake, cfg, run_id, "extract") as stage:
        stage.rows_in = extract_new(lake, run_id, cfg.sentence_filter.normalise_style)
        decision_columns = ["sha256", "width", "height", "drop_reason", "duplicate_of"]
        lake.upsert(IMAGES, decide_images(lake, cfg.image_filter), update_columns=decision_columns)
        lake.upsert(SENTENCES, decide_sentences(lake, cfg.sentence_filter),
                    update_columns=["drop_reason", "duplicate_of"])
        images = lake.read(IMAGES)
        sentences = lake.read(SENTENCES)
        stage.count("images:total", images.count())
        stage.count("sentences:total", sentences.count())
        stage.rows_out = _count_reasons(stage, images, "images") + _count_reasons(stage, sentences, "sentences")
    return stage
