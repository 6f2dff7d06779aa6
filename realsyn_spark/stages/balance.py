"""Stage 6a: semantic balance sampling.

1. Similarity band: cosine between each image and its synthetic text (same CLIP space); pairs outside
   [similarity_min, similarity_max] are dropped (above: OCR-dominated images, below: mismatches).
2. Spherical k-means over the surviving image embeddings (one cluster per ~168 images by default,
   as 1M clusters for 168.3M pairs in the paper), every image assigned to its nearest centroid.
3. Inside each cluster images get a deterministic pseudo-random rank (hash of image id and seed), so a
   cap t keeps rank <= t: min(|c|, t) uniformly chosen members. Scales are nested (RealSyn15M is inside
   30M is inside 100M) and any cap is a cheap filter over the same table.
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from realsyn_spark.clustering import auto_clusters, sample_vectors, store_centroids, train_kmeans
from realsyn_spark.config import BalanceConfig, RealSynConfig
from realsyn_spark.ids import stable_id
from realsyn_spark.runlog import StageRun, stage_run
from realsyn_spark.sparkutil import arrow_batch_rows, parallelism, ship
from realsyn_spark.stages.embed import current_model_id, resolve_embed_config
from realsyn_spark.stages.retrieve import kept_image_vectors
from realsyn_spark.tables import BALANCED, SYNTHETIC_EMBEDDINGS, SYNTHETIC_TEXTS, Lake
from udfs.clip_embed import text_embedder
from udfs.retrieval import nearest_centroids


def embed_new_synthetic_texts(spark: SparkSession, lake: Lake, cfg: RealSynConfig, model_id: str, run_id: str):
    texts = lake.read(SYNTHETIC_TEXTS).select("request_hash", F.col("syn_text").alias("text")).dropDuplicates(["request_hash"])
    done = lake.read(SYNTHETIC_EMBEDDINGS).where(F.col("model_id") == model_id).select("request_hash")
    todo = texts.join(done, "request_hash", "left_anti").repartition(parallelism(spark))
    with arrow_batch_rows(spark, cfg.embed.batch_size * 8):
        vectors = todo.mapInPandas(text_embedder(resolve_embed_config(cfg.embed), "request_hash"),
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
            .select("image_id", "similarity", "drop_reason", F.col("image_vec").alias("embedding")))


def cluster_and_rank(spark: SparkSession, lake: Lake, kept: DataFrame, cfg: BalanceConfig, model_id: str,
                     closure_max_bytes: int = 64 << 20) -> DataFrame:
    n_kept = kept.count()
    if n_kept == 0:
        return kept.select("image_id", F.lit(None).cast("int").alias("cluster_id"),
                           F.lit(None).cast("int").alias("cluster_size"), F.lit(None).cast("int").alias("cluster_rank"))
    k = auto_clusters(n_kept, cfg.images_per_cluster, cfg.n_clusters)
    centroids = train_kmeans(sample_vectors(kept, n_kept, cfg.kmeans_sample_size, cfg.seed, "image_id"), k,
                             cfg.kmeans_iterations, cfg.seed)
    store_centroids(lake, stable_id("balance", model_id, n_kept, k, cfg.seed, length=16), "balance", centroids, model_id)
    centroids_bc = ship(centroids, lake.root, closure_max_bytes, "balance-centroids")
    assigned = kept.select("image_id", "embedding").mapInPandas(
        nearest_centroids(centroids_bc, 1, "image_id"),
        "image_id string, cluster_id int, probe_rank int, embedding array<float>")
    in_cluster = Window.partitionBy("cluster_id")
    shuffled = in_cluster.orderBy(F.xxhash64("image_id", F.lit(cfg.seed)), "image_id")
    return assigned.select("image_id", "cluster_id",
                           F.count(F.lit(1)).over(in_cluster).cast("int").alias("cluster_size"),
                           F.row_number().over(shuffled).cast("int").alias("cluster_rank"))


def run(spark: SparkSession, cfg: RealSynConfig, run_id: str) -> StageRun:
    lake = Lake(spark, cfg.lake)
    with stage_run(lake, cfg, run_id, "balance") as stage:
        model_id = current_model_id(cfg.embed)
        embed_new_synthetic_texts(spark, lake, cfg, model_id, run_id)
        banded = similarity_band(lake, cfg.balance, model_id).cache()
        kept = banded.where("drop_reason IS NULL")
        ranks = cluster_and_rank(spark, lake, kept, cfg.balance, model_id, cfg.spark.closure_max_bytes)
        result = (banded.drop("embedding").join(ranks, "image_id", "left").withColumn("run_id", F.lit(run_id)))
        lake.overwrite(BALANCED, result)
        balanced = lake.read(BALANCED)
        stage.rows_in = balanced.count()
        for row in balanced.groupBy("drop_reason").count().collect():
            stage.count(row.drop_reason or "kept", row["count"])
        for cap in cfg.balance.caps:
            stage.count(f"scale_cap_{cap}", balanced.where(F.col("cluster_rank") <= cap).count())
        stage.count("clusters", balanced.where("cluster_id IS NOT NULL").select("cluster_id").distinct().count())
        stage.rows_out = stage.counters.get("kept", 0)
        banded.unpersist()
    return stage
