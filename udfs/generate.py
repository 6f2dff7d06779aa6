"""Image Semantic Augmented Generation on executors: prompt -> synthetic caption.

Backends share one interface, `generate(requests) -> list[str]`, and are built once per worker:
- `TemplateGenerator`: deterministic CPU fusion of caption, tags and retrieved text (no model). It is
  the backend that runs anywhere; it restructures, it does not rewrite.
- `TransformersGenerator`: a Hugging Face causal LM (chat template when the tokenizer has one).
- `VLLMGenerator`: vLLM's offline `LLM.generate` on GPU executors (the paper served LLaMA3-8B with vLLM).
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Iterator, Sequence

import pandas as pd

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


@dataclass(frozen=True)
class Request:
    raw_text: str           # retrieved realistic sentence (text1)
    caption: str            # concise caption (OFA in the paper; alt text or a tag phrase here)
    tags: tuple[str, ...]   # detection tags (RAM++ in the paper; zero-shot CLIP tags here)

    def prompt(self) -> str:
        return PROMPT_TEMPLATE.format(raw=self.raw_text, caption=self.caption, tags=", ".join(self.tags))


class TemplateGenerator:
    name = "template:v1"

    def generate(self, requests: Sequence[Request]) -> list[str]:
        return [self._fuse(r) for r in requests]

    @staticmethod
    def _fuse(r: Request) -> str:
        raw = r.raw_text.strip().rstrip(".")
        caption = r.caption.strip().rstrip(".")
        text = raw if not caption or caption.lower() in raw.lower() else f"{caption}: {raw[:1].lower()}{raw[1:]}"
        missing = [t for t in r.tags if not re.search(rf"\b{re.escape(t)}\b", text, re.IGNORECASE)][:3]
        if missing:
            text += ", with " + ", ".join(missing)
        return text[:1].upper() + text[1:] + "."


class TransformersGenerator:
    def __init__(self, model: str, max_new_tokens: int, temperature: float, batch_size: int):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = f"transformers:{model}"
        import torch

        # Left padding: decoder-only generation continues from the last real token of every row.
        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        on_gpu = torch.cuda.is_available()
        dtype = torch.bfloat16 if on_gpu else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).eval().to("cuda" if on_gpu else "cpu")
        self.max_new_tokens, self.temperature, self.batch_size = max_new_tokens, temperature, batch_size

    def _text(self, request: Request) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": request.prompt()}],
                                                      tokenize=False, add_generation_prompt=True)
        return request.prompt() + "\nMerged caption:"

    def generate(self, requests: Sequence[Request]) -> list[str]:
        import torch

        outputs = []
        for start in range(0, len(requests), self.batch_size):
            batch = [self._text(r) for r in requests[start:start + self.batch_size]]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True).to(self.model.device)
            with torch.inference_mode():
                generated = self.model.generate(
                    **enc, max_new_tokens=self.max_new_tokens, do_sample=self.temperature > 0,
                    temperature=self.temperature or None, pad_token_id=self.tokenizer.pad_token_id)
            new_tokens = generated[:, enc["input_ids"].shape[1]:]
            outputs += [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        return outputs


class VLLMGenerator:
    def __init__(self, model: str, max_new_tokens: int, temperature: float):
        from vllm import LLM, SamplingParams

        self.name = f"vllm:{model}"
        self.llm = LLM(model=model)
        self.sampling = SamplingParams(max_tokens=max_new_tokens, temperature=temperature)

    def generate(self, requests: Sequence[Request]) -> list[str]:
        conversations = [[{"role": "user", "content": r.prompt()}] for r in requests]
        results = self.llm.chat(conversations, self.sampling, use_tqdm=False)
        return [r.outputs[0].text.strip() for r in results]


_GENERATORS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def generator_name(cfg: dict) -> str:
    return TemplateGenerator.name if cfg["backend"] == "template" else f"{cfg['backend']}:{cfg['model']}"


def get_generator(cfg: dict):
    key = (cfg["backend"], cfg["model"], cfg["max_new_tokens"], cfg["temperature"])
    with _LOCK:
        if key not in _GENERATORS:
            if cfg["backend"] == "template":
                _GENERATORS[key] = TemplateGenerator()
            elif cfg["backend"] == "transformers":
                _GENERATORS[key] = TransformersGenerator(cfg["model"], cfg["max_new_tokens"], cfg["temperature"],
                                                         cfg["batch_size"])
            elif cfg["backend"] == "vllm":
                _GENERATORS[key] = VLLMGenerator(cfg["model"], cfg["max_new_tokens"], cfg["temperature"])
            else:
                raise ValueError(f"unknown generate.backend {cfg['backend']!r}")
        return _GENERATORS[key]


def generate_texts(cfg: dict):
    """mapInPandas body: (request_hash, raw_text, caption, tags) -> (request_hash, syn_text)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        generator = get_generator(cfg)
        for frame in batches:
            requests = [Request(raw, caption or "", tuple(tags if tags is not None else ()))
                        for raw, caption, tags in zip(frame["raw_text"], frame["caption"], frame["tags"])]
            yield pd.DataFrame({"request_hash": frame["request_hash"].to_numpy(),
                                "syn_text": generator.generate(requests)})
    return run


def zero_shot_tags(tags_bc, n_tags: int):
    """mapInPandas body: (image_id, embedding) -> (image_id, tags): the vocabulary entries whose CLIP
    text embedding is nearest the image (a stand-in for RAM++ tagging where it cannot run)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import numpy as np

        from udfs.retrieval import stack, top_k_indices

        names, matrix = tags_bc.value
        for frame in batches:
            if frame.empty:
                continue
            best = top_k_indices(stack(frame["embedding"]) @ matrix.T, n_tags)
            yield pd.DataFrame({"image_id": frame["image_id"].to_numpy(),
                                "tags": [list(np.asarray(names)[row]) for row in best]})
    return run
