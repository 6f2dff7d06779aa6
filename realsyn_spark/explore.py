"""Lake queries behind the notebooks: open the lake from the config, sample rows, gather examples.

Driver code for exploration only; it uses DataFrame APIs that Spark Connect has (no RDDs, broadcasts or
`sparkContext`), ships the few centroids it needs inside a UDF closure, and samples by a seeded hash of the
row id (deterministic, no full sort of a big table). Rendering lives in `realsyn_spark.viz`.

Tables are read through `Lake` locations; an optional table that a run has not written yet (for example
`balanced` before the balance stage) is reported with a clear message and returns None, and only the
columns a query needs are selected, so tables that gain columns later do not break the notebooks.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from realsyn_spark.config import RealSynConfig, load_config
from realsyn_spark.tables import (CENTROIDS, FUNNEL, IMAGE_BLOBS, IMAGE_EMBEDDINGS, RETRIEVALS, SENTENCE_EMBEDDINGS,
                                  SENTENCES, Lake, TableSpec)


# -------------------------------------------------------------------------------------- lake access

def _resolve_local_root(root: str, start: Path) -> str:
    """A relative local lake root is looked up from `start` upwards (a notebook runs in notebooks/,
    `make demo` writes ./lake at the repository root); URIs and absolute paths are kept."""
    if "://" in root or root.startswith(("dbfs:", "file:")) or os.path.isabs(root):
        return root
    for folder in (start, *start.parents):
        if (folder / root).is_dir():
            return str((folder / root).resolve())
    return root


def open_lake(config: str | None = None, overrides: Sequence[str] = (), lake_root: str | None = None,
              spark: SparkSession | None = None) -> tuple[RealSynConfig, SparkSession, Lake]:
    """(config, session, lake) for a notebook: the same config as the jobs (defaults, YAML, `--set`
    overrides), `lake_root` as a shortcut for `lake.root=...`, the given or running session (Databricks),
    else the embedded local one."""
    from realsyn_spark.session import get_spark

    overrides = list(overrides) + ([f"lake.root={lake_root}"] if lake_root else [])
    cfg = load_config(config, overrides)
    root = _resolve_local_root(cfg.lake.root, Path.cwd())
    if root != cfg.lake.root:
        cfg = load_config(config, overrides + [f"lake.root={root}"])
    spark = spark or get_spark(cfg)
    return cfg, spark, Lake(spark, cfg.lake)


def read_table(lake: Lake, spec: TableSpec, required: bool = False, quiet: bool = False) -> DataFrame | None:
    """The table as a DataFrame, or None (with a message saying which table and where) when it is absent.

    Unlike `Lake.read`, never creates an empty table: a notebook must not write to the lake it explores."""
    location = lake.location(spec)
    try:
        df = (lake.spark.read.table(location) if lake.cfg.catalog_schema
              else lake.spark.read.format("delta").load(location))
        _ = df.columns  # analysis happens here (lazily under Spark Connect)
        return df
    except Exception as exc:
        message = (f"table `{spec.name}` ({spec.doc}) is not in the lake at {location}: run the pipeline "
                   f"(`make demo` locally, or `realsyn run`) or point the parameters cell at your lake")
        if required:
            raise LookupError(message) from exc
        if not quiet:
            print("NOTE: " + message)
        return None


def _present(df: DataFrame, columns: Iterable[str]) -> list[str]:
    have = set(df.columns)
    return [c for c in columns if c in have]


def _hash_order(id_col: str, seed: int):
    return F.xxhash64(F.col(id_col), F.lit(seed))


def _dicts(df: DataFrame) -> list[dict]:
    return [r.asDict(recursive=True) for r in df.collect()]


# ---------------------------------------------------------------------------------- dataset browser

BROWSER_COLUMNS = ("image_id", "raw_image_url", "image_bytes", "text1", "score1", "text2", "score2", "text3",
                   "score3", "syn_text", "similarity", "cluster_id", "cluster_rank", "scales")


def filter_dataset(dataset: DataFrame, clusters: Sequence[int] | None = None, scale: int | None = None,
                   score_range: tuple[float, float] | None = None,
                   similarity_range: tuple[float, float] | None = None, search: str | None = None) -> DataFrame:
    """Rows of `dataset` by cluster ids, scale (a cap in `scales`), best retrieval score (`score1`)
    range, image<->synthetic similarity range, and a case-insensitive substring over every text."""
    df = dataset
    if clusters:
        df = df.where(F.col("cluster_id").isin([int(c) for c in clusters]))
    if scale is not None:
        df = df.where(F.array_contains("scales", int(scale)))
    if score_range is not None:
        df = df.where(F.col("score1").between(float(score_range[0]), float(score_range[1])))
    if similarity_range is not None:
        df = df.where(F.col("similarity").between(float(similarity_range[0]), float(similarity_range[1])))
    if search:
        texts = F.lower(F.concat_ws(" ", *[F.col(c) for c in _present(df, ("text1", "text2", "text3", "syn_text"))]))
        df = df.where(texts.contains(search.lower()))
    return df


def sample_rows(df: DataFrame, n: int, seed: int = 0, id_col: str = "image_id",
                columns: Sequence[str] | None = None) -> list[dict]:
    """`n` rows in a seeded pseudo-random order (change `seed` for another sample), as dicts."""
    cols = _present(df, columns) if columns else df.columns
    return _dicts(df.orderBy(_hash_order(id_col, seed), id_col).limit(int(n)).select(*cols))


def browse(dataset: DataFrame, n: int = 12, seed: int = 0, **filters) -> list[dict]:
    """Filtered random sample of dataset rows with the columns the browser shows."""
    return sample_rows(filter_dataset(dataset, **filters), n, seed, columns=BROWSER_COLUMNS)


# ------------------------------------------------------------------------------ funnel / quarantine

def funnel_report(lake: Lake) -> list[tuple]:
    """The `funnel` stage's rows (in report order), else computed now from `images` / `sentences`."""
    from realsyn_spark import funnel

    stored = read_table(lake, FUNNEL, quiet=True)
    rows = [tuple(r) for r in stored.select(*FUNNEL.schema.fieldNames()).collect()] if stored is not None else []
    if not rows:
        return funnel.funnel_rows(lake, None)
    order = {m: i for i, m in enumerate(funnel.FUNNEL_STEPS)}
    return sorted(rows, key=lambda r: (order.get(r[0], 9), r[1], r[3] != "*", r[3]))


