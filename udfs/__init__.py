"""Functions shipped to Spark executors (pandas UDFs / mapInPandas / applyInPandas bodies).

Each heavy resource (a CLIP model, a tokenizer, an LLM engine) is loaded once per Python worker and
cached in the module, so every Arrow batch of a task (and later tasks on a reused worker) share it.
"""
