"""What a Python worker needs to know about the Spark task it runs in."""
from __future__ import annotations

import os


def task_threads() -> int:
    """CPUs this Spark task owns (spark.task.cpus); outside a task (driver, tests) all cores.

    Spark already runs one task per core, so a library that sizes its thread pool from os.cpu_count()
    inside a task oversubscribes the executor: torch, BLAS and FAISS threads follow this number."""
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None:
            return max(1, int(ctx.cpus()))
    except Exception:  # pyspark missing or no task context: a plain process
        pass
    return max(1, os.cpu_count() or 1)
