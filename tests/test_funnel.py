"""The funnel report: counts per step and rule, ratios beside the paper's, notes for skipped rules."""
from __future__ import annotations

import datetime as dt

import pytest

from realsyn_spark import funnel
from realsyn_spark.config import load_config
from realsyn_spark.tables import FUNNEL, IMAGES, RUN_LOG, SENTENCES, Lake


def test_funnel_counts_ratios_notes_and_chart(spark, tmp_path):
    lake = Lake(spark, load_config(overrides=[f"lake.root={tmp_path}"]).lake)
    image_reasons = [None] * 50 + ["unavailable"] * 5 + ["min_side"] * 8 + ["aspect_ratio"] * 2 + \
        ["exact_duplicate"] * 6 + ["near_duplicate"] * 4
    sentence_reasons = [None] * 40 + ["emoji"] * 3 + ["cat"] * 12 + ["entropy"] * 9 + ["exact_duplicate"] * 6
    lake.append(IMAGES, spark.createDataFrame(
        [(f"i{i}", "d", i, f"u{i}", None, None, 1, 1, r, None, "r", r, None) for i, r in enumerate(image_reasons)], IMAGES.schema))
    lake.append(SENTENCES, spark.createDataFrame(
        [(f"s{i}", "d", i, 0, "t", 1, r, None, "r", r, None) for i, r in enumerate(sentence_reasons)], SENTENCES.schema))
    now = dt.datetime(2024, 1, 1)
    lake.append(RUN_LOG, spark.createDataFrame([
        ("run1", "extract", now, now, "ok", 0, 0, {"perplexity_skipped": 1}, "f", None),
        ("run1", "dedup", now, now, "ok", 0, 0, {"image_skipped_random_weights": 1}, "f", None)], RUN_LOG.schema))

    rows, png = funnel.build(lake, "run1", png=True)
    steps = {(r[0], r[2]): r for r in rows if r[3] == "*"}
    assert steps[("images", "unavailable")][5] == 70                 # 75 occurrences, 5 never available
    assert steps[("images", "quality")][5] == 60 and steps[("images", "redundancy")][5] == 50
    assert steps[("images", "quality")][6] == pytest.approx(60 / 70)
    assert steps[("images", "redundancy")][9] == pytest.approx(198 / 336)
    assert steps[("sentences", "semantic")][5] == 46 and steps[("sentences", "redundancy")][5] == 40
    assert steps[("sentences", "semantic")][10] == pytest.approx(1.16 / 1.82)
    assert "SKIPPED" in steps[("sentences", "semantic")][11]          # perplexity rule skipped
    assert "SKIPPED" in steps[("images", "redundancy")][11]           # semantic image dedup skipped
    per_rule = {(r[0], r[3]): r[4] for r in rows if r[3] != "*"}
    assert per_rule[("sentences", "cat")] == 12 and per_rule[("sentences", "perplexity")] == 0
    assert lake.read(FUNNEL).count() == len(rows)
    table = funnel.render_table(funnel.stored_rows(lake))
    assert "2.13B" in table and "336M" in table and "SKIPPED" in table
    assert png is not None and png.stat().st_size > 10_000