def _per_group_sample(df: DataFrame, group_col: str, id_col: str, per_group: int, seed: int) -> DataFrame:
    w = Window.partitionBy(group_col).orderBy(_hash_order(id_col, seed), id_col)
    return df.withColumn("_pick", F.row_number().over(w)).where(F.col("_pick") <= per_group).drop("_pick")


def dropped_images(lake: Lake, images: DataFrame, per_rule: int = 6, seed: int = 0) -> dict[str, list[dict]]:
    """Per drop rule, a sample of the dropped images with their bytes (from `image_blobs`, when stored)."""
    picked = _per_group_sample(images.where("drop_reason IS NOT NULL")
                               .select(*_present(images, ("image_id", "image_url", "drop_reason", "width", "height",
                                                          "duplicate_of"))),
                               "drop_reason", "image_id", per_rule, seed)
    blobs = read_table(lake, IMAGE_BLOBS)
    if blobs is not None:
        picked = picked.join(blobs.select("image_url", "image_bytes"), "image_url", "left")
    out: dict[str, list[dict]] = {}
    for row in _dicts(picked.orderBy("drop_reason", "image_id")):
        out.setdefault(row["drop_reason"], []).append(row)
    return out


def dropped_sentences(sentences: DataFrame, per_rule: int = 5, seed: int = 0) -> dict[str, list[str]]:
    """Per drop rule, a sample of the dropped sentences' texts."""
    picked = _per_group_sample(sentences.where("drop_reason IS NOT NULL").select("sentence_id", "drop_reason", "text"),
                               "drop_reason", "sentence_id", per_rule, seed)
    out: dict[str, list[str]] = {}
    for row in picked.orderBy("drop_reason", "sentence_id").collect():
        out.setdefault(row.drop_reason, []).append(row.text)
    return out


def quarantine(errors: DataFrame, per_kind: int = 3, seed: int = 0) -> tuple[pd.DataFrame, dict[str, list[dict]]]:
    """(counts per stage and kind, a few example records per kind: source, location, reason)."""
    counts = errors.groupBy("stage", "kind").count().orderBy("stage", F.desc("count"), "kind").toPandas()
    picked = _per_group_sample(errors.select(*_present(errors, ("error_id", "stage", "kind", "source_uri",
                                                                 "location", "reason"))),
                               "kind", "error_id", per_kind, seed)
    examples: dict[str, list[dict]] = {}
    for row in _dicts(picked.orderBy("kind", "error_id")):
        examples.setdefault(row["kind"], []).append(row)
    return counts, examples


