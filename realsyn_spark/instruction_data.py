"""Instruction data for fine-tuning the rewrite model (the paper: 100K examples merged by GPT-4 Turbo, then
LLaMA3-8B fine-tuned on them): a hash sample of the generate stage's requests written as LLaMA-Factory
datasets, alpaca (`instruction` = the prompt the rewrite model sees at inference, `input` empty, `output`,
`system`) and sharegpt (`conversations` of `from` human/gpt with `value`, `system`), plus a
`dataset_info.json` that registers both (`--dataset <name>_alpaca` or `<name>_sharegpt` with
`dataset_dir` = the output folder), and `<name>_requests.jsonl` naming each example's image, rank,
request hash and fields.

`instruction.answers: none` leaves `output` empty: the slot for a strong model's answers, filled outside
(match rows by request_hash). `answers: generate` asks the `generate` section with `instruction.teacher`
overlaid (e.g. `{backend: openai, model: gpt-4-turbo, base_url: ...}`) through the same request cache as
the stage, so a rerun asks nothing twice; an answer that fails the output checks leaves `output` empty
and is counted. The fine-tuned model is loaded back by `generate.model` = its directory (transformers,
vllm) or its served name (openai); its model id is part of every request hash, so it rewrites everything.
"""
from __future__ import annotations

import json

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from realsyn_spark.config import GenerateConfig, RealSynConfig
from realsyn_spark.runlog import recorded_embedding_model
from realsyn_spark.sources.fileio import open_output
from realsyn_spark.stages.generate import generation_requests, send_in_chunks, with_request_hash
from realsyn_spark.tables import GENERATION_CACHE, Lake


def teacher_config(cfg: RealSynConfig) -> GenerateConfig:
    return GenerateConfig(**{**cfg.generate.model_dump(), **cfg.instruction.teacher})


def sample_requests(lake: Lake, cfg: RealSynConfig):
    """`instruction.sample_size` requests drawn by a hash of (image, rank, seed): the same sample every
    run, whatever the table layout."""
    ic = cfg.instruction
    key = F.xxhash64("image_id", "rank", F.lit(ic.seed))
    # The tags come from the model embed recorded, as in the generate stage.
    embedding = recorded_embedding_model(lake, cfg.embed) if cfg.generate.tags_per_image else None
    return generation_requests(lake, cfg, embedding).withColumn("_k", key).orderBy("_k", "image_id", "rank") \
        .limit(ic.sample_size).drop("_k")


def answer(lake: Lake, teacher: GenerateConfig, hashed, partitions: int, run_id: str) -> tuple[dict, dict]:
    """({request_hash: answer}, counters): the teacher's answers via the generation cache (asked once)."""
    lake.ensure(GENERATION_CACHE)   # a lake the generate stage has not reached yet has none
    fresh = hashed.dropDuplicates(["request_hash"]).join(lake.read(GENERATION_CACHE).select("request_hash"),
                                                         "request_hash", "left_anti").persist()
    n_fresh = fresh.count()
    if n_fresh:
        send_in_chunks(lake, fresh, n_fresh, teacher, partitions, run_id)
    fresh.unpersist()
    cached = (lake.read(GENERATION_CACHE).dropDuplicates(["request_hash"])
              .join(hashed.select("request_hash").distinct(), "request_hash").collect())
    answers = {r.request_hash: r.syn_text for r in cached if r.drop_reason is None}
    return answers, {"teacher_requests_sent": n_fresh, "teacher_answers": len(answers),
                     "teacher_dropped": sum(1 for r in cached if r.drop_reason is not None)}


def alpaca_record(prompt: str, output: str, system: str | None) -> dict:
    record = {"instruction": prompt, "input": "", "output": output}
    if system:
        record["system"] = system
    return record


def sharegpt_record(prompt: str, output: str, system: str | None) -> dict:
    record = {"conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": output}]}
    if system:
        record["system"] = system
    return record


def dataset_info(name: str, system: bool) -> dict:
    """LLaMA-Factory's dataset_info.json entries for the two files (its data/README.md format)."""
    alpaca_columns = {"prompt": "instruction", "query": "input", "response": "output"}
    sharegpt_columns = {"messages": "conversations"}
    if system:
        alpaca_columns["system"] = sharegpt_columns["system"] = "system"
    return {
        f"{name}_alpaca": {"file_name": f"{name}_alpaca.json", "formatting": "alpaca", "columns": alpaca_columns},
        f"{name}_sharegpt": {"file_name": f"{name}_sharegpt.json", "formatting": "sharegpt",
                             "columns": sharegpt_columns,
                             "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human",
                                      "assistant_tag": "gpt"}},
    }


def write_json(uri: str, value, lines: bool = False) -> None:
    with open_output(uri) as out:
        if lines:
            out.write("".join(json.dumps(v, ensure_ascii=False) + "\n" for v in value).encode())
        else:
            out.write(json.dumps(value, ensure_ascii=False, indent=1).encode())


def export(spark: SparkSession, cfg: RealSynConfig, run_id: str) -> dict:
    """Write the sample; returns {files, examples, answered, counters}."""
    lake = Lake(spark, cfg.lake)
    ic = cfg.instruction
    chosen = teacher_config(cfg) if ic.answers == "generate" else cfg.generate
    rows = with_request_hash(sample_requests(lake, cfg), chosen).persist()
    answers, counters = {}, {}
    if ic.answers == "generate":
        answers, counters = answer(lake, chosen, rows, cfg.spark.shuffle_partitions, run_id)
    records = rows.orderBy("image_id", "rank").collect()
    rows.unpersist()
    system = chosen.system_prompt
    out_dir = (ic.output_dir or f"{lake.root}/instruction_data").rstrip("/")
    alpaca, sharegpt, index = [], [], []
    for r in records:
        request = r.request_hash
        output = answers.get(request) or ""
        alpaca.append(alpaca_record(r.prompt, output, system))
        sharegpt.append(sharegpt_record(r.prompt, output, system))
        index.append({"image_id": r.image_id, "rank": r["rank"], "sentence_id": r.sentence_id,
                      "request_hash": request, "raw_text": r.raw_text, "caption": r.caption,
                      "tags": list(r.tags or []), "answered": bool(output)})
    name = ic.dataset_name
    files = {"alpaca": f"{out_dir}/{name}_alpaca.json", "sharegpt": f"{out_dir}/{name}_sharegpt.json",
             "requests": f"{out_dir}/{name}_requests.jsonl", "dataset_info": f"{out_dir}/dataset_info.json"}
    write_json(files["alpaca"], alpaca)
    write_json(files["sharegpt"], sharegpt)
    write_json(files["requests"], index, lines=True)
    write_json(files["dataset_info"], dataset_info(name, bool(system)))
    return {"files": files, "examples": len(records), "answered": sum(1 for i in index if i["answered"]),
            "counters": counters}
