"""Stage 3b: semantic redundancy — images and sentences whose CLIP embeddings nearly coincide.

Runs after `embed` (it needs the vectors) and before `retrieve`. Candidates are the rows the filters
keep (`filter_reason` null, extract's decision) that have a vector for the model embed recorded. The same
implementation serves both modalities (`dedup.semantic_duplicate_groups`: k-means, then union-find per
cluster; the member nearest each group's centroid is kept). The groups are stored in
`semantic_duplicates`; then this stage composes the final `drop_reason` / `duplicate_of` of every row from
the filters' decision and the groups (realsyn_spark/decisions.py, the only writer of those two columns),
rewriting only rows whose decision changed. It runs also when semantic dedup is off or skipped: the
filters' decision is then the final one.
"""
from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from realsyn_spark.config import RealSynConfig
from realsyn_spark.decisions import compose
from realsyn_spark.dedup import semantic_duplicate_groups
from realsyn_spark.runlog import StageContext, StageRun
from realsyn_spark.tables import (IMAGE_EMBEDDINGS, IMAGES, SEMANTIC_DUPLICATES, SENTENCE_EMBEDDINGS, SENTENCES,
                                  Lake)

log = logging.getLogger("realsyn")

MODALITIES = {
    # kind: (table, embeddings table, id column, threshold setting, enabled setting)
    "image": (IMAGES, IMAGE_EMBEDDINGS, "image_id", "image_threshold", "semantic_images"),
    "sentence": (SENTENCES, SENTENCE_EMBEDDINGS, "sentence_id", "text_threshold", "semantic_sentences"),
}


def semantic_candidates(lake: Lake, kind: str, model_id: str) -> DataFrame:
    table, vectors, id_col, *_ = MODALITIES[kind]
    rows = lake.read(table).where("filter_reason IS NULL").select(id_col)
    return (lake.read(vectors).where(F.col("model_id") == model_id).select(id_col, "embedding")
            .join(rows, id_col))


def decide(spark: SparkSession, lake: Lake, cfg: RealSynConfig, kind: str, model_id: str, run_id: str,
           stage: StageRun) -> DataFrame:
    """Semantic duplicate rows of one modality (the `semantic_duplicates` schema)."""
    _, _, id_col, threshold_key, _ = MODALITIES[kind]
    d = cfg.dedup
    groups, counters = semantic_duplicate_groups(
        spark, semantic_candidates(lake, kind, model_id), id_col, getattr(d, threshold_key), d.items_per_cluster,
        d.n_clusters, d.kmeans_sample_size, d.kmeans_iterations, d.seed,
        ship_to=(lake.root, cfg.spark.closure_max_bytes))
    for key, value in counters.items():
        stage.count(f"{kind}_{key}", value)
    return (groups.withColumn("kind", F.lit(kind)).withColumn("model_id", F.lit(model_id))
            .withColumn("run_id", F.lit(run_id)))


def _same_decisions(lake: Lake, new: DataFrame) -> bool:
    cols = ["kind", "item_id", "representative_id"]
    old = lake.read(SEMANTIC_DUPLICATES).select(*cols)
    new = new.select(*cols)
    return old.exceptAll(new).limit(1).count() == 0 and new.exceptAll(old).limit(1).count() == 0


def write_decisions(lake: Lake, kind: str, semantic: DataFrame) -> DataFrame:
    """Compose and store drop_reason / duplicate_of of one modality (changed rows only); returns the
    composed (id, drop_reason, duplicate_of) frame, checkpointed."""
    table, _, id_col, *_ = MODALITIES[kind]
    composed = compose(lake.read(table), semantic.where(F.col("kind") == kind), kind, id_col).localCheckpoint(eager=True)
    lake.update_columns(table, composed)
    return composed


def run(ctx: StageContext) -> StageRun:
    spark, cfg, lake, run_id = ctx.spark, ctx.cfg, ctx.lake, ctx.run_id
    with ctx.stage as stage:
        embedding = ctx.embedding_model()
        model_id, random_weights = embedding.model_id, embedding.random_weights
        parts = []
        for kind, (_, _, _, _, enabled_key) in MODALITIES.items():
            if not getattr(cfg.dedup, enabled_key):
                stage.count(f"{kind}_disabled", 1)
                continue
            if random_weights and cfg.dedup.on_random_weights == "skip":
                log.warning("SEMANTIC DEDUP OF %sS SKIPPED: the CLIP vectors come from random weights (%s); "
                            "set dedup.on_random_weights=run to force it", kind.upper(), model_id)
                stage.count(f"{kind}_skipped_random_weights", 1)
                continue
            parts.append(decide(spark, lake, cfg, kind, model_id, run_id, stage))
        semantic = parts[0] if parts else spark.createDataFrame([], SEMANTIC_DUPLICATES.schema)
        for part in parts[1:]:
            semantic = semantic.unionByName(part)
        semantic = lake.conform(SEMANTIC_DUPLICATES, semantic).localCheckpoint(eager=True)
        stage.rows_in = sum(semantic_candidates(lake, kind, model_id).count() for kind in MODALITIES)
        if not _same_decisions(lake, semantic):
            lake.overwrite(SEMANTIC_DUPLICATES, semantic)
        kept = 0
        for kind in MODALITIES:
            composed = write_decisions(lake, kind, semantic)
            stage.count(f"{kind}s:semantic_duplicate", composed.where("drop_reason = 'semantic_duplicate'").count())
            kept += composed.where("drop_reason IS NULL").count()
        stage.rows_out = kept
    return stage
