"""Instruction data (issue 11, item 7): a sample of rewrite requests as LLaMA-Factory alpaca and sharegpt
JSON with a dataset_info.json, empty answers or a teacher's (an OpenAI-compatible server on 127.0.0.1)
through the request cache, and the fine-tuned model loaded back by generate.model = its directory."""
from __future__ import annotations

import json

from realsyn_spark.config import load_config
from realsyn_spark.instruction_data import export
from realsyn_spark.pipeline import run_stage
from realsyn_spark.tables import SYNTHETIC_TEXTS, Lake
from tests.test_generate import KEY, SENTENCE_TEXTS, FakeOpenAI, seed_lake, server, tiny_llama  # noqa: F401
from udfs.generate import render_prompt

ALTS = ["a market stall", "a ferry", "a beach", "two people on a mountain", "a bakery"]


def read(path):
    with open(path) as f:
        return json.load(f)


def test_alpaca_and_sharegpt_with_empty_then_teacher_answers(spark, server, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("REALSYN_TEST_KEY", KEY)
    base = [f"lake.root={tmp_path}", "generate.tags_per_image=0", "spark.shuffle_partitions=2",
            "instruction.sample_size=3", "generate.system_prompt=You merge captions."]
    cfg = load_config(overrides=base)
    lake = Lake(spark, cfg.lake)
    texts = [t.replace("FLAKY ", "").replace("REFUSE", "refuse") for t in SENTENCE_TEXTS]
    seed_lake(spark, lake, texts, ALTS)
    empty = export(spark, cfg, "i1")
    alpaca, sharegpt = read(empty["files"]["alpaca"]), read(empty["files"]["sharegpt"])
    index = [json.loads(line) for line in open(empty["files"]["requests"])]
    assert len(alpaca) == len(sharegpt) == len(index) == 3 and empty["answered"] == 0
    for a, s, i in zip(alpaca, sharegpt, index):
        n = int(i["image_id"][3:])
        # The instruction is the exact prompt the rewrite model is given at inference.
        assert a["instruction"] == render_prompt(None, texts[n], ALTS[n], []) and a["input"] == "" and a["output"] == ""
        assert a["system"] == "You merge captions."
        assert s["conversations"] == [{"from": "human", "value": a["instruction"]}, {"from": "gpt", "value": ""}]
    info = read(empty["files"]["dataset_info"])
    assert info["realsyn_rewrite_alpaca"] == {"file_name": "realsyn_rewrite_alpaca.json", "formatting": "alpaca",
                                              "columns": {"prompt": "instruction", "query": "input",
                                                          "response": "output", "system": "system"}}
    assert info["realsyn_rewrite_sharegpt"]["tags"] == {"role_tag": "from", "content_tag": "value",
                                                        "user_tag": "human", "assistant_tag": "gpt"}
    assert export(spark, cfg, "i1b")["files"] and read(empty["files"]["alpaca"]) == alpaca   # same sample again

    teacher = base + ["instruction.answers=generate",
                      "instruction.teacher={backend: openai, model: strong-teacher, base_url: '%s', "
                      "api_key_env: REALSYN_TEST_KEY, backoff_s: 0.01}" % server]
    FakeOpenAI.log.clear()
    answered = export(spark, load_config(overrides=teacher), "i2")
    assert answered["counters"]["teacher_requests_sent"] == 3 and len(FakeOpenAI.log) == 3
    alpaca = read(answered["files"]["alpaca"])
    for a in alpaca:
        raw = a["instruction"].split("Raw caption:")[1].split(", synthetic caption:")[0]
        assert raw.strip().rstrip(".").lower() in a["output"].lower()        # the teacher's answer, per row
    assert [s["conversations"][1]["value"] for s in read(answered["files"]["sharegpt"])] == [a["output"] for a in alpaca]
    again = export(spark, load_config(overrides=teacher), "i3")
    assert again["counters"]["teacher_requests_sent"] == 0 and len(FakeOpenAI.log) == 3   # from the cache


def test_a_fine_tuned_model_is_loaded_back_from_its_directory(spark, tiny_llama, tmp_path):  # noqa: F811
    # tiny_llama is a model saved with save_pretrained, as a LLaMA-Factory full fine-tune (or a merged
    # LoRA) leaves it: generate.model = that directory is all it takes.
    cfg = load_config(overrides=[f"lake.root={tmp_path}", "generate.backend=transformers",
                                 f"generate.model={tiny_llama}", "generate.max_new_tokens=4",
                                 "generate.tags_per_image=0", "generate.torch_threads=1", "spark.shuffle_partitions=1"])
    lake = Lake(spark, cfg.lake)
    seed_lake(spark, lake, SENTENCE_TEXTS[3:4], ["x"])
    run = run_stage(spark, cfg, "generate", "ft1")
    assert run.counters["requests_answered"] == 1 and run.counters["completion_tokens"] > 0
    assert lake.read(SYNTHETIC_TEXTS).count() + sum(v for k, v in run.counters.items() if k.startswith("dropped:")) == 1
    assert {r.generator for r in lake.read(SYNTHETIC_TEXTS).collect()} <= {f"transformers:{tiny_llama}"}
