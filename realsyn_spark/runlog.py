"""Run log: one Delta row per stage run with status, row counts and per-rule counters."""
from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from realsyn_spark.config import RealSynConfig
from realsyn_spark.tables import RUN_LOG, Lake

log = logging.getLogger("realsyn")


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]


@dataclass
class StageRun:
    run_id: str
    stage: str
    rows_in: int | None = None
    rows_out: int | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, rule: str, n: int) -> None:
        self.counters[rule] = self.counters.get(rule, 0) + int(n)


@contextmanager
def stage_run(lake: Lake, cfg: RealSynConfig, run_id: str, stage: str) -> Iterator[StageRun]:
    """Wrap one stage: the run-log row is appended whether the stage succeeds or fails."""
    run = StageRun(run_id, stage)
    started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    t0 = time.monotonic()
    status, error = "ok", None
    try:
        yield run
    except BaseException as exc:
        status, error = "failed", "".join(traceback.format_exception_only(type(exc), exc)).strip()[:4000]
        raise
    finally:
        ended = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        row = [(run.run_id, stage, started, ended, status, run.rows_in, run.rows_out,
                {k: int(v) for k, v in run.counters.items()}, cfg.fingerprint(), error)]
        lake.append(RUN_LOG, lake.spark.createDataFrame(row, RUN_LOG.schema))
        log.info("stage %s %s in %.1fs: in=%s out=%s %s", stage, status, time.monotonic() - t0,
                 run.rows_in, run.rows_out, run.counters)
