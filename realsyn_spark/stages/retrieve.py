"""Stage 4: hierarchical retrieval of realistic sentences for every kept image.

1. Coarse: spherical k-means centroids over a sample of sentence embeddings (driver, FAISS),
   versioned by the exact set of sentences and the model, stored in Delta and shipped to the tasks in
   the UDF closure (or, when large, as a file read once per Python worker: no broadcast variables,
   which Spark Connect lacks).
   Default cluster count: n / max(sentences_per_cluster, sqrt(n)) (sub-quadratic total cost).
2. Every sentence is assigned to its nearest centroid; every image probes its `n_probe` nearest.
3. Fine: images and sentences are co-partitioned by (cluster, chunk) (cogroup + applyInArrow); a
   cluster bigger than `max_vectors_per_task` is dealt into chunks and its images replicated to each,
   so no task holds more sentence vectors than that; inside each chunk an exact inner-product top-k
   (FAISS), then the top-k per image is merged across chunks and probes.

Incremental: while the sentence set is unchanged, only images without retrievals are searched. A
changed sentence set makes a new centroid version and a full recompute (which is what a full rebuild
would produce).
"""
from __future__ import annotations

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

import numpy as np

from realsyn_spark.clustering import (chunk_plan, content_fingerprint, kmeans_sample_size, load_centroids,
                                      retrieval_clusters, sample_vectors, store_centroids, train_kmeans)
from realsyn_spark.config import RetrievalConfig
from realsyn_spark.ids import stable_id
from realsyn_spark.runlog import StageContext, StageRun
from realsyn_spark.sparkutil import input_partitions, ship
from realsyn_spark.tables import IMAGE_EMBEDDINGS, IMAGES, RETRIEVALS, SENTENCE_EMBEDDINGS, SENTENCES, Lake
from udfs.retrieval import (ASSIGNED_SENTENCES, CHUNK_MATCHES, PROBED_IMAGES, SearchStats, assign_sentences,
                            probe_images, search_chunk)
from udfs.shipped import InClosure


def kept_sentence_vectors(lake: Lake, model_id: str) -> DataFrame:
    kept = lake.read(SENTENCES).where("drop_reason IS NULL").select("sentence_id")
    vectors = lake.read(SENTENCE_EMBEDDINGS).where(F.col("model_id") == model_id).select("sentence_id", "embedding")
    return vectors.join(kept, "sentence_id")


def kept_image_vectors(lake: Lake, model_id: str) -> DataFrame:
    kept = lake.read(IMAGES).where("drop_reason IS NULL").select("image_id")
    vectors = lake.read(IMAGE_EMBEDDINGS).where(F.col("model_id") == model_id).select("image_id", "embedding")
    return vectors.join(kept, "image_id")


def plan_chunks(sentences: DataFrame, n_sentences: int, centroids: np.ndarray, cfg: RetrievalConfig,
                sample: np.ndarray | None = None) -> np.ndarray:
    """Chunks per cluster so that no search task holds more than `max_vectors_per_task` sentences."""
    if sample is None:
        size = kmeans_sample_size(cfg.kmeans_sample_size, len(centroids))
        sample = sample_vectors(sentences, n_sentences, size, cfg.seed + 1, "sentence_id")
    return chunk_plan(sample, centroids, n_sentences, cfg.max_vectors_per_task,
                      input_tasks=input_partitions(sentences))


def chunk_matches(spark: SparkSession, images: DataFrame, sentences: DataFrame, centroids,
                  cfg: RetrievalConfig, chunks: np.ndarray | None = None, stats_rows: bool = False,
                  ship_to: tuple[str, int] | None = None) -> DataFrame:
    """CHUNK_MATCHES of every (cluster, chunk) group, with one stats row per group when `stats_rows`.

    The centroids and the chunk plan reach the tasks in the UDF closure, or, above `ship_to`'s
    closure_max_bytes, as a file under its lake root read once per Python worker (`sparkutil.ship`)."""
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    if chunks is None:
        chunks = plan_chunks(sentences, sentences.count(), centroids, cfg)
    root, closure_max = ship_to or ("", 1 << 62)
    centroids_bc = ship(centroids, root, closure_max, "retrieval-centroids")
    chunks_bc = InClosure(np.asarray(chunks, np.int32))   # k int32: always small
    n_probe = min(cfg.n_probe, len(centroids))
    sentence_groups = sentences.select("sentence_id", "embedding").mapInArrow(
        assign_sentences(centroids_bc, chunks_bc), ASSIGNED_SENTENCES)
    image_groups = images.select("image_id", "embedding").mapInArrow(
        probe_images(centroids_bc, chunks_bc, n_probe), PROBED_IMAGES)
    return (image_groups.groupBy("cluster_id", "chunk")
            .cogroup(sentence_groups.groupBy("cluster_id", "chunk"))
            .applyInArrow(search_chunk(cfg.top_k, cfg.min_score, centroids.shape[1], stats_rows, cfg.device),
                          CHUNK_MATCHES))


