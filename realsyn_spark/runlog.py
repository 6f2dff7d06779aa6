"""Run log: one Delta row per stage run with status, row counts and per-rule counters."""
from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from pyspark.sql import functions as F

from realsyn_spark.config import EmbedConfig, RealSynConfig
from realsyn_spark.tables import EMBEDDING_MODELS, RUN_LOG, Lake

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

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

    # A stage body reads `with ctx.stage as stage:` (kept so that the bodies did not need re-indenting
    # when the runner took over the run log); the runner records success or failure, not this block.
    def __enter__(self) -> "StageRun":
        return self

    def __exit__(self, *exc) -> bool:
        return False


class NoEmbeddingModelError(LookupError):
    pass


@dataclass(frozen=True)
class EmbeddingModel:
    """What `embed` recorded: the model id its vectors are stored under, and the executor settings that
    produce the same vectors (the configured ones, with the weights embed actually used)."""
    model_id: str
    config: EmbedConfig

    @property
    def random_weights(self) -> bool:
        return ":random-seed" in self.model_id


def record_embedding_model(lake: Lake, model_id: str, resolved: EmbedConfig, random_weights: bool,
                           run_id: str) -> None:
    """Written once per embed run (upsert on model_id: the latest recorded_at is the current model)."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    row = [(model_id, resolved.model, resolved.pretrained, resolved.checkpoint_path, random_weights, run_id, now)]
    lake.upsert(EMBEDDING_MODELS, lake.spark.createDataFrame(row, EMBEDDING_MODELS.schema))


def recorded_embedding_model(lake: Lake, cfg: EmbedConfig) -> EmbeddingModel:
    """The model of the latest embed run, read from the lake: no stage after embed probes a hub for it."""
    row = lake.read(EMBEDDING_MODELS).orderBy(F.desc("recorded_at"), "model_id").first()
    if row is None:
        raise NoEmbeddingModelError(f"no embedding model recorded in {lake.location(EMBEDDING_MODELS)}: run embed first")
    weights = {"model": row.model, "pretrained": row.pretrained, "checkpoint_path": row.checkpoint_path}
    return EmbeddingModel(row.model_id, cfg.model_copy(update=weights))


@dataclass
class StageContext:
    """Everything a stage gets from the runner (pipeline.run_stage): the session, the config, a Lake limited
    to the stage's declared tables, the run id, and the StageRun whose counters become the run-log row."""
    spark: "SparkSession"
    cfg: RealSynConfig
    lake: Lake
    run_id: str
    stage: StageRun

    def embedding_model(self) -> EmbeddingModel:
        return recorded_embedding_model(self.lake, self.cfg.embed)


@contextmanager
def stage_run(lake: Lake, cfg: RealSynConfig, run_id: str, stage: str | StageRun) -> Iterator[StageRun]:
    """Wrap one stage (the runner does): the run-log row is appended whether the stage succeeds or fails."""
    run = stage if isinstance(stage, StageRun) else StageRun(run_id, stage)
    stage = run.stage
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
