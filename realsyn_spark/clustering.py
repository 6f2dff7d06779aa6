"""k-means centroids shared by retrieval (over sentences) and balance sampling (over images).

Centroids are trained with FAISS on the driver over a bounded sample (a setting), stored as a
versioned Delta table, and broadcast to executors as one small float32 matrix.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from realsyn_spark.tables import CENTROIDS, Lake
from udfs.retrieval import stack


def auto_clusters(n_rows: int, rows_per_cluster: int, configured: int | None) -> int:
    k = configured if configured is not None else round(n_rows / rows_per_cluster)
    return int(max(1, min(k, n_rows)))


def sample_vectors(df: DataFrame, n_rows: int, sample_size: int, seed: int) -> np.ndarray:
    """At most `sample_size` embeddings, sampled on the executors; only the sample reaches the driver."""
    fraction = min(1.0, 1.1 * sample_size / max(n_rows, 1))
    sample = df.select("embedding") if fraction >= 1.0 else df.select("embedding").sample(False, fraction, seed)
    return stack(sample.limit(sample_size).toPandas()["embedding"])


def train_kmeans(vectors: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means (unit-norm centroids, inner-product assignment) on the sample."""
    import faiss

    k = max(1, min(k, len(vectors)))
    if k == 1:
        centroid = vectors.mean(axis=0, keepdims=True)
    else:
        # Every point is used: FAISS's default silently subsamples to 256 points per centroid.
        kmeans = faiss.Kmeans(vectors.shape[1], k, niter=iterations, seed=seed, spherical=True,
                              max_points_per_centroid=max(256, len(vectors) // k + 1), verbose=False)
        kmeans.train(vectors)
        centroid = kmeans.centroids
    norms = np.linalg.norm(centroid, axis=1, keepdims=True)
    return (centroid / np.maximum(norms, 1e-12)).astype(np.float32)


def store_centroids(lake: Lake, version: str, purpose: str, centroids: np.ndarray, model_id: str) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = [(version, purpose, i, c.tolist(), model_id, now) for i, c in enumerate(centroids)]
    lake.merge_insert(CENTROIDS, lake.spark.createDataFrame(rows, CENTROIDS.schema))


def load_centroids(lake: Lake, version: str, purpose: str) -> np.ndarray | None:
    frame = (lake.read(CENTROIDS).where((F.col("version") == version) & (F.col("purpose") == purpose))
             .orderBy("cluster_id").select("centroid").toPandas())
    return stack(frame["centroid"]) if len(frame) else None


def content_fingerprint(df: DataFrame, id_col: str) -> tuple[int, int]:
    """(row count, order-independent hash sum of ids): changes whenever the set of rows changes."""
    row = df.agg(F.count(F.lit(1)).alias("n"), F.sum(F.xxhash64(id_col).cast("decimal(38,0)")).alias("h")).first()
    return int(row.n), int(row.h or 0)
