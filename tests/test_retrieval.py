import numpy as np
import pandas as pd

from realsyn_spark.clustering import auto_clusters, train_kmeans
from realsyn_spark.config import RetrievalConfig
from realsyn_spark.stages.retrieve import hierarchical_search
from udfs.retrieval import search_cluster, top_k_indices


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n, d, centers, seed):
    rng = np.random.default_rng(seed)
    means = _unit(rng.normal(size=(centers, d)))
    return _unit(means[rng.integers(0, centers, n)] + 0.35 * rng.normal(size=(n, d)) / np.sqrt(d) * 4)


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
