"""One module per pipeline stage. Each exposes `run(ctx: runlog.StageContext) -> StageRun`, called by `pipeline.run_stage`."""
