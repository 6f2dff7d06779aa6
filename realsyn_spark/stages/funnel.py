"""Stage 3c: the Real-World Data Extraction funnel report (Delta table, printed table, PNG chart).

Counts per step and per filter rule from `images` and `sentences`, beside the paper's counts and ratios
(336M -> 285M -> 198M images; 2.13B -> 1.82B -> 1.16B -> 0.84B sentences). Rewritten on every run, so
it always describes the tables as they are; the run summary prints it.
"""
from __future__ import annotations

import logging

from realsyn_spark import funnel
from realsyn_spark.runlog import StageContext, StageRun
from realsyn_spark.tables import FUNNEL

log = logging.getLogger("realsyn")


def run(ctx: StageContext) -> StageRun:
    cfg, lake, run_id = ctx.cfg, ctx.lake, ctx.run_id
    with ctx.stage as stage:
        if not cfg.funnel.enabled:
            stage.count("disabled", 1)
            return stage
        rows, png = funnel.build(lake, run_id, cfg.funnel.png, cfg.funnel.output_dir)
        for row in rows:
            if row[3] == "*":
                stage.count(f"{row[0]}:remaining_after_{row[2]}", row[5])
        stage.rows_in = sum(r[4] + r[5] for r in rows if r[3] == "*" and r[1] == 0)
        stage.rows_out = len(rows)
        log.info("funnel report: %d rows in %s%s", len(rows), lake.location(FUNNEL), f", chart {png}" if png else "")
    return stage
