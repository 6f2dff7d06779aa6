"""Stage 6a: semantic balance sampling.

1. Similarity band: cosine between each image and its synthetic text (same CLIP space); pairs outside
   [similarity_min, similarity_max] are dropped (above: OCR-dominated images, below: mismatches).
2. Two-level spherical k-means over the surviving image embeddings, k = one cluster per ~168 images
   (1M clusters for 168.3M pairs in the paper): k1 = sqrt(k) coarse cells trained on the driver over a
   bounded sample; each cell's fine centroids (k_cell proportional to the cell's images, sum = k)
   trained in executor tasks, one per cell, and written to Delta from there. Every image probes its
   `coarse_probe` nearest cells and takes the nearest fine centroid inside them, in cogroup tasks that
   meet a cell's images with only that cell's centroids: neither the driver nor any task holds the
   whole centroid set (no broadcast).
3. Inside each cluster images get a deterministic pseudo-random rank (hash of image id and seed), so a
   cap t keeps rank <= t: min(|c|, t) uniformly chosen members. Scales are nested (RealSyn15M is inside
   30M is inside 100M) and any cap is a cheap filter over the same table.

Incremental: centroids are versioned in `balance_centroids` and frozen; a refresh assigns only images
not yet in `balanced` (or with a new synthetic text), deletes the rows of images withdrawn upstream, and
re-ranks only the clusters these joined or left (ranks are by hash, so the result is what a full
assignment to the same centroids gives). `balance.retrain` trains a new version; the run
log reports drift (share of new images far from their centroid) and advises when to retrain.
"""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from realsyn_spark.clustering import (HASH_BUCKETS, auto_clusters, content_fingerprint, sample_vectors,
                                      train_kmeans)
from realsyn_spark.config import BalanceConfig, RealSynConfig
from realsyn_spark.ids import stable_id
from realsyn_spark.runlog import EmbeddingModel, StageContext, StageRun
from realsyn_spark.sparkutil import arrow_batch_rows, parallelism
from realsyn_spark.stages.retrieve import kept_image_vectors
from realsyn_spark.tables import BALANCE_CENTROIDS, BALANCED, SYNTHETIC_EMBEDDINGS, SYNTHETIC_TEXTS, Lake
from udfs.balance_kmeans import FINE_ASSIGNED, FINE_CENTROIDS, PROBED, assign_fine, probe_cells, train_cell
from udfs.clip_embed import text_embedder
from udfs.retrieval import exact_top_k

COARSE_POINTS_PER_CLUSTER = 256   # FAISS's own default cap per centroid


def embed_new_synthetic_texts(spark: SparkSession, lake: Lake, cfg: RealSynConfig, embedding: EmbeddingModel,
                              run_id: str):
    model_id = embedding.model_id
    texts = lake.read(SYNTHETIC_TEXTS).select("request_hash", F.col("syn_text").alias("text")).dropDuplicates(["request_hash"])
    done = lake.read(SYNTHETIC_EMBEDDINGS).where(F.col("model_id") == model_id).select("request_hash")
    todo = texts.join(done, "request_hash", "left_anti").repartition(cfg.spark.shuffle_partitions)
    with arrow_batch_rows(spark, cfg.embed.batch_size * 8):
        vectors = todo.mapInPandas(text_embedder(embedding.config, "request_hash"),
                                   "request_hash string, model_id string, embedding array<float>")
        lake.merge_insert(SYNTHETIC_EMBEDDINGS, vectors.withColumn("run_id", F.lit(run_id)))


