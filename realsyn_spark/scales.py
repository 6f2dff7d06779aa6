"""Scales as views over the balanced table: any per-cluster cap, or the cap closest to a target size.

A cap t keeps the images with `cluster_rank <= t` (ranks are a seeded hash order inside each cluster,
see stages/balance.py), so every scale is a filter over one table, nested in the larger ones, and costs
one scan. A target size ("15M") is turned into a cap from the cluster-size histogram: the scale of cap t
holds sum_c min(|c|, t) images, computed on the driver from (size, clusters) pairs, of which there are at
most as many as distinct cluster sizes (small, however many clusters there are).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from realsyn_spark.config import parse_scale
from realsyn_spark.tables import BALANCED, Lake


@dataclass(frozen=True)
class Scale:
    name: str               # export subfolder / card label: all, cap20, 15M
    cap: Optional[int]      # None: every image in the similarity band
    target: Optional[int]   # the size asked for, when the scale was given as one
    rows: int               # images in the scale (from the cluster-size histogram)


def banded(balanced: DataFrame) -> DataFrame:
    """Images that passed the similarity band and got a cluster."""
    return balanced.where(F.col("drop_reason").isNull() & F.col("cluster_id").isNotNull())


def capped(df: DataFrame, cap: Optional[int]) -> DataFrame:
    """The scale of cap `cap` (None: no cap) of any table with `cluster_rank` (balanced, dataset)."""
    return df if cap is None else df.where(F.col("cluster_rank") <= int(cap))


def size_histogram(balanced: DataFrame) -> np.ndarray:
    """(size, number of clusters of that size) pairs, sorted by size: one row per distinct size."""
    sizes = banded(balanced).groupBy("cluster_id").agg(F.count(F.lit(1)).alias("size"))
    rows = sizes.groupBy("size").agg(F.count(F.lit(1)).alias("clusters")).orderBy("size").collect()
    return np.asarray([(r["size"], r["clusters"]) for r in rows], dtype=np.int64).reshape(-1, 2)


def rows_at_cap(histogram: np.ndarray, cap: Optional[int]) -> int:
    if len(histogram) == 0:
        return 0
    size, clusters = histogram[:, 0], histogram[:, 1]
    return int((np.minimum(size, size.max() if cap is None else cap) * clusters).sum())


def cap_for_target(histogram: np.ndarray, target: int) -> int:
    """The cap whose scale is closest to `target` images (ties: the smaller cap). Caps above the largest
    cluster add nothing, so 1..max size are all candidates; sizes grow monotonically with the cap."""
    if len(histogram) == 0:
        return 1
    caps = np.arange(1, int(histogram[:, 0].max()) + 1)
    # rows(t) = sum over clusters of min(size, t) = sum_{size < t} size*n + t * sum_{size >= t} n
    size, clusters = histogram[:, 0], histogram[:, 1]
    below = np.searchsorted(size, caps, side="left")            # clusters with size < t: histogram[:below]
    small = np.concatenate([[0], np.cumsum(size * clusters)])[below]
    large = np.concatenate([[0], np.cumsum(clusters[::-1])])[::-1][below]
    rows = small + caps * large
    return int(caps[int(np.argmin(np.abs(rows - int(target))))])


def resolve(histogram: np.ndarray, spec) -> Scale:
    """A scale setting (`all`, a cap, or a size such as 15M) -> the Scale with its cap and size."""
    name, cap, target = parse_scale(spec)
    if target is not None:
        cap = cap_for_target(histogram, target)
    return Scale(name, cap, target, rows_at_cap(histogram, cap))


def scale_view(lake: Lake, cap: Optional[int] = None, target: Optional[int | str] = None) -> DataFrame:
    """The balanced rows of one scale: `cap` (keep rank <= cap per cluster), or `target` (a size such as
    15_000_000 or "15M": the cap closest to it), or neither (every image in the similarity band)."""
    if cap is not None and target is not None:
        raise ValueError("give cap or target, not both")
    balanced = lake.read(BALANCED)
    if target is not None:
        size = parse_scale(target)[2] if isinstance(target, str) else int(target)
        if size is None:
            raise ValueError(f"target must be a size such as 15M or 15000000: {target!r}")
        cap = cap_for_target(size_histogram(balanced), size)
    return capped(banded(balanced), cap)
