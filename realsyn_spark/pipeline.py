"""The stages in order, and the run summary printed at the end of a run."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from realsyn_spark.config import RealSynConfig
from realsyn_spark.runlog import StageContext, StageRun, new_run_id, stage_run
from realsyn_spark.stages import (balance, caption, dedup, embed, export, extract, fetch, funnel, generate, ingest,
                                  retrieve, tagvocab)
from realsyn_spark.tables import (ALL_TABLES, BALANCE_CENTROIDS, BALANCED, CAPTIONS, CENTROIDS, DATASET, DATASET_CARD,
                                  DOCUMENTS, EMBEDDING_MODELS, FUNNEL, GENERATION_CACHE, IMAGE_BLOBS,
                                  IMAGE_EMBEDDINGS, IMAGE_HASHES, IMAGES, INGEST_ERRORS, INGESTED_SOURCES,
                                  RETRIEVALS, RUN_LOG, SEMANTIC_DUPLICATES, SENTENCE_EMBEDDINGS, SENTENCE_PHRASES,
                                  SENTENCE_SCORES, SENTENCES, SYNTHETIC_EMBEDDINGS, SYNTHETIC_TEXTS,
                                  SYNTHETIC_TEXTS_PER_RANK, TAG_EMBEDDINGS, TAG_VOCABULARY, MissingTableError,
                                  TableSpec, Lake)

log = logging.getLogger("realsyn")

@dataclass(frozen=True)
class StageSpec:
    """What a stage is: its entry point `run(ctx)`, the tables it needs (they must exist when it starts;
    empty is fine), the tables it writes (created empty before it starts, so it may read its own earlier
    output) and the tables it reads only if present (`Lake.read_or_empty`: another stage's output that
    may not exist yet). The runner's Lake refuses any other table."""
    name: str
    run: Callable[[StageContext], StageRun]
    reads: tuple[TableSpec, ...]
    writes: tuple[TableSpec, ...]
    optional: tuple[TableSpec, ...] = ()


class MissingInputError(MissingTableError):
    pass


DECLARATIONS: tuple[StageSpec, ...] = (
    StageSpec("ingest", ingest.run, (), (DOCUMENTS, IMAGE_BLOBS, INGEST_ERRORS, INGESTED_SOURCES)),
    StageSpec("fetch", fetch.run, (DOCUMENTS, IMAGE_BLOBS), (IMAGE_BLOBS, INGEST_ERRORS)),
    # extract writes the filters' decision (filter_reason); dedup composes the final drop_reason
    StageSpec("extract", extract.run, (DOCUMENTS, IMAGE_BLOBS), (IMAGES, SENTENCES, IMAGE_HASHES, SENTENCE_SCORES)),
    StageSpec("embed", embed.run, (IMAGES, IMAGE_BLOBS, SENTENCES),
              (IMAGE_EMBEDDINGS, SENTENCE_EMBEDDINGS, EMBEDDING_MODELS)),
    # semantic dedup needs the CLIP vectors
    StageSpec("dedup", dedup.run, (IMAGES, SENTENCES, IMAGE_EMBEDDINGS, SENTENCE_EMBEDDINGS, EMBEDDING_MODELS),
              (SEMANTIC_DUPLICATES, IMAGES, SENTENCES)),
    # Real-World Data Extraction funnel report; the run log says which rules were skipped
    StageSpec("funnel", funnel.run, (IMAGES, SENTENCES), (FUNNEL,), optional=(RUN_LOG,)),
    StageSpec("retrieve", retrieve.run, (IMAGES, SENTENCES, IMAGE_EMBEDDINGS, SENTENCE_EMBEDDINGS, EMBEDDING_MODELS),
              (CENTROIDS, RETRIEVALS)),
    StageSpec("caption", caption.run, (IMAGES, IMAGE_BLOBS), (CAPTIONS,)),
    # tag vocabulary: base list + noun phrases mined from the kept sentences, and its CLIP text embeddings
    # for the model embed recorded (the only writer of both tag tables; generate reads them)
    StageSpec("tagvocab", tagvocab.run, (SENTENCES, EMBEDDING_MODELS),
              (SENTENCE_PHRASES, TAG_VOCABULARY, TAG_EMBEDDINGS)),
    StageSpec("generate", generate.run, (RETRIEVALS, IMAGES, SENTENCES, IMAGE_EMBEDDINGS, EMBEDDING_MODELS, CAPTIONS,
                                         TAG_VOCABULARY, TAG_EMBEDDINGS),
              (GENERATION_CACHE, SYNTHETIC_TEXTS, SYNTHETIC_TEXTS_PER_RANK)),
    StageSpec("balance", balance.run, (SYNTHETIC_TEXTS, IMAGES, IMAGE_EMBEDDINGS, EMBEDDING_MODELS),
              (SYNTHETIC_EMBEDDINGS, BALANCED, BALANCE_CENTROIDS)),
    # the card's funnel figure reads the run log when there is one
    StageSpec("export", export.run,
              (BALANCED, IMAGES, IMAGE_BLOBS, RETRIEVALS, SENTENCES, SYNTHETIC_TEXTS, DOCUMENTS),
              (DATASET, DATASET_CARD), optional=(RUN_LOG,)),
)
SPECS: dict[str, StageSpec] = {spec.name: spec for spec in DECLARATIONS}
STAGES: dict[str, Callable[[StageContext], StageRun]] = {s.name: s.run for s in DECLARATIONS}


