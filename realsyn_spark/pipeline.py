"""The stages in order, and the run summary printed at the end of a run."""
from __future__ import annotations

import logging
from typing import Callable

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from realsyn_spark.config import RealSynConfig
from realsyn_spark.runlog import StageRun, new_run_id
from realsyn_spark.stages import balance, dedup, embed, export, extract, fetch, funnel, generate, ingest, retrieve
from realsyn_spark.tables import ALL_TABLES, DATASET, RUN_LOG, Lake

log = logging.getLogger("realsyn")

STAGES: dict[str, Callable[[SparkSession, RealSynConfig, str], StageRun]] = {
    "ingest": ingest.run,
    "fetch": fetch.run,
    "extract": extract.run,
    "embed": embed.run,
    "dedup": dedup.run,        # semantic dedup needs the CLIP vectors
    "funnel": funnel.run,      # Real-World Data Extraction funnel report
    "retrieve": retrieve.run,
    "generate": generate.run,
    "balance": balance.run,
    "export": export.run,
}


def run_stage(spark: SparkSession, cfg: RealSynConfig, stage: str, run_id: str | None = None) -> StageRun:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return STAGES[stage](spark, cfg, run_id or new_run_id())


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
    for row in lake.read(DATASET).orderBy("image_id").limit(examples).collect():
        lines.append(f"  image {row.image_id}  url={row.raw_image_url}  cluster={row.cluster_id} scales={row.scales}")
        for i in (1, 2, 3):
            text = row[f"text{i}"]
            if text is not None:
                lines.append(f"    text{i} ({row[f'score{i}']:.3f}): {text}")
        lines.append(f"    syn_text (similarity {row.similarity:.3f}): {row.syn_text}")
    return "\n".join(lines)
