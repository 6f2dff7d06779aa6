"""The fine search's device choice and its CPU and GPU paths, without Spark (the GPU test runs on a GPU
machine where pyspark is not installed)."""
import numpy as np
import pytest

from tests.vectors import clustered
from tests.vectors import unit as _unit


def test_search_runs_on_the_cpu_unless_a_gpu_is_assigned_or_forced():
    from udfs.retrieval import search_device

    assert search_device("auto") == "cpu"   # no Spark task, so no GPU assigned: never imports torch
    assert search_device("cpu") == "cpu"
    assert search_device("cuda") == "cuda"


def _chunk_tables(q, x, cluster_id=7):
    import pyarrow as pa

    images = pa.table({"image_id": [f"i{i:04d}" for i in range(len(q))], "vec": pa.array(list(q)),
                       "cluster_id": pa.array([cluster_id] * len(q), pa.int32())})
    sentences = pa.table({"sentence_id": [f"s{i:05d}" for i in range(len(x))], "vec": pa.array(list(x))})
    return images, sentences


def test_search_chunk_body_on_cpu_matches_brute_force():
    from udfs.retrieval import search_chunk

    x, q = clustered(2000, 32, 6, 4), clustered(150, 32, 6, 5)
    out = search_chunk(3, None, 32, device="cpu")(*_chunk_tables(q, x)).to_pandas()
    truth = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :3]
    got = out.groupby("image_id").sentence_id.apply(set)
    assert all(got[f"i{i:04d}"] == {f"s{j:05d}" for j in truth[i]} for i in range(len(q)))
    assert (out.cluster_id == 7).all()


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_search_equals_cpu_search():
    from udfs.retrieval import exact_top_k, search_chunk

    rng = np.random.default_rng(3)
    x, q = _unit(rng.normal(size=(20_000, 64))), _unit(rng.normal(size=(2_500, 64)))  # > one query block
    cpu_scores, cpu_index = exact_top_k(q, x, 5, "cpu")
    gpu_scores, gpu_index = exact_top_k(q, x, 5, "cuda")
    assert gpu_index.dtype == np.int64 and np.array_equal(gpu_index, cpu_index)
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=1e-5)
    tables = _chunk_tables(q[:300], x[:3000])
    on_cpu = search_chunk(3, 0.1, 64, device="cpu")(*tables).to_pandas()
    on_gpu = search_chunk(3, 0.1, 64, device="cuda")(*tables).to_pandas()
    key = ["image_id", "sentence_id"]
    assert on_gpu.sort_values(key)[key].reset_index(drop=True).equals(on_cpu.sort_values(key)[key].reset_index(drop=True))
