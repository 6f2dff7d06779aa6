"""CLIP (open_clip) embedding of images and texts inside executors.

`load_clip` caches one model per Python worker process. Random-weight fallback is seeded, so that
every executor builds the *same* random model and the vectors stay comparable across tasks.
"""
from __future__ import annotations

import io
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

log = logging.getLogger("realsyn.udfs")

_MODELS: dict[str, "ClipBundle"] = {}
_LOCK = threading.Lock()
RANDOM_WEIGHTS_SEED = 0


@dataclass
class ClipBundle:
    model: object
    preprocess: Callable
    tokenizer: Callable
    model_id: str
    device: str
    random_weights: bool
    dim: int

    def embed_images(self, images: Iterable[bytes], batch_size: int) -> tuple[list[int], np.ndarray]:
        """Embed encoded images; returns the indices that decoded and their L2-normalised vectors."""
        import torch
        from PIL import Image

        kept, vectors, batch = [], [], []

        def flush():
            if not batch:
                return
            pixels = torch.stack([t for _, t in batch]).to(self.device)
            with torch.inference_mode(), _autocast(self.device):
                out = self.model.encode_image(pixels)
            vectors.append(_normalise(out.float().cpu().numpy()))
            kept.extend(i for i, _ in batch)
            batch.clear()

        for index, data in enumerate(images):
            try:
                with Image.open(io.BytesIO(data)) as img:
                    batch.append((index, self.preprocess(img.convert("RGB"))))
            except Exception as exc:  # an undecodable image is skipped, not fatal
                log.warning("image %d not decodable at embed time: %s", index, exc)
            if len(batch) >= batch_size:
                flush()
        flush()
        return kept, (np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32))

    def embed_texts(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        vectors = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[start:start + batch_size]).to(self.device)
            with torch.inference_mode(), _autocast(self.device):
                out = self.model.encode_text(tokens)
            vectors.append(_normalise(out.float().cpu().numpy()))
        return np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def _autocast(device: str):
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def model_id_for(cfg: dict, random_weights: bool) -> str:
    if random_weights:
        return f"{cfg['model']}:random-seed{RANDOM_WEIGHTS_SEED}"
    if cfg.get("checkpoint_path"):
        return f"{cfg['model']}:file:{os.path.basename(cfg['checkpoint_path'])}"
    return f"{cfg['model']}:{cfg.get('pretrained') or 'none'}"


def _torch_threads(cfg: dict) -> int:
    if cfg.get("torch_threads"):
        return int(cfg["torch_threads"])
    # One thread per CPU the task owns: Spark already runs one task per core, so more would oversubscribe.
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        if ctx is not None:
            return max(1, int(ctx.cpus()))
    except Exception:
        pass
    return max(1, (os.cpu_count() or 1))


def _device(cfg: dict) -> str:
    import torch

    if cfg.get("device", "auto") == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg["device"]


def load_clip(cfg: dict) -> ClipBundle:
    """One model per worker process and configuration."""
    key = json.dumps({k: cfg.get(k) for k in ("model", "pretrained", "checkpoint_path", "model_config_path",
                                              "allow_random_weights", "device")}, sort_keys=True)
    with _LOCK:
        bundle = _MODELS.get(key)
        if bundle is None:
            bundle = _MODELS[key] = _create(cfg)
    import torch

    torch.set_num_threads(_torch_threads(cfg))
    return bundle


def _create(cfg: dict) -> ClipBundle:
    import open_clip
    import torch

    if cfg.get("model_config_path"):
        open_clip.add_model_config(cfg["model_config_path"])
    device = _device(cfg)
    weights = cfg.get("checkpoint_path") or cfg.get("pretrained") or None
    random_weights = weights is None
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(cfg["model"], pretrained=weights)
    except Exception as exc:
        if not cfg.get("allow_random_weights"):
            raise RuntimeError(
                f"cannot load CLIP weights {cfg['model']!r}/{weights!r}: {exc}. Give a local checkpoint "
                "(embed.checkpoint_path) or set embed.allow_random_weights=true to run on random weights."
            ) from exc
        log.warning("CLIP weights %s/%s unavailable (%s): using seeded random weights", cfg["model"], weights, exc)
        random_weights = True
    if random_weights:
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model, _, preprocess = open_clip.create_model_and_transforms(cfg["model"], pretrained=None)
    model = model.eval().to(device)
    dim = int(model.text_projection.shape[1]) if getattr(model, "text_projection", None) is not None \
        else int(model.encode_text(open_clip.get_tokenizer(cfg["model"])(["x"])).shape[1])
    return ClipBundle(model, preprocess, open_clip.get_tokenizer(cfg["model"]), model_id_for(cfg, random_weights),
                      device, random_weights, dim)


def image_embedder(cfg: dict) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas body: (image_id, image_bytes) -> (image_id, model_id, embedding)."""
    batch_size = int(cfg.get("batch_size", 32))

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle = load_clip(cfg)
        for frame in batches:
            kept, vectors = bundle.embed_images(frame["image_bytes"].tolist(), batch_size)
            yield pd.DataFrame({"image_id": frame["image_id"].iloc[kept].to_numpy(),
                                "model_id": bundle.model_id, "embedding": list(vectors)})

    return run


def text_embedder(cfg: dict, id_column: str) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """mapInPandas body: (<id_column>, text) -> (<id_column>, model_id, embedding)."""
    batch_size = int(cfg.get("batch_size", 32)) * 2

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bundle = load_clip(cfg)
        for frame in batches:
            vectors = bundle.embed_texts(frame["text"].astype(str).tolist(), batch_size)
            yield pd.DataFrame({id_column: frame[id_column].to_numpy(), "model_id": bundle.model_id,
                                "embedding": list(vectors)})

    return run