def best_matches(matches: DataFrame, top_k: int) -> DataFrame:
    """(image_id, rank, sentence_id, score, cluster_id): the per-group lists merged per image."""
    best_first = Window.partitionBy("image_id").orderBy(F.desc("score"), "sentence_id")
    return (matches.where(F.col("image_id").isNotNull()).drop("group_sentences", "group_images")
            .withColumn("rank", F.row_number().over(best_first))
            .where(F.col("rank") <= top_k)
            .select("image_id", F.col("rank").cast("int"), "sentence_id", "score", "cluster_id"))


def hierarchical_search(spark: SparkSession, images: DataFrame, sentences: DataFrame, centroids,
                        cfg: RetrievalConfig, chunks: np.ndarray | None = None,
                        ship_to: tuple[str, int] | None = None) -> DataFrame:
    """(image_id, rank, sentence_id, score, cluster_id) for the top_k sentences of every image.

    Sentences go to their nearest centroid and images to their n_probe nearest; a cluster split into
    chunks (see `plan_chunks`, computed here when not given) gets each image once per chunk. Each
    (cluster, chunk) is an exact top-k in one task; the lists are merged per image.
    """
    return best_matches(chunk_matches(spark, images, sentences, centroids, cfg, chunks, ship_to=ship_to), cfg.top_k)


def search_with_stats(spark: SparkSession, images: DataFrame, sentences: DataFrame, centroids,
                      cfg: RetrievalConfig, chunks: np.ndarray | None = None,
                      ship_to: tuple[str, int] | None = None) -> tuple[DataFrame, dict, DataFrame]:
    """`hierarchical_search` plus its `SearchStats`, computed from the groups' stats rows of one
    materialised search (the caller unpersists the third value once the result is written)."""
    matches = chunk_matches(spark, images, sentences, centroids, cfg, chunks, True, ship_to).persist(
        StorageLevel.MEMORY_AND_DISK)
    return best_matches(matches, cfg.top_k), SearchStats.of(matches), matches


def centroid_version(model_id: str, fingerprint: tuple[int, int], cfg: RetrievalConfig) -> str:
    return stable_id("retrieval", model_id, fingerprint, cfg.n_clusters, cfg.sentences_per_cluster,
                     cfg.kmeans_sample_size, cfg.kmeans_iterations, cfg.seed, "k=n/max(spc,sqrt n)", length=16)


def withdraw_images(lake: Lake, images: DataFrame, stage: StageRun) -> None:
    """Drop the retrievals of images that are no longer kept (a later file brought the duplicate that
    won, a rule changed): a full rebuild would not search them, so a refresh must not keep them."""
    withdrawn = lake.read(RETRIEVALS).select("image_id").distinct().join(images, "image_id", "left_anti").count()
    stage.count("images_withdrawn", withdrawn)
    if withdrawn:
        lake.delete_absent(RETRIEVALS, images, keys=("image_id",))


def run(ctx: StageContext) -> StageRun:
    spark, cfg, lake, run_id = ctx.spark, ctx.cfg, ctx.lake, ctx.run_id
    rcfg = cfg.retrieval
    with ctx.stage as stage:
        model_id = ctx.embedding_model().model_id
        sentences = kept_sentence_vectors(lake, model_id).cache()
        images = kept_image_vectors(lake, model_id)
        fingerprint = content_fingerprint(sentences, "sentence_id")
        n_sentences = fingerprint[0]
        if n_sentences == 0:
            stage.rows_in = stage.rows_out = 0
            stage.count("no_sentences", 1)
            return stage
        version = centroid_version(model_id, fingerprint, rcfg)
        centroids = load_centroids(lake, version, "retrieval")
        full_recompute = centroids is None
        sample = None
        if full_recompute:
            k = retrieval_clusters(n_sentences, rcfg.sentences_per_cluster, rcfg.n_clusters)
            sample = sample_vectors(sentences, n_sentences, kmeans_sample_size(rcfg.kmeans_sample_size, k), rcfg.seed,
                                    "sentence_id")
            centroids = train_kmeans(sample, k, rcfg.kmeans_iterations, rcfg.seed)
            store_centroids(lake, version, "retrieval", centroids, model_id)
            todo = images
        else:
            withdraw_images(lake, images, stage)
            todo = images.join(lake.read(RETRIEVALS).where(F.col("centroid_version") == version)
                               .select("image_id").distinct(), "image_id", "left_anti")
        todo = todo.cache()
        stage.rows_in = todo.count()
        chunks = plan_chunks(sentences, n_sentences, centroids, rcfg, sample)
        found, stats, matches = search_with_stats(spark, todo, sentences, centroids, rcfg, chunks=chunks,
                                                  ship_to=(lake.root, cfg.spark.closure_max_bytes))
        result = found.withColumn("centroid_version", F.lit(version)).withColumn("run_id", F.lit(run_id))
        if full_recompute:
            lake.overwrite(RETRIEVALS, result)
        else:
            lake.merge_insert(RETRIEVALS, result)
        stage.count("clusters", len(centroids))
        stage.count("sentences", n_sentences)
        stage.count("full_recompute", int(full_recompute))
        stage.count("clusters_split", int((chunks > 1).sum()))
        stage.count("max_sentences_per_task", stats["max_sentences"])
        stage.count("fine_dot_products", stats["pairs"])
        matches.unpersist()
        stage.rows_out = lake.read(RETRIEVALS).where(F.col("centroid_version") == version).count()
        todo.unpersist()
        sentences.unpersist()
    return stage
