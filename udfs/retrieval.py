"""Executor-side pieces of hierarchical retrieval: centroid assignment and per-cluster exact search."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

QUERY_BLOCK = 2048  # queries per matmul block: bounds the score matrix to QUERY_BLOCK x cluster size


def stack(vectors: pd.Series) -> np.ndarray:
    if len(vectors) == 0:
        return np.zeros((0, 0), np.float32)
    return np.ascontiguousarray(np.stack(vectors.to_numpy()).astype(np.float32, copy=False))


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise indices of the k largest scores, best first (argpartition, then sort only those k)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def nearest_centroids(centroids_bc, n_probe: int, id_col: str):
    """mapInPandas body: (id, embedding) -> (id, cluster_id, probe_rank, embedding) for the n_probe nearest."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        centroids = centroids_bc.value
        for frame in batches:
            if frame.empty:
                continue
            vectors = stack(frame["embedding"])
            nearest = top_k_indices(vectors @ centroids.T, n_probe)
            probes = nearest.shape[1]
            yield pd.DataFrame({
                id_col: np.repeat(frame[id_col].to_numpy(), probes),
                "cluster_id": nearest.reshape(-1).astype(np.int32),
                "probe_rank": np.tile(np.arange(probes, dtype=np.int32), len(frame)),
                "embedding": list(np.repeat(vectors, probes, axis=0)),
            })
    return run


def search_cluster(top_k: int, min_score: float | None):
    """cogroup/applyInPandas body: exact inner-product top-k of a cluster's images over its sentences."""
    empty = pd.DataFrame({"image_id": pd.Series([], dtype=object), "sentence_id": pd.Series([], dtype=object),
                          "score": pd.Series([], dtype=np.float32), "cluster_id": pd.Series([], dtype=np.int32)})

    def run(images: pd.DataFrame, sentences: pd.DataFrame) -> pd.DataFrame:
        if images.empty or sentences.empty:
            return empty
        cluster_id = int(images["cluster_id"].iloc[0])
        corpus, ids = stack(sentences["embedding"]), sentences["sentence_id"].to_numpy()
        queries, qids = stack(images["embedding"]), images["image_id"].to_numpy()
        out = []
        for start in range(0, len(queries), QUERY_BLOCK):
            scores = queries[start:start + QUERY_BLOCK] @ corpus.T
            best = top_k_indices(scores, top_k)
            best_scores = np.take_along_axis(scores, best, axis=1)
            frame = pd.DataFrame({
                "image_id": np.repeat(qids[start:start + QUERY_BLOCK], best.shape[1]),
                "sentence_id": ids[best.reshape(-1)],
                "score": best_scores.reshape(-1).astype(np.float32),
                "cluster_id": np.int32(cluster_id),
            })
            if min_score is not None:
                frame = frame[frame["score"] >= min_score]
            out.append(frame)
        return pd.concat(out, ignore_index=True)

    return run
