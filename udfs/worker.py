"""What a Python worker needs to know about the Spark task it runs in: its CPUs and its GPU."""
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


def task_gpu() -> str | None:
    """The GPU address Spark assigned to this task (spark.task.resource.gpu.amount), if any."""
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None:
            gpus = ctx.resources().get("gpu")
            if gpus is not None and gpus.addresses:
                return str(gpus.addresses[0])
    except Exception:
        pass
    return None


def cuda_device(address: str | None) -> str:
    """torch's name for the GPU at a Spark resource address ("0" -> "cuda:0"); "cuda" when unknown."""
    return f"cuda:{address}" if address is not None and address.isdigit() else "cuda"
