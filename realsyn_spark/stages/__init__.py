"""One module per pipeline stage. Each exposes `run(spark, cfg, run_id) -> StageRun`."""
