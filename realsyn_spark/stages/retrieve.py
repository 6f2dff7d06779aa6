"""Stage 4: hierarchical retrieval of realistic sentences for every kept image.

1. Coarse: spherical k-means centroids over a sample of sentence embeddings (driver, FAISS),
   versioned by the exact set of sentences and the model, stored in Delta and broadcast.
2. Every sentence is assigned to its nearest centroid; every image probes its `n_probe` nearest.
3. Fine: images and sentences are co-partitioned by cluster (cogroup + applyInPandas); inside each
   cluster an exact inner-product top-k; then the top-k per image is merged across its probes.

Incremental: while the sentence set is unchanged, only images without retrievals are searched. A
changed sentence set makes a new centroid version and a full recompute (which is what a full rebuild
would produce).
"""
from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from realsyn_spark.clustering import (auto_clusters, content_fingerprint, load_centroids, sample_vectors,
                                      store_centroids, train_kmeans)
from realsyn_spark.config import RealSynConfig, RetrievalConfig
from realsyn_spark.ids import stable_id
from realsyn_spark.runlog import StageRun, stage_run
from realsyn_spark.stages.embed import current_model_id
from realsyn_spark.tables import IMAGE_EMBEDDINGS, IMAGES, RETRIEVALS, SENTENCE_EMBEDDINGS, SENTENCES, Lake
from udfs.retrieval import nearest_centroids, search_cluster

ASSIGNED = "{id} string, cluster_id int, probe_rank int, embedding array<float>"
MATCHES = "image_id string, sentence_id string, score float, cluster_id int"


def kept_sentence_vectors(lake: Lake, model_id: str) -> DataFrame:
    kept = lake.read(SENTENCES).where("drop_reason IS NULL").select("sentence_id")
    vectors = lake.read(SENTENCE_EMBEDDINGS).where(F.col("model_id") == model_id).select("sentence_id", "embedding")
    return vectors.join(kept, "sentence_id")


def kept_image_vectors(lake: Lake, model_id: str) -> DataFrame:
    kept = lake.read(IMAGES).where("drop_reason IS NULL").select("image_id")
    vectors = lake.read(IMAGE_EMBEDDINGS).where(F.col("model_id") == model_id).select("image_id", "embedding")
    return vectors.join(kept, "image_id")


def hierarchical_search(spark: SparkSession, images: DataFrame, sentences: DataFrame, centroids,
                        cfg: RetrievalConfig) -> DataFrame:
    """(image_id, rank, sentence_id, score, cluster_id) for the top_k sentences of every image."""
    centroids_bc = spark.sparkContext.broadcast(centroids)
    n_probe = min(cfg.n_probe, len(centroids))
    sentence_clusters = sentences.mapInPandas(nearest_centroids(centroids_bc, 1, "sentence_id"),
                                              ASSIGNED.format(id="sentence_id"))
    image_probes = images.mapInPandas(nearest_centroids(centroids_bc, n_probe, "image_id"),
                                      ASSIGNED.format(id="image_id"))
    matches = (image_probes.groupBy("cluster_id")
               .cogroup(sentence_clusters.groupBy("cluster_id"))
               .applyInPandas(search_cluster(cfg.top_k, cfg.min_score), MATCHES))
    best_first = Window.partitionBy("image_id").orderBy(F.desc("score"), "sentence_id")
    return (matches.withColumn("rank", F.row_number().over(best_first)).where(F.col("rank") <= cfg.top_k)
            .select("image_id", F.col("rank").cast("int"), "sentence_id", "score", "cluster_id"))


def centroid_version(model_id: str, fingerprint: tuple[int, int], cfg: RetrievalConfig) -> str:
    return stable_id("retrieval", model_id, fingerprint, cfg.n_clusters, cfg.sentences_per_cluster,
                     cfg.kmeans_sample_size, cfg.kmeans_iterations, cfg.seed, length=16)


def run(spark: SparkSession, cfg: RealSynConfig, run_id: str) -> StageRun:
    lake = Lake(spark, cfg.lake)
    rcfg = cfg.retrieval
    with stage_run(lake, cfg, run_id, "retrieve") as stage:
        model_id = current_model_id(cfg.embed)
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
        if full_recompute:
            k = auto_clusters(n_sentences, rcfg.sentences_per_cluster, rcfg.n_clusters)
            sample = sample_vectors(sentences, n_sentences, rcfg.kmeans_sample_size, rcfg.seed)
            centroids = train_kmeans(sample, k, rcfg.kmeans_iterations, rcfg.seed)
            store_centroids(lake, version, "retrieval", centroids, model_id)
            todo = images
        else:
            todo = images.join(lake.read(RETRIEVALS).where(F.col("centroid_version") == version)
                               .select("image_id").distinct(), "image_id", "left_anti")
        todo = todo.cache()
        stage.rows_in = todo.count()
        result = (hierarchical_search(spark, todo, sentences, centroids, rcfg)
                  .withColumn("centroid_version", F.lit(version)).withColumn("run_id", F.lit(run_id)))
        if full_recompute:
            lake.overwrite(RETRIEVALS, result)
        else:
            lake.merge_insert(RETRIEVALS, result)
        stage.count("clusters", len(centroids))
        stage.count("sentences", n_sentences)
        stage.count("full_recompute", int(full_recompute))
        stage.rows_out = lake.read(RETRIEVALS).where(F.col("centroid_version") == version).count()
        todo.unpersist()
        sentences.unpersist()
    return stage