def similarity_band(lake: Lake, cfg: BalanceConfig, model_id: str) -> DataFrame:
    images = kept_image_vectors(lake, model_id).withColumnRenamed("embedding", "image_vec")
    synthetic = (lake.read(SYNTHETIC_TEXTS).select("image_id", "request_hash")
                 .join(lake.read(SYNTHETIC_EMBEDDINGS).where(F.col("model_id") == model_id)
                       .select("request_hash", F.col("embedding").alias("text_vec")), "request_hash"))
    pairs = images.join(synthetic, "image_id")
    similarity = F.aggregate(F.zip_with("image_vec", "text_vec", lambda a, b: a * b), F.lit(0.0).cast("float"),
                             lambda acc, x: acc + x)
    return (pairs.withColumn("similarity", similarity.cast("float"))
            .withColumn("drop_reason", F.when(F.col("similarity") < cfg.similarity_min, "similarity_below_min")
                        .when(F.col("similarity") > cfg.similarity_max, "similarity_above_max"))
            .select("image_id", "request_hash", "similarity", "drop_reason", F.col("image_vec").alias("embedding")))


def coarse_clusters(k: int) -> int:
    return max(1, int(round(math.sqrt(k))))


def per_cell_lookup(values: dict[int, int | float], k1: int, default) -> F.Column:
    """Column: the value for this row's `cell` (a k1-long literal array, k1 ~ sqrt(k): small)."""
    return F.element_at(F.array(*[F.lit(values.get(c, default)) for c in range(k1)]), F.col("cell") + 1)


def fine_plan(cell_counts: dict[int, int], k: int) -> tuple[dict[int, int], dict[int, int]]:
    """(k_cell, first cluster_id) per cell: k_cell proportional to the cell's images, dense ids."""
    n = max(1, sum(cell_counts.values()))
    k_cell, offset, start = {}, {}, 0
    for cell in sorted(cell_counts):
        k_cell[cell] = int(max(1, min(cell_counts[cell], round(cell_counts[cell] * k / n))))
        offset[cell], start = start, start + k_cell[cell]
    return k_cell, offset


