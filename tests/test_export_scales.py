"""Scales as views over `balanced` (realsyn_spark/scales.py) and the export writing several of them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realsyn_spark import scales
from realsyn_spark.config import ConfigError, load_config, parse_scale
from tests.export_lake import CLUSTER_SIZES


def _brute(sizes, target):
    rows = [sum(min(s, t) for s in sizes) for t in range(1, max(sizes) + 1)]
    return 1 + int(np.argmin(np.abs(np.asarray(rows) - target)))   # first minimum: the smaller cap


@pytest.mark.parametrize("seed", range(5))
def test_cap_for_target_is_the_closest_cap(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.zipf(1.6, 300).clip(1, 5000)
    values, counts = np.unique(sizes, return_counts=True)
    histogram = np.stack([values, counts], axis=1)
    for target in rng.integers(1, int(sizes.sum()) + 200, 20).tolist() + [1, int(sizes.sum())]:
        cap = scales.cap_for_target(histogram, target)
        assert cap == _brute(sizes.tolist(), target), target
        assert scales.rows_at_cap(histogram, cap) == sum(min(s, cap) for s in sizes)


def test_scale_specs_parse_and_bad_ones_fail_naming_the_key():
    assert parse_scale("all") == ("all", None, None)
    assert parse_scale(20) == ("cap20", 20, None)
    assert parse_scale("15M") == ("15M", None, 15_000_000)
    assert parse_scale("1.5k") == ("1.5k", None, 1500)
    for bad in ("15X", "0", "-3", "M"):
        with pytest.raises(ValueError):
            parse_scale(bad)
    with pytest.raises(ConfigError, match="export.scales"):
        load_config(overrides=["export.scales=[15Q]"])
    with pytest.raises(ConfigError, match="export.scales"):
        load_config(overrides=["export.scales=[20, 20]"])


def test_scale_view_is_a_capped_query_over_balanced(spark, exported_lake):
    _, lake, clusters, _ = exported_lake
    band = scales.scale_view(lake)
    assert band.count() == sum(CLUSTER_SIZES)                           # band-dropped rows are in no scale
    for cap in (1, 4, 13, 100):
        view = scales.scale_view(lake, cap=cap)
        per = {r.cluster_id: r["count"] for r in view.groupBy("cluster_id").count().collect()}
        assert per == {c: min(s, cap) for c, s in enumerate(CLUSTER_SIZES)}
    small = {r.image_id for r in scales.scale_view(lake, cap=4).select("image_id").collect()}
    large = {r.image_id for r in scales.scale_view(lake, cap=13).select("image_id").collect()}
    assert small < large                                                # nested
    # a target size picks the cap of the closest size: cap 4 -> 26 images, cap 5 -> 31
    assert scales.scale_view(lake, target=30).count() == 31
    assert scales.scale_view(lake, target="0.026k").count() == 26
    assert scales.scale_view(lake, target=10**9).count() == sum(CLUSTER_SIZES)
    with pytest.raises(ValueError):
        scales.scale_view(lake, cap=3, target=30)


def test_export_writes_each_scale_in_its_own_folder(spark, exported_lake):
    cfg, lake, clusters, stage = exported_lake
    out = Path(cfg.lake.root) / "export"
    expected = {"": sum(CLUSTER_SIZES), "cap4/": 26, "0.03k/": 31}
    for folder, n in expected.items():
        assert spark.read.parquet(str(out / folder / "parquet")).count() == n, folder
        sizes = json.loads((out / folder / "webdataset" / "sizes.json").read_text())
        assert sum(sizes.values()) == n and len(sizes) == -(-n // 16), folder
        prefix = folder.replace("/", ":")
        assert stage.counters[f"{prefix}webdataset_samples"] == n and stage.counters[f"{prefix}scale_rows"] == n
    assert stage.counters["0.03k:scale_cap"] == 5 and stage.counters["cap4:scale_cap"] == 4
    capped = spark.read.parquet(str(out / "cap4" / "parquet"))
    assert capped.groupBy("cluster_id").count().agg({"count": "max"}).first()[0] == 4
    assert capped.columns[:5] == ["raw_image_url", "text1", "text2", "text3", "syn_text"]


def test_cli_scale_flag_sets_the_export_scales(monkeypatch):
    from realsyn_spark import cli

    seen = {}
    monkeypatch.setattr(cli, "load_config", lambda path, overrides: seen.setdefault("cfg", load_config(path, overrides)))
    monkeypatch.setattr("realsyn_spark.session.get_spark", lambda cfg: (_ for _ in ()).throw(SystemExit(0)))
    with pytest.raises(SystemExit):
        cli.main(["--scale", "15M", "--scale", "35", "export"])
    assert seen["cfg"].export.scales == ["15M", "35"]
