"""Throughput of the perplexity UDF (udfs.perplexity through Spark mapInPandas, local[2]) vs a bare
transformers loop on the same sentences and the same model, and the agreement of their values.

    python bench/bench_filters_perplexity.py                 # GPT-2-small-shaped model, 1000 sentences
    python bench/bench_filters_perplexity.py --layers 2 --width 128 --n 2000

No GPT-2 weights can be downloaded here: the model has GPT-2 small's shape (12 layers, 768 wide) with
seeded random weights and a ByteLevel BPE trained on the bench sentences (the compute per token is GPT-2
small's, except for the smaller vocabulary). The bare loop is what one writes by hand: batches of 16 in
input order, tokenizer padding, one forward pass, masked token NLL; it runs in one process with one
torch thread, and figures are per core (on this shared 2-core machine two torch threads in one process
ran 8x slower than one, so a 2-thread baseline would flatter the UDF). The UDF's own function (length-sorted batches) is also timed in-process,
which separates the Spark/Arrow overhead from the batching. The UDF run is timed twice: cold (Python
workers import torch and load the model) and warm (workers reused). Ratio = UDF sentences/s / other
sentences/s.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench_sentences(n: int) -> list[str]:
    from realsyn_spark.sample_corpus import ANIMAL_ACTIONS, PEOPLE, PEOPLE_ACTIONS, PLACES, TIMES
    from tests.segmentation_gold import GOLD, HELDOUT

    rng = random.Random(0)
    pool = [s for p in GOLD + HELDOUT for s in p]
    out = []
    while len(out) < n:
        if rng.random() < 0.5:
            out.append(rng.choice(pool))
        else:
            who = rng.choice(PEOPLE)[0]
            what = rng.choice(PEOPLE_ACTIONS)[0] if rng.random() < .8 else rng.choice(ANIMAL_ACTIONS)[0]
            out.append(f"{who} is {what} {rng.choice(PLACES)}{rng.choice(TIMES)}.")
    return out


def build_model(out: Path, texts: list[str], layers: int, width: int) -> str:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=4000, min_frequency=1, special_tokens=["<|endoftext|>", "<pad>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  pad_token="<pad>")
    config = GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=width, n_layer=layers,
                        n_head=max(1, width // 64), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).eval().save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def bare_loop(path: str, texts: list[str], threads: int, batch_size: int = 16) -> tuple[np.ndarray, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    out = []
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch_size):
        batch = [tok.bos_token + t for t in texts[start:start + batch_size]]
        enc = tok(batch, return_tensors="pt", padding=True)
        with torch.inference_mode():
            logits = model(**enc).logits
        target, mask = enc["input_ids"][:, 1:], enc["attention_mask"][:, 1:].float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), target, reduction="none")
        out.extend(torch.exp((nll * mask).sum(1) / mask.sum(1)).tolist())
    return np.array(out), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from realsyn_spark.config import load_config
    from realsyn_spark.session import local_session_builder
    from udfs.perplexity import perplexity_mapper

    texts = bench_sentences(args.n)
    path = build_model(Path(tempfile.mkdtemp(prefix="ppl-bench-")), texts, args.layers, args.width)
    cfg = load_config(overrides=["spark.shuffle_partitions=4"])
    spark = local_session_builder(cfg, master="local[2]").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    cores = spark.sparkContext.defaultParallelism
    print(f"{args.n} sentences (mean {np.mean([len(t.split()) for t in texts]):.1f} words), GPT-2-shaped model "
          f"{args.layers} layers x {args.width}, random weights, batch {args.batch_size}, {cores} cores")

    bare, bare_s = bare_loop(path, texts, 1, args.batch_size)
    print(f"  bare transformers loop (1 process, 1 torch thread): {bare_s:.1f}s = {args.n / bare_s:.1f} sentences/s/core")
    import torch

    from udfs.perplexity import load_lm, perplexities

    lm = load_lm(path, "cpu")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    same = perplexities(texts, lm, args.batch_size, 256)
    same_s = time.perf_counter() - t0
    print(f"  the UDF's function in-process (length-sorted batches, 1 thread): {same_s:.1f}s = "
          f"{args.n / same_s:.1f} sentences/s/core")

    frame = spark.createDataFrame([(f"s{i:06d}", t) for i, t in enumerate(texts)], "sentence_id string, text string")
    frame = frame.repartition(cores).localCheckpoint(eager=True)
    mapped = frame.mapInPandas(perplexity_mapper(path, "cpu", args.batch_size, 256), "sentence_id string, score double")
    results = {}
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        rows = mapped.collect()
        seconds = time.perf_counter() - t0
        results[label] = seconds
        per_core = args.n / seconds / cores
        print(f"  perplexity UDF, {label:<4} (Spark mapInPandas, {cores} tasks x 1 thread): {seconds:.1f}s = "
              f"{per_core:.1f} sentences/s/core  -> per-core ratio to the bare loop {per_core / (args.n / bare_s):.2f}, "
              f"to the in-process function {per_core / (args.n / same_s):.2f}")
    udf = np.array([r.score for r in sorted(rows, key=lambda r: r.sentence_id)])
    print(f"  values: max relative difference UDF vs bare = {np.max(np.abs(udf - bare) / bare):.2e}, UDF vs "
          f"in-process = {np.max(np.abs(udf - same) / same):.2e}; "
          f"median perplexity {np.median(udf):.0f}")
    spark.stop()


if __name__ == "__main__":
    main()
