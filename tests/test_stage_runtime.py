"""The stage runtime (issue 9, item 3): declared reads/writes, missing inputs fail at once naming the
stage and the table, --from/--until select stages, and the README's stage table matches."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from realsyn_spark.config import load_config
from realsyn_spark.pipeline import DECLARATIONS, STAGES, MissingInputError, run_stage, select_stages
from realsyn_spark.tables import ALL_TABLES, Lake

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE_NAMES = {t.name for t in ALL_TABLES}


def _readme_rows() -> dict[str, tuple[set[str], set[str]]]:
    rows = {}
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`\w+`", cells[0]) and cells[0].strip("`") in STAGES:
            named = lambda cell: set(re.findall(r"`(\w+)`", cell)) & TABLE_NAMES  # noqa: E731
            rows[cells[0].strip("`")] = (named(cells[2]), named(cells[3]))
    return rows


def test_readme_stage_table_matches_the_declarations():
    rows = _readme_rows()
    assert list(rows) == [s.name for s in DECLARATIONS]
    for spec in DECLARATIONS:
        reads, writes = rows[spec.name]
        assert writes == {t.name for t in spec.writes}, spec.name
        assert reads <= {t.name for t in spec.reads}, spec.name


def test_from_until_select_a_contiguous_range():
    assert select_stages("embed", "retrieve") == ["embed", "dedup", "funnel", "retrieve"]
    assert select_stages(None, "fetch") == ["ingest", "fetch"]
    assert select_stages("export", None) == ["export"]
    with pytest.raises(ValueError):
        select_stages("retrieve", "embed")


def test_a_missing_input_table_fails_at_once_naming_stage_and_table(spark, tmp_path):
    cfg = load_config(overrides=[f"lake.root={tmp_path / 'lake'}"])
    with pytest.raises(MissingInputError, match=r"stage 'retrieve' needs table 'images'.*run extract or dedup first"):
        run_stage(spark, cfg, "retrieve", "r1")
    assert not Lake(spark, cfg.lake).exists(ALL_TABLES[0])   # nothing was created on the way
