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


# ------------------------------------------------------------------- one context, strict reads (issue 9)

def test_reading_a_missing_table_is_an_error_naming_it_and_creates_nothing(spark, tmp_path):
    from realsyn_spark.tables import RETRIEVALS, MissingTableError

    lake = Lake(spark, load_config(overrides=[f"lake.root={tmp_path / 'lake'}"]).lake)
    with pytest.raises(MissingTableError, match=r"table 'retrievals' does not exist"):
        lake.read(RETRIEVALS)
    empty = lake.read_or_empty(RETRIEVALS)
    assert empty.count() == 0 and empty.schema == RETRIEVALS.schema
    assert not lake.exists(RETRIEVALS)


def test_retrieve_on_an_empty_lake_fails_naming_the_table_even_without_the_input_check(spark, tmp_path):
    """The Lake itself refuses, so a stage that skipped the runner's check still cannot 'succeed'."""
    from realsyn_spark.pipeline import stage_context
    from realsyn_spark.stages import retrieve
    from realsyn_spark.tables import MissingTableError

    cfg = load_config(overrides=[f"lake.root={tmp_path / 'lake'}"])
    with pytest.raises(MissingTableError, match=r"'embedding_models'"):
        retrieve.run(stage_context(spark, cfg, "retrieve", "r1"))
    assert not any(Lake(spark, cfg.lake).exists(t) for t in ALL_TABLES)


def test_a_stage_cannot_read_or_write_an_undeclared_table(spark, tmp_path):
    from realsyn_spark.pipeline import stage_context
    from realsyn_spark.tables import DATASET, IMAGES, UndeclaredTableError

    ctx = stage_context(spark, load_config(overrides=[f"lake.root={tmp_path / 'lake'}"]), "funnel", "r1")
    with pytest.raises(UndeclaredTableError, match=r"stage 'funnel' reads table 'dataset'"):
        ctx.lake.read(DATASET)
    with pytest.raises(UndeclaredTableError, match=r"stage 'funnel' writes table 'images'"):
        ctx.lake.ensure(IMAGES)


def test_declarations_are_consistent():
    for spec in DECLARATIONS:
        assert not set(spec.optional) & set(spec.reads), spec.name          # optional or required, not both
        assert len(set(spec.reads)) == len(spec.reads) and spec.writes, spec.name


def test_the_runner_builds_one_context_and_appends_the_run_log_row(spark, tmp_path, monkeypatch):
    from pyspark.sql import functions as F

    from realsyn_spark import pipeline
    from realsyn_spark.tables import FUNNEL, IMAGES, RUN_LOG, SENTENCES

    seen = []

    def fake(ctx):
        seen.append(ctx)
        with ctx.stage as stage:
            stage.count("looked", ctx.lake.read(IMAGES).count())
            if ctx.cfg.funnel.png:
                raise ValueError("planted failure")
        return stage

    monkeypatch.setitem(pipeline.SPECS, "funnel", pipeline.StageSpec("funnel", fake, (IMAGES, SENTENCES), (FUNNEL,)))
    cfg = load_config(overrides=[f"lake.root={tmp_path / 'lake'}", "funnel.png=false"])
    lake = Lake(spark, cfg.lake)
    lake.ensure(IMAGES)
    lake.ensure(SENTENCES)
    result = run_stage(spark, cfg, "funnel", "ok-run")
    ctx = seen[0]
    assert result is ctx.stage and ctx.run_id == "ok-run" and ctx.cfg is cfg and ctx.spark is spark
    assert lake.exists(FUNNEL)                                     # declared output created
    with pytest.raises(ValueError, match="planted failure"):
        run_stage(spark, load_config(overrides=[f"lake.root={tmp_path / 'lake'}"]), "funnel", "bad-run")
    rows = {r.run_id: r for r in lake.read(RUN_LOG).where(F.col("stage") == "funnel").collect()}
    assert rows["ok-run"].status == "ok" and rows["ok-run"].counters == {"looked": 0}
    assert rows["bad-run"].status == "failed" and "planted failure" in rows["bad-run"].error


def test_later_stages_read_the_model_embed_recorded(spark, tmp_path):
    from realsyn_spark.pipeline import stage_context
    from realsyn_spark.runlog import NoEmbeddingModelError, record_embedding_model

    cfg = load_config(overrides=[f"lake.root={tmp_path / 'lake'}", "embed.pretrained=openai"])
    ctx = stage_context(spark, cfg, "balance", "r")
    lake = Lake(spark, cfg.lake)
    from realsyn_spark.tables import EMBEDDING_MODELS

    lake.ensure(EMBEDDING_MODELS)
    with pytest.raises(NoEmbeddingModelError, match="run embed first"):
        ctx.embedding_model()
    record_embedding_model(lake, "ViT-B-32:openai", cfg.embed, False, "r1")
    random = cfg.embed.model_copy(update={"pretrained": None})
    record_embedding_model(lake, "ViT-B-32:random-seed0", random, True, "r2")   # the latest embed run
    model = ctx.embedding_model()
    assert model.model_id == "ViT-B-32:random-seed0" and model.random_weights
    assert model.config.pretrained is None and model.config.batch_size == cfg.embed.batch_size  # same weights
