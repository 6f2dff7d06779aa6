"""k-means centroids shared by retrieval (over sentences) and balance sampling (over images).

Centroids are trained with FAISS on the driver over a bounded sample (a setting), stored as a
versioned Delta table, and shipped to executors as one float32 matrix (`sparkutil.ship`).
"""
from __future__ import annotations

import datetime as dt
import math

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from realsyn_spark.tables import CENTROIDS, Lake
from udfs.balance_kmeans import spherical_kmeans
from udfs.retrieval import arrow_vectors, exact_top_k, stack


def auto_clusters(n_rows: int, rows_per_cluster: int, configured: int | None) -> int:
    k = configured if configured is not None else round(n_rows / rows_per_cluster)
    return int(max(1, min(k, n_rows)))


def retrieval_clusters(n_rows: int, min_rows_per_cluster: int, configured: int | None) -> int:
    """Coarse clusters for retrieval: `configured`, else n / max(min_rows_per_cluster, sqrt(n)).

    Small corpora get the paper's ~420 sentences per cluster; beyond 420^2 = 176k sentences clusters
    grow as sqrt(n), so assigning every sentence (n x k dot products) costs n^1.5 instead of the n^2 of a
    fixed cluster size, while the in-cluster search per image grows only as sqrt(n).
    """
    if configured is not None:
        return int(max(1, min(configured, n_rows)))
    return auto_clusters(n_rows, max(min_rows_per_cluster, int(math.isqrt(max(n_rows, 0)))), None)


KMEANS_POINTS_PER_CLUSTER = 64
HASH_BUCKETS = 1 << 30   # resolution of the hash-based sampling fraction


def kmeans_sample_size(configured: int | None, k: int) -> int:
    """The configured sample size, else 64 points per cluster (FAISS warns below 39)."""
    return int(configured) if configured is not None else KMEANS_POINTS_PER_CLUSTER * max(1, k)


def sample_vectors(df: DataFrame, n_rows: int, sample_size: int, seed: int, id_col: str) -> np.ndarray:
    """At most `sample_size` embeddings, sampled on the executors; only the sample reaches the driver.

    Rows are chosen by a seeded hash of their id and returned in id order, so the same rows give the same
    sample (and the same k-means centroids) however the table's files happen to be laid out: a lake built
    by incremental refreshes clusters exactly like one built in a single run."""
    fraction = min(1.0, 1.1 * sample_size / max(n_rows, 1))
    sample = df.select(id_col, "embedding")
    if fraction < 1.0:  # Bernoulli on the hash: ~1.1x the size wanted; the surplus is dropped below
        draw = F.pmod(F.xxhash64(F.col(id_col), F.lit(seed)), F.lit(HASH_BUCKETS))
        sample = sample.where(draw < F.lit(int(fraction * HASH_BUCKETS)))
    if hasattr(sample, "toArrow"):  # Spark >= 4.0: one flat float buffer, no per-row numpy objects
        table = sample.toArrow().sort_by(id_col)
        vectors = arrow_vectors(table.column("embedding")) if table.num_rows else np.zeros((0, 0), np.float32)
    else:
        vectors = stack(sample.toPandas().sort_values(id_col)["embedding"])
    return vectors[:sample_size]


def chunk_plan(sample: np.ndarray, centroids: np.ndarray, n_rows: int, max_vectors_per_task: int,
               input_tasks: int = 1, z: float = 4.0) -> np.ndarray:
    """Chunks per cluster so that no (cluster, chunk) group exceeds `max_vectors_per_task` sentences.

    Cluster sizes are estimated from the sample (exact when the sample is the whole set), with a
    z-sigma upper bound when it is not; the round-robin deal in `assign_sentences` adds at most one row
    per input task to a chunk beyond size / chunks, which the budget reserves.
    """
    k = len(centroids)
    if len(sample) == 0:
        return np.ones(k, np.int32)
    _, nearest = exact_top_k(np.ascontiguousarray(sample, np.float32), centroids, 1)
    counts = np.bincount(nearest[:, 0], minlength=k).astype(np.float64)
    if len(sample) >= n_rows:
        upper = counts
    else:
        upper = (counts + z * np.sqrt(counts) + z * z) * (n_rows / len(sample))
    budget = max(1, max_vectors_per_task - input_tasks)
    return np.maximum(1, np.ceil(upper / budget)).astype(np.int32)


def train_kmeans(vectors: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means (unit-norm centroids, inner-product assignment) on the sample."""
    return spherical_kmeans(vectors, k, iterations, seed)


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
