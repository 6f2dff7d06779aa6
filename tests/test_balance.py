"""Two-level balance k-means on Spark: dense fine ids, exact in-cell assignment, quality near flat k-means,
layout-independent training, incremental refresh == full assignment, drift check, scale views."""
from __future__ import annotations

import inspect

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from realsyn_spark.clustering import train_kmeans
from realsyn_spark.config import BalanceConfig, LakeConfig
from realsyn_spark.stages import balance
from realsyn_spark.tables import BALANCE_CENTROIDS, BALANCED, Lake
from tests.vectors import clustered, unit

CFG = BalanceConfig(images_per_cluster=30, kmeans_iterations=15, coarse_probe=2, max_images_per_task=400)


def _banded(spark, x, prefix="i", partitions=3, request="h1"):
    frame = pd.DataFrame({"image_id": [f"{prefix}{i:05d}" for i in range(len(x))], "request_hash": request,
                          "similarity": 0.5, "drop_reason": None, "embedding": list(x)})
    frame["drop_reason"] = frame["drop_reason"].astype(object)
    schema = "image_id string, request_hash string, similarity float, drop_reason string, embedding array<float>"
    return spark.createDataFrame(frame, schema).repartition(partitions)


def _fine(lake, version):
    rows = balance.centroids_of(lake, version, "fine").select("cell", "cluster_id", "centroid").toPandas()
    return rows.sort_values("cluster_id")


def _build(spark, tmp_path, x, name, cfg=CFG, partitions=3):
    lake = Lake(spark, LakeConfig(root=str(tmp_path / name)))
    banded = _banded(spark, x, partitions=partitions)
    version = "v-" + name
    coarse = balance.train_two_level(spark, lake, banded, len(x), cfg, "m", version)
    balance.full_build(lake, banded, banded, version, coarse, cfg, "r1")
    return lake, version, coarse


def test_two_level_centroids_are_dense_and_assignment_is_exact_within_probed_cells(spark, tmp_path):
    x = clustered(3000, 32, 40, 1)
    lake, version, coarse = _build(spark, tmp_path, x, "a")
    k = round(3000 / CFG.images_per_cluster)
    assert len(coarse) == balance.coarse_clusters(k) == 10
    fine = _fine(lake, version)
    ids = fine.cluster_id.to_numpy()
    assert (ids == np.arange(len(ids))).all()                 # dense, unique ids over all cells
    assert abs(len(ids) - k) <= len(coarse)                    # sum of per-cell k ~ k (rounding per cell)
    assert np.allclose(np.linalg.norm(np.stack(fine.centroid), axis=1), 1.0, atol=1e-4)
    got = lake.read(BALANCED).toPandas().set_index("image_id").loc[[f"i{i:05d}" for i in range(len(x))]]
    # Expected: the best fine centroid among those of the image's two nearest coarse cells.
    cells = np.argsort(-(x @ coarse.T), axis=1)[:, :2]
    cent, cell_of = np.stack(fine.centroid), fine.cell.to_numpy()
    scores = x @ cent.T
    allowed = (cell_of[None, :] == cells[:, :1]) | (cell_of[None, :] == cells[:, 1:2])
    expected = np.argmax(np.where(allowed, scores, -np.inf), axis=1)
    assert (got.cluster_id.to_numpy() == ids[expected]).mean() > 0.999   # ties only
    assert np.allclose(got.centroid_score.to_numpy(), scores[np.arange(len(x)), expected], atol=1e-4)
    # ranks are 1..size inside every cluster
    per = got.groupby("cluster_id").agg(n=("cluster_rank", "size"), mx=("cluster_rank", "max"),
                                        size=("cluster_size", "first"))
    assert (per.n == per.mx).all() and (per.n == per["size"]).all()


def test_quality_close_to_flat_kmeans(spark, tmp_path):
    x = clustered(3000, 32, 40, 2)
    lake, version, _ = _build(spark, tmp_path, x, "q")
    two_level = lake.read(BALANCED).agg(F.avg("centroid_score")).first()[0]
    flat = train_kmeans(x, len(_fine(lake, version)), 15, 0)
    flat_score = float(np.max(x @ flat.T, axis=1).mean())
    assert two_level > flat_score - 0.03, (two_level, flat_score)


def test_training_ignores_the_input_layout(spark, tmp_path):
    x = clustered(1500, 16, 20, 3)
    a, va, _ = _build(spark, tmp_path, x, "l1", partitions=2)
    b, vb, _ = _build(spark, tmp_path, x, "l2", partitions=5)
    assert np.array_equal(np.stack(_fine(a, va).centroid), np.stack(_fine(b, vb).centroid))


