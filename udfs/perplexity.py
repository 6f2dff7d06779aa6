"""Sentence perplexity under a causal language model (GPT-2-large in the paper), inside executors.

PPL(x) = exp(-(1/t) sum_i log p(x_i | x_<i)) over the sentence's t tokens. The tokenizer's BOS token is
prepended so that the first token is scored too; batches are right-padded (GPT-2 has absolute positions,
so left padding would shift them) and padded positions are masked out of the loss. Sentences are sorted
by length inside each Arrow batch so that a mini-batch pads little. The model is loaded once per Python
worker and kept for later tasks.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

from udfs.worker import task_threads

log = logging.getLogger("realsyn.udfs")

_MODELS: dict[tuple, "LanguageModel"] = {}
_LOCK = threading.Lock()


class PerplexityModelMissing(RuntimeError):
    pass


@dataclass
class LanguageModel:
    model: object
    tokenizer: object
    device: str
    bos_id: int | None
    pad_id: int
    max_positions: int


def model_available(name: str) -> tuple[bool, str]:
    """Decided on the driver: a local directory, a model already in the Hugging Face cache, or a hub
    that can be reached. Returns (available, why not)."""
    if os.path.isdir(name):
        return (True, "") if os.path.exists(os.path.join(name, "config.json")) else \
            (False, f"{name!r} is a directory without config.json")
    try:
        from huggingface_hub import constants, try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return True, ""
        if constants.HF_HUB_OFFLINE:
            return False, f"{name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
        import socket
        from urllib.parse import urlparse

        host = urlparse(constants.ENDPOINT).hostname
        socket.create_connection((host, 443), timeout=3.0).close()
        return True, ""
    except OSError as exc:
        return False, f"{name!r} is not cached locally and the model hub is unreachable ({exc})"
    except Exception as exc:  # a malformed repo id and the like
        return False, f"{name!r} cannot be resolved ({exc})"


def _device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def load_lm(name: str, device: str = "auto") -> LanguageModel:
    key = (name, device)
    with _LOCK:
        lm = _MODELS.get(key)
        if lm is None:
            lm = _MODELS[key] = _create(name, device)
    import torch

    if lm.device == "cpu":
        torch.set_num_threads(task_threads())
    return lm


def _create(name: str, device: str) -> LanguageModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise PerplexityModelMissing(
            f"perplexity model {name!r} cannot be loaded ({exc}). Set sentence_filter.perplexity_model to a "
            "local directory or a reachable Hugging Face id, or sentence_filter.perplexity_on_missing_model=skip "
            "to run without the perplexity rule.") from exc
    device = _device(device)
    model = model.eval().to(device)
    if device.startswith("cuda"):
        model = model.half()
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    max_positions = int(getattr(model.config, "n_positions", None)
                        or getattr(model.config, "max_position_embeddings", None) or 1024)
    return LanguageModel(model, tokenizer, device, bos, int(pad), max_positions)


def perplexities(texts: list[str], lm: LanguageModel, batch_size: int, max_tokens: int) -> np.ndarray:
    """Perplexity per text (NaN for a text with no scorable token)."""
    import torch

    limit = min(max_tokens, lm.max_positions)
    encoded = lm.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    sequences = []
    for ids in encoded:
        ids = ([lm.bos_id] if lm.bos_id is not None else []) + list(ids)
        sequences.append(ids[:limit])
    out = np.full(len(texts), np.nan, dtype=np.float64)
    order = np.argsort([len(s) for s in sequences], kind="stable")
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = [sequences[i] for i in index]
        width = max(len(s) for s in batch)
        if width < 2:
            continue
        ids = torch.full((len(batch), width), lm.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):        # right padding: positions stay 0..len-1
            ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, :len(seq)] = 1
        ids, mask = ids.to(lm.device), mask.to(lm.device)
        with torch.inference_mode():
            logits = lm.model(input_ids=ids, attention_mask=mask).logits.float()
        targets = ids[:, 1:]
        target_mask = mask[:, 1:].float()            # padded targets are not scored
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                targets.reshape(-1), reduction="none").view(targets.shape)
        counts = target_mask.sum(dim=1)
        mean_nll = (nll * target_mask).sum(dim=1) / counts.clamp(min=1)
        values = torch.exp(mean_nll).cpu().numpy().astype(np.float64)
        values[counts.cpu().numpy() == 0] = np.nan
        out[index] = values
    return out


def perplexity_mapper(name: str, device: str, batch_size: int, max_tokens: int):
    """mapInPandas body: (sentence_id, text) -> (sentence_id, score = perplexity)."""
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        lm = load_lm(name, device)
        for frame in batches:
            values = perplexities(frame["text"].astype(str).tolist(), lm, batch_size, max_tokens)
            yield pd.DataFrame({"sentence_id": frame["sentence_id"].to_numpy(),
                                "score": [None if math.isnan(v) else float(v) for v in values]})
    return run
