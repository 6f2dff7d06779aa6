"""GPU checks of the executor-side code paths (no Spark on the GPU machine: these are the exact
functions the pandas UDFs run). Prints CLIP image/text throughput at fp32 and fp16 autocast through
`udfs.clip_embed`, runs the Hugging Face generator backend on CUDA with a tiny locally built model, and
times the retrieval stage's exact per-chunk search (`udfs.retrieval.exact_top_k`) on the GPU against the
CPU path (FAISS where installed, else numpy) on one full chunk (`retrieval.max_vectors_per_task` vectors).

    python bench/gpu_check.py [--images 4096] [--model ViT-B-32] [--search-queries 8192]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def jpeg_corpus(n: int, seed: int = 0) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((320, 256), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def clip_throughput(model: str, images: list[bytes], device: str, batch: int, decode: str = "cpu",
                    prefetch: int = 0) -> dict:
    import torch

    from udfs import clip_embed

    from realsyn_spark.config import EmbedConfig

    cfg = EmbedConfig(model=model, pretrained=None, device=device, batch_size=batch, allow_random_weights=True)
    bundle = clip_embed.load_clip(cfg)
    bundle.embed_images(images[:batch], batch, 0, decode)  # warm-up (cuDNN autotune, allocator)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    kept, vecs = bundle.embed_images(images, batch, prefetch, decode)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    texts = [f"a photo of object number {i} on a table" for i in range(len(images))]
    bundle.embed_texts(texts[:batch], batch)
    t1 = time.perf_counter()
    bundle.embed_texts(texts, batch)
    if device == "cuda":
        torch.cuda.synchronize()
    text_seconds = time.perf_counter() - t1
    assert len(kept) == len(images) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-3)
    return {"images_per_s": len(images) / seconds, "texts_per_s": len(texts) / text_seconds,
            "dtype": "fp16 autocast" if device == "cuda" else "fp32", "model_id": bundle.model_id,
            "decode": decode, "prefetch": prefetch}


def tiny_llm_dir() -> str:
    """A random-weight Llama with a BPE tokenizer trained here: no hub needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tempfile.mkdtemp(prefix="tiny-llm-")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.decoder = decoders.ByteLevel()
    corpus = ["a dog runs on the beach", "merge the raw caption with tags", "a photo of a red car"] * 50
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    fast.save_pretrained(out)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def generator_check(n: int) -> dict:
    from udfs.generate import Request, get_generator

    cfg = {"backend": "transformers", "model": tiny_llm_dir(), "max_new_tokens": 24, "temperature": 0.0,
           "batch_size": 64}
    gen = get_generator(cfg)
    requests = [Request(f"a dog runs on the beach number {i}", "a dog", ("dog", "beach")) for i in range(n)]
    gen.generate(requests[:8])
    t0 = time.perf_counter()
    out = gen.generate(requests)
    seconds = time.perf_counter() - t0
    assert len(out) == n and all(isinstance(t, str) for t in out)
    return {"device": str(gen.model.device), "dtype": str(gen.model.dtype), "requests_per_s": n / seconds,
            "sample_output": out[0][:80]}


def retrieval_check(n_queries: int, n_corpus: int = 100_000, dim: int = 512, k: int = 3) -> dict:
    import torch

    from udfs.retrieval import exact_top_k

    rng = np.random.default_rng(0)
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    corpus, queries = unit(rng.normal(size=(n_corpus, dim))), unit(rng.normal(size=(n_queries, dim)))
    try:
        import faiss  # noqa: F401
        cpu_kind = f"faiss.knn, {os.cpu_count()} threads"
    except ImportError:
        cpu_kind = f"numpy blocks, {os.cpu_count()} threads"
    out = {"corpus": n_corpus, "queries": n_queries, "dim": dim, "cpu_path": cpu_kind}
    t0 = time.perf_counter()
    cpu_scores, cpu_index = exact_top_k(queries, corpus, k, "cpu")
    out["cpu_queries_per_s"] = n_queries / (time.perf_counter() - t0)
    if torch.cuda.is_available():
        exact_top_k(queries[:256], corpus, k, "cuda")  # CUDA context and kernels warm
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        gpu_scores, gpu_index = exact_top_k(queries, corpus, k, "cuda")
        out["cuda_queries_per_s"] = n_queries / (time.perf_counter() - t0)
        out["speedup"] = out["cuda_queries_per_s"] / out["cpu_queries_per_s"]
        out["same_neighbours"] = float((gpu_index == cpu_index).mean())
        out["max_score_difference"] = float(np.abs(gpu_scores - cpu_scores).max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--search-queries", type=int, default=8192)
    args = parser.parse_args()
    import torch

    results = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
    images = jpeg_corpus(args.images)
    if torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name(0)
        results["clip_cuda"] = clip_throughput(args.model, images, "cuda", args.batch)
        # embed.decode: gpu (batched nvJPEG + tensor preprocessing), with the stage's default prefetch
        results["clip_cuda_gpu_decode"] = clip_throughput(args.model, images, "cuda", args.batch, "gpu", 2)
    cpu_n = min(len(images), 256)
    torch.set_num_threads(min(16, os.cpu_count() or 1))
    results["clip_cpu_same_machine"] = clip_throughput(args.model, images[:cpu_n], "cpu", 32)
    results["generator"] = generator_check(256)
    results["retrieval_search"] = retrieval_check(args.search_queries)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
