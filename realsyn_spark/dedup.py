"""Redundancy filtering at scale: perceptual near-duplicates of images, semantic duplicates of images and
sentences, connected components in Spark, and the provenance of kept rows.

* `connected_components`: large-star / small-star (Kiveris et al., SoCC 2014) on a DataFrame of edges;
  O(log n) rounds of joins and aggregations, lineage cut each round. Nothing is collected to the driver.
* `near_duplicate_groups`: 64-bit pHash views, LSH keys on combinations of hash blocks joined in Spark
  (a windowed self-join per key), Hamming verification, then connected components.
* `semantic_duplicate_groups`: spherical k-means (FAISS on a sample chosen by id hash), then per cluster a
  blocked cosine matrix and union-find; each group keeps the member nearest its centroid. One
  implementation serves images and sentences.
* `resolve_duplicate_chains` points `duplicate_of` at the row that is finally kept, and
  `image_sources` lists every occurrence a kept image stands for.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from udfs.phash import key_masks

log = logging.getLogger("realsyn")


# ---------------------------------------------------------------------------------------------------
# Connected components
# ---------------------------------------------------------------------------------------------------

def _fingerprint(edges: DataFrame) -> tuple[int, int]:
    row = edges.agg(F.count(F.lit(1)).alias("n"),
                    F.sum(F.xxhash64("u", "v").cast("decimal(38,0)")).alias("h")).first()
    return int(row.n), int(row.h or 0)


def _large_star(edges: DataFrame) -> DataFrame:
    """Every node u links its larger neighbours to min(N(u) + u)."""
    sym = edges.select("u", "v").union(edges.select(F.col("v").alias("u"), F.col("u").alias("v"))).distinct()
    low = sym.groupBy("u").agg(F.min("v").alias("m")).withColumn("m", F.least("u", "m"))
    return (sym.join(low, "u").where(F.col("v") > F.col("u"))
            .select(F.col("v").alias("u"), F.col("m").alias("v")).distinct())


def _small_star(edges: DataFrame) -> DataFrame:
    """Every node u links itself and its smaller neighbours to the smallest of them."""
    oriented = edges.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v")).distinct()
    low = oriented.groupBy("u").agg(F.min("v").alias("m"))
    linked = oriented.join(low, "u")
    return (linked.where(F.col("v") != F.col("m")).select(F.col("v").alias("u"), F.col("m").alias("v"))
            .union(low.select("u", F.col("m").alias("v"))).distinct())


def _is_star_forest(edges: DataFrame) -> bool:
    """Edges oriented (u > v): a forest of stars when no centre v is itself a leaf and each leaf has one centre."""
    leaves = edges.select(F.col("u").alias("node")).distinct()
    centres = edges.select(F.col("v").alias("node")).distinct()
    if centres.join(leaves, "node").limit(1).count():
        return False
    return edges.groupBy("u").count().where("count > 1").limit(1).count() == 0


def connected_components(edges: DataFrame, max_iterations: int = 40) -> tuple[DataFrame, int]:
    """(node, component) for every node that has an edge; component = the smallest node id reachable.

    `edges` has columns u, v (same type, comparable). Each round is a large-star then a small-star
    step; both keep connectivity, and the rounds stop when the edges form stars around each
    component's minimum (Kiveris et al. 2014: O(log n) rounds). Lineage is cut every round.
    Returns the mapping and the number of rounds.
    """
    current = (edges.where(F.col("u") != F.col("v"))
               .select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v")).distinct()
               .localCheckpoint(eager=True))
    rounds = 0
    while not _is_star_forest(current):
        rounds += 1
        if rounds > max_iterations:
            raise RuntimeError(f"connected components did not converge in {max_iterations} rounds "
                               "(raise dedup.max_cc_iterations)")
        current = _small_star(_large_star(current)).localCheckpoint(eager=True)
    # A star per component: every edge (leaf, centre) with the centre the component minimum.
    nodes = current.select(F.col("u").alias("node"), F.col("v").alias("component")).union(
        current.select(F.col("v").alias("node"), F.col("v").alias("component"))).distinct()
    return nodes, rounds


# ---------------------------------------------------------------------------------------------------
# Perceptual near-duplicates (pHash + LSH)
# ---------------------------------------------------------------------------------------------------

def _hamming(a: Column, b: Column) -> Column:
    return F.bit_count(a.bitwiseXOR(b))


def near_duplicate_candidates(items: DataFrame, id_col: str, n_blocks: int, key_blocks: int,
                              window: int) -> DataFrame:
    """Candidate pairs (a, b), a < b, of `items` (id_col, phash, phash_core) sharing an LSH key.

    Keys: for each view (whole, core) and each combination of `key_blocks` of the `n_blocks` hash blocks,
    (view, table, hash & mask). Inside a key, rows are ordered by hash and each row is paired with the
    next `window` rows (every pair when the key holds at most window + 1 rows); the self-join is an
    equi-join on (view, table, key, block of `window` ranks), so its cost is O(rows * window).
    """
    masks = key_masks(n_blocks, key_blocks)
    views = [("full", "phash"), ("core", "phash_core")]
    keyed = None
    for view_index, (_, column) in enumerate(views):
        exploded = (items.where(F.col(column).isNotNull())
                    .select(id_col, F.col(column).alias("h"),
                            F.posexplode(F.array(*[F.lit(m).cast("bigint") for m in masks])).alias("table", "mask"))
                    .select(id_col, "h", F.lit(view_index).alias("view"), "table",
                            F.col("h").bitwiseAND(F.col("mask")).alias("key")))
        keyed = exploded if keyed is None else keyed.unionByName(exploded)
    bucket = Window.partitionBy("view", "table", "key").orderBy("h", id_col)
    ranked = (keyed.withColumn("rank", F.row_number().over(bucket))
              .withColumn("block", F.floor((F.col("rank") - 1) / window)))
    left = ranked.select(F.col(id_col).alias("a"), "view", "table", "key", "block", F.col("rank").alias("ra"))
    right = (ranked.select(F.col(id_col).alias("b"), "view", "table", "key", F.col("rank").alias("rb"),
                           F.explode(F.array(F.col("block"), F.col("block") - 1)).alias("block")))
    pairs = (left.join(right, ["view", "table", "key", "block"])
             .where((F.col("rb") > F.col("ra")) & (F.col("rb") - F.col("ra") <= window)))
    return (pairs.select(F.least("a", "b").alias("a"), F.greatest("a", "b").alias("b"))
            .where(F.col("a") != F.col("b")).distinct())


def near_duplicate_groups(items: DataFrame, id_col: str, max_distance: int, n_blocks: int, key_blocks: int,
                          window: int, max_iterations: int = 40) -> tuple[DataFrame, dict]:
    """Near-duplicate groups among `items` (id_col, phash, phash_core, area).

    Returns (member id_col, representative) for every member of a group of 2+ (the representative
    included, mapped to itself) and counters: candidate pairs, verified edges, CC rounds, groups.
    """
    candidates = near_duplicate_candidates(items, id_col, n_blocks, key_blocks, window).localCheckpoint(eager=True)
    hashes = items.select(id_col, "phash", "phash_core")
    a = hashes.select(F.col(id_col).alias("a"), F.col("phash").alias("pa"), F.col("phash_core").alias("ca"))
    b = hashes.select(F.col(id_col).alias("b"), F.col("phash").alias("pb"), F.col("phash_core").alias("cb"))
    distance = F.least(F.coalesce(_hamming(F.col("pa"), F.col("pb")), F.lit(99)),
                       F.coalesce(_hamming(F.col("ca"), F.col("cb")), F.lit(99)))
    edges = (candidates.join(a, "a").join(b, "b").where(distance <= max_distance)
             .select(F.col("a").alias("u"), F.col("b").alias("v")).localCheckpoint(eager=True))
    counters = {"near_dup_candidate_pairs": candidates.count(), "near_dup_edges": edges.count()}
    if counters["near_dup_edges"] == 0:
        empty = items.sparkSession.createDataFrame([], f"{id_col} string, representative string")
        counters["near_dup_cc_rounds"] = 0
        return empty, counters
    components, rounds = connected_components(edges, max_iterations)
    counters["near_dup_cc_rounds"] = rounds
    members = components.join(items.select(F.col(id_col).alias("node"), "area"), "node")
    best = Window.partitionBy("component").orderBy(F.desc_nulls_last("area"), F.col("node"))
    groups = (members.withColumn("representative", F.first("node").over(best))
              .select(F.col("node").alias(id_col), "representative"))
    return groups, counters


# ---------------------------------------------------------------------------------------------------
# Semantic duplicates (k-means + per-cluster union-find)
# ---------------------------------------------------------------------------------------------------

class UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx != ry:
            if rx < ry:
                rx, ry = ry, rx
            self.parent[rx] = ry


PAIR_BLOCK = 1024  # rows per cosine block: bounds the score matrix to PAIR_BLOCK x cluster size


def cluster_groups(ids: np.ndarray, vectors: np.ndarray, threshold: float) -> list[tuple[str, str, float, int]]:
    """Union-find over pairs with cosine >= threshold; (member, representative, cosine to it, size) for
    every member of a group of 2+ that is not its representative (the member nearest the group centroid,
    smallest id on ties). `vectors` are L2-normalised."""
    n = len(ids)
    if n < 2:
        return []
    order = np.argsort(ids, kind="stable")
    ids, vectors = ids[order], vectors[order]
    uf = UnionFind(n)
    for start in range(0, n, PAIR_BLOCK):
        scores = vectors[start:start + PAIR_BLOCK] @ vectors.T
        rows, cols = np.nonzero(scores >= threshold)
        rows = rows + start
        for i, j in zip(rows[cols > rows].tolist(), cols[cols > rows].tolist()):
            uf.union(i, j)
    roots = np.array([uf.find(i) for i in range(n)])
    out = []
    for root in np.unique(roots):
        members = np.nonzero(roots == root)[0]
        if len(members) < 2:
            continue
        centroid = vectors[members].mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        closeness = vectors[members] @ centroid
        rep = members[int(np.argmax(closeness))]      # argmax takes the first maximum: smallest id
        cosines = vectors[members] @ vectors[rep]
        for member, cosine in zip(members.tolist(), cosines.tolist()):
            if member != rep:
                out.append((str(ids[member]), str(ids[rep]), float(cosine), len(members)))
    return out


def cluster_dedup(id_col: str, threshold: float):
    """groupBy(cluster_id).applyInPandas body."""
    def run(frame: pd.DataFrame) -> pd.DataFrame:
        cluster_id = int(frame["cluster_id"].iloc[0]) if len(frame) else 0
        vectors = np.stack(frame["embedding"].to_numpy()).astype(np.float32) if len(frame) else None
        rows = cluster_groups(frame[id_col].to_numpy().astype(str), vectors, threshold) if len(frame) else []
        return pd.DataFrame({
            "item_id": pd.Series([r[0] for r in rows], dtype=object),
            "representative_id": pd.Series([r[1] for r in rows], dtype=object),
            "cluster_id": pd.Series([cluster_id] * len(rows), dtype=np.int32),
            "similarity": pd.Series([r[2] for r in rows], dtype=np.float32),
            "group_size": pd.Series([r[3] for r in rows], dtype=np.int32),
        })
    return run


SEMANTIC_GROUP_SCHEMA = "item_id string, representative_id string, cluster_id int, similarity float, group_size int"


def semantic_duplicate_groups(spark: SparkSession, vectors: DataFrame, id_col: str, threshold: float,
                              items_per_cluster: int, n_clusters: int | None, sample_size: int,
                              iterations: int, seed: int, ship_to: tuple[str, int] | None = None
                              ) -> tuple[DataFrame, dict]:
    """Semantic duplicates among `vectors` (id_col, embedding: L2-normalised).

    Returns rows (item_id, representative_id, cluster_id, similarity, group_size) for the members
    that are dropped, and counters (clusters, in-cluster pairs compared).
    """
    from realsyn_spark.clustering import auto_clusters, sample_vectors, train_kmeans
    from realsyn_spark.sparkutil import ship
    from udfs.retrieval import nearest_centroids

    vectors = vectors.select(id_col, "embedding").localCheckpoint(eager=True)
    n_rows = vectors.count()
    empty = spark.createDataFrame([], SEMANTIC_GROUP_SCHEMA)
    if n_rows < 2:
        return empty, {"clusters": 0, "pairs_compared": 0}
    k = auto_clusters(n_rows, items_per_cluster, n_clusters)
    centroids = train_kmeans(sample_vectors(vectors, n_rows, sample_size, seed, id_col), k, iterations, seed)
    centroids_bc = ship(centroids, *(ship_to or ("", 1 << 62)), name="dedup-centroids")
    assigned = (vectors.mapInPandas(nearest_centroids(centroids_bc, 1, id_col),
                                    f"{id_col} string, cluster_id int, probe_rank int, embedding array<float>")
                .drop("probe_rank").localCheckpoint(eager=True))
    sizes = assigned.groupBy("cluster_id").count()
    pairs = sizes.agg(F.sum(F.col("count") * (F.col("count") - 1) / 2)).first()[0] or 0
    groups = assigned.groupBy("cluster_id").applyInPandas(cluster_dedup(id_col, threshold), SEMANTIC_GROUP_SCHEMA)
    return groups, {"clusters": len(centroids), "pairs_compared": int(pairs)}


# ---------------------------------------------------------------------------------------------------
# duplicate_of chains and provenance
# ---------------------------------------------------------------------------------------------------

def resolve_duplicate_chains(df: DataFrame, id_col: str, max_hops: int = 8) -> DataFrame:
    """Point every duplicate_of at the row finally kept: an exact duplicate of an image that is itself a
    near-duplicate points at the near-duplicate group's representative, and so on (a few hops at most).
    Only the (small) set of rows that have a duplicate_of takes part in the iteration."""
    links = (df.where(F.col("duplicate_of").isNotNull())
             .select(F.col(id_col).alias("_c"), F.col("duplicate_of").alias("_t")).localCheckpoint(eager=True))
    for _ in range(max_hops):
        nxt = links.select(F.col("_c").alias("_t"), F.col("_t").alias("_t2"))
        if links.join(nxt, "_t").limit(1).count() == 0:
            break
        links = (links.join(nxt, "_t", "left").select("_c", F.coalesce("_t2", "_t").alias("_t"))
                 .localCheckpoint(eager=True))
    return (df.join(links, F.col(id_col) == F.col("_c"), "left")
            .withColumn("duplicate_of", F.coalesce("_t", "duplicate_of")).drop("_c", "_t"))


def _sources(lake, spec, id_col: str, fields: list[str]) -> DataFrame:
    from realsyn_spark.tables import DOCUMENTS

    rows = lake.read(spec)
    docs = lake.read(DOCUMENTS).select("doc_id", F.col("url").alias("doc_url"))
    kept = rows.where("drop_reason IS NULL").select(F.col(id_col).alias("_kept"))
    members = (rows.select(F.coalesce(F.when(F.col("drop_reason").isNull(), F.col(id_col)), F.col("duplicate_of"))
                           .alias("_kept"), F.col(id_col).alias("source_id"), *fields,
                           F.col("drop_reason").alias("reason"))
               .join(docs, "doc_id", "left"))
    source = F.struct("doc_id", "doc_url", *[f for f in fields if f != "doc_id"], "source_id", "reason")
    return (kept.join(members, "_kept")
            .groupBy("_kept").agg(F.count(F.lit(1)).alias("n_sources"),
                                  F.array_sort(F.collect_set("doc_id")).alias("doc_ids"),
                                  F.sort_array(F.collect_list(source)).alias("sources"))
            .withColumnRenamed("_kept", id_col))


def image_sources(lake) -> DataFrame:
    """Every kept image with all the occurrences it stands for: itself and each exact, near and semantic
    duplicate, as (doc_id, doc_url, position, image_url, source_id, reason) structs, plus the distinct
    documents and image URLs. Register it as a view with `.createOrReplaceTempView("image_sources")`."""
    from realsyn_spark.tables import IMAGES

    out = _sources(lake, IMAGES, "image_id", ["doc_id", "position", "image_url"])
    return out.withColumn("image_urls", F.array_sort(F.array_distinct(F.transform("sources", lambda s: s["image_url"]))))
