"""Synthetic unit vectors with cluster structure, shared by the retrieval tests (no Spark import, so the
GPU tests can use it on a machine without pyspark)."""
import numpy as np


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n, d, centers, seed):
    rng = np.random.default_rng(seed)
    means = unit(rng.normal(size=(centers, d)))
    return unit(means[rng.integers(0, centers, n)] + 0.35 * rng.normal(size=(n, d)) / np.sqrt(d) * 4)
