import numpy as np
import pandas as pd
import pytest

from realsyn_spark.clustering import auto_clusters, train_kmeans
from realsyn_spark.config import RetrievalConfig
from realsyn_spark.stages.retrieve import hierarchical_search
from tests.vectors import clustered
from tests.vectors import unit as _unit
from udfs.retrieval import search_cluster, top_k_indices


def test_top_k_indices_sorted_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [3.0, 2.0, 1.0, 0.0]])
    assert top_k_indices(scores, 3).tolist() == [[1, 3, 2], [0, 1, 2]]
    assert top_k_indices(scores, 10).shape == (2, 4)


def test_search_cluster_matches_brute_force_and_applies_floor():
    rng = np.random.default_rng(0)
    q, x = _unit(rng.normal(size=(5, 8))), _unit(rng.normal(size=(40, 8)))
    images = pd.DataFrame({"image_id": [f"i{i}" for i in range(5)], "cluster_id": 3, "embedding": list(q)})
    sentences = pd.DataFrame({"sentence_id": [f"s{i}" for i in range(40)], "cluster_id": 3, "embedding": list(x)})
    out = search_cluster(3, None)(images, sentences)
    expected = np.argsort(-(q @ x.T), axis=1)[:, :3]
    for i in range(5):
        got = out[out.image_id == f"i{i}"].sentence_id.tolist()
        assert got == [f"s{j}" for j in expected[i]]
    floored = search_cluster(3, 0.99)(images, sentences)
    assert (floored.score >= 0.99).all() and len(floored) < len(out)


def test_kmeans_centroids_are_unit_and_k_bounded():
    x = clustered(500, 16, 5, 1)
    c = train_kmeans(x, 5, 10, 0)
    assert c.shape == (5, 16) and np.allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
    assert train_kmeans(x[:3], 10, 5, 0).shape[0] == 3
    assert auto_clusters(1000, 420, None) == 2 and auto_clusters(10, 420, None) == 1 and auto_clusters(5, 1, 50) == 5


def _brute_force(q, x, k):
    return np.argsort(-(q @ x.T), axis=1)[:, :k]


def test_hierarchical_search_recall_on_spark(spark):
    d, k = 32, 3
    x, q = clustered(3000, d, 12, 2), clustered(200, d, 12, 3)
    sentences = spark.createDataFrame(pd.DataFrame({"sentence_id": [f"s{i:05d}" for i in range(len(x))],
                                                    "embedding": list(x)}))
    images = spark.createDataFrame(pd.DataFrame({"image_id": [f"i{i:04d}" for i in range(len(q))],
                                                 "embedding": list(q)}))
    centroids = train_kmeans(x, 12, 20, 0)
    truth = _brute_force(q, x, k)

    def recall(n_probe):
        cfg = RetrievalConfig(n_probe=n_probe, top_k=k)
        got = hierarchical_search(spark, images, sentences, centroids, cfg).toPandas()
        assert (got.groupby("image_id").size() <= k).all()
        hits = 0
        for i in range(len(q)):
            found = set(got[got.image_id == f"i{i:04d}"].sentence_id)
            hits += len(found & {f"s{j:05d}" for j in truth[i]})
        return hits / truth.size

    exact, one, four = recall(12), recall(1), recall(4)
    assert exact == 1.0          # probing every cluster is brute force
    assert four >= one           # more probes never lose neighbours
    assert one > 0.5             # a single probe already finds most (clustered data)


# ------------------------------------------------------------------ Arrow bodies, chunking, cluster rule

def _frames(spark, x, q):
    sentences = spark.createDataFrame(pd.DataFrame({"sentence_id": [f"s{i:05d}" for i in range(len(x))],
                                                    "embedding": list(x)}))
    images = spark.createDataFrame(pd.DataFrame({"image_id": [f"i{i:04d}" for i in range(len(q))],
                                                 "embedding": list(q)}))
    return sentences, images


def test_arrow_vectors_roundtrip_list_and_binary():
    import pyarrow as pa

    from udfs.retrieval import arrow_vectors, binary_vectors

    x = _unit(np.random.default_rng(4).normal(size=(7, 5)))
    lists = pa.array(list(x), type=pa.list_(pa.float32()))
    np.testing.assert_array_equal(arrow_vectors(lists), x)
    np.testing.assert_array_equal(arrow_vectors(lists.slice(2, 3)), x[2:5])
    np.testing.assert_array_equal(arrow_vectors(pa.chunked_array([lists.slice(0, 3), lists.slice(3)])), x)
    packed = binary_vectors(x)
    np.testing.assert_array_equal(arrow_vectors(packed, 5), x)
    np.testing.assert_array_equal(arrow_vectors(packed.slice(1, 4), 5), x[1:5])
    half = x.astype(np.float16).astype(np.float32)
    assert arrow_vectors(binary_vectors(half), 5).dtype == np.float32
    # float16-stored and float32-stored rows can meet in one shuffle batch
    mixed = pa.concat_arrays([binary_vectors(half[:3]), binary_vectors(x[3:])])
    np.testing.assert_array_equal(arrow_vectors(mixed, 5), np.concatenate([half[:3], x[3:]]))
    np.testing.assert_array_equal(arrow_vectors(mixed.slice(2, 3), 5), np.concatenate([half[2:3], x[3:5]]))
    with pytest.raises(ValueError):
        arrow_vectors(pa.array([[1.0, 2.0], [1.0]], type=pa.list_(pa.float32())))
    with pytest.raises(ValueError):
        arrow_vectors(lists, 6)