# ------------------------------------------------------------------------------------------ retrieval

def retrieval_centroids(lake: Lake) -> tuple[str, str, np.ndarray] | None:
    """(centroid version, model id, k x d centroids) that the current `retrievals` were searched with."""
    retrievals, centroids = read_table(lake, RETRIEVALS), read_table(lake, CENTROIDS)
    if retrievals is None or centroids is None:
        return None
    top = retrievals.groupBy("centroid_version").count().orderBy(F.desc("count")).first()
    if top is None:
        print("NOTE: `retrievals` is empty")
        return None
    rows = (centroids.where((F.col("version") == top.centroid_version) & (F.col("purpose") == "retrieval"))
            .orderBy("cluster_id").select("cluster_id", "centroid", "model_id").collect())
    if not rows:
        print(f"NOTE: centroids of version {top.centroid_version} are not in `centroids`")
        return None
    matrix = np.asarray([r.centroid for r in rows], dtype=np.float32)
    return top.centroid_version, rows[0].model_id, matrix


def nearest_clusters(vectors: np.ndarray, centroids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores) of the n nearest centroids (inner product) of each row, best first."""
    scores = np.asarray(vectors, np.float32) @ centroids.T
    n = min(n, centroids.shape[0])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return order, np.take_along_axis(scores, order, axis=1)


def kept_sentence_vectors(lake: Lake, model_id: str) -> DataFrame:
    kept = read_table(lake, SENTENCES, required=True).where("drop_reason IS NULL").select("sentence_id")
    vectors = read_table(lake, SENTENCE_EMBEDDINGS, required=True)
    return vectors.where(F.col("model_id") == model_id).select("sentence_id", "embedding").join(kept, "sentence_id")


def _cluster_scores(centroids: np.ndarray, query: np.ndarray | None, keep: Sequence[int] | None):
    """mapInPandas body (centroids and query in the closure): sentence -> nearest cluster (+ score to query)."""
    centroids = np.ascontiguousarray(centroids, np.float32)
    keep_set = None if keep is None else np.asarray(sorted(set(int(k) for k in keep)), np.int32)

    def run(batches):
        for frame in batches:
            if frame.empty:
                continue
            vectors = np.stack(frame["embedding"].to_numpy()).astype(np.float32)
            cluster = np.argmax(vectors @ centroids.T, axis=1).astype(np.int32)
            mask = np.ones(len(frame), bool) if keep_set is None else np.isin(cluster, keep_set)
            score = (vectors[mask] @ query).astype(np.float32) if query is not None else np.zeros(mask.sum(), np.float32)
            yield pd.DataFrame({"sentence_id": frame["sentence_id"].to_numpy()[mask], "cluster_id": cluster[mask],
                                "score": score})
    return run


SCORED = "sentence_id string, cluster_id int, score float"


def sentence_clusters(sentence_vectors: DataFrame, centroids: np.ndarray) -> DataFrame:
    """(sentence_id, cluster_id) of every sentence's nearest centroid (as the retrieval stage assigns them)."""
    return sentence_vectors.mapInPandas(_cluster_scores(centroids, None, None), SCORED).select("sentence_id", "cluster_id")