def test_refresh_assigns_only_new_images_and_equals_full_assignment(spark, tmp_path):
    x = clustered(2400, 16, 30, 4)
    old, new = x[:1800], x[1800:]
    lake, version, coarse = _build(spark, tmp_path, old, "r")
    before = lake.read(BALANCED).select("image_id", "cluster_id", "run_id").toPandas().set_index("image_id")
    stage = type("S", (), {"counters": {}, "count": lambda self, k, n: self.counters.__setitem__(k, n)})()
    everything = _banded(spark, x)
    balance.refresh(lake, everything, version, coarse, CFG, "r2", stage)
    assert stage.counters["new_images"] == len(new)
    after = lake.read(BALANCED).toPandas().set_index("image_id")
    assert len(after) == len(x)
    assert (after.loc[before.index].cluster_id == before.cluster_id).all()   # frozen centroids
    assert (after.loc[before.index].run_id == "r1").all()                     # old rows not rewritten
    assert stage.counters["retrain_advised"] == 0                             # same distribution
    # a full assignment of everything to the same centroids gives the same clusters and ranks
    full = Lake(spark, LakeConfig(root=str(tmp_path / "full")))
    full.merge_insert(BALANCE_CENTROIDS, lake.read(BALANCE_CENTROIDS))
    balance.full_build(full, everything, everything, version, coarse, CFG, "r3")
    ref = full.read(BALANCED).toPandas().set_index("image_id").loc[after.index]
    for col in ("cluster_id", "cluster_size", "cluster_rank"):
        assert (ref[col] == after[col]).all(), col
    # rerun: nothing new, nothing written
    again = type(stage)()
    balance.refresh(lake, everything, version, coarse, CFG, "r4", again)
    assert again.counters["new_images"] == 0
    assert lake.read(BALANCED).where("run_id = 'r4'").count() == 0


def test_refresh_deletes_withdrawn_images_and_reassigns_changed_ones(spark, tmp_path):
    """An image a later file made a duplicate leaves `balanced`; an image whose synthetic text changed is
    measured again; the clusters they left are re-ranked: the same as a full assignment of what is current."""
    x = clustered(1500, 16, 20, 6)
    lake, version, coarse = _build(spark, tmp_path, x, "w")
    stage = type("S", (), {"counters": {}, "count": lambda self, k, n: self.counters.__setitem__(k, n)})()
    everything = _banded(spark, x)
    withdrawn = [f"i{i:05d}" for i in range(0, 1500, 7)]
    changed = [f"i{i:05d}" for i in range(3, 1500, 11)]
    current = (everything.where(~F.col("image_id").isin(withdrawn))
               .withColumn("request_hash", F.when(F.col("image_id").isin(changed), "h2").otherwise(F.col("request_hash")))
               .withColumn("similarity", F.when(F.col("image_id").isin(changed), 0.55).otherwise(F.col("similarity"))))
    balance.refresh(lake, current, version, coarse, CFG, "r2", stage)
    n_changed = len(set(changed) - set(withdrawn))
    assert stage.counters["images_withdrawn"] == len(withdrawn)
    assert stage.counters["new_images"] == n_changed
    after = lake.read(BALANCED).toPandas().set_index("image_id")
    assert not after.index.isin(withdrawn).any() and len(after) == 1500 - len(withdrawn)
    moved = after.loc[sorted(set(changed) - set(withdrawn))]
    assert (moved.request_hash == "h2").all() and np.allclose(moved.similarity, 0.55) and (moved.run_id == "r2").all()
    full = Lake(spark, LakeConfig(root=str(tmp_path / "wfull")))
    full.merge_insert(BALANCE_CENTROIDS, lake.read(BALANCE_CENTROIDS))
    balance.full_build(full, current, current, version, coarse, CFG, "r3")
    ref = full.read(BALANCED).toPandas().set_index("image_id").loc[after.index]
    for col in ("cluster_id", "cluster_size", "cluster_rank", "request_hash"):
        assert (ref[col] == after[col]).all(), col
    again = type(stage)()
    balance.refresh(lake, current, version, coarse, CFG, "r4", again)
    assert again.counters["new_images"] == 0 and again.counters["images_withdrawn"] == 0
    assert lake.read(BALANCED).where("run_id = 'r4'").count() == 0


