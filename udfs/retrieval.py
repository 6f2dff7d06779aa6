"""Executor-side pieces of hierarchical retrieval: centroid assignment and per-cluster exact search.

Two generations of the same operations live here:

* pandas bodies (`nearest_centroids`, `search_cluster`) over `array<float>` columns, used by balance
  sampling and kept as the simple reference implementation;
* Arrow bodies used by the retrieval stage (`assign_sentences`, `probe_images`, `search_chunk`): they
  read `array<float>` columns as one flat float32 buffer (no per-row numpy objects), and carry vectors
  through the co-partitioning shuffle as raw bytes in a BINARY column (float16 bytes when the values
  are exactly float16, e.g. stored with `embed.storage_dtype: float16`, so that is lossless; float32
  bytes otherwise). The shuffle format is internal to the stage: every table keeps `array<float>`.

A big cluster is split into chunks `(cluster_id, chunk)` so that no task holds more than
`retrieval.max_vectors_per_task` sentence vectors; the images that probe it are replicated to every
chunk, and the per-chunk top-k lists are merged afterwards (exactly the unsplit result).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd

from udfs.worker import cuda_device, task_gpu, task_threads

QUERY_BLOCK = 2048  # queries per matmul block: bounds the score matrix to QUERY_BLOCK x cluster size
OUT_ROWS = 8192     # rows per Arrow batch emitted by the assignment bodies (bounds batch bytes)

# Internal Arrow/Spark schemas of the stage (vectors as raw bytes, see module doc).
ASSIGNED_SENTENCES = "sentence_id string, cluster_id int, chunk int, vec binary"
PROBED_IMAGES = "image_id string, cluster_id int, chunk int, vec binary"
CHUNK_MATCHES = "image_id string, sentence_id string, score float, cluster_id int, group_sentences int, group_images int"


# --------------------------------------------------------------------------------------------- helpers

class SearchStats:
    """{"max_sentences", "groups", "pairs"}: the most sentence vectors one search task held, and the
    number of groups and image x sentence dot products of the fine search. Each search group returns
    one stats row (image_id NULL, group_sentences, group_images) beside its matches; the driver
    aggregates those rows (Spark Connect has no accumulators, and rows are exact under task retries)."""

    @staticmethod
    def empty() -> dict:
        return {"max_sentences": 0, "groups": 0, "pairs": 0}

    @staticmethod
    def of(matches) -> dict:
        """The stats of a CHUNK_MATCHES frame (with stats rows)."""
        from pyspark.sql import functions as F

        row = (matches.where(F.col("image_id").isNull())
               .agg(F.max("group_sentences").alias("m"), F.count(F.lit(1)).alias("g"),
                    F.sum(F.col("group_sentences").cast("long") * F.col("group_images")).alias("p")).first())
        return {"max_sentences": int(row.m or 0), "groups": int(row.g or 0), "pairs": int(row.p or 0)}


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


_THREADS: list[int] = []


def limit_threads(n: int) -> None:
    """BLAS/OpenMP threads of this Python worker follow the task's CPU share (no oversubscription)."""
    if _THREADS == [n]:
        return
    _THREADS[:] = [n]
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except Exception:
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except Exception:
        pass


def search_device(requested: str = "auto") -> str:
    """Where this task's exact search runs: "cpu" or a CUDA device.

    auto: the GPU Spark assigned to the task (`spark.task.resource.gpu.amount`), else the CPU; a CPU
    executor never imports torch for this. cuda: the assigned GPU, else the first one."""
    if requested == "cpu":
        return "cpu"
    address = task_gpu()
    if requested == "auto" and address is None:
        return "cpu"
    return cuda_device(address)