def probe_view(lake: Lake, image_id: str, n_probe: int, per_probe: int = 5) -> dict | None:
    """For one image: its nearest centroids, and per probed cluster the best sentences in that cluster
    (score = cosine with the image), marking those the pipeline stored as the image's top-k."""
    found = retrieval_centroids(lake)
    if found is None:
        return None
    version, model_id, centroids = found
    images = read_table(lake, IMAGE_EMBEDDINGS, required=True)
    row = images.where((F.col("image_id") == image_id) & (F.col("model_id") == model_id)).select("embedding").first()
    if row is None:
        print(f"NOTE: image {image_id} has no embedding for model {model_id}")
        return None
    query = np.asarray(row.embedding, np.float32)
    probes, probe_scores = nearest_clusters(query[None, :], centroids, n_probe)
    probes, probe_scores = probes[0].tolist(), probe_scores[0].tolist()
    scored = kept_sentence_vectors(lake, model_id).mapInPandas(_cluster_scores(centroids, query, probes), SCORED)
    best = _per_group_sample_by_score(scored, per_probe)
    stored = (read_table(lake, RETRIEVALS, required=True)
              .where((F.col("image_id") == image_id) & (F.col("centroid_version") == version))
              .select("sentence_id", F.col("rank").alias("stored_rank")))
    texts = read_table(lake, SENTENCES, required=True).select("sentence_id", "text")
    rows = _dicts(best.join(texts, "sentence_id").join(stored, "sentence_id", "left")
                  .orderBy("cluster_id", F.desc("score")))
    stored_rows = _dicts(stored.join(texts, "sentence_id").orderBy("stored_rank"))
    per_cluster = {c: [r for r in rows if r["cluster_id"] == c] for c in probes}
    return {"image_id": image_id, "centroid_version": version, "model_id": model_id,
            "probes": list(zip(probes, probe_scores)), "sentences": per_cluster, "stored": stored_rows}


def _per_group_sample_by_score(df: DataFrame, per_group: int) -> DataFrame:
    w = Window.partitionBy("cluster_id").orderBy(F.desc("score"), "sentence_id")
    return df.withColumn("_r", F.row_number().over(w)).where(F.col("_r") <= per_group).drop("_r")


def vector_sample(df: DataFrame, id_col: str, n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """(ids, vectors) of a seeded sample of n rows of an (id, embedding) frame."""
    rows = df.orderBy(_hash_order(id_col, seed), id_col).limit(int(n)).select(id_col, "embedding").collect()
    if not rows:
        return [], np.zeros((0, 0), np.float32)
    return [r[id_col] for r in rows], np.asarray([r.embedding for r in rows], np.float32)


# -------------------------------------------------------------------------------------------- balance

def cluster_sizes_by_cap(balanced: DataFrame, caps: Sequence[int]) -> dict[str, list[int]]:
    """Cluster sizes before capping and after each cap t (min(|c|, t), from the stored ranks)."""
    kept = balanced.where("drop_reason IS NULL AND cluster_id IS NOT NULL")
    aggs = [F.count(F.lit(1)).alias("before")] + [
        F.sum(F.when(F.col("cluster_rank") <= int(c), 1).otherwise(0)).alias(f"cap_{c}") for c in caps]
    frame = kept.groupBy("cluster_id").agg(*aggs).toPandas()
    series = {"before": frame["before"].astype(int).tolist()} if len(frame) else {"before": []}
    for c in caps:
        series[f"cap {c}"] = frame[f"cap_{c}"].astype(int).tolist() if len(frame) else []
    return series


def images_per_scale(balanced: DataFrame, caps: Sequence[int]) -> dict[str, int]:
    kept = balanced.where("drop_reason IS NULL AND cluster_id IS NOT NULL")
    aggs = [F.count(F.lit(1)).alias("in band")] + [
        F.sum(F.when(F.col("cluster_rank") <= int(c), 1).otherwise(0)).alias(f"cap {c}") for c in caps]
    row = kept.agg(*aggs).first().asDict()
    return {k: int(v or 0) for k, v in row.items()}


def largest_clusters(balanced: DataFrame, n: int) -> list[tuple[int, int]]:
    """(cluster_id, size) of the n most populated clusters."""
    rows = (balanced.where("drop_reason IS NULL AND cluster_id IS NOT NULL").groupBy("cluster_id").count()
            .orderBy(F.desc("count"), "cluster_id").limit(int(n)).collect())
    return [(int(r.cluster_id), int(r["count"])) for r in rows]


def cluster_members(balanced: DataFrame, dataset: DataFrame | None, cluster_id: int, limit: int,
                    max_rank: int | None = None) -> list[dict]:
    """Members of one balance cluster in rank order (the cap keeps rank <= t), with image bytes from
    `dataset` where the image was exported."""
    df = balanced.where((F.col("cluster_id") == int(cluster_id)) & F.col("drop_reason").isNull())
    if max_rank is not None:
        df = df.where(F.col("cluster_rank") <= int(max_rank))
    df = df.select(*_present(df, ("image_id", "cluster_rank", "similarity"))).orderBy("cluster_rank").limit(int(limit))
    if dataset is not None:
        df = df.join(dataset.select("image_id", "image_bytes"), "image_id", "left").orderBy("cluster_rank")
    return _dicts(df)
