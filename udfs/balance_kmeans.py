"""Executor side of the two-level balance k-means (see realsyn_spark/stages/balance.py).

Only the coarse centroids (k1 ~ sqrt(k) rows, ~2 MB at k = 1M) travel in a UDF closure. Fine centroids
are trained per coarse cell inside a grouped task and written to Delta from there; assignment meets
each cell's images with that cell's fine centroids in one cogroup task, so no task or driver ever
holds the whole centroid set.
"""
from __future__ import annotations

import numpy as np

from udfs.retrieval import arrow_vectors, binary_vectors, exact_top_k, limit_threads, _slices
from udfs.worker import task_threads

PROBED = "image_id string, cell int, probe int, vec binary"
FINE_CENTROIDS = "cell int, fine int, centroid array<float>"
FINE_ASSIGNED = "image_id string, cell int, cluster_id int, score float"


LLOYD_BLOCK = 1 << 24   # scores per assignment block of the numpy Lloyd iterations (64 MB of float32)


def _nearest(vectors: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, cosine) of each vector's nearest centroid, in row blocks: the n x k score matrix of a big
    cell never exists at once."""
    rows = max(1, LLOYD_BLOCK // max(1, len(centroids)))
    index, score = np.empty(len(vectors), np.int64), np.empty(len(vectors), np.float32)
    for lo in range(0, len(vectors), rows):
        s = vectors[lo:lo + rows] @ centroids.T
        index[lo:lo + rows] = np.argmax(s, axis=1)
        score[lo:lo + rows] = s[np.arange(len(s)), index[lo:lo + rows]]
    return index, score


def _lloyd_spherical(vectors: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means in numpy (random distinct seeds, like FAISS). A centroid left without members
    moves to the vectors farthest from their own centroids (FAISS splits a big cluster instead): kept in
    place it would stay empty for good and the cell would get fewer clusters than planned."""
    centroids = vectors[np.random.default_rng(seed).choice(len(vectors), k, replace=False)].copy()
    for _ in range(iterations):
        assigned, score = _nearest(vectors, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assigned, vectors)
        filled = np.bincount(assigned, minlength=k) > 0
        centroids[filled] = sums[filled]
        empty = np.flatnonzero(~filled)
        if len(empty):
            centroids[empty] = vectors[np.argsort(score, kind="stable")[:len(empty)]]
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return centroids


def spherical_kmeans(vectors: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Unit-norm centroids (inner-product assignment) of `vectors`; k is bounded by the row count."""
    import faiss

    k = max(1, min(k, len(vectors)))
    if k == 1:
        centroid = vectors.mean(axis=0, keepdims=True)
    else:
        # Every point is used: FAISS's default silently subsamples to 256 points per centroid.
        kmeans = faiss.Kmeans(vectors.shape[1], k, niter=iterations, seed=seed, spherical=True,
                              max_points_per_centroid=max(256, len(vectors) // k + 1), verbose=False)
        try:
            kmeans.train(np.ascontiguousarray(vectors, np.float32))
            centroid = kmeans.centroids
        except AssertionError:
            # Seen once in a reused executor worker: FAISS's wrapper failed to convert its own centroid
            # vector (faiss/array_conversions.py). The same spherical Lloyd iterations in numpy instead.
            centroid = _lloyd_spherical(np.asarray(vectors, np.float32), k, iterations, seed)
    norms = np.linalg.norm(centroid, axis=1, keepdims=True)
    return (centroid / np.maximum(norms, 1e-12)).astype(np.float32)


def probe_cells(coarse: np.ndarray, n_probe: int, id_col: str = "image_id", vec_col: str = "embedding"):
    """mapInArrow body: (id, embedding) -> one (id, cell, probe, vec) row per probed coarse cell
    (probe 0 = the nearest cell)."""
    coarse = np.ascontiguousarray(coarse, np.float32)

    def run(batches):
        import pyarrow as pa

        limit_threads(task_threads())
        probes = min(n_probe, len(coarse))
        for batch in batches:
            if batch.num_rows == 0:
                continue
            vectors = arrow_vectors(batch.column(vec_col), coarse.shape[1])
            _, nearest = exact_top_k(vectors, coarse, probes)
            ids = batch.column(id_col)
            for p in range(probes):
                cell = nearest[:, p].astype(np.int32)
                for lo, hi in _slices(len(cell)):
                    yield pa.RecordBatch.from_arrays(
                        [ids.slice(lo, hi - lo), pa.array(cell[lo:hi]), pa.array(np.full(hi - lo, p, np.int32)),
                         binary_vectors(vectors[lo:hi])], names=[id_col, "cell", "probe", "vec"])
    return run


def train_cell(dim: int, iterations: int, seed: int):
    """applyInArrow body over groupBy(cell): (image_id, cell, k_cell, vec) -> the cell's fine centroids.

    Rows are sorted by id first, so the centroids depend only on which images are in the sample, not on
    the order the shuffle delivered them in."""
    def run(table):
        import pyarrow as pa

        limit_threads(task_threads())
        if table.num_rows == 0:
            return pa.table({"cell": pa.array([], pa.int32()), "fine": pa.array([], pa.int32()),
                             "centroid": pa.array([], pa.list_(pa.float32()))})
        table = table.sort_by("image_id")
        cell = int(table.column("cell")[0].as_py())
        k = int(table.column("k_cell")[0].as_py())
        vectors = arrow_vectors(table.column("vec"), dim)
        centroids = spherical_kmeans(vectors, k, iterations, seed + cell)
        n = len(centroids)
        flat = pa.array(centroids.reshape(-1), pa.float32())
        offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
        return pa.table({"cell": pa.array(np.full(n, cell, np.int32)), "fine": pa.array(np.arange(n, dtype=np.int32)),
                         "centroid": pa.ListArray.from_arrays(offsets, flat)})
    return run


def assign_fine(dim: int):
    """cogroup applyInArrow body over (cell, chunk): images x that cell's fine centroids -> the nearest
    fine centroid of every image (one row per image and probed cell; the caller keeps the best)."""
    def run(images, centroids):
        import pyarrow as pa

        limit_threads(task_threads())
        empty = pa.table({"image_id": pa.array([], pa.string()), "cell": pa.array([], pa.int32()),
                          "cluster_id": pa.array([], pa.int32()), "score": pa.array([], pa.float32())})
        if images.num_rows == 0 or centroids.num_rows == 0:
            return empty
        vectors = arrow_vectors(images.column("vec"), dim)
        fine = arrow_vectors(centroids.column("centroid"), dim)
        ids = np.asarray(centroids.column("cluster_id").to_numpy(zero_copy_only=False), np.int32)
        scores, nearest = exact_top_k(vectors, fine, 1)
        return pa.table({"image_id": images.column("image_id"), "cell": images.column("cell"),
                         "cluster_id": pa.array(ids[nearest[:, 0]]),
                         "score": pa.array(scores[:, 0].astype(np.float32))})
    return run
