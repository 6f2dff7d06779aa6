"""For tests that seed only the tables a check needs: create a stage's other declared inputs empty, as a
lake that ran the earlier stages over no data would have them (the runner fails on a missing input)."""
from __future__ import annotations

from realsyn_spark.pipeline import SPECS
from realsyn_spark.tables import Lake


def ensure_inputs(lake: Lake, *stages: str) -> None:
    for stage in stages:
        for table in SPECS[stage].reads:
            lake.ensure(table)


def record_embedding(lake: Lake, cfg, run_id: str = "r0"):
    """Record the configured CLIP model in `embedding_models` as the embed stage does (for lakes whose
    vectors a test writes itself); returns what later stages read back."""
    from realsyn_spark.runlog import record_embedding_model, recorded_embedding_model
    from realsyn_spark.stages.embed import resolve_embed_config, resolved_model_id, uses_random_weights

    resolved = resolve_embed_config(cfg.embed)
    record_embedding_model(lake, resolved_model_id(resolved), resolved, uses_random_weights(resolved), run_id)
    return recorded_embedding_model(lake, cfg.embed)