def exact_top_k(queries: np.ndarray, corpus: np.ndarray, k: int,
                device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: (scores, indices), best first; FAISS's fused BLAS + heap selection
    (bounded memory: it tiles queries and corpus), numpy blocks where FAISS is missing, or one GEMM +
    top-k per query block on a CUDA `device`."""
    k = min(k, len(corpus))
    if k == 0 or len(queries) == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    if device.startswith("cuda"):
        return _cuda_top_k(queries, corpus, k, device)
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is a dependency
        faiss = None
    if faiss is not None:
        scores, index = faiss.knn(queries, corpus, k, metric=faiss.METRIC_INNER_PRODUCT)
        return scores, index
    block = max(1, min(QUERY_BLOCK, (1 << 24) // max(1, len(corpus))))
    out_s, out_i = [], []
    for start in range(0, len(queries), block):
        scores = queries[start:start + block] @ corpus.T
        best = top_k_indices(scores, k)
        out_s.append(np.take_along_axis(scores, best, axis=1))
        out_i.append(best)
    return np.concatenate(out_s), np.concatenate(out_i)


def _cuda_top_k(queries: np.ndarray, corpus: np.ndarray, k: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k on a GPU. Exact search is a GEMM and a selection, which torch (already on GPU
    executors for the embedding) runs without a CUDA-specific FAISS build. The matmul runs in full fp32
    (TF32 off), so results equal the CPU path's; memory is the corpus plus one QUERY_BLOCK x corpus
    score block (2048 x 100k = 800 MB at the default task limit)."""
    import torch

    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            base = torch.from_numpy(np.ascontiguousarray(corpus, dtype=np.float32)).to(device)
            scores, index = [], []
            for start in range(0, len(queries), QUERY_BLOCK):
                block = np.ascontiguousarray(queries[start:start + QUERY_BLOCK], dtype=np.float32)
                top = torch.topk(torch.from_numpy(block).to(device) @ base.T, k, dim=1)
                scores.append(top.values)
                index.append(top.indices)
            return torch.cat(scores).cpu().numpy(), torch.cat(index).cpu().numpy().astype(np.int64)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32


# ---------------------------------------------------------------------------------- Arrow vector codec

def arrow_vectors(column, dim: int | None = None) -> np.ndarray:
    """(n, d) float32 from an Arrow `list<float>` column (the tables' `array<float>`) or from the
    stage's BINARY shuffle column (float16 or float32 bytes per row; `dim` tells which)."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        parts = [arrow_vectors(chunk, dim) for chunk in column.chunks if len(chunk)]
        if not parts:
            return np.zeros((0, dim or 0), np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
    n = len(column)
    if n == 0:
        return np.zeros((0, dim or 0), np.float32)
    if column.null_count:
        raise ValueError("null embedding in a retrieval input")
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        values = column.flatten()
        if values.null_count:
            raise ValueError("null element inside an embedding")
        if len(values) % n:
            raise ValueError("embeddings of different lengths in one batch")
        d = len(values) // n
        if not pa.types.is_fixed_size_list(kind):
            lengths = np.diff(np.asarray(column.offsets))
            if (lengths != d).any():
                raise ValueError("embeddings of different lengths in one batch")
        if dim is not None and d != dim:
            raise ValueError(f"embedding dimension {d} does not match the centroids' {dim}")
        flat = values.to_numpy(zero_copy_only=False)
        return np.ascontiguousarray(flat.reshape(n, d), dtype=np.float32)
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        if dim is None:
            raise ValueError("decoding binary vectors needs the dimension")
        offsets = np.frombuffer(column.buffers()[1], np.int64 if pa.types.is_large_binary(kind) else np.int32,
                                count=n + 1, offset=column.offset * (8 if pa.types.is_large_binary(kind) else 4))
        widths = np.diff(offsets)
        if not np.isin(widths, (2 * dim, 4 * dim)).all():
            raise ValueError(f"binary vectors of unexpected widths for dimension {dim}")
        raw = np.frombuffer(column.buffers()[2], np.uint8, count=int(offsets[-1] - offsets[0]),
                            offset=int(offsets[0]))
        width = int(widths[0])
        if (widths == width).all():
            kind = np.float16 if width == 2 * dim else np.float32
            return raw.view(kind).reshape(n, dim).astype(np.float32)
        # rows from float16-stored and float32-stored vectors met in one batch: decode each kind
        out = np.empty((n, dim), np.float32)
        starts = offsets[:-1] - offsets[0]
        for width, kind in ((2 * dim, np.float16), (4 * dim, np.float32)):
            rows = np.nonzero(widths == width)[0]
            if len(rows):
                picked = raw[starts[rows][:, None] + np.arange(width)]
                out[rows] = picked.view(kind).reshape(len(rows), dim)
        return out
    raise TypeError(f"unsupported embedding column type {kind}")


def binary_vectors(x: np.ndarray):
    """BINARY Arrow array of the rows of x: float16 bytes when every value is exactly a float16 (lossless),
    float32 bytes otherwise."""
    import pyarrow as pa

    x = np.ascontiguousarray(x, dtype=np.float32)
    payload = x
    head = x[:4]  # float32 data fails on the first rows: skip the full check
    if np.array_equal(head.astype(np.float16).astype(np.float32), head):
        half = x.astype(np.float16)
        if np.array_equal(half.astype(np.float32), x):
            payload = half
    n = len(payload)
    width = payload.shape[1] * payload.itemsize if n else 0
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32) if n else np.zeros(1, np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(payload)])


def _slices(total: int, rows: int = OUT_ROWS):
    for start in range(0, total, rows):
        yield start, min(total, start + rows)


def _rank_within(groups: np.ndarray, n_groups: int) -> np.ndarray:
    """For each element, how many earlier elements share its group (0, 1, 2, ... per group, in order)."""
    order = np.argsort(groups, kind="stable")
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(groups), np.int64)
    rank[order] = np.arange(len(groups)) - starts[groups[order]]
    return rank


# --------------------------------------------------------------------------------- Arrow stage bodies

def assign_sentences(centroids_bc, chunks_bc, id_col: str = "sentence_id", vec_col: str = "embedding"):
    """mapInArrow body: (id, embedding) -> (id, cluster_id, chunk, vec) with the nearest centroid.

    Within a cluster split into C chunks, a task deals its rows round-robin (starting at an offset from
    its partition id), so every chunk gets at most ceil(size / C) + (number of input tasks) rows.
    """
    def run(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        limit_threads(task_threads())
        centroids, chunks = centroids_bc.value, np.asarray(chunks_bc.value, np.int64)
        k, dim = centroids.shape
        ctx = TaskContext.get()
        dealt = np.full(k, ctx.partitionId() if ctx is not None else 0, np.int64)
        for batch in batches:
            if batch.num_rows == 0:
                continue
            vectors = arrow_vectors(batch.column(vec_col), dim)
            _, nearest = exact_top_k(vectors, centroids, 1)
            cluster = nearest[:, 0]
            chunk = (dealt[cluster] + _rank_within(cluster, k)) % chunks[cluster]
            dealt += np.bincount(cluster, minlength=k)
            ids = batch.column(id_col)
            for lo, hi in _slices(len(cluster)):
                yield pa.RecordBatch.from_arrays(
                    [ids.slice(lo, hi - lo), pa.array(cluster[lo:hi].astype(np.int32)),
                     pa.array(chunk[lo:hi].astype(np.int32)), binary_vectors(vectors[lo:hi])],
                    names=[id_col, "cluster_id", "chunk", "vec"])
    return run


def probe_images(centroids_bc, chunks_bc, n_probe: int, id_col: str = "image_id", vec_col: str = "embedding"):
    """mapInArrow body: (id, embedding) -> one (id, cluster_id, chunk, vec) row per probed cluster and
    chunk of that cluster (the image is replicated to every chunk of each of its n_probe clusters)."""
    def run(batches):
        import pyarrow as pa

        limit_threads(task_threads())
        centroids, chunks = centroids_bc.value, np.asarray(chunks_bc.value, np.int64)
        dim = centroids.shape[1]
        probes = min(n_probe, len(centroids))
        for batch in batches:
            if batch.num_rows == 0:
                continue
            vectors = arrow_vectors(batch.column(vec_col), dim)
            _, nearest = exact_top_k(vectors, centroids, probes)
            flat_cluster = nearest.reshape(-1)
            copies = chunks[flat_cluster]
            row = np.repeat(np.repeat(np.arange(len(vectors)), nearest.shape[1]), copies)
            cluster = np.repeat(flat_cluster, copies).astype(np.int32)
            starts = np.concatenate([[0], np.cumsum(copies)[:-1]])
            chunk = (np.arange(len(row)) - np.repeat(starts, copies)).astype(np.int32)
            ids = batch.column(id_col)
            for lo, hi in _slices(len(row)):
                rows = row[lo:hi]
                yield pa.RecordBatch.from_arrays(
                    [ids.take(pa.array(rows)), pa.array(cluster[lo:hi]), pa.array(chunk[lo:hi]),
                     binary_vectors(vectors[rows])],
                    names=[id_col, "cluster_id", "chunk", "vec"])
    return run


def search_chunk(top_k: int, min_score: float | None, dim: int, stats_rows: bool = False, device: str = "auto"):
    """cogroup/applyInArrow body: exact inner-product top-k of one (cluster, chunk)'s images over its
    sentences, on the CPU or the task's GPU (`search_device`). With `stats_rows`, one more row per
    group (image_id NULL) carries its sizes (see `SearchStats`)."""
    import pyarrow as pa

    schema = pa.schema([("image_id", pa.string()), ("sentence_id", pa.string()), ("score", pa.float32()),
                        ("cluster_id", pa.int32()), ("group_sentences", pa.int32()), ("group_images", pa.int32())])

    def run(images, sentences):
        if images.num_rows == 0 or sentences.num_rows == 0:
            return schema.empty_table()
        where = search_device(device)
        if where == "cpu":
            limit_threads(task_threads())
        queries = arrow_vectors(images.column("vec"), dim)
        corpus = arrow_vectors(sentences.column("vec"), dim)
        scores, best = exact_top_k(queries, corpus, top_k, where)
        scores, best = scores.reshape(-1), best.reshape(-1)
        query_row = np.repeat(np.arange(len(queries)), best.size // max(1, len(queries)))
        keep = best >= 0
        if min_score is not None:
            keep &= scores >= min_score
        if not keep.all():
            scores, best, query_row = scores[keep], best[keep], query_row[keep]
        cluster_id = images.column("cluster_id")[0].as_py()
        table = pa.table({
            "image_id": images.column("image_id").take(pa.array(query_row)),
            "sentence_id": sentences.column("sentence_id").take(pa.array(best)),
            "score": pa.array(scores.astype(np.float32)),
            "cluster_id": pa.array(np.full(len(best), cluster_id, np.int32)),
            "group_sentences": pa.array(np.full(len(best), sentences.num_rows, np.int32)),
            "group_images": pa.array(np.full(len(best), images.num_rows, np.int32)),
        }, schema=schema)
        if not stats_rows:
            return table
        stats = pa.table({"image_id": pa.nulls(1, pa.string()), "sentence_id": pa.nulls(1, pa.string()),
                          "score": pa.nulls(1, pa.float32()), "cluster_id": pa.array([cluster_id], pa.int32()),
                          "group_sentences": pa.array([sentences.num_rows], pa.int32()),
                          "group_images": pa.array([images.num_rows], pa.int32())}, schema=schema)
        return pa.concat_tables([table, stats])

    return run


# ---------------------------------------------------------------------------------- pandas bodies

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