def test_chunk_plan_bounds_groups_and_uses_sample_estimates():
    from realsyn_spark.clustering import chunk_plan

    x = clustered(4000, 16, 6, 5)
    c = train_kmeans(x, 6, 10, 0)
    sizes = np.bincount(np.argmax(x @ c.T, axis=1), minlength=6)
    exact = chunk_plan(x, c, len(x), 300, input_tasks=4)          # sample == everything: exact sizes
    assert (exact == np.ceil(sizes / (300 - 4))).all()
    sampled = chunk_plan(x[:800], c, len(x), 300, input_tasks=4)  # 20% sample: an upper bound, never fewer
    assert (sampled >= exact).all()
    assert (chunk_plan(x, c, len(x), 10**9) == 1).all()


def test_retrieval_cluster_rule_is_sqrt_beyond_the_paper_ratio():
    from realsyn_spark.clustering import retrieval_clusters

    assert retrieval_clusters(42_000, 420, None) == 100                 # paper ratio for small corpora
    assert retrieval_clusters(2_000_000, 420, None) == 1414             # sqrt(n) clusters of sqrt(n)
    assert retrieval_clusters(500, 420, None) == 1 and retrieval_clusters(100, 420, 7) == 7


def test_split_clusters_give_the_unsplit_result(spark):
    from realsyn_spark.clustering import chunk_plan
    from realsyn_spark.sparkutil import input_partitions
    from realsyn_spark.stages.retrieve import search_with_stats

    d, k = 16, 3
    x, q = clustered(1500, d, 5, 6), clustered(120, d, 5, 7)
    sentences, images = _frames(spark, x, q)
    centroids = train_kmeans(x, 5, 10, 0)
    cfg = RetrievalConfig(n_probe=2, top_k=k)
    unsplit = hierarchical_search(spark, images, sentences, centroids, cfg,
                                  chunks=np.ones(5, np.int32)).toPandas()
    small = RetrievalConfig(n_probe=2, top_k=k, max_vectors_per_task=100)
    chunks = chunk_plan(x, centroids, len(x), 100, input_tasks=input_partitions(sentences))
    assert (chunks > 1).all()
    found, stats, matches = search_with_stats(spark, images, sentences, centroids, small, chunks=chunks)
    split = found.toPandas()
    matches.unpersist()
    key = ["image_id", "rank"]
    a, b = unsplit.sort_values(key).reset_index(drop=True), split.sort_values(key).reset_index(drop=True)
    assert a[["image_id", "rank", "sentence_id", "cluster_id"]].equals(b[["image_id", "rank", "sentence_id", "cluster_id"]])
    np.testing.assert_allclose(a.score, b.score, rtol=0, atol=1e-6)
    assert 0 < stats["max_sentences"] <= 100 and stats["groups"] >= chunks.sum() - 1
    # the plan computed inside hierarchical_search (no chunks given) bounds the groups the same way
    found2, stats2, matches2 = search_with_stats(spark, images, sentences, centroids, small)
    auto = found2.toPandas()
    matches2.unpersist()
    assert stats2["max_sentences"] <= 100
    assert auto.sort_values(key).reset_index(drop=True)[["image_id", "sentence_id"]].equals(a[["image_id", "sentence_id"]])
    # and the result is exactly brute force over the probed clusters
    home = np.argmax(x @ centroids.T, axis=1)
    probes = np.argsort(-(q @ centroids.T), axis=1)[:, :2]
    for i in range(0, len(q), 17):
        allowed = np.nonzero(np.isin(home, probes[i]))[0]
        best = allowed[np.argsort(-(q[i] @ x[allowed].T))[:k]]
        assert a[a.image_id == f"i{i:04d}"].sentence_id.tolist() == [f"s{j:05d}" for j in best]


def test_min_score_floor_and_float16_inputs_on_spark(spark):
    d = 16
    x = clustered(600, d, 4, 8).astype(np.float16).astype(np.float32)   # as stored with storage_dtype float16
    q = clustered(40, d, 4, 9).astype(np.float16).astype(np.float32)
    sentences, images = _frames(spark, x, q)
    centroids = train_kmeans(x, 4, 10, 0)
    got = hierarchical_search(spark, images, sentences, centroids, RetrievalConfig(n_probe=4, top_k=3)).toPandas()
    truth = _brute_force(q, x, 3)                    # n_probe = all clusters: exact, half bytes are lossless
    for i in range(len(q)):
        assert got[got.image_id == f"i{i:04d}"].sort_values("rank").sentence_id.tolist() == \
            [f"s{j:05d}" for j in truth[i]]
    floor = float(np.median(got.score))
    floored = hierarchical_search(spark, images, sentences, centroids,
                                  RetrievalConfig(n_probe=4, top_k=3, min_score=floor)).toPandas()
    assert (floored.score >= floor).all() and 0 < len(floored) < len(got)