def sample_cell_counts(sample: np.ndarray, coarse: np.ndarray, n_rows: int, n_probe: int,
                       z: float = 0.0) -> dict[int, int]:
    """Rows per coarse cell (an image counted in each of its `n_probe` nearest cells), estimated from a
    hash sample on the driver: exact counts would cost a full pass over the vectors (each a round trip
    through a Python worker). z > 0: a z-sigma upper bound instead of the estimate. Every cell gets at
    least one row, so no cell is left without fine centroids."""
    k1 = len(coarse)
    if len(sample) == 0:
        return {c: max(1, n_rows // k1) for c in range(k1)}
    _, nearest = exact_top_k(np.ascontiguousarray(sample, np.float32), coarse, min(n_probe, k1))
    counts = np.bincount(nearest.reshape(-1), minlength=k1).astype(np.float64)
    if len(sample) < n_rows:
        counts = (counts + z * np.sqrt(counts) + z * z) * (n_rows / len(sample))
    return {c: max(1, int(math.ceil(counts[c]))) for c in range(k1)}


def shuffle_partitions(spark: SparkSession, rows: int, cfg: BalanceConfig) -> int:
    """Partitions of a shuffle of `rows` vector rows: at most `rows_per_partition` each (a partition is
    sorted for its groups; a few GB in 4 partitions spill), at least the session's parallelism."""
    return max(parallelism(spark), int(math.ceil(rows / cfg.rows_per_partition)))


def coarse_sample(kept: DataFrame, n_kept: int, k1: int, cfg: BalanceConfig) -> np.ndarray:
    return sample_vectors(kept, n_kept, min(cfg.kmeans_sample_size, COARSE_POINTS_PER_CLUSTER * k1), cfg.seed,
                          "image_id")


def train_two_level(spark: SparkSession, lake: Lake, kept: DataFrame, n_kept: int, cfg: BalanceConfig,
                    model_id: str, version: str) -> np.ndarray:
    """Train and store one centroid version; returns the coarse centroids (the fine stay in Delta)."""
    k = auto_clusters(n_kept, cfg.images_per_cluster, cfg.n_clusters)
    k1 = coarse_clusters(k)
    drawn = coarse_sample(kept, n_kept, k1, cfg)
    coarse = train_kmeans(drawn, k1, cfg.kmeans_iterations, cfg.seed)
    k1, dim = coarse.shape
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    lake.merge_insert(BALANCE_CENTROIDS, spark.createDataFrame(
        [(version, "coarse", i, i, c.tolist(), model_id, now) for i, c in enumerate(coarse)], BALANCE_CENTROIDS.schema))
    home = kept.select("image_id", "embedding").mapInArrow(probe_cells(coarse, 1), PROBED)
    counts = sample_cell_counts(drawn, coarse, n_kept, 1)
    k_cell, offset = fine_plan(counts, k)
    fraction = {c: min(1.0, cfg.fine_points_per_cluster * k_cell[c] / counts[c]) for c in counts}
    draw = F.pmod(F.xxhash64("image_id", F.lit(cfg.seed + 2)), F.lit(HASH_BUCKETS))
    # fraction 1.0 -> threshold HASH_BUCKETS: every row of the cell is kept
    sample = (home.where(draw < per_cell_lookup({c: int(f * HASH_BUCKETS) for c, f in fraction.items()}, k1, 0))
              .withColumn("k_cell", per_cell_lookup(k_cell, k1, 1)).select("image_id", "cell", "k_cell", "vec")
              .repartition(shuffle_partitions(spark, cfg.fine_points_per_cluster * k, cfg), "cell"))
    fine = sample.groupBy("cell").applyInArrow(train_cell(dim, cfg.kmeans_iterations, cfg.seed), FINE_CENTROIDS)
    lake.merge_insert(BALANCE_CENTROIDS, fine.select(
        F.lit(version).alias("version"), F.lit("fine").alias("level"), "cell",
        (per_cell_lookup(offset, k1, 0) + F.col("fine")).alias("cluster_id"), "centroid",
        F.lit(model_id).alias("model_id"), F.lit(now).alias("created_at")))
    return coarse


def centroids_of(lake: Lake, version: str, level: str) -> DataFrame:
    return lake.read(BALANCE_CENTROIDS).where((F.col("version") == version) & (F.col("level") == level))


def load_coarse(lake: Lake, version: str) -> np.ndarray:
    table = centroids_of(lake, version, "coarse").orderBy("cluster_id").select("centroid").toArrow()
    from udfs.retrieval import arrow_vectors
    return arrow_vectors(table.column("centroid"))


def latest_version(lake: Lake, model_id: str) -> str | None:
    if not lake.exists(BALANCE_CENTROIDS):
        return None
    row = (lake.read(BALANCE_CENTROIDS).where((F.col("model_id") == model_id) & (F.col("level") == "coarse"))
           .orderBy(F.desc("created_at"), "version").select("version").first())
    return row.version if row else None


def assign_images(lake: Lake, images: DataFrame, version: str, coarse: np.ndarray, cfg: BalanceConfig) -> DataFrame:
    """(image_id, cluster_id, centroid_score): nearest fine centroid within the `coarse_probe` nearest cells.

    Cells' images and fine centroids meet in cogroup tasks keyed by (cell, chunk); a cell with more probed
    images than `max_images_per_task` (a 4-sigma bound estimated from a hash sample) is split into chunks
    by id hash, its centroids copied to each. Both sides are hash-partitioned alike into partitions of at
    most `rows_per_partition` probed rows, so the cogroup adds no shuffle of its own."""
    k1, dim = coarse.shape
    n_images = images.count()
    upper = sample_cell_counts(coarse_sample(images, n_images, k1, cfg), coarse, n_images, cfg.coarse_probe, z=4.0)
    chunks = {c: int(math.ceil(n / cfg.max_images_per_task)) for c, n in upper.items()}
    n_chunks = per_cell_lookup(chunks, k1, 1)
    parts = shuffle_partitions(lake.spark, n_images * min(cfg.coarse_probe, k1), cfg)
    probed = (images.select("image_id", "embedding").mapInArrow(probe_cells(coarse, cfg.coarse_probe), PROBED)
              .withColumn("chunk", F.pmod(F.xxhash64("image_id", F.lit(cfg.seed + 3)), n_chunks).cast("int"))
              .repartition(parts, "cell", "chunk"))
    fine = (centroids_of(lake, version, "fine").select("cell", "cluster_id", "centroid")
            .withColumn("chunk", F.explode(F.sequence(F.lit(0), n_chunks - 1))).repartition(parts, "cell", "chunk"))
    matched = (probed.groupBy("cell", "chunk").cogroup(fine.groupBy("cell", "chunk"))
               .applyInArrow(assign_fine(dim), FINE_ASSIGNED))
    best = matched.groupBy("image_id").agg(F.max(F.struct("score", "cluster_id")).alias("b"))
    return best.select("image_id", F.col("b.cluster_id").alias("cluster_id"), F.col("b.score").alias("centroid_score"))


def rank_in_clusters(assigned: DataFrame, seed: int) -> DataFrame:
    in_cluster = Window.partitionBy("cluster_id")
    shuffled = in_cluster.orderBy(F.xxhash64("image_id", F.lit(seed)), "image_id")
    return assigned.select("*", F.count(F.lit(1)).over(in_cluster).cast("int").alias("cluster_size"),
                           F.row_number().over(shuffled).cast("int").alias("cluster_rank"))


def centroid_version(model_id: str, fingerprint: tuple[int, int], cfg: BalanceConfig) -> str:
    return stable_id("balance-two-level", model_id, fingerprint, cfg.n_clusters, cfg.images_per_cluster,
                     cfg.kmeans_sample_size, cfg.kmeans_iterations, cfg.fine_points_per_cluster, cfg.seed, length=16)


def drift(lake: Lake, version: str, new: DataFrame, cfg: BalanceConfig) -> tuple[float, float]:
    """(threshold, share of new images below it): threshold = drift_quantile of the existing kept images'
    cosine to their centroid, so on unchanged data about drift_quantile of new images fall below it."""
    old = lake.read(BALANCED).where((F.col("centroid_version") == version) & F.col("centroid_score").isNotNull())
    quantiles = old.approxQuantile("centroid_score", [cfg.drift_quantile], 0.001)
    if not quantiles:
        return float("nan"), 0.0
    row = new.agg(F.count(F.lit(1)).alias("n"),
                  F.sum((F.col("centroid_score") < quantiles[0]).cast("long")).alias("far")).first()
    return quantiles[0], (row.far or 0) / max(1, row.n)


def full_build(lake: Lake, banded: DataFrame, kept: DataFrame, version: str, coarse, cfg: BalanceConfig, run_id):
    ranked = rank_in_clusters(assign_images(lake, kept, version, coarse, cfg), cfg.seed)
    lake.overwrite(BALANCED, banded.drop("embedding").join(ranked, "image_id", "left")
                   .withColumn("centroid_version", F.lit(version)).withColumn("run_id", F.lit(run_id)))


def refresh(lake: Lake, banded: DataFrame, version: str, coarse, cfg: BalanceConfig, run_id, stage) -> None:
    """Bring `balanced` to what a full assignment of `banded` to the frozen centroids gives, touching only
    what changed: new images and images with a new synthetic text are assigned, rows of images that left
    the band input (withdrawn upstream, e.g. a later file brought the duplicate that won) are deleted, and
    the clusters any of them joined or left are re-ranked."""
    stored = lake.read(BALANCED)
    current = banded.select("image_id", "request_hash")
    new = banded.join(stored.select("image_id", "request_hash"), ["image_id", "request_hash"], "left_anti").cache()
    gone = stored.join(current, ["image_id", "request_hash"], "left_anti").select("image_id", "cluster_id").cache()
    stage.count("new_images", new.count())
    stage.count("images_withdrawn", gone.join(current, "image_id", "left_anti").count())
    if stage.counters["new_images"] == 0 and gone.count() == 0:
        new.unpersist()
        gone.unpersist()
        return
    assigned = assign_images(lake, new.where("drop_reason IS NULL"), version, coarse, cfg).cache()
    if stage.counters["new_images"]:
        report_drift(lake, version, assigned, cfg, stage)
    rows = (new.drop("embedding").join(assigned, "image_id", "left")
            .withColumn("centroid_version", F.lit(version)).withColumn("run_id", F.lit(run_id)))
    touched = assigned.select("cluster_id").union(gone.select("cluster_id")).where("cluster_id IS NOT NULL").distinct()
    old = (stored.where("cluster_id IS NOT NULL").join(touched, "cluster_id", "left_semi")
           .join(gone, "image_id", "left_anti").drop("cluster_size", "cluster_rank"))
    kept_rows = rank_in_clusters(old.unionByName(rows.where("cluster_id IS NOT NULL")), cfg.seed)
    dropped = (rows.where("cluster_id IS NULL").withColumn("cluster_size", F.lit(None).cast("int"))
               .withColumn("cluster_rank", F.lit(None).cast("int")))
    # One MERGE inserts new rows, replaces changed ones, and rewrites old members' size and rank only where
    # those changed (old rows carry their own run_id). Deleting the withdrawn rows comes second: a crash
    # between the two leaves them for the rerun, which finds them again and re-ranks the same clusters.
    lake.upsert(BALANCED, kept_rows.unionByName(dropped))
    lake.delete_absent(BALANCED, current, keys=("image_id",))
    assigned.unpersist()
    new.unpersist()
    gone.unpersist()


def report_drift(lake: Lake, version: str, assigned: DataFrame, cfg: BalanceConfig, stage) -> None:
    threshold, share = drift(lake, version, assigned, cfg)
    stage.count("drift_far_share_ppm", int(round(share * 1e6)))
    stage.count("retrain_advised", int(share > cfg.drift_max_share))
    if share > cfg.drift_max_share:
        print(f"balance: {share:.1%} of new images are farther from their centroid than the {cfg.drift_quantile:.0%}"
              f" quantile (cosine {threshold:.3f}) of the existing ones: set balance.retrain=true to re-cluster")


def run(ctx: StageContext) -> StageRun:
    spark, cfg, lake, run_id = ctx.spark, ctx.cfg, ctx.lake, ctx.run_id
    bcfg = cfg.balance
    with ctx.stage as stage:
        embedding = ctx.embedding_model()
        model_id = embedding.model_id
        embed_new_synthetic_texts(spark, lake, cfg, embedding, run_id)
        banded = similarity_band(lake, bcfg, model_id).cache()
        kept = banded.where("drop_reason IS NULL")
        version = None if bcfg.retrain else latest_version(lake, model_id)
        fingerprint = content_fingerprint(kept, "image_id")
        if version is None and fingerprint[0] > 0:
            version = centroid_version(model_id, fingerprint, bcfg)
            stored = lake.exists(BALANCE_CENTROIDS) and centroids_of(lake, version, "coarse").limit(1).count() > 0
            coarse = load_coarse(lake, version) if stored else train_two_level(
                spark, lake, kept, fingerprint[0], bcfg, model_id, version)
            stage.count("trained", int(not stored))
            full_build(lake, banded, kept, version, coarse, bcfg, run_id)
        elif version is None:
            lake.overwrite(BALANCED, banded.drop("embedding").select(
                "*", *[F.lit(None).cast(t).alias(c) for c, t in (("cluster_id", "int"), ("cluster_size", "int"),
                       ("cluster_rank", "int"), ("centroid_score", "float"), ("centroid_version", "string"))])
                .withColumn("run_id", F.lit(run_id)))
        elif not lake.exists(BALANCED) or lake.read(BALANCED).where(F.col("centroid_version") == version).limit(1).count() == 0:
            full_build(lake, banded, kept, version, load_coarse(lake, version), bcfg, run_id)
        else:
            refresh(lake, banded, version, load_coarse(lake, version), bcfg, run_id, stage)
        balanced = lake.read(BALANCED)
        stage.rows_in = balanced.count()
        for row in balanced.groupBy("drop_reason").count().collect():
            stage.count(row.drop_reason or "kept", row["count"])
        for cap in bcfg.caps:
            stage.count(f"scale_cap_{cap}", balanced.where(F.col("cluster_rank") <= cap).count())
        stage.count("clusters", balanced.where("cluster_id IS NOT NULL").select("cluster_id").distinct().count())
        stage.rows_out = stage.counters.get("kept", 0)
        banded.unpersist()
    return stage