def check_inputs(lake: Lake, spec: StageSpec) -> None:
    """Fail at once, naming the stage and the table, when an input table was never written."""
    for table in spec.reads:
        if not lake.exists(table):
            writers = [s.name for s in DECLARATIONS if table in s.writes]
            raise MissingInputError(f"stage {spec.name!r} needs table {table.name!r} ({lake.location(table)}), "
                                    f"which does not exist: run {' or '.join(writers) or 'the stage that writes it'} first")


def stage_context(spark: SparkSession, cfg: RealSynConfig, stage: str, run_id: str | None = None) -> StageContext:
    """The one context a stage gets: its Lake reads and writes only the tables its StageSpec declares."""
    if stage not in SPECS:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    spec = SPECS[stage]
    run_id = run_id or new_run_id()
    names = lambda tables: {t.name for t in tables}  # noqa: E731
    lake = Lake(spark, cfg.lake, readable=names(spec.reads + spec.optional + spec.writes),
                writable=names(spec.writes), owner=spec.name)
    return StageContext(spark, cfg, lake, run_id, StageRun(run_id, spec.name))


def run_stage(spark: SparkSession, cfg: RealSynConfig, stage: str, run_id: str | None = None) -> StageRun:
    """Check the inputs, create the outputs empty if new, run the stage, append its run-log row."""
    ctx = stage_context(spark, cfg, stage, run_id)
    spec = SPECS[stage]
    check_inputs(ctx.lake, spec)
    for table in spec.writes:   # a stage that has nothing to do still leaves its (empty) outputs
        ctx.lake.ensure(table)
    with stage_run(Lake(spark, cfg.lake), cfg, ctx.run_id, ctx.stage):
        spec.run(ctx)
    return ctx.stage


def select_stages(start: str | None = None, until: str | None = None) -> list[str]:
    """The stages from `start` through `until` (both included), in pipeline order."""
    names = list(STAGES)
    for name in (start, until):
        if name is not None and name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages: {', '.join(names)}")
    first = names.index(start) if start else 0
    last = names.index(until) if until else len(names) - 1
    if first > last:
        raise ValueError(f"--from {start} comes after --until {until}")
    return names[first:last + 1]


def run_pipeline(spark: SparkSession, cfg: RealSynConfig, run_id: str | None = None,
                 stages: list[str] | None = None) -> str:
    run_id = run_id or new_run_id()
    for name in stages or list(STAGES):
        log.info("== stage %s (run %s)", name, run_id)
        run_stage(spark, cfg, name, run_id)
    return run_id


def summary(spark: SparkSession, cfg: RealSynConfig, run_id: str, examples: int = 3) -> str:
    lake = Lake(spark, cfg.lake)
    lines = [f"run {run_id}", "", f"{'stage':<10} {'status':<7} {'seconds':>8} {'rows in':>8} {'rows out':>9}  counters"]
    log_rows = (lake.read(RUN_LOG).where(F.col("run_id") == run_id).orderBy("started_at").collect())
    for r in log_rows:
        seconds = (r.ended_at - r.started_at).total_seconds()
        counters = ", ".join(f"{k}={v}" for k, v in sorted((r.counters or {}).items()))
        lines.append(f"{r.stage:<10} {r.status:<7} {seconds:>8.1f} {str(r.rows_in):>8} {str(r.rows_out):>9}  {counters}")
    from realsyn_spark import funnel as funnel_report

    funnel_rows = funnel_report.stored_rows(lake)
    if funnel_rows:
        lines += ["", funnel_report.render_table(funnel_rows)]
        png = funnel_report.default_output_dir(lake, cfg.funnel.output_dir)
        if png and cfg.funnel.png:
            lines.append(f"funnel chart: {png}/funnel.png")
    lines += ["", "tables:"]
    lines += [f"  {spec.name:<22} {lake.location(spec)}" for spec in ALL_TABLES]
    export_dir = cfg.export.output_dir or f"{lake.root}/export"
    lines += ["", "files for trainers:"] + [f"  {fmt:<22} {export_dir}/{fmt}" for fmt in cfg.export.formats
                                            if fmt != "delta"]
    lines += ["", f"{examples} example rows of {lake.location(DATASET)}:"]
    for row in lake.read_or_empty(DATASET).orderBy("image_id").limit(examples).collect():   # --until before export
        lines.append(f"  image {row.image_id}  url={row.raw_image_url}  cluster={row.cluster_id} scales={row.scales}")
        for i in (1, 2, 3):
            text = row[f"text{i}"]
            if text is not None:
                lines.append(f"    text{i} ({row[f'score{i}']:.3f}): {text}")
        lines.append(f"    syn_text (similarity {row.similarity:.3f}): {row.syn_text}")
    return "\n".join(lines)