def test_drift_advises_retraining_for_new_images_far_from_the_centroids(spark, tmp_path):
    x = clustered(1800, 16, 30, 5)
    lake, version, coarse = _build(spark, tmp_path, x, "d")
    far = unit(np.random.default_rng(9).normal(size=(300, 16)))     # no cluster structure
    stage = type("S", (), {"counters": {}, "count": lambda self, k, n: self.counters.__setitem__(k, n)})()
    both = _banded(spark, x).unionByName(_banded(spark, far, prefix="z"))
    balance.refresh(lake, both, version, coarse, CFG, "r2", stage)
    assert stage.counters["retrain_advised"] == 1
    assert stage.counters["drift_far_share_ppm"] > CFG.drift_max_share * 1e6


def test_fine_plan_is_proportional_and_dense():
    k_cell, offset = balance.fine_plan({0: 100, 1: 300, 2: 1}, 40)
    assert k_cell == {0: 10, 1: 30, 2: 1}
    assert offset == {0: 0, 1: 10, 2: 40}


def test_balance_stage_uses_no_classic_only_api():
    source = inspect.getsource(balance)
    for banned in ("sparkContext", "broadcast(", ".rdd", "parallelize", "defaultParallelism"):
        assert banned not in source, banned


def _fail_faiss_training(monkeypatch):
    import faiss

    def broken(self, x, weights=None, init_centroids=None):
        # what FAISS's wrapper raised in a reused executor worker (faiss/array_conversions.py)
        raise AssertionError

    monkeypatch.setattr(faiss.Kmeans, "train", broken)


def test_fine_kmeans_falls_back_to_numpy_lloyd_with_faiss_quality(monkeypatch):
    from udfs.balance_kmeans import spherical_kmeans

    x = clustered(4000, 32, 50, 6)
    with_faiss = spherical_kmeans(x, 50, 15, 0)
    _fail_faiss_training(monkeypatch)
    fallback = spherical_kmeans(x, 50, 15, 0)
    assert fallback.shape == (50, 32) and fallback.dtype == np.float32
    assert np.allclose(np.linalg.norm(fallback, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(fallback, spherical_kmeans(x, 50, 15, 0))          # deterministic per seed

    def quality(c):
        return float(np.max(x @ c.T, axis=1).mean())

    assert quality(fallback) > quality(with_faiss) - 0.02, (quality(fallback), quality(with_faiss))


def test_numpy_lloyd_reseeds_a_centroid_left_empty(monkeypatch):
    """Duplicate seeds (here: 150 copies of one vector) tie, all members go to one of them and the
    other is empty; it must move to the far vectors, not stay empty (every centroid gets members)."""
    from udfs import balance_kmeans

    rng = np.random.default_rng(0)
    x = np.concatenate([np.tile(unit(np.eye(16)[:1]), (150, 1)), unit(np.eye(16)[1:2] + 0.2 * rng.normal(size=(150, 16)))])
    monkeypatch.setattr(balance_kmeans, "LLOYD_BLOCK", 64)                   # several assignment blocks
    for seed in range(8):
        c = balance_kmeans._lloyd_spherical(x.astype(np.float32), 3, 10, seed)
        assigned = np.argmax(x @ c.T, axis=1)
        assert (np.bincount(assigned, minlength=3) > 0).all(), seed


def test_cell_counts_from_a_sample_bound_the_true_counts_and_leave_no_cell_empty():
    x = clustered(20000, 16, 40, 8)
    coarse = train_kmeans(x[:2000], 12, 10, 0)
    coarse = np.concatenate([coarse, -coarse[:1]])                     # a cell no vector is near
    _, nearest = balance.exact_top_k(x, coarse, 2)
    true = np.bincount(nearest.reshape(-1), minlength=len(coarse))
    exact = balance.sample_cell_counts(x, coarse, len(x), 2)           # the sample is everything: exact
    assert [exact[c] for c in range(len(coarse))] == [max(1, t) for t in true]
    upper = balance.sample_cell_counts(x[::10], coarse, len(x), 2, z=4.0)
    assert all(upper[c] >= true[c] for c in range(len(coarse)))       # 4 sigma: what chunking relies on
    assert min(upper.values()) >= 1
    estimate = balance.sample_cell_counts(x[::10], coarse, len(x), 1)
    assert abs(sum(estimate.values()) - len(x)) < 0.02 * len(x)


def test_shuffles_are_cut_by_rows_per_partition(spark):
    cfg = BalanceConfig(rows_per_partition=1000)
    assert balance.shuffle_partitions(spark, 10_500, cfg) == 11
    assert balance.shuffle_partitions(spark, 10, cfg) == int(spark.conf.get("spark.sql.shuffle.partitions"))
